"""The official ``set_reference / set_target / segment / match`` flow, for users porting code.

```
session = INSID3Session(Insid3.build(...))
session.set_reference("ref.jpg", "ref_mask.png")   # call again for k-shot
session.set_target("target.jpg")
mask = session.segment()                           # (H, W) bool numpy; the state is then reset
```
Unlike the official class, the heavy work lives in the stateless engine: references go through
its cache, and one engine can serve many sessions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.engine import Insid3
from core.errors import InvalidInputError
from core.images import ImageInput
from core.types import ReferenceFeatures


class INSID3Session:
    """Stateful wrapper with the official method names; the state resets after each prediction."""

    def __init__(self, engine: Insid3) -> None:
        self.engine = engine
        self.reset_state()

    def reset_state(self) -> None:
        """Forget the references and the target."""
        self._references: list[ReferenceFeatures] = []
        self._target: ImageInput | None = None

    def set_reference(self, image: ImageInput, mask: ImageInput | None = None) -> None:
        """Add a reference (with its mask for segmentation; without for matching)."""
        self._references.append(self.engine.encode_reference(image, mask))

    def set_target(self, image: ImageInput) -> None:
        """Set the image to segment or match into."""
        self._target = image

    def segment(self) -> np.ndarray:
        """The target's predicted mask, (H, W) bool."""
        target = self._require_target()
        try:
            return self.engine.segment(target, self._references).mask
        finally:
            self.reset_state()

    def match(self, src_kps: Sequence[Sequence[float]] | np.ndarray, use_debiased: bool = True) -> np.ndarray:
        """Target points (N, 2) for the first reference's keypoints ``src_kps`` ((x, y) pixels)."""
        target = self._require_target()
        try:
            return self.engine.match(target, self._references[0], src_kps, debiased=use_debiased).points
        finally:
            self.reset_state()

    def _require_target(self) -> ImageInput:
        if self._target is None or not self._references:
            raise InvalidInputError("set_reference() and set_target() must be called before predicting")
        return self._target
