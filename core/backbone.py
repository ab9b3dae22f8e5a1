"""The DINOv3 backbone: timm's implementation, loaded from official-format weights.

Sources, in order: an explicit ``weights`` path (official ``.pth`` or ``.safetensors``), a hub
name (``hub`` or ``hub:<tag>``, needs internet), else the official file name in ``pretrain/``.
timm's ``*_dinov3_qkvb`` variants are bit-identical to the official code; the plain variants
silently drop the q/v biases, so a checkpoint with non-zero q/v biases is never loaded into a
model without them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from core.artifacts import artifact_key, file_sha256, read_verified, store
from core.errors import ArchitectureMismatchError, CorruptWeightsError, WeightsNotFoundError
from core.specs import SPECS, BackboneSpec

OBTAIN_WEIGHTS_HELP = (
    "Request the DINOv3 weights at https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ "
    "and put the official .pth file in the pretrain/ folder (or pass --weights PATH); with internet "
    "access, --weights hub downloads them from the Hugging Face hub through timm."
)


class Backbone:
    """A DINOv3 backbone identified by its weights; the torch module is built on first use.

    An engine that serves an exported encoder from a warm cache never builds it: the restart
    skips reading the weights and the process does not hold a second copy of them.
    """

    def __init__(self, spec: BackboneSpec, weights_id: str, build: Callable[[], torch.nn.Module],
                 model: torch.nn.Module | None = None) -> None:
        self.spec = spec
        self.weights_id = weights_id  # sha256 prefix of the weights file (or the hub name)
        self._build = build
        self._model = model
        self._lock = threading.Lock()

    @property
    def model(self) -> torch.nn.Module:
        """The torch module in eval mode, built on first use."""
        return self.load()

    def load(self) -> torch.nn.Module:
        """Build the torch module unless it is built (weights errors surface here) and return it."""
        with self._lock:
            if self._model is None:
                self._model = self._build().eval()
            return self._model

    def release(self) -> None:
        """Drop the torch module; it is built again if it is used again."""
        with self._lock:
            self._model = None

    @property
    def model_id(self) -> str:
        return f"dinov3_{self.spec.arch}-{self.weights_id}"


def create_model(spec: BackboneSpec) -> torch.nn.Module:
    """An un-initialised-from-weights timm DINOv3 model of ``spec``'s architecture."""
    import timm  # here, not at import: timm (and torchvision, torch._dynamo) cost a warm exported restart ~1.4 s

    return timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **spec.timm_kwargs)


