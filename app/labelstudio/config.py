"""What a Label Studio labeling config asks of this backend: the image and its labels."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

from core.errors import InvalidInputError

MASK_TAGS = ("BrushLabels", "PolygonLabels")  # regions that become mask examples
KEYPOINT_TAG = "KeyPointLabels"
MAX_CONFIG_CHARS = 1_000_000


class UnsupportedLabelConfig(InvalidInputError):
    """A labeling config this backend cannot serve (no image, or no brush/polygon/keypoint labels)."""

    code = "unsupported_label_config"


@dataclass(frozen=True)
class Control:
    """One labeling control on the image: its tag (``BrushLabels``...), name and label values."""

    tag: str
    name: str
    labels: tuple[str, ...]

    @property
    def result_type(self) -> str:
        """The ``type`` of its results (``brushlabels``...), also the key of the labels in ``value``."""
        return self.tag.lower()


@dataclass(frozen=True)
class LabelConfig:
    """The image tag (its name and the task data key of its URL) and the controls on it."""

    image_name: str
    image_key: str
    controls: tuple[Control, ...]

    @property
    def mask_labels(self) -> list[tuple[Control, str]]:
        """Every (control, label) a mask is predicted for: brush labels first, then polygon labels
        not already brush labels (a label is predicted once, as a brush if it can be)."""
        seen: set[str] = set()
        pairs = []
        for tag in MASK_TAGS:
            for control in self.controls:
                if control.tag == tag:
                    pairs += [(control, label) for label in control.labels if label not in seen]
                    seen.update(control.labels)
        return pairs

    @property
    def keypoints(self) -> Control | None:
        return next((control for control in self.controls if control.tag == KEYPOINT_TAG), None)


def _image(root: ElementTree.Element) -> tuple[str, str]:
    images = [element for element in root.iter("Image") if element.get("name")]
    if not images:
        raise UnsupportedLabelConfig("the labeling config has no <Image name=... value=\"$...\"/> tag")
    name, value = images[0].get("name", ""), images[0].get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise UnsupportedLabelConfig(f"<Image name=\"{name}\"> needs value=\"$<task data key>\", got {value!r}")
    return name, value[1:]


def parse_label_config(text: object) -> LabelConfig:
    """The config's first image and its BrushLabels / PolygonLabels / KeyPointLabels controls, or
    ``UnsupportedLabelConfig`` saying what is missing."""
    if not isinstance(text, str) or not text.strip():
        raise UnsupportedLabelConfig("no labeling config given (label_config / schema)")
    if len(text) > MAX_CONFIG_CHARS:
        raise UnsupportedLabelConfig(f"labeling config over {MAX_CONFIG_CHARS} characters")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise UnsupportedLabelConfig(f"the labeling config is not valid XML: {exc}") from None
    image_name, image_key = _image(root)
    controls = tuple(
        Control(element.tag, element.get("name", ""),
                tuple(label.get("value", "") for label in element.iter("Label") if label.get("value")))
        for element in root.iter()
        if element.tag in (*MASK_TAGS, KEYPOINT_TAG) and element.get("toName") == image_name and element.get("name")
    )
    if not any(control.labels for control in controls):
        raise UnsupportedLabelConfig(
            f"the labeling config has no BrushLabels, PolygonLabels or KeyPointLabels with <Label> values "
            f"on the image {image_name!r} (toName=\"{image_name}\")"
        )
    return LabelConfig(image_name, image_key, controls)
