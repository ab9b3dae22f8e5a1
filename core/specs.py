"""The DINOv3 ViT backbones INSID3 can run on: architecture, official file names, defaults.

One table drives everything: the timm constructor, the checks on a checkpoint's shapes, the
official file names looked for in ``pretrain/``, and the default ``svd_components``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import ConfigurationError

PATCH_SIZE = 16
N_STORAGE_TOKENS = 4


@dataclass(frozen=True)
class BackboneSpec:
    """One DINOv3 ViT/16 architecture."""

    size: str
    arch: str  # official name, e.g. "vitl16"
    timm_name: str  # timm variant that keeps the q/v biases (see shared/parity README, 1.4)
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str  # "mlp" or "swiglu"
    svd_components: int  # default size of the positional subspace (leaves most channels)
    official_files: dict[str, str] = field(default_factory=dict)  # weights tag -> file name
    timm_kwargs: dict[str, object] = field(default_factory=dict)


_SPECS = [
    BackboneSpec(
        "small", "vits16", "vit_small_patch16_dinov3_qkvb", 384, 12, 6, "mlp", 96,
        {"lvd1689m": "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"},
    ),
    BackboneSpec(
        "small_plus", "vits16plus", "vit_small_plus_patch16_dinov3_qkvb", 384, 12, 6, "swiglu", 96,
        {"lvd1689m": "dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth"},
    ),
    BackboneSpec(
        "base", "vitb16", "vit_base_patch16_dinov3_qkvb", 768, 12, 12, "mlp", 192,
        {"lvd1689m": "dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth"},
    ),
    BackboneSpec(
        "large", "vitl16", "vit_large_patch16_dinov3_qkvb", 1024, 24, 16, "mlp", 500,
        {
            "lvd1689m": "dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth",
            "sat493m": "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth",
        },
    ),
    BackboneSpec(
        "huge_plus", "vith16plus", "vit_huge_plus_patch16_dinov3_qkvb", 1280, 32, 20, "swiglu", 600,
        {"lvd1689m": "dinov3_vith16plus_pretrain_lvd1689m-7c1da9a5.pth"},
    ),
    BackboneSpec(
        "7b", "vit7b16", "vit_7b_patch16_dinov3", 4096, 40, 32, "swiglu", 2000,
        {
            "lvd1689m": "dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth",
            "sat493m": "dinov3_vit7b16_pretrain_sat493m-a6675841.pth",
        },
    ),
    # Shrunk ViT-S/16 and ViT-S+/16 (the shapes of shared/parity/backbone) for fast tests.
    BackboneSpec(
        "tiny", "vits16", "vit_small_patch16_dinov3_qkvb", 96, 5, 3, "mlp", 24,
        timm_kwargs={"embed_dim": 96, "depth": 5, "num_heads": 3},
    ),
    BackboneSpec(
        "tiny_plus", "vits16plus", "vit_small_plus_patch16_dinov3_qkvb", 128, 5, 2, "swiglu", 32,
        timm_kwargs={"embed_dim": 128, "depth": 5, "num_heads": 2},
    ),
]

SPECS: dict[str, BackboneSpec] = {spec.size: spec for spec in _SPECS}
MODEL_SIZES: tuple[str, ...] = tuple(SPECS)


def get_spec(model_size: str) -> BackboneSpec:
    """The spec of ``model_size``; a clear error listing the valid sizes otherwise."""
    try:
        return SPECS[model_size]
    except KeyError:
        raise ConfigurationError(
            f"unknown model size {model_size!r}; choose one of {', '.join(MODEL_SIZES)}"
        ) from None


def resolve_svd_components(spec: BackboneSpec, svd_components: int | None) -> int:
    """The positional-subspace size to use: the backbone default, or a validated override."""
    if svd_components is None:
        return spec.svd_components
    if not 0 <= svd_components < spec.embed_dim:
        raise ConfigurationError(
            f"svd_components={svd_components} is impossible for {spec.size} ({spec.arch}) with "
            f"{spec.embed_dim} channels: it must be in [0, {spec.embed_dim - 1}] "
            f"(default {spec.svd_components}); the official 500 is meant for ViT-L's 1024 channels"
        )
    return svd_components
