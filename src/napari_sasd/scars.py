"""Scan-line scars of scanned-probe images, napari-free.

A scar is a piece of a scan line (one to a few lines, part of their length)
where the tip changed for a moment: a horizontal streak that plane and
line-offset flattening leave in place, and that a motif learns if it is left
in the fit. Gwyddion's *Mark Scars* is the reference users know: a pixel is
a scar where it stands out from the lines above and below it by more than a
threshold, over a minimum length along the line. This module marks them so
the solver can leave them out (a mask: the solver ignores masked pixels).

Hand-written (a median filter and a few morphology calls) because no
maintained Python package offers scar marking outside a full SPM suite.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

__all__ = ["ScarOptions", "defect_cores", "has_scars", "mark_scars"]


@dataclass(frozen=True)
class ScarOptions:
    """Settings of :func:`mark_scars`.

    Attributes
    ----------
    max_width : int
        Thickest scar, in scan lines.
    high, low : float
        Hysteresis thresholds, in robust standard deviations of the
        departures from the neighbouring lines: a scar holds at least one
        pixel past ``high`` and extends along the pixels past ``low`` with
        the same sign.
    min_length : int
        Shortest scar along the line, in pixels (shorter runs are noise or
        the edge of a defect, not a tip change). A defect's core wider than
        this, much brighter or darker than its neighbour lines, is marked
        too; on measured scans that cost less than streaks left in the fit.

    The defaults were measured on the labelled WSe2 scans
    (``benchmarks/bench_real.py``): against 3.5 / 2.0 / 16 px they mark
    about 8 % of the pixels instead of 3 %, and the median F1 went from 0.66
    to 0.73 (0.05 to 0.61 on the streakiest scan).
    """

    max_width: int = 3
    high: float = 2.5
    low: float = 1.5
    min_length: int = 8


def _departure(z: np.ndarray, width: int) -> np.ndarray:
    """Each pixel's departure from the median of the lines ``width`` to
    ``2 width`` above and below it: its own line and ``width - 1`` lines on
    each side are left out, so a scar up to ``width`` lines thick does not
    hide itself in its own reference. (Measured against the Gwyddion-like
    test of the two adjacent lines only: that one missed the soft-edged,
    multi-line streaks of the 100 nm WSe2 scan, F1 0.08 instead of 0.61.)"""
    h = z.shape[0]
    offsets = [sgn * off for off in range(width, 2 * width + 1) for sgn in (-1, 1)]
    # The reference lines side by side on a last axis, then one in-place sort
    # there: numpy's nanmedian over a stacked first axis goes through masked
    # arrays and fresh copies, 4.5 of the 4.6 s that marking a 1024^2 scan
    # took (this: about 0.3 s). NaN sorts last, so the median of a pixel's
    # ``n`` finite references sits at ``(n - 1) // 2`` and ``n // 2``.
    ref = np.empty((*z.shape, len(offsets)))
    for i, off in enumerate(offsets):
        ref[..., i] = z[np.clip(np.arange(h) + off, 0, h - 1)]
    ref.sort(axis=-1)
    n = np.isfinite(ref).sum(axis=-1)
    last = len(offsets) - 1
    lo = np.take_along_axis(ref, np.clip((n - 1) // 2, 0, last)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(ref, np.clip(n // 2, 0, last)[..., None], axis=-1)[..., 0]
    # Unmeasured stretches (a partial grid, NaN) have no reference: NaN there.
    return z - np.where(n > 0, 0.5 * (lo + hi), np.nan)


def mark_scars(
    image: ArrayLike, options: ScarOptions | None = None, mask: ArrayLike | None = None
) -> np.ndarray:
    """Mark scan-line scars: pieces of lines that stand out from their neighbours.

    Rows are scan lines (napari's and Nanonis' convention for an unrotated
    scan). Best on a flattened image (:func:`napari_sasd.flatten.flatten`).

    Parameters
    ----------
    image : array_like
        ``(H, W)`` image, or ``(C, H, W)`` stack (a pixel is a scar if it is
        one in any channel). NaN pixels are never scars.
    options : ScarOptions, optional
        Thresholds and sizes; default :class:`ScarOptions()`.
    mask : array_like of bool, optional
        ``(H, W)`` True where pixels are observed; others are ignored.

    Returns
    -------
    ndarray of bool
        ``(H, W)``, True on scar pixels.
    """
    opt = options or ScarOptions()
    z = np.asarray(image, dtype=np.float64)
    if z.ndim == 2:
        z = z[None]
    if z.ndim != 3 or min(z.shape[-2:]) < 3:
        raise ValueError(f"mark_scars needs an (H, W) image or (C, H, W) stack, got {z.shape}")
    if opt.max_width < 1 or opt.min_length < 1 or not 0 < opt.low <= opt.high:
        raise ValueError(
            f"bad scar options {opt}: need max_width, min_length >= 1, 0 < low <= high"
        )
    obs = np.ones(z.shape[-2:], bool) if mask is None else np.asarray(mask, bool)
    out = np.zeros(z.shape[-2:], bool)
    line = np.ones((1, opt.min_length), bool)
    for frame in z:
        f = np.where(obs, frame, np.nan)
        d = _departure(f, opt.max_width)
        ok = np.isfinite(d)
        if not ok.any():
            continue
        sigma = 1.4826 * float(np.median(np.abs(d[ok])))
        if sigma <= 0:
            continue
        d = np.where(ok, d / sigma, 0.0)
        for s in (1.0, -1.0):
            weak = s * d > opt.low
            # Runs along the line only (a 1 x L opening), then hysteresis:
            # keep the runs that hold a strong pixel.
            weak = ndimage.binary_opening(weak, structure=line)
            strong = weak & (s * d > opt.high)
            lab, n = ndimage.label(weak, structure=[[0, 0, 0], [1, 1, 1], [0, 0, 0]])
            if n:
                keep = np.zeros(n + 1, bool)
                keep[np.unique(lab[strong])] = True
                keep[0] = False
                out |= keep[lab]
    return out & obs


def defect_cores(
    image: ArrayLike,
    kernel_size: int | tuple[int, int],
    mask: ArrayLike | None = None,
    z: float = 3.0,
) -> np.ndarray:
    """Blobs at the motif's scale that span many scan lines: defects, not scars.

    A defect's core departs from the lines a few rows away as a scar does,
    so :func:`mark_scars` marks part of it, and the fit then loses the
    defect's centre (on the labelled WSe2 scans, box centres were marked 1.5
    to 2 times as often as the rest). A scar is at most a few lines thick; a
    defect spans about a motif. So: a difference of Gaussians at the motif's
    scale (sigma ``k / 4`` against ``k``), past ``z`` robust standard
    deviations, whose connected pieces are at least half a motif tall, is a
    defect core; :func:`napari_sasd.pipeline.analyse` never marks it as scar.
    A streak one to three lines thick, smoothed over ``k / 4`` lines, falls
    below the threshold or stays thin, or is more than three times as long
    as it is tall.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` flattened image, or ``(C, H, W)`` (the channels' mean is used).
    kernel_size : int or (int, int)
        The motif size ``k`` (or ``(kh, kw)``).
    mask : array_like of bool, optional
        ``(H, W)`` True where observed.
    z : float
        Threshold in robust standard deviations of the difference of Gaussians.

    Returns
    -------
    ndarray of bool
        ``(H, W)``, True on defect cores.
    """
    f = np.asarray(image, dtype=np.float64)
    if f.ndim == 3:
        with warnings.catch_warnings():
            # Pixels no channel measured (a partial grid) stay NaN: unobserved.
            warnings.simplefilter("ignore", RuntimeWarning)
            f = np.nanmean(f, axis=0)
    kh, kw = (kernel_size, kernel_size) if np.ndim(kernel_size) == 0 else kernel_size
    obs = np.isfinite(f) if mask is None else np.asarray(mask, bool) & np.isfinite(f)
    if not obs.any():
        return np.zeros(f.shape, bool)
    f = np.where(obs, f, np.median(f[obs]))
    sig = np.array([kh, kw], float)
    d = ndimage.gaussian_filter(f, sig / 4) - ndimage.gaussian_filter(f, sig)
    med = float(np.median(d[obs]))
    s = 1.4826 * float(np.median(np.abs(d[obs] - med)))
    if s <= 0:
        return np.zeros(f.shape, bool)
    lab, n = ndimage.label(np.abs(d - med) > z * s)
    tall = np.zeros(n + 1, bool)
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        # Tall, and not a long streak that the smoothing made a few lines thick.
        tall[i] = h >= kh / 2 and w <= 3 * h
    return tall[lab] & obs


def has_scars(scars: np.ndarray, min_fraction: float = 0.002) -> bool:
    """Whether a scar mask is worth applying: at least ``min_fraction`` of
    the pixels (a few lines' worth on a 256^2 scan)."""
    return bool(np.mean(scars) >= min_fraction)
