"""The engine's options, declared once: ``EngineOptions`` (fields, defaults, validation, help text).

Everything else derives from it: ``Insid3.build(options, **fields)``; ``EngineSettings``, the one
settings family (extended by the API's and the workers' settings), where every field is settable
from the environment as ``INSID3_<FIELD>`` (e.g. ``INSID3_MODEL_SIZE``); and, through
``add_arguments``, a command-line option ``--<field-name>`` with the same name, default and help in
every command (options given on the command line win over the environment).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.defaults import (
    DEFAULT_BASIS_CACHE,
    DEFAULT_CACHE_BYTES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MERGE_THRESHOLD,
    DEFAULT_MODEL_SIZE,
    DEFAULT_TAU,
)
from core.errors import ConfigurationError
from core.specs import MODEL_SIZES, PATCH_SIZE

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Runtime = Literal["auto", "torch", "onnxruntime", "openvino"]  # core.runtimes


class CommandParser(argparse.ArgumentParser):
    """The parser of every command and sub-command: an option is only ever its full name, so
    ``--api-keys X`` is never read as an abbreviation of ``--api-keys-file``. Sub-parsers inherit it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


class EngineOptions(BaseModel):
    """What builds an ``Insid3`` engine."""

    model_config = ConfigDict(extra="forbid")

    model_size: str = Field(DEFAULT_MODEL_SIZE, description="DINOv3 backbone",
                            json_schema_extra={"choices": MODEL_SIZES})
    weights: str | None = Field(None, description="a .pth/.safetensors file, or hub[:TAG]; "
                                                  "unset: the official file in --pretrain-dir")
    weights_tag: str = Field("lvd1689m", description="official weights: lvd1689m, or sat493m for large and 7b")
    pretrain_dir: Path = Field(Path("pretrain"), description="where official weights files are looked for")
    image_size: int = Field(DEFAULT_IMAGE_SIZE, gt=0, description="images are squashed to this square "
                                                                  "(a multiple of 16)")
    svd_components: int | None = Field(None, ge=0, description="positional subspace size; unset: per backbone")
    tau: float = Field(DEFAULT_TAU, ge=0, le=1, description="clustering threshold")
    merge_threshold: float = Field(DEFAULT_MERGE_THRESHOLD, ge=0, le=1, description="cluster aggregation threshold")
    crf: bool = Field(False, description="refine mask boundaries with a dense CRF (extra 'crf')")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Precision = Field("auto", description="encoder precision (auto: bf16 on CUDA, fp32 on the CPU; "
                                                     "bf16 on the CPU is approximate, fast with AVX512-BF16 or AMX)")
    basis_cache_dir: Path | None = Field(DEFAULT_BASIS_CACHE, description="positional-basis and exported-encoder "
                                                                          "cache (unset: none)")
    cache_bytes: int = Field(DEFAULT_CACHE_BYTES, ge=0, description="in-process LRU of reference features, bytes")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="decoded pixels per image (413 beyond)")
    runtime: Runtime = Field("auto", description="encoder runtime (auto: measured once per CPU, model and size, "
                                                 "the fastest exact one on the CPU; torch on CUDA)")
    encoder_batch_size: int | None = Field(None, ge=1, description="images per encoder call; unset: 8 on CUDA, "
                                                                   "1 on the CPU (measured faster there)")
    resize_to_original: bool = Field(True, description="masks at the target's size (else image_size square)",
                                     json_schema_extra={"option": False})  # the library's, never a command's

    @field_validator("weights", mode="before")
    @classmethod
    def _weights_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    @field_validator("image_size")
    @classmethod
    def _whole_patches(cls, value: int) -> int:
        if value < PATCH_SIZE or value % PATCH_SIZE:
            raise ValueError(f"image_size must be a positive multiple of {PATCH_SIZE}, got {value}")
        return value

    @classmethod
    def of(cls, options: EngineOptions | None = None, **fields: object) -> EngineOptions:
        """``options`` (default: every default; a settings object: its engine fields) with ``fields``
        on top, validated; ``ConfigurationError`` naming every invalid or unknown field."""
        base = {} if options is None else options.model_dump(include=set(cls.model_fields))
        try:
            return cls(**{**base, **fields})
        except ValidationError as exc:
            raise ConfigurationError(f"invalid engine options:\n{exc}") from None


class EngineSettings(BaseSettings, EngineOptions):
    """The engine's options from the environment (``INSID3_<FIELD>``) and the command line."""

    model_config = SettingsConfigDict(env_prefix="INSID3_", extra="ignore")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
        """``--<field-name>`` options for ``names`` (default: every scalar field), each defaulting to
        None so that an option not given leaves the environment's value (or the field's default)."""
        for name in names or cls.model_fields:
            kwargs = _argument(name, cls.model_fields[name])
            if kwargs is not None:
                parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """The environment's settings with the command-line options that were given on top."""
        overrides = {name: value for name, value in vars(args).items()
                     if name in cls.model_fields and value is not None}
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid settings:\n{exc}") from None


def _argument(name: str, field: FieldInfo) -> dict[str, Any] | None:
    """argparse keyword arguments for one field; None for fields without a scalar option."""
    kind = field.annotation
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    default = "per process" if field.default_factory else "unset" if field.default is None else field.default
    help_text = f"{field.description} (default: {default}; env INSID3_{name.upper()})"
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("option") is False:
        return None
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction, "help": help_text}
    if typing.get_origin(kind) is Literal:
        return {"choices": typing.get_args(kind), "help": help_text}
    if kind in (int, float, str, Path):
        return {"type": kind, "choices": extra.get("choices"), "help": help_text}
    return None
