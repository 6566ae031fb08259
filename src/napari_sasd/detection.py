"""One point per defect copy, with a threshold calibrated to the noise, napari-free.

A real defect's activation is a small cluster (sub-pixel position, slight
shape changes), so peaks of the raw activation map give several points per
defect. Smoothing each map by its motif's autocorrelation gives
``c_n = a_n (*) (a_n (*) x_n)`` correlated back: the model's own matched
filter output, whose peak over a copy is the copy's total amplitude (the
motif has unit norm) wherever its cluster is, one peak per copy.

Its threshold is a significance decision: the same matched filter applied to
the residual (data minus model) has a robust standard deviation ``sigma_n``
-- the noise a copy of motif ``n`` must stand out from, scan-line streaks and
correlated noise included -- and a copy counts when its amplitude exceeds
``z * sigma_n``. Where the residual is locally larger (a large defect the
motifs fit only in part, a streaky stretch of the scan), the local RMS of
that matched filter over a few motif sizes replaces ``sigma_n``: the copies
that only patch a misfit there do not count.

The residual alone is not a fixed yardstick: it shrinks as lambda falls and
the model takes in the scan's own background (lattice texture, line noise),
so the same copies grew "more significant" at a lower lambda (on the
labelled WSe2 scans, at half the automatic lambda, from 35 to 76 points on
one scan, precision 0.77 to 0.43). Given the analysed data, the noise is at
least the robust spread of the motif's matched filter on the data itself:
how strongly the motif answers the scan's background, which the model
cannot change; a median over the image ignores the sparse defects.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage, signal
from scipy.spatial import cKDTree

from .metrics import robust_std
from .peaks import Defects, find_defects
from .rims import Rims, find_rims
from .spans import FAINT_MARGIN, LineSpans, counted

__all__ = [
    "DEFAULT_SIGNIFICANCE",
    "CopyMaps",
    "copy_maps",
    "detect_copies",
    "merge_motifs",
]

#: Default significance: a copy's amplitude in units of the matched filter's
#: noise ("4 sigma"). On Gaussian noise, peaks past 4 sigma of a field
#: smoothed over a motif are expected well under once per 1024^2 image. On the
#: labelled WSe2 scans, with the noise as :func:`copy_maps` sets it, the
#: median F1 was 0.80 / 0.81 / 0.82 at 3.5 / 4 / 4.5, and 0.83 / 0.82 / 0.82
#: at half the automatic lambda (``benchmarks/bench_real.py``). Against the
#: residual alone it was 0.77 / 0.81 / 0.77 at 4 / 5 / 6, swung from 0.41 to
#: 0.77 on one scan, and fell to 0.55 at half the lambda.
DEFAULT_SIGNIFICANCE = 4.0
#: The background level under the noise (:func:`copy_maps` with ``data``):
#: copies past this many of its sigmas are taken out of the data before it is
#: measured, in this many rounds (the first on the whole data). Fixed, not
#: the user's threshold, so that re-detecting at another one keeps the levels.
#: On the WSe2 scans (before the edge terms), 3 rounds gave a median F1 of
#: 0.80 at the automatic lambda and 0.81 at half of it (mean 0.794 / 0.796).
#: One round (the whole data) did as well there, but a dense synthetic scene
#: kept 1 copy in 8; with 4 the level sank back towards the residual's on one
#: scan (F1 0.75 to 0.59 on the 100 nm WSe2 scan).
FLOOR_SIGNIFICANCE = 4.0
FLOOR_ROUNDS = 3
#: Smallest share of a motif's energy a copy's noise is scaled for (a copy
#: whose motif is almost all unobserved is held at sqrt(1 / MIN_SHARE) times).
MIN_SHARE = 0.05
#: Fewest observed pixels in an edge band for its noise to be measured.
EDGE_MIN_PIXELS = 64
#: Side of the window of the local noise level, in motif sizes.
LOCAL_WINDOW = 4


@dataclass
class CopyMaps:
    """Smoothed activation maps and the noise they are judged against.

    Attributes
    ----------
    maps : ndarray
        ``(N, H, W)``: each motif's activations smoothed by its
        autocorrelation; a copy's peak is its amplitude (image units).
    noise : ndarray
        ``(N,)``: robust std of each motif's matched filter on the residual.
    local_noise : ndarray
        ``(N, H, W)``: the noise of a copy's amplitude at each pixel, at
        least ``noise``: higher where the matched filter's residual is, near
        a scan edge that is noisier than the middle, and where part of the
        motif falls outside the image or on unobserved pixels
        (:func:`copy_maps`).
    radius : int
        Smallest distance between two copies of one motif, in pixels.
    rims : Rims or None
        Large defects' rims (:mod:`napari_sasd.rims`), where several copies
        are one defect; None: not sought (no data given).
    spans : LineSpans or None
        The data to measure how many scan lines a copy spans
        (:mod:`napari_sasd.spans`): a faint copy that spans many counts just
        under the threshold; None: no data given, the threshold alone.
    """

    maps: np.ndarray
    noise: np.ndarray
    local_noise: np.ndarray
    radius: int
    rims: Rims | None = None
    spans: LineSpans | None = None

    def thresholds(self, z: float = DEFAULT_SIGNIFICANCE) -> np.ndarray:
        """Per-motif amplitude thresholds (image units) at significance ``z``."""
        return float(z) * self.noise

    def significance(self, defects: Defects) -> np.ndarray:
        """Each defect's amplitude in units of its motif's noise where it sits."""
        if len(defects) == 0:
            return np.zeros(0)
        h, w = self.local_noise.shape[1:]
        r = np.clip(np.round(defects.positions[:, 0]).astype(int), 0, h - 1)
        c = np.clip(np.round(defects.positions[:, 1]).astype(int), 0, w - 1)
        return defects.amplitude / np.maximum(self.local_noise[defects.motif, r, c], 1e-300)


def _as_nckk(kernels: np.ndarray) -> np.ndarray:
    k = np.asarray(kernels, np.float64)
    return k[:, None] if k.ndim == 3 else k


def _matched_filter(r: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` data correlated with a ``(C, kh, kw)`` motif, summed over channels."""
    return sum(signal.correlate(r[c], a[c], mode="same", method="fft") for c in range(len(r)))