def resolve_weights_path(spec: BackboneSpec, weights_tag: str, pretrain_dir: Path) -> Path:
    """The official weights file of ``spec`` in ``pretrain_dir``, or a clear error saying where we looked."""
    if weights_tag not in spec.official_files:
        known = ", ".join(spec.official_files) or "none (test-only size: pass --weights PATH)"
        raise WeightsNotFoundError(
            f"no {weights_tag!r} weights exist for model size {spec.size!r}; available: {known}"
        )
    file_name = spec.official_files[weights_tag]
    candidate = pretrain_dir / file_name
    if candidate.is_file():
        return candidate
    # Accept any official file of this arch/tag whatever its hash suffix.
    stem = file_name.rsplit("-", 1)[0]
    matches = sorted(pretrain_dir.glob(f"{stem}-*.pth")) if pretrain_dir.is_dir() else []
    if matches:
        return matches[0]
    raise WeightsNotFoundError(
        f"weights for model size {spec.size!r} not found: looked for {candidate.resolve()}. "
        + OBTAIN_WEIGHTS_HELP
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read an official-format state dict from ``.pth`` or ``.safetensors``, with clear errors."""
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {str(path)!r} does not exist. " + OBTAIN_WEIGHTS_HELP)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's unpickler raises anything from IndexError to UnpicklingError
        raise CorruptWeightsError(f"weights file {str(path)!r} is corrupt or not a checkpoint: {exc}") from None
    state = _unwrap(state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptWeightsError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return state


def _unwrap(state: object) -> object:
    """Training checkpoints nest the backbone under a key and a prefix; hub files do not."""
    for key in ("teacher", "model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if isinstance(state, dict) and any(str(k).startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    return state


def describe_checkpoint(state: dict[str, torch.Tensor]) -> tuple[int, int, str]:
    """(embed_dim, depth, ffn kind) read off a DINOv3 state dict's shapes."""
    if "cls_token" not in state or "blocks.0.norm1.weight" not in state:
        raise CorruptWeightsError("the checkpoint is not a DINOv3 ViT state dict (no cls_token / blocks)")
    embed_dim = int(state["cls_token"].shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    ffn = "swiglu" if "blocks.0.mlp.w1.weight" in state else "mlp"
    return embed_dim, depth, ffn


def check_architecture(spec: BackboneSpec, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a checkpoint of another architecture, naming both."""
    found = describe_checkpoint(state)
    if found == (spec.embed_dim, spec.depth, spec.ffn):
        return
    other = next((s.size for s in SPECS.values() if (s.embed_dim, s.depth, s.ffn) == found), None)
    found_text = f"embed_dim={found[0]}, depth={found[1]}, ffn={found[2]}"
    wanted_text = f"embed_dim={spec.embed_dim}, depth={spec.depth}, ffn={spec.ffn}"
    what = f"a {other!r} checkpoint ({found_text})" if other else f"an unknown architecture ({found_text})"
    hint = f"; pass --model-size {other}" if other else ""
    raise ArchitectureMismatchError(
        f"{source} holds {what}, but model size {spec.size!r} needs {wanted_text}{hint}"
    )


def _check_qv_biases(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """The trap of timm's plain variants: q/v biases dropped without an error."""
    bias = state.get("blocks.0.attn.qkv.bias")
    has_param = any(name.endswith("attn.q_bias") for name, _ in model.named_parameters())
    if bias is not None and not has_param:
        q_bias, _, v_bias = bias.chunk(3)
        if q_bias.abs().max() > 0 or v_bias.abs().max() > 0:
            raise ArchitectureMismatchError(
                f"{source} has non-zero q/v biases but the model variant has none; use a *_qkvb variant"
            )


def load_state_dict_into(model: torch.nn.Module, spec: BackboneSpec, state: dict[str, torch.Tensor],
                         source: str) -> None:
    """Filter an official state dict to timm's names and load it strictly."""
    from timm.models.eva import checkpoint_filter_fn

    check_architecture(spec, state, source)
    _check_qv_biases(model, state, source)
    filtered = checkpoint_filter_fn(state, model)
    try:
        model.load_state_dict(filtered, strict=True)
    except RuntimeError as exc:
        raise ArchitectureMismatchError(f"{source} does not fit model size {spec.size!r}: {exc}") from None


def weights_sha256(path: Path, memo_dir: Path | None) -> str:
    """sha256 of a weights file, memoised per (path, inode, size, mtime) so a restart does not re-hash
    (a verified file, ``core.artifacts``: a memo that does not verify is re-hashed)."""
    stat = path.stat()
    made_from = {"artifact": "weights-sha256", "path": str(path.resolve()), "inode": stat.st_ino,
                 "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    memo = memo_dir / f"weights-{artifact_key(made_from)}.sha256" if memo_dir is not None else None
    remembered = read_verified(memo, made_from) if memo is not None else None
    if remembered is not None:
        return remembered[0].decode()
    value = file_sha256(path)
    if memo is not None:
        with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
            store(memo, made_from, lambda scratch: scratch.write_text(value))
    return value


def load_backbone(spec: BackboneSpec, weights: str | None, weights_tag: str, pretrain_dir: Path,
                  hash_cache_dir: Path | None = None, device: torch.device | None = None) -> Backbone:
    """The backbone of ``spec`` identified by its weights, built (in eval mode, on ``device``) on first use.

    A missing weights file is an error at once; a corrupt or mismatched one when the model is built.
    ``hash_cache_dir`` memoises the weights' sha256 per (path, size, mtime) across restarts.
    """
    device = device or torch.device("cpu")
    if weights is not None and (weights == "hub" or weights.startswith("hub:")):
        tag = weights.partition(":")[2] or weights_tag
        name = f"{spec.timm_name}.{tag}"

        def from_hub() -> torch.nn.Module:
            import timm

            try:
                model = timm.create_model(name, pretrained=True, num_classes=0, **spec.timm_kwargs)
            except Exception as exc:  # network, missing tag, license gate: all user-facing
                raise WeightsNotFoundError(
                    f"could not load {name!r} from the hub: {exc}. " + OBTAIN_WEIGHTS_HELP) from None
            return model.to(device)

        return Backbone(spec, f"hub-{tag}", from_hub, from_hub())  # downloaded now: network errors at start
    path = Path(weights) if weights is not None else resolve_weights_path(spec, weights_tag, pretrain_dir)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {str(path)!r} does not exist. " + OBTAIN_WEIGHTS_HELP)

    def from_file() -> torch.nn.Module:
        model = create_model(spec)
        load_state_dict_into(model, spec, read_state_dict(path), f"weights file {str(path)!r}")
        return model.to(device)

    return Backbone(spec, weights_sha256(path, hash_cache_dir)[:12], from_file)


def extract_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Last-layer patch tokens after the final norm, channel-first: (B, C, H/16, W/16)."""
    return model.forward_intermediates(
        images, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True
    )[0]
