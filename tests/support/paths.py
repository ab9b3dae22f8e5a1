"""Where the repository and the shared golden data are."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PARITY_DIR = Path(os.environ.get("INSID3_PARITY_DIR", REPO_ROOT.parent / "shared" / "parity"))
