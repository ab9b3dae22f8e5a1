"""``upsample_mask`` in bands gives exactly the bits of one full-resolution ``F.interpolate``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.pipeline import UPSAMPLE_BAND_PIXELS, _upsample_banded, upsample_mask


def _reference(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    resized = F.interpolate(mask.float()[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return resized[0, 0] > 0.5


def test_banded_upsampling_is_bit_identical_on_random_masks_and_sizes() -> None:
    # Outputs with height + width <= 128 take another ATen kernel (vectorised, other roundings);
    # the banded path only serves outputs over UPSAMPLE_BAND_PIXELS, so they are not drawn here.
    generator = torch.Generator().manual_seed(0)
    mismatches = []
    for _ in range(1000):
        in_h, in_w = torch.randint(1, 40, (2,), generator=generator).tolist()
        out_h = int(torch.randint(1, 150, (1,), generator=generator))
        out_w = int(torch.randint(max(1, 129 - out_h), 200, (1,), generator=generator))
        mask = torch.rand(in_h, in_w, generator=generator) < torch.rand(1, generator=generator)
        band = int(torch.randint(1, 4000, (1,), generator=generator))
        if not torch.equal(_upsample_banded(mask, out_h, out_w, band), _reference(mask, out_h, out_w)):
            mismatches.append((in_h, in_w, out_h, out_w, band))
    assert not mismatches


@pytest.mark.parametrize(("size", "out"), [((64, 64), (1024, 1024)), ((1024, 1024), (1500, 2100)),
                                           ((1024, 1024), (3, 2500)), ((1024, 1024), (1024, 1024)),
                                           ((37, 53), (2047, 911))])
def test_large_outputs_match_f_interpolate(size: tuple[int, int], out: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(1)
    blobs = torch.rand(16, 16, generator=generator) < 0.4
    mask = _reference(blobs, *size) ^ (torch.rand(*size, generator=generator) < 0.05)
    result = upsample_mask(mask, *out)
    assert result.dtype == torch.bool and result.shape == out
    assert torch.equal(result, _reference(mask, *out))
    if out[0] * out[1] > UPSAMPLE_BAND_PIXELS:
        assert torch.equal(_upsample_banded(mask, *out, band_pixels=out[1] * 7), result)
