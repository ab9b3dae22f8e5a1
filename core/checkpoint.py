"""Random DINOv3 checkpoints in the official key layout (``insid3 make-checkpoint``).

Real weights cannot be downloaded everywhere (CI, air-gapped machines); tests, demos and
benchmarks use these instead. The keys, shapes and buffers are those of the released ``.pth``
files, so the same loading code path runs; the values are drawn deterministically from ``seed``
with the scales of shared/parity (peaked attention so that RoPE matters).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from core.errors import ConfigurationError
from core.specs import N_STORAGE_TOKENS, PATCH_SIZE, BackboneSpec, get_spec

ROPE_BASE = 100.0
MAX_GENERATED_PARAMS = 1_000_000_000


def _ffn_shapes(spec: BackboneSpec) -> dict[str, tuple[int, ...]]:
    dim = spec.embed_dim
    if spec.ffn == "mlp":
        hidden = 4 * dim
        return {"fc1.weight": (hidden, dim), "fc1.bias": (hidden,), "fc2.weight": (dim, hidden), "fc2.bias": (dim,)}
    hidden = int(dim * 6 * 2 / 3)
    hidden = (hidden + 7) // 8 * 8
    return {
        "w1.weight": (hidden, dim), "w1.bias": (hidden,),
        "w2.weight": (hidden, dim), "w2.bias": (hidden,),
        "w3.weight": (dim, hidden), "w3.bias": (dim,),
    }


def official_shapes(spec: BackboneSpec) -> dict[str, tuple[int, ...]]:
    """Every key of an official DINOv3 checkpoint of ``spec`` with its shape, in file order."""
    dim = spec.embed_dim
    head_dim = dim // spec.num_heads
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "storage_tokens": (1, N_STORAGE_TOKENS, dim),
        "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, 3, PATCH_SIZE, PATCH_SIZE),
        "patch_embed.proj.bias": (dim,),
        "rope_embed.periods": (head_dim // 4,),
    }
    for block in range(spec.depth):
        prefix = f"blocks.{block}."
        shapes |= {
            prefix + "norm1.weight": (dim,), prefix + "norm1.bias": (dim,),
            prefix + "attn.qkv.weight": (3 * dim, dim), prefix + "attn.qkv.bias": (3 * dim,),
            prefix + "attn.qkv.bias_mask": (3 * dim,),
            prefix + "attn.proj.weight": (dim, dim), prefix + "attn.proj.bias": (dim,),
            prefix + "ls1.gamma": (dim,),
            prefix + "norm2.weight": (dim,), prefix + "norm2.bias": (dim,),
        }
        shapes |= {prefix + "mlp." + key: shape for key, shape in _ffn_shapes(spec).items()}
        shapes[prefix + "ls2.gamma"] = (dim,)
    shapes |= {"norm.weight": (dim,), "norm.bias": (dim,)}
    return shapes


def _draw(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if key.endswith("rope_embed.periods"):
        quarter = shape[0]
        return torch.tensor([ROPE_BASE ** (2 * i / (2 * quarter)) for i in range(quarter)], dtype=torch.float32)
    if key.endswith("bias_mask"):
        third = shape[0] // 3
        return torch.cat([torch.ones(third), torch.zeros(third), torch.ones(third)])
    if key.endswith("gamma"):
        return torch.empty(shape).uniform_(0.1, 1.0, generator=generator)
    if key in ("cls_token", "storage_tokens", "mask_token"):
        return torch.randn(shape, generator=generator)
    if "norm" in key and key.endswith(".weight"):
        return 1.0 + 0.1 * torch.randn(shape, generator=generator)
    if key.endswith(".bias"):
        return 0.1 * torch.randn(shape, generator=generator)
    fan_in = math.prod(shape[1:])
    scale = 1.5 if key.endswith("qkv.weight") else 1.0
    return scale * torch.randn(shape, generator=generator) / math.sqrt(fan_in)


def random_state_dict(model_size: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A deterministic random state dict of ``model_size`` in the official layout."""
    spec = get_spec(model_size)
    if spec.size == "7b":
        raise ConfigurationError("the 7b model is too large to generate random weights for")
    shapes = official_shapes(spec)
    if sum(math.prod(s) for s in shapes.values()) > MAX_GENERATED_PARAMS:
        raise ConfigurationError(f"model size {model_size!r} is too large to generate random weights for")
    generator = torch.Generator().manual_seed(seed)
    return {key: _draw(key, shape, generator).float() for key, shape in shapes.items()}


def make_checkpoint(model_size: str, out: Path, seed: int = 0) -> Path:
    """Write a random official-format checkpoint to ``out`` (``.pth`` or ``.safetensors``)."""
    state = random_state_dict(model_size, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out))
    else:
        torch.save(state, out)
    return out
