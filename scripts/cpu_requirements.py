"""Requirements for a machine without an NVIDIA GPU, for scripts/setup.sh (standard library only).

PyPI's Linux torch wheel is the CUDA build (the CPU-only build lives on PyTorch's own index). Its
CUDA libraries must stay: ``libtorch.so`` links cuBLAS, cuDNN, NCCL, ... and ``import torch`` fails
without them. Two of its requirements are never loaded on the CPU: ``triton`` (~0.9 GB of GPU
compiler for ``torch.compile``) and ``cuda-bindings``. pip installs the requirements of an
installed torch too, so every package that requires torch is installed with ``--no-deps`` and the
requirements of them all are listed here without those two:

  python scripts/cpu_requirements.py stack            the torch stack, pinned as pyproject.toml pins it
  python scripts/cpu_requirements.py rest [EXTRA...]  everything else (run after the stack is installed)
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
STACK = ("torch", "torchvision", "timm")  # the packages that require torch
GPU_ONLY = ("triton", "cuda-bindings")  # never loaded by torch on the CPU


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project(extras: list[str]) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(req for extra in extras for req in optional.get(extra, []))]


def stack() -> list[str]:
    """The project's own pins of the torch stack."""
    return [req for req in _project([]) if _name(req) in STACK]


def rest(extras: list[str]) -> list[str]:
    """The project's other requirements and the stack's, without the stack itself or ``GPU_ONLY``."""
    needed = [req for req in _project(extras) if _name(req) not in STACK]
    for package in STACK:
        for req in importlib.metadata.requires(package) or []:
            if "extra ==" not in req and _name(req) not in STACK and _name(req) not in GPU_ONLY:
                needed.append(req.split(";")[0].strip())
    return list(dict.fromkeys(needed))


if __name__ == "__main__":
    command, *arguments = sys.argv[1:] or ["stack"]
    print("\n".join(stack() if command == "stack" else rest(arguments)))
