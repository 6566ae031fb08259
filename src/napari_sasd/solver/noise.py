"""Robust noise level of an image, for the default lambda."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def noise_sigma(y: np.ndarray, omega: np.ndarray | None = None) -> float:
    """Robust noise std of ``(C, H, W)`` data: the median absolute response to
    a 3x3 kernel that cancels planes (Immerkaer 1996), over observed pixels.

    Hand-written because skimage's ``estimate_sigma`` needs PyWavelets, a
    dependency this one-liner does not justify. The median ignores the few
    pixels where sparse defects respond strongly.
    """
    kern = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    vals = []
    for c in range(y.shape[0]):
        resp = ndimage.convolve(y[c].astype(np.float64), kern, mode="nearest")[1:-1, 1:-1]
        if omega is not None:
            ok = ndimage.minimum_filter(omega[c], size=3)[1:-1, 1:-1] > 0
            resp = resp[ok]
        if resp.size:
            vals.append(np.median(np.abs(resp)) / 0.6745 / 6.0)
    return float(np.mean(vals)) if vals else 0.0
