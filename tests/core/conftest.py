"""Engines on a tiny random checkpoint, shared by the core tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.engine import Insid3
from tests.support.images import disc_scene


@pytest.fixture(scope="session")
def engine(tiny_checkpoint: Path, basis_cache_dir: Path) -> Insid3:
    return Insid3.build(model_size="tiny", weights=tiny_checkpoint, image_size=128, device="cpu",
                        basis_cache_dir=basis_cache_dir)


@pytest.fixture(scope="session")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A 96x160 image: a red disc on a cluttered background, and the disc's mask."""
    made = disc_scene(7, 96, 160, [(40, 60, 22)])
    return made.image, made.mask
