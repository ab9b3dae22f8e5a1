"""Peak resident memory of a process (Linux): its high-water mark, reset through ``clear_refs``."""

from __future__ import annotations

import re
from pathlib import Path


def _status_kb(pid: int | str, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert found is not None, f"no {field} for process {pid}"
    return int(found.group(1))


class PeakGrowth:
    """How far a process's resident memory rose above its level at ``reset()``."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid
        self._base_kb = 0

    def reset(self) -> None:
        """Start measuring: the high-water mark is set back to the current RSS."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self._base_kb = _status_kb(self.pid, "VmRSS")

    def bytes(self) -> int:
        """The peak RSS since ``reset()`` minus the RSS then."""
        return (_status_kb(self.pid, "VmHWM") - self._base_kb) * 1024
