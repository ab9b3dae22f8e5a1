"""Engine settings shared by the API (``app.settings``) and the workers (``workers.settings``).

Every field is settable from the environment as ``INSID3_<FIELD>`` (e.g. ``INSID3_MODEL_SIZE``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Self

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigurationError
from core.specs import DEFAULT_MODEL_SIZE


class EngineSettings(BaseSettings):
    """What builds an ``Insid3`` engine."""

    model_config = SettingsConfigDict(env_prefix="INSID3_", extra="ignore")

    model_size: str = DEFAULT_MODEL_SIZE
    weights: str | None = None  # a .pth/.safetensors path, or a hub name ("hub:<weights tag>")
    weights_tag: str = "lvd1689m"
    pretrain_dir: Path = Path("pretrain")
    image_size: int = 1024
    svd_components: int | None = None  # None: the backbone's documented default
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    precision: str = "auto"  # auto (fp32 on CPU, bf16 on CUDA), fp32, bf16, fp16
    basis_cache_dir: Path = Path.home() / ".cache" / "insid3" / "basis"
    cache_bytes: int = 1 << 30  # in-process LRU of reference features
    max_pixels: int = 64_000_000  # decoded pixel limit per image (decompression bombs)
    runtime: str = "auto"  # encoder runtime: auto, torch, onnxruntime, openvino (core.runtimes)

    @classmethod
    def from_args(cls, args: argparse.Namespace, names: Iterable[str]) -> Self:
        """The environment's settings with the command-line options that were given on top."""
        overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid settings:\n{exc}") from None

    def engine_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``Insid3.build``."""
        return {
            "model_size": self.model_size,
            "weights": self.weights,
            "weights_tag": self.weights_tag,
            "pretrain_dir": self.pretrain_dir,
            "image_size": self.image_size,
            "svd_components": self.svd_components,
            "device": self.device,
            "precision": self.precision,
            "basis_cache_dir": self.basis_cache_dir,
            "cache_bytes": self.cache_bytes,
            "max_pixels": self.max_pixels,
            "runtime": self.runtime,
        }
