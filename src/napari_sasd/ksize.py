"""A motif size suggested from the data, napari-free.

The motif must hold a whole defect with its halo: too small and one defect
becomes several copies of a part of it. The defects' own scale is the scale
at which a scale-normalised Laplacian of Gaussian answers most strongly on
the image's strongest blobs (Lindeberg's automatic scale selection, the
principle of skimage's ``blob_log``); the motif spans a fixed multiple of it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

__all__ = ["suggest_kernel_size"]

#: Motif side per unit of the selected LoG scale (a Gaussian blob of std s
#: answers most at scale s; its visible extent with halo is about 5 s).
#: Calibrated on the synthetic generator's motifs (k = 8-20).
SIZE_PER_SIGMA = 9.0
#: How many of the strongest blobs (per scale) vote.
TOP_BLOBS = 20


def suggest_kernel_size(
    image: ArrayLike, mask: ArrayLike | None = None, k_min: int = 5, k_max: int | None = None
) -> int:
    """Suggest a motif size ``k`` for an image: the dominant blob scale times a factor.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` image (flattened for a scan), or ``(C, H, W)`` (channels averaged).
    mask : array_like of bool, optional
        ``(H, W)`` True where observed; others are filled with the median.
    k_min, k_max : int
        Range of sizes to choose from; ``k_max`` defaults to a quarter of the
        shorter side.

    Returns
    -------
    int
        Suggested odd ``k``.
    """
    z = np.asarray(image, np.float64)
    if z.ndim == 3:
        z = np.nanmean(z, axis=0)
    if z.ndim != 2 or min(z.shape) < 4 * k_min:
        raise ValueError(
            f"suggest_kernel_size needs an image of at least {4 * k_min} px a side, got {z.shape}"
        )
    ok = np.isfinite(z)
    if mask is not None:
        ok &= np.asarray(mask, bool)
    if not ok.any():
        raise ValueError("suggest_kernel_size: no observed pixel")
    z = np.where(ok, z - np.median(z[ok]), 0.0)
    k_max = int(k_max or min(z.shape) // 4)
    # Below one pixel the Laplacian answers to the pixel noise, not to blobs.
    lo = max(1.0, k_min / SIZE_PER_SIGMA)
    sigmas = np.geomspace(lo, max(lo, k_max / SIZE_PER_SIGMA), 24)
    score = []
    for s in sigmas:
        resp = np.abs(s**2 * ndimage.gaussian_laplace(z, s))
        # The strongest blobs at this scale: local maxima, one per blob.
        peaks = resp[(resp == ndimage.maximum_filter(resp, size=max(3, int(2 * s) | 1))) & ok]
        top = np.sort(peaks)[-TOP_BLOBS:]
        score.append(float(top.mean()) if top.size else 0.0)
    best = float(sigmas[int(np.argmax(score))])
    k = round(SIZE_PER_SIGMA * best)
    k = min(max(k, k_min), k_max)
    return k | 1
