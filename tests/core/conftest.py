"""Engines on a tiny random checkpoint, shared by the core tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.engine import Insid3


@pytest.fixture(scope="session")
def engine(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Insid3:
    return Insid3.build(model_size="tiny", weights=tiny_checkpoint, image_size=128, device="cpu",
                        basis_cache_dir=tmp_path_factory.mktemp("basis"))


@pytest.fixture(scope="session")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A 96x160 image: a red disc on a textured background, and the disc's mask."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 90, (96, 160, 3), dtype=np.uint8)
    rows, cols = np.mgrid[:96, :160]
    mask = (rows - 40) ** 2 + (cols - 60) ** 2 < 22**2
    image[mask] = (220, 30, 30)
    return image, mask
