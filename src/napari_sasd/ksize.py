"""A motif size suggested from the data, napari-free.

What ``k`` means: the side of a window that holds one defect, about the box a
person draws around it. The defect's *scale* ``s`` is measured (below); the
box a person draws spans about 6 ``s`` (labelled WSe2 scans), the generator's
true ``k`` 6-10 ``s`` (its motifs fade out gently to their border, and lobed
ones are measured by their lobes). The analysis scores about the same with
``k`` from half a box to a box and worse from 1.25 box on (WSe2, F1 against
the labels); on the generator best from 0.75 to 1 true ``k``, while half of
it splits copies in two. ``k = 6 s`` keeps inside both ranges
(``benchmarks/bench_ksize.py``).

How ``s`` is estimated: defects are sparse places where the image departs
from its surroundings, of either sign and with any inner structure (lobes, a
dark core in a bright halo). So the departure's magnitude ``|z - background|``
is taken first: every defect becomes a bright blob whatever its polarity,
while noise and textures become an even grey. Before that, an atomic lattice
(sharp peaks of the spectrum) is notched out, and scan-line scars are marked
(:func:`napari_sasd.scars.mark_scars`) and filled from the lines above and
below; streaks that are left are opened away (a vertical grey opening keeps
only what is taller than a few lines). Blobs of the departure map are sought
in a scale space: the scale-normalised determinant of the Hessian (Lindeberg's
automatic scale selection: a Gaussian blob of std ``s`` answers most at scale
``s``; unlike the Laplacian it does not answer to lines). A blob counts when it
stands out among the local maxima at its scale (robust z-score: the bulk of
the maxima are noise, lattice remnants and streak ends; defects are the
outliers), and once (not again inside a more significant one). The scale is
the *mode* of the counted blobs' scales (each vote weighs up to twice, by its
significance), the size most defects share; not the scale of the strongest
blobs, which on real scans are the rare large ones.

Everything runs on an image pyramid (each octave of scales on the map halved
in size), in well under a second on 1024 x 1024.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

__all__ = ["SizeEvidence", "kernel_size_evidence", "suggest_kernel_size"]

#: Motif side per unit of the selected blob scale (see the module's text).
SIZE_PER_SIGMA = 6.0
#: Robust z-score (among a scale's local maxima) a blob must reach to vote.
SIGNIFICANCE = 8.0
#: A vote weighs its significance over the threshold, at most this much: a
#: noise outlier just past the threshold counts less than a clear defect,
#: while a few very strong blobs cannot outvote many typical ones.
VOTE_CAP = 2.0
#: Fewest significant blobs for a mode; with fewer, the threshold is halved.
MIN_BLOBS = 4
#: Most channels examined apart (more are averaged in this many groups).
MAX_CHANNELS = 8
#: Scales per octave of the scale space.
PER_OCTAVE = 4
#: Width (octaves) of the kernel that smooths the histogram of blob scales.
MODE_BANDWIDTH = 0.2
#: Thickest scan-line streak (lines) removed before blobs are sought.
STREAK_LINES = 4
#: Shortest scar marked (pixels along the line): longer than a small
#: defect's core, which mark_scars' default (8) also marks.
SCAR_LENGTH = 16
#: Least ``det / trace**2`` of the Hessian at a blob (1/4 when round; 0.1:
#: axes up to ~7:1): a piece of a streak is a long thin blob.
ISOTROPY = 0.1
#: Spectral peak over its neighbourhood's mean power that counts as a lattice.
LATTICE_PEAK = 20.0
#: Each octave of scales is computed on the map block-averaged by 2**octave,
#: so that the scale in those pixels is at least this.
_SIGMA_REL = 1.5
#: Most candidate blobs considered (the most significant) when counting.
_MAX_CANDIDATES = 3000


@dataclass(frozen=True)
class SizeEvidence:
    """What :func:`kernel_size_evidence` found.

    Attributes
    ----------
    k : int
        Suggested odd motif size.
    sigma : float
        The selected blob scale (pixels), ``k ~ SIZE_PER_SIGMA * sigma``.
    blobs : ndarray
        ``(M, 4)``: row, column, scale and significance of each blob that
        voted (significant and not inside a more significant one).
    significance : float
        The z-score threshold the voters passed (lowered when few blobs
        reach :data:`SIGNIFICANCE`).
    """

    k: int
    sigma: float
    blobs: np.ndarray
    significance: float


def suggest_kernel_size(
    image: ArrayLike, mask: ArrayLike | None = None, k_min: int = 5, k_max: int | None = None
) -> int:
    """Suggest a motif size ``k``: the typical defect's extent.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` image (flattened for a scan), or ``(C, H, W)`` (each
        channel's departures, in its own noise units, are averaged).
    mask : array_like of bool, optional
        ``(H, W)`` True where observed; others (and scan-line scars, marked
        here) are filled from the lines above and below.
    k_min, k_max : int
        Range of sizes to choose from; ``k_max`` defaults to a quarter of the
        shorter side.

    Returns
    -------
    int
        Suggested odd ``k``.

    Raises
    ------
    ValueError
        Image not 2-D/3-D, smaller than ``4 * k_min`` a side, or nothing observed.
    """
    return kernel_size_evidence(image, mask, k_min, k_max).k


def kernel_size_evidence(
    image: ArrayLike,
    mask: ArrayLike | None = None,
    k_min: int = 5,
    k_max: int | None = None,
    *,
    scars: bool = True,
) -> SizeEvidence:
    """Like :func:`suggest_kernel_size`, with the blobs that voted.

    Parameters
    ----------
    image, mask, k_min, k_max
        See :func:`suggest_kernel_size`.
    scars : bool
        Leave out scan-line scars (:func:`napari_sasd.scars.mark_scars`, run
        on the image binned along the lines, for speed) besides ``mask``.

    Returns
    -------
    SizeEvidence
    """
    z = np.asarray(image, np.float64)
    if z.ndim == 2:
        z = z[None]
    if z.ndim != 3 or min(z.shape[-2:]) < 4 * k_min:
        raise ValueError(
            f"suggest_kernel_size needs an (H, W) image or (C, H, W) stack of at least "
            f"{4 * k_min} px a side, got {np.shape(image)}"
        )
    if len(z) > MAX_CHANNELS:
        # A spectroscopy cube's neighbouring energies look alike: averaged in
        # MAX_CHANNELS groups, the cost stays that of a few images.
        z = np.stack([g.mean(axis=0) for g in np.array_split(z, MAX_CHANNELS)])
    ok = np.isfinite(z).all(axis=0)
    if mask is not None:
        m = np.asarray(mask, bool)
        if m.shape != ok.shape:
            raise ValueError(f"mask shape {m.shape} does not match the image's {ok.shape}")
        ok &= m
    if ok.sum() < 16:
        raise ValueError("suggest_kernel_size: no observed pixel to suggest a size from")
    if scars:
        ok &= ~_scars(z, ok)
    k_max = int(k_max or min(z.shape[-2:]) // 4)
    k_min = min(k_min, k_max)
    lo, hi = k_min / SIZE_PER_SIGMA, k_max / SIZE_PER_SIGMA
    # One scale step beyond each end, so a blob at the range's end can be a
    # maximum over scale (the result is clipped to the range afterwards).
    step = 2.0 ** (1.0 / PER_OCTAVE)
    n = int(np.ceil(np.log2(hi / lo) * PER_OCTAVE)) + 3
    sigmas = lo / step * step ** np.arange(n)
    dep = _departures(z, ok, bg=2.0 * sigmas[-1])
    cand = _blobs(dep, ok, sigmas)
    blobs, thr = _voters(cand)
    if len(blobs):
        sigma = _mode(blobs[:, 2], np.minimum(blobs[:, 3] / thr, VOTE_CAP))
    else:
        # A flat image: nothing stands out; the smallest size wastes least.
        sigma = lo
    k = min(max(round(SIZE_PER_SIGMA * sigma), k_min), k_max) | 1
    if k > k_max > k_min:
        k -= 2  # odd, and not past an even k_max
    return SizeEvidence(k=int(k), sigma=float(sigma), blobs=blobs, significance=thr)


def _scars(z: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Scan-line scars, marked on the image binned by ``b`` along the lines
    (to about 256 columns: a scar is a run along the line, so it survives
    the binning, and marking costs ``1/b``), spread back to full width."""
    from .scars import ScarOptions, mark_scars

    h, w = z.shape[-2:]
    b = max(1, w // 256)
    opt = ScarOptions(min_length=max(2, -(-SCAR_LENGTH // b)))
    wb = w // b
    zb = np.where(ok, z, np.nan)[..., : wb * b].reshape(*z.shape[:-1], wb, b).mean(axis=-1)
    okb = np.isfinite(zb).all(axis=0)
    marks = mark_scars(np.where(okb, zb, np.nanmedian(zb)), opt, mask=okb)
    out = np.zeros((h, w), bool)
    out[:, : wb * b] = np.repeat(marks, b, axis=1)
    out[:, wb * b :] = marks[:, -1:]
    return out


def _departures(z: np.ndarray, ok: np.ndarray, bg: float) -> np.ndarray:
    """``|z - background|`` per channel in robust noise units, averaged, with
    unobserved pixels filled and the lattice notched out first.

    The background is a running mean over about ``bg`` pixels (two box
    filters: their cost does not grow with the size): slower than any defect
    in the range, so a defect's departure is measured against its
    surroundings, not against the whole image's tilt or terraces."""
    out = np.zeros(z.shape[-2:])
    size = max(3, int(2 * bg) | 1)
    for frame in z:
        f = _without_lattice(_fill(np.where(ok, frame, np.nan), ok))
        back = ndimage.uniform_filter(ndimage.uniform_filter(f, size, mode="reflect"), size)
        d = np.abs(f - back)
        scale = float(np.median(d[ok]))
        out += d / scale if scale > 0 else d
    return out / len(z)


def _without_lattice(f: np.ndarray) -> np.ndarray:
    """``f`` without the sharp peaks of its spectrum: an atomic lattice (and a
    JPEG's block grid) is a few Bragg peaks, a defect is broadband, so
    zeroing the peaks (with two bins around them, where a lattice whose
    period is not a whole fraction of the image leaks) leaves the defects. A
    cheap notch filter, not :mod:`napari_sasd.lattice`'s fit (seconds on a
    large scan): only the size of what is left matters here. A bin is a
    peak where its power exceeds ``LATTICE_PEAK`` times the mean of its
    9 x 9 neighbourhood (noise power is exponential: one bin in 10^8 would
    pass)."""
    spec = np.fft.rfft2(f - f.mean())
    power = np.abs(spec) ** 2
    local = ndimage.uniform_filter(power, 9, mode="wrap")
    peak = power > LATTICE_PEAK * local
    # Slow undulations are the background, not a lattice: a lattice shows
    # several periods across the image.
    fy = np.abs(np.fft.fftfreq(f.shape[0]))[:, None] * f.shape[0]
    fx = np.fft.rfftfreq(f.shape[1])[None, :] * f.shape[1]
    peak &= np.hypot(fy, fx) >= 4
    if not peak.any():
        return f
    peak = ndimage.binary_dilation(peak, iterations=2)
    spec[peak] = 0.0
    return np.fft.irfft2(spec, s=f.shape) + f.mean()


def _open_vertical(e: np.ndarray, length: int) -> np.ndarray:
    """Grey opening along the columns: removes bright structures thinner than
    ``length`` lines (scan-line streaks: tip noise lasts a few lines) and
    keeps taller ones (defects) with their shape."""
    if length < 2:
        return e
    return _run(_run(e, length, np.minimum, 0), length, np.maximum, 0)


def _run(a: np.ndarray, length: int, op: np.ufunc, axis: int) -> np.ndarray:
    """Running min or max (``op``) over ``length`` samples centred along
    ``axis``, edges clamped: shifted copies (scipy's minimum_filter1d is an
    order of magnitude slower for these short runs on large images)."""
    a = np.moveaxis(a, axis, 0)
    out = a.copy()
    lo = length // 2
    for off in range(-lo, length - lo):
        if off > 0:
            op(out[:-off], a[off:], out=out[:-off])
            op(out[-off:], a[-1:], out=out[-off:])
        elif off < 0:
            op(out[-off:], a[:off], out=out[-off:])
            op(out[:-off], a[:1], out=out[:-off])
    return np.moveaxis(out, 0, axis)


def _fill(f: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Unobserved pixels filled along their column from the nearest observed
    lines (scars run along the lines, so the column crosses them)."""
    if ok.all():
        return f
    f = f.copy()
    rows = np.arange(f.shape[0])
    fallback = float(np.median(f[ok]))
    for c in np.flatnonzero(~ok.all(axis=0)):
        o = ok[:, c]
        f[~o, c] = np.interp(rows[~o], rows[o], f[o, c]) if o.any() else fallback
    return f


def _blobs(e: np.ndarray, ok: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Bright blobs of ``e`` that are maxima over space and scale.

    Returns ``(M, 4)``: row, column, scale, z-score among the scale's maxima.
    Each octave is computed on ``e`` block-averaged by ``d = 2**octave`` (the
    scale in those pixels stays >= 1.5, where a Gaussian is still sampled
    well, and second differences approximate the derivatives). Three scales
    are held at a time (float32: this is a size estimate, not a measurement)."""
    pyramid: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    step = float(sigmas[1] / sigmas[0])

    def level(s: float) -> tuple[int, np.ndarray, np.ndarray]:
        d = int(2 ** max(0, np.floor(np.log2(s / _SIGMA_REL))))
        # Streaks up to STREAK_LINES thick are opened away where the blobs
        # are tall enough to survive it (2 s + 1 lines).
        length = int(min(STREAK_LINES + 1, max(3, 2 * (s // 1) + 1)))
        if (d, length) not in pyramid:
            pyramid[d, length] = (
                _block_mean(_open_vertical(e, length), d).astype(np.float32),
                _block_mean(ok.astype(np.float32), d) > 0.5,
            )
        return d, *pyramid[d, length]

    def response(s: float) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        d, ed, okd = level(s)
        sr = s / d
        g = ndimage.gaussian_filter(ed, sr, mode="nearest")
        gyy = np.zeros_like(g)
        gxx = np.zeros_like(g)
        gxy = np.zeros_like(g)
        gyy[1:-1] = g[2:] + g[:-2] - 2 * g[1:-1]
        gxx[:, 1:-1] = g[:, 2:] + g[:, :-2] - 2 * g[:, 1:-1]
        gxy[1:-1, 1:-1] = (g[2:, 2:] - g[2:, :-2] - g[:-2, 2:] + g[:-2, :-2]) / 4
        # Scale-normalised determinant of the Hessian; bright blobs only (a
        # negative trace: a quiet patch of the departure map is no defect),
        # round enough (a piece of a streak is long and thin).
        r = gxx * gyy
        r -= gxy * gxy
        tr = gxx + gyy
        r[(tr >= 0) | (r < ISOTROPY * tr * tr)] = 0.0
        r *= sr**4
        return d, okd, r, _run(_run(r, 3, np.maximum, 0), 3, np.maximum, 1)

    rows = []
    window = [response(sigmas[0]), response(sigmas[1])]
    for i in range(1, len(sigmas) - 1):
        window.append(response(sigmas[i + 1]))
        d, okd, r, mx = window[1]
        sr = sigmas[i] / d
        peak = (r == mx) & (r > 0) & okd
        b = int(np.ceil(sr))  # a blob cut by the border is measured too small
        peak[:b] = peak[-b:] = False
        peak[:, :b] = peak[:, -b:] = False
        y, x = np.nonzero(peak)
        if y.size >= 3:
            # Significance among this scale's maxima: sqrt of the determinant
            # is in image units; their bulk (noise, lattice sites, streak
            # ends) sets the yardstick, defects are the outliers.
            q = np.sqrt(r[y, x].astype(np.float64))
            med = np.median(q)
            mad = 1.4826 * np.median(np.abs(q - med))
            zs = (q - med) / mad if mad > 0 else np.zeros_like(q)
            keep = zs > SIGNIFICANCE / 4
            y, x, zs = y[keep], x[keep], zs[keep]
            # Maxima over scale too: not below the neighbouring scales'
            # responses (3 x 3 neighbourhood), looked up at their resolution.
            fy, fx = y * d + (d - 1) / 2, x * d + (d - 1) / 2
            v = r[y, x]
            side = []
            for dj, _, _, mj in (window[0], window[2]):
                yj = np.clip(np.round((fy - (dj - 1) / 2) / dj).astype(int), 0, mj.shape[0] - 1)
                xj = np.clip(np.round((fx - (dj - 1) / 2) / dj).astype(int), 0, mj.shape[1] - 1)
                side.append(mj[yj, xj])
            keep = (v >= side[0]) & (v >= side[1])
            lo_, hi_, v = side[0][keep], side[1][keep], v[keep]
            # The scale between the grid's steps: a parabola through the
            # three responses, in log scale.
            curv = lo_ - 2 * v + hi_
            off = np.where(curv < 0, 0.5 * (lo_ - hi_) / np.where(curv < 0, curv, -1), 0.0)
            scale = sigmas[i] * step ** np.clip(off, -0.5, 0.5)
            rows.append(np.column_stack([fy[keep], fx[keep], scale, zs[keep]]))
        window.pop(0)
    return np.concatenate(rows) if rows else np.zeros((0, 4))


def _block_mean(a: np.ndarray, d: int) -> np.ndarray:
    if d == 1:
        return a
    h, w = (a.shape[0] // d) * d, (a.shape[1] // d) * d
    return a[:h, :w].reshape(h // d, d, w // d, d).mean(axis=(1, 3))


def _voters(cand: np.ndarray) -> tuple[np.ndarray, float]:
    """The significant blobs, one per defect: a blob inside a more
    significant one (within twice the larger scale: its lobes, its lattice
    sites, the same defect at another scale) does not vote again."""
    thr = SIGNIFICANCE
    while True:
        c = cand[cand[:, 3] > thr]
        if len(c) >= MIN_BLOBS or thr <= SIGNIFICANCE / 4:
            break
        thr /= 2
    c = c[np.argsort(-c[:, 3])][:_MAX_CANDIDATES]
    kept: list[int] = []
    for i in range(len(c)):
        if kept:
            k = c[kept]
            dist = np.hypot(k[:, 0] - c[i, 0], k[:, 1] - c[i, 1])
            if np.any(dist < 2 * np.maximum(k[:, 2], c[i, 2])):
                continue
        kept.append(i)
    return c[kept], float(thr)


def _mode(sigmas: np.ndarray, w: np.ndarray) -> float:
    """The most common scale: peak of the smoothed, weighted histogram of
    log2 scales, refined as the median of the scales within half an octave
    of it."""
    ls = np.log2(sigmas)
    grid = np.linspace(ls.min() - 0.5, ls.max() + 0.5, 200)
    dens = np.exp(-0.5 * ((grid[:, None] - ls[None]) / MODE_BANDWIDTH) ** 2) @ w
    peak = grid[int(np.argmax(dens))]
    near = ls[np.abs(ls - peak) <= 0.5]
    return float(2.0 ** np.median(near))
