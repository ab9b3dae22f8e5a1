"""The engine's defaults, in one place and without heavy imports (the CLI reads them to build
its options before torch is loaded)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_SIZE = "large"
DEFAULT_IMAGE_SIZE = 1024  # the official evaluation resolution
DEFAULT_TAU = 0.6  # clustering threshold: the dendrogram is cut at 1 - tau
DEFAULT_MERGE_THRESHOLD = 0.2  # clusters more similar than this to the seed are aggregated
DEFAULT_MAX_PIXELS = 64_000_000  # decoded pixels per image (decompression bombs)
DEFAULT_CACHE_BYTES = 1 << 30  # in-process LRU of reference features
DEFAULT_REQUEST_TIMEOUT_S = 60.0  # insid3 serve; raised at start when unset and too short (core.startup)
DEFAULT_BASIS_CACHE = Path.home() / ".cache" / "insid3" / "basis"
