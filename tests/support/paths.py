"""Where the repository and the golden parity data are."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PARITY_DIR = Path(os.environ.get("INSID3_PARITY_DIR", REPO_ROOT / "tests" / "parity"))  # the full set: ../shared/parity
