"""What the service benchmarks share: a red disc on noise as PNG bytes, a free port, waiting for an API."""

from __future__ import annotations

import io
import socket
import subprocess
import time

import httpx
import numpy as np
from PIL import Image


def png(array: np.ndarray) -> bytes:
    """PNG bytes of an array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def disc_scene(seed: int, height: int, width: int) -> tuple[bytes, bytes]:
    """A red disc on noise, as PNG bytes of the image and of its mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    rows, cols = np.mgrid[:height, :width]
    mask = (rows - height // 2) ** 2 + (cols - width // 2 + seed * 9) ** 2 < (height // 5) ** 2
    image[mask] = (200, 40, 40)
    return png(image), png(mask.astype(np.uint8) * 255)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen | None = None, timeout_s: float = 300.0) -> bool:
    """Poll ``url``/readyz until 200; False when ``process`` exited or the time ran out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            return False
        time.sleep(0.1)
    return False
