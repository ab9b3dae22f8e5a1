"""Backbone loading: official-format checkpoints, and a clear error for everything that goes wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.backbone import load_backbone, read_state_dict, resolve_weights_path
from core.checkpoint import make_checkpoint, official_shapes, random_state_dict
from core.engine import Insid3
from core.errors import (
    ArchitectureMismatchError,
    ConfigurationError,
    CorruptWeightsError,
    WeightsNotFoundError,
)
from core.specs import SPECS, get_spec, resolve_svd_components


def test_random_checkpoints_have_the_official_layout_of_the_parity_files(parity_dir: Path) -> None:
    for size, name in (("tiny", "vits16"), ("tiny_plus", "vits16plus")):
        official = torch.load(parity_dir / "backbone" / f"tiny_{name}.pth", weights_only=True)
        generated = random_state_dict(size, seed=3)
        assert list(generated) == list(official)
        assert {k: tuple(v.shape) for k, v in generated.items()} == {k: tuple(v.shape) for k, v in official.items()}
        assert torch.equal(generated["rope_embed.periods"], official["rope_embed.periods"])
        assert torch.equal(generated["blocks.0.attn.qkv.bias_mask"], official["blocks.0.attn.qkv.bias_mask"])


def test_random_checkpoints_are_deterministic_per_seed() -> None:
    first, again, other = (random_state_dict("tiny", seed) for seed in (1, 1, 2))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])


def test_official_shapes_of_real_sizes_match_the_released_architectures() -> None:
    large = official_shapes(SPECS["large"])
    assert large["blocks.23.mlp.fc1.weight"] == (4096, 1024)
    assert "blocks.24.norm1.weight" not in large
    assert official_shapes(SPECS["small_plus"])["blocks.0.mlp.w1.weight"] == (1536, 384)
    assert official_shapes(SPECS["huge_plus"])["blocks.31.mlp.w3.weight"] == (1280, 5120)


def test_safetensors_and_pth_load_to_the_same_model(tmp_path: Path) -> None:
    pth = make_checkpoint("tiny", tmp_path / "w.pth", seed=4)
    safetensors = make_checkpoint("tiny", tmp_path / "w.safetensors", seed=4)
    spec = get_spec("tiny")
    a = load_backbone(spec, str(pth), "lvd1689m", tmp_path).model
    b = load_backbone(spec, str(safetensors), "lvd1689m", tmp_path).model
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_official_file_names_are_found_in_pretrain(tmp_path: Path) -> None:
    name = SPECS["small"].official_files["lvd1689m"]
    (tmp_path / name).write_bytes(b"")
    assert resolve_weights_path(SPECS["small"], "lvd1689m", tmp_path) == tmp_path / name


def test_missing_weights_say_where_they_were_looked_for_and_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as error:
        Insid3.build(model_size="base", pretrain_dir=tmp_path, device="cpu")
    assert "dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth" in error.value.detail
    assert str(tmp_path) in error.value.detail
    assert "--weights" in error.value.detail


def test_sat_weights_exist_only_for_large_and_7b(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="sat493m"):
        resolve_weights_path(SPECS["base"], "sat493m", tmp_path)
    assert "sat493m" in SPECS["large"].official_files and "sat493m" in SPECS["7b"].official_files


def test_a_corrupt_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CorruptWeightsError, match="corrupt"):
        read_state_dict(broken)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(make_checkpoint("tiny", tmp_path / "ok.pth").read_bytes()[:5000])
    with pytest.raises(CorruptWeightsError):
        read_state_dict(truncated)


def test_a_checkpoint_of_another_architecture_names_both(tmp_path: Path) -> None:
    path = make_checkpoint("tiny_plus", tmp_path / "plus.pth")
    with pytest.raises(ArchitectureMismatchError) as error:
        Insid3.build(model_size="tiny", weights=path, device="cpu", basis_cache_dir=None)
    assert "'tiny_plus'" in error.value.detail and "'tiny'" in error.value.detail


def test_qv_biases_are_never_silently_dropped(tmp_path: Path) -> None:
    """The plain timm variants have no q/v bias: loading non-zero biases into one must fail."""
    from dataclasses import replace

    from core.backbone import create_model as create
    from core.backbone import load_state_dict_into

    spec = replace(get_spec("tiny"), timm_name="vit_small_patch16_dinov3")
    state = random_state_dict("tiny")
    with pytest.raises(ArchitectureMismatchError, match="q/v biases"):
        load_state_dict_into(create(spec), spec, state, "test")
    for key in [k for k in state if k.endswith("qkv.bias")]:
        state[key] = torch.zeros_like(state[key])
    load_state_dict_into(create(spec), spec, state, "test")  # zero biases are safe to drop


def test_svd_components_defaults_leave_most_channels_and_impossible_values_fail() -> None:
    for spec in SPECS.values():
        assert 0 < resolve_svd_components(spec, None) < spec.embed_dim / 2
    with pytest.raises(ConfigurationError, match="384 channels"):
        resolve_svd_components(SPECS["small"], 500)
    with pytest.raises(ConfigurationError):
        resolve_svd_components(SPECS["large"], 1024)
    assert resolve_svd_components(SPECS["large"], 500) == 500


def test_unknown_model_size_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="large"):
        get_spec("gigantic")


@pytest.mark.parametrize("model_size", ["small", "small_plus", "base", "large"])
def test_released_architectures_load_official_layout_checkpoints_strictly(model_size: str) -> None:
    """The spec table, the checkpoint layout and timm's model agree for the real sizes."""
    from core.backbone import create_model, load_state_dict_into

    spec = get_spec(model_size)
    model = create_model(spec)
    load_state_dict_into(model, spec, random_state_dict(model_size, seed=0), model_size)
    with torch.no_grad():
        features = model.eval().forward_intermediates(
            torch.randn(1, 3, 32, 48), indices=1, norm=True, output_fmt="NCHW", intermediates_only=True)[0]
    assert features.shape == (1, spec.embed_dim, 2, 3)
