"""Optional dense-CRF refinement of the mask boundary (extra ``crf``: pydensecrf2).

Mirrors the official refinement: only a 10-pixel band around the upsampled mask's boundary is
re-decided by a fully-connected CRF (Gaussian + bilateral kernels scaled with the image size);
the inside is kept and the outside stays background. The official code uses a GPU Frank-Wolfe
CRF that is not on PyPI; pydensecrf2 runs the same kernels with mean-field inference.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import MissingExtraError

BAND_PX = 10
P_CORE = 0.95
ITERATIONS = 5


def require_crf() -> None:
    """Fail clearly when the ``crf`` extra is not installed."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "CRF refinement needs the 'crf' extra: pip install 'insid3-serve[crf]' (pydensecrf2)"
        ) from None


def refine_mask(pixels: np.ndarray, mask: torch.Tensor) -> torch.Tensor:
    """Refine an (S, S) bool ``mask`` of the (S, S, 3) uint8 ``pixels`` it was predicted on."""
    require_crf()
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    height, width = mask.shape
    scale = width / 512.0
    radius = max(1, BAND_PX // 2)
    ys, xs = torch.meshgrid(torch.arange(-radius, radius + 1), torch.arange(-radius, radius + 1), indexing="ij")
    disk = ((xs**2 + ys**2) <= radius * radius).float()[None, None]
    coverage = F.conv2d(mask.cpu().float()[None, None], disk, padding=radius)[0, 0]
    inside = coverage == disk.sum()
    outside = coverage == 0
    band = ~inside & ~outside

    foreground = np.full((height, width), 0.5, dtype=np.float32)
    foreground[inside.numpy()] = P_CORE
    foreground[outside.numpy()] = 1.0 - P_CORE
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(unary_from_softmax(np.stack([1.0 - foreground, foreground])))
    crf.addPairwiseGaussian(sxy=4.0 * scale, compat=3.0)
    rgb = np.array(pixels, dtype=np.uint8, order="C")  # pydensecrf needs a writable buffer
    crf.addPairwiseBilateral(sxy=12.0 * scale, srgb=0.03 * 255.0, rgbim=rgb, compat=20.0)
    refined = np.argmax(np.asarray(crf.inference(ITERATIONS)), axis=0).reshape(height, width).astype(bool)

    result = mask.cpu().clone()
    result[band] = torch.from_numpy(refined)[band]
    result[inside] = True
    result[outside] = False
    return result.to(mask.device)