def _edge_factor(mf: np.ndarray, obs: np.ndarray, k: tuple[int, int]) -> np.ndarray:
    """How much noisier the matched filter is near each edge of the scan.

    A scan's edges are its least steady part: the first lines of a frame
    (creep), each line's start (the tip settling) and its end (the
    turnaround). Copies there came out "significant" against the whole
    scan's noise: on the labelled WSe2 scans most false points near the
    threshold lay within a motif size of an edge. For each edge, the robust
    std of ``mf`` (scaled for the cut motif) over bands at depths
    ``[0, k/4)``, ``[k/4, k/2)`` and ``[k/2, k)`` against the whole image's
    gives a factor >= 1 there (bands, not single lines: the filter is smooth
    over a motif, so a line holds few independent values). Where a scan's
    edges are as steady as its middle the factor stays about 1.
    """
    h, w = mf.shape
    out = np.ones((h, w))
    whole = robust_std(mf[obs])
    if whole <= 0:
        return out
    for axis, depth in ((0, k[0]), (1, k[1])):
        size = (h, w)[axis]
        cuts = sorted({0, -(-depth // 4), -(-depth // 2), depth})
        for lo, hi in itertools.pairwise(cuts):
            if hi > size // 2:
                break
            for band in (slice(lo, hi), slice(size - hi, size - lo)):
                sel = (band, slice(None)) if axis == 0 else (slice(None), band)
                ok = obs[sel]
                if ok.sum() < EDGE_MIN_PIXELS:
                    continue
                ratio = robust_std(mf[sel][ok]) / whole
                out[sel] = np.maximum(out[sel], ratio)
    return out


def _background_floor(
    x: np.ndarray,
    a: np.ndarray,
    y: np.ndarray,
    obs: np.ndarray,
    maps: np.ndarray,
    noise: np.ndarray,
    local: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The noise levels held at least at the data's own background level.

    That level is the robust std of each motif's matched filter on the data
    with its significant copies taken out: the scan's background (texture,
    line noise, unfitted kinds) as the motif sees it, whatever lambda the
    model used. The copies taken out are those past FLOOR_SIGNIFICANCE against
    the level found so far, from the whole data down; FLOOR_ROUNDS rounds.
    Taking them out matters where copies are dense: their own peaks would
    otherwise make the data's spread (a synthetic scene at 1.5 copies per
    motif area lost 9 in 10 of its copies to it).
    """
    yc = np.where(obs, y - np.median(y[:, obs], axis=1)[:, None, None], 0.0)
    keep = np.zeros(x.shape, bool)
    noise_r, local_r = noise, local
    for _ in range(FLOOR_ROUNDS):
        back = yc.copy()
        if keep.any():
            for n in range(len(x)):
                xs = np.where(keep[n], x[n], 0.0)
                for c in range(len(back)):
                    back[c] -= signal.fftconvolve(xs, a[n, c], mode="same")
        noise = np.array(
            [max(noise_r[n], robust_std(_matched_filter(back, a[n])[obs])) for n in range(len(x))]
        )
        local = np.maximum(local_r, noise[:, None, None])
        keep = maps >= FLOOR_SIGNIFICANCE * local
    return noise, local


def copy_maps(
    activations: ArrayLike,
    kernels: ArrayLike,
    residual: ArrayLike,
    mask: ArrayLike | None = None,
    data: ArrayLike | None = None,
) -> CopyMaps:
    """Activation maps smoothed to one peak per copy, and their noise levels.

    Parameters
    ----------
    activations : array_like
        ``(N, H, W)`` (``SolveResult.activations``).
    kernels : array_like
        ``(N, kh, kw)`` or ``(N, C, kh, kw)`` unit-norm motifs.
    residual : array_like
        ``(H, W)`` or ``(C, H, W)``: the analysed data minus the
        reconstruction, in image units (NaN where unobserved).
    mask : array_like of bool, optional
        ``(H, W)`` True where observed; the noise is measured there only.
    data : array_like, optional
        The analysed data (shaped like ``residual``): the noise is then at
        least the robust std of each motif's matched filter on it, a level
        lambda does not move (module docstring), and the large defects'
        rims are sought in it (:func:`napari_sasd.rims.find_rims`).

    Returns
    -------
    CopyMaps
    """
    x = np.asarray(activations, np.float64)
    a = _as_nckk(kernels)
    r = np.asarray(residual, np.float64)
    if r.ndim == 2:
        r = r[None]
    if x.ndim != 3 or len(a) != len(x) or r.shape[1:] != x.shape[1:] or r.shape[0] != a.shape[1]:
        raise ValueError(
            f"copy_maps: activations {x.shape}, kernels {a.shape} and residual {r.shape} "
            "do not agree (N maps of H x W, N motifs of C channels, C x H x W residual)"
        )
    y = None if data is None else np.asarray(data, np.float64)
    if y is not None:
        y = y[None] if y.ndim == 2 else y
        if y.shape != r.shape:
            raise ValueError(f"copy_maps: data {y.shape} must be shaped like residual {r.shape}")
    obs = np.isfinite(r).all(0)
    if y is not None:
        obs &= np.isfinite(y).all(0)
    if mask is not None:
        obs &= np.asarray(mask, bool)
    r = np.where(obs, r, 0.0)
    maps = np.empty_like(x)
    noise = np.empty(len(x))
    local = np.empty_like(x)
    kh, kw = a.shape[-2:]
    # A copy whose motif is partly outside the image or on unobserved pixels
    # (scars) has its amplitude fitted on the observed share of the motif
    # only: its noise is the matched filter's over the square root of that
    # share of the motif's energy (least squares on a cut motif). Without it,
    # half-motif fits at the scan's edges and along masked streaks counted as
    # defects (on the labelled WSe2 scans: mean F1 0.794 -> 0.808, precision
    # on one scan 0.76 -> 0.85).
    share = np.stack(
        [signal.correlate(obs.astype(np.float64), (a[n] ** 2).sum(0), mode="same",
                          method="fft") for n in range(len(x))]
    )  # fmt: skip
    cut = 1.0 / np.sqrt(np.clip(share, MIN_SHARE, 1.0))
    edge = np.ones_like(x)
    for n in range(len(x)):
        # Autocorrelation summed over channels: odd-sized, centred, so "same"
        # keeps each copy's peak where its activation cluster is.
        ac = sum(signal.fftconvolve(c, c[::-1, ::-1], mode="full") for c in a[n])
        maps[n] = signal.fftconvolve(x[n], ac, mode="same")
        mf = _matched_filter(r, a[n])
        noise[n] = robust_std(mf[obs])
        # Local RMS over LOCAL_WINDOW motif sizes, observed pixels only.
        win = (LOCAL_WINDOW * kh, LOCAL_WINDOW * kw)
        num = ndimage.uniform_filter(np.where(obs, mf, 0.0) ** 2, win, mode="constant")
        den = ndimage.uniform_filter(obs.astype(np.float64), win, mode="constant")
        local[n] = np.maximum(np.sqrt(num / np.maximum(den, 1e-12)), noise[n])
        edge[n] = _edge_factor(mf * cut[n], obs, (kh, kw))
    rims = spans = None
    if y is not None:
        noise, local = _background_floor(x, a, y, obs, maps, noise, local)
        rims = find_rims(y, a, obs)
        spans = LineSpans(y, a)
    local = local * cut * edge
    return CopyMaps(
        maps=maps, noise=noise, local_noise=local, radius=max(1, min(kh, kw) // 2), rims=rims,
        spans=spans,
    )  # fmt: skip


def detect_copies(
    maps: CopyMaps, significance: float = DEFAULT_SIGNIFICANCE, *, merge: bool = True
) -> Defects:
    """One point per copy: peaks of the smoothed maps that are significant.

    Parameters
    ----------
    maps : CopyMaps
        From :func:`copy_maps`.
    significance : float
        Smallest amplitude counted, in units of the local noise of the
        motif's matched filter (:meth:`CopyMaps.significance`). With
        ``maps.spans``, a copy down to ``significance - FAINT_MARGIN``
        counts too when it spans many scan lines (:mod:`napari_sasd.spans`).
    merge : bool
        Where copies of different motifs lie within ``maps.radius`` of each
        other (one defect explained by two motifs), keep the most significant.

    Returns
    -------
    Defects
        ``amplitude`` is each copy's total amplitude (image units).
    """
    if not np.isfinite(significance) or significance < 0:
        raise ValueError(f"significance must be a number >= 0, got {significance!r}")
    low = significance if maps.spans is None else max(significance - FAINT_MARGIN, 0.0)
    # Every peak above the global level, then each held to its local level.
    found = find_defects(maps.maps, maps.thresholds(low), min_distance=maps.radius)
    z = maps.significance(found)
    tall = None
    if maps.spans is not None:
        # Spans only of the copies they can decide (a few, under the threshold).
        tall = np.zeros(len(z), bool)
        faint = (z > low) & (z <= significance)
        if faint.any():
            sub = Defects(found.positions[faint], found.motif[faint], found.amplitude[faint])
            tall[faint] = maps.spans.tall(sub)
    ok = counted(z, significance, tall)
    found = Defects(found.positions[ok], found.motif[ok], found.amplitude[ok])
    if not merge or len(found) < 2 or len(maps.maps) < 2:
        return found
    return merge_motifs(found, maps.significance(found), maps.radius)


def merge_motifs(defects: Defects, significance: np.ndarray, radius: float) -> Defects:
    """One defect explained by copies of two motifs keeps its most significant copy.

    Parameters
    ----------
    defects : Defects
        Copies of all motifs.
    significance : ndarray
        ``(M,)``, each copy's significance (:meth:`CopyMaps.significance`).
    radius : float
        Copies of different motifs closer than this are one defect.

    Returns
    -------
    Defects
    """
    if len(defects) < 2:
        return defects
    tree = cKDTree(defects.positions)
    drop = np.zeros(len(defects), bool)
    for i in np.argsort(-np.asarray(significance), kind="stable"):
        if drop[i]:
            continue
        for j in tree.query_ball_point(defects.positions[i], radius):
            if j != i and defects.motif[j] != defects.motif[i]:
                drop[j] = True
    keep = ~drop
    return Defects(defects.positions[keep], defects.motif[keep], defects.amplitude[keep])
