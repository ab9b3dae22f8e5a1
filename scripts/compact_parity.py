"""Copy the official golden data (shared/parity) into tests/parity, keeping only what the checks read.

    python scripts/compact_parity.py ../shared/parity tests/parity

Values are copied bit for bit (``np.savez_compressed`` is lossless). Left out: the keys no check
reads (synthetic ground truth, diagnostics, per-cluster arrays numbered by sklearn: their
numbering-free ``*_map`` forms are kept), ``overview.png`` and ``summary.json``, the ``x512``
input (``xconst512`` covers the 32x32 grid) and the last-four-layer feature stacks (``__n4``;
the engine reads only the last layer, and ``__n4_cls`` still checks the four-layer path).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

UNREAD = {"meta", "gt_tgt_mask", "gt_tgt_kps", "noise_E_singular_values", "forward_used_quantile", "backward_mask",
          "n_clusters", "matched_ids", "area_weights", "cross_sim", "intra_sim", "combined", "seed_cluster_id"}
DROPPED_INPUTS = ("x512",)


def _kept(key: str) -> bool:
    return key not in UNREAD and key.split("__")[0] not in DROPPED_INPUTS and not key.endswith("__n4")


def compact(source: Path, target: Path) -> None:
    """Write the compact copy of ``source`` to ``target``."""
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir() or path.name in ("overview.png", "summary.json"):
            continue
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npz":
            with np.load(path) as data:
                np.savez_compressed(out, **{key: data[key] for key in data.files if _kept(key)})
        else:
            shutil.copyfile(path, out)


if __name__ == "__main__":
    compact(Path(sys.argv[1]), Path(sys.argv[2]))
