"""Giving freed memory back to the operating system.

glibc keeps freed heap memory for reuse, and after the first large free it raises its mmap
threshold, so the buffers of one huge image (bands, encoders' chunks, temporaries below 32 MB)
stay in the process as resident memory after the request is done. ``trim_heap`` hands the free
pages back (``malloc_trim``); call it when a process goes idle after large work.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def trim_heap() -> bool:
    """Return free heap memory to the OS; False where the C library cannot (not glibc)."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
