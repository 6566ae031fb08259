"""A defect bigger than the motif gives one point, not a ring of copies, napari-free.

A motif is about a small defect's size. A defect several times larger, with
a core of the other sign and a rim like the motif (on WSe2: a bright peak
ringed by a dark halo, against dark troughs), is fitted by several copies of
the motif around its rim: each a significant copy, each a point, where a
person marks the defect once. On the labelled WSe2 scans, 11 of the 38 false
points lay on the rims of the 8 "Large Bright Peaks" (up to six per defect on
the 100 nm scan; ``benchmarks/bench_real.py``).

The large defect is found in the data, not in the model (the motif that fits
its core is often flagged as texture and its copies dropped): its core is a
connected region where the data, smoothed over a quarter of the motif,
stands out by :data:`CORE_SIGNIFICANCE` robust sigmas with the sign opposite
to the motif's centre, over at least :data:`CORE_AREA` of a motif's area.
The copies of that motif within :data:`RIM_REACH` motif sizes of one core
are its rim: when there are two or more, they become one point at the
core's centre. A lone copy there stays as it is, and nothing changes for
small defects next to each other: they have no such core between them
(labelled WSe2 troughs lie as close as 0.9 motif sizes apart).

The cores are found once per analysis (:func:`find_rims`, a smoothing and a
distance transform); merging is a lookup per point (:func:`merge_rims`), cheap
enough for the dock's significance slider.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from .flags import main_channel_sign
from .metrics import robust_std
from .peaks import Defects

__all__ = ["Rims", "find_rims", "merge_rims"]

#: How far a core stands out of the smoothed data, in robust sigmas. The WSe2
#: large peaks' cores reach 12 to 20; 5 and 6 merged the same copies there.
CORE_SIGNIFICANCE = 6.0
#: Gaussian smoothing of the data before the cores are sought, in motif sizes:
#: enough to average out scan-line streaks (a few lines), not the cores.
CORE_SMOOTH = 0.25
#: Smallest core, in motif areas (k^2). The WSe2 large peaks' cores: 0.4 to
#: 3 at k = half a labelled box; 0.15 and 0.5 merged the same copies there
#: but for one defect (0.5 missed a 0.4 core).
CORE_AREA = 0.25
#: How far from a core a copy can sit and still be on its rim, in motif
#: sizes. The WSe2 rim copies lie 0.5 to 0.85 motif sizes from their core's
#: edge; 0.8 to 1.0 merged the same copies but one, and no true point.
RIM_REACH = 0.9


@dataclass
class Rims:
    """Where copies of each motif would lie on a large defect's rim.

    Attributes
    ----------
    owner : ndarray
        ``(N, H, W)`` int32: for motif ``n`` at a pixel, the label (from 1)
        of the large defect whose rim a copy there lies on; 0: none.
    centres : ndarray
        ``(L, 2)`` (row, col) centre of each large defect's core, label
        ``l`` at row ``l - 1``.
    """

    owner: np.ndarray
    centres: np.ndarray


def find_rims(data: ArrayLike, kernels: ArrayLike, mask: ArrayLike | None = None) -> Rims:
    """The large defects' cores and the rims around them, for each motif.

    Parameters
    ----------
    data : array_like
        ``(H, W)`` or ``(C, H, W)``: the analysed data (flattened).
    kernels : array_like
        ``(N, kh, kw)`` or ``(N, C, kh, kw)`` motifs.
    mask : array_like of bool, optional
        ``(H, W)``, True where observed; unobserved pixels (scars) are set to
        the median before smoothing.

    Returns
    -------
    Rims
    """
    y = np.asarray(data, np.float64)
    y = y[None] if y.ndim == 2 else y
    a = np.asarray(kernels, np.float64)
    a = a[:, None] if a.ndim == 3 else a
    if a.ndim != 4 or a.shape[1] != y.shape[0]:
        raise ValueError(f"find_rims: kernels {a.shape} do not match data {y.shape}")
    h, w = y.shape[1:]
    obs = np.isfinite(y).all(0)
    if mask is not None:
        obs &= np.asarray(mask, bool)
    owner = np.zeros((len(a), h, w), np.int32)
    centres: list[tuple[float, float]] = []
    if obs.sum() < 16:
        return Rims(owner, np.zeros((0, 2)))
    kh, kw = a.shape[-2:]
    z_of: dict[int, np.ndarray] = {}
    for n, an in enumerate(a):
        c, sign = main_channel_sign(an)
        if sign == 0:
            continue
        if c not in z_of:
            yc = np.where(obs, y[c], np.median(y[c][obs]))
            s = ndimage.gaussian_filter(yc, CORE_SMOOTH * max(kh, kw))
            spread = robust_std(s[obs])
            z_of[c] = (s - np.median(s[obs])) / max(spread, 1e-300)
        # The core has the sign opposite to the motif's centre.
        core = (-sign * z_of[c]) > CORE_SIGNIFICANCE
        lab, nl = ndimage.label(core)
        if nl == 0:
            continue
        areas = ndimage.sum_labels(core, lab, np.arange(1, nl + 1))
        big = np.flatnonzero(areas >= CORE_AREA * kh * kw) + 1
        if big.size == 0:
            continue
        cores = np.where(np.isin(lab, big), lab, 0)
        dist, (ri, ci) = ndimage.distance_transform_edt(cores == 0, return_indices=True)
        near = dist <= RIM_REACH * max(kh, kw)
        ids = np.zeros(nl + 1, np.int32)
        for lbl, (cy, cx) in zip(big, ndimage.center_of_mass(core, lab, big), strict=True):
            centres.append((cy, cx))
            ids[lbl] = len(centres)
        owner[n] = np.where(near, ids[cores[ri, ci]], 0)
    return Rims(owner, np.asarray(centres, np.float64).reshape(-1, 2))


def merge_rims(defects: Defects, rims: Rims | None) -> Defects:
    """Two or more copies of a motif on one large defect's rim become one point.

    The point is at the large defect's core centre and keeps the strongest
    copy's motif and amplitude; a lone copy on a rim stays as it is.

    Parameters
    ----------
    defects : Defects
        Detected copies.
    rims : Rims or None
        From :func:`find_rims`; None: the defects unchanged.

    Returns
    -------
    Defects
    """
    if rims is None or len(defects) < 2 or len(rims.centres) == 0:
        return defects
    n_, h, w = rims.owner.shape
    r = np.clip(np.round(defects.positions[:, 0]).astype(int), 0, h - 1)
    c = np.clip(np.round(defects.positions[:, 1]).astype(int), 0, w - 1)
    m = np.asarray(defects.motif, int)
    own = np.where(m < n_, rims.owner[np.minimum(m, n_ - 1), r, c], 0)
    keep = np.ones(len(defects), bool)
    pos = np.array(defects.positions, np.float64, copy=True)
    for lbl in np.unique(own[own > 0]):
        for motif in np.unique(m[own == lbl]):
            grp = np.flatnonzero((own == lbl) & (m == motif))
            if len(grp) < 2:
                continue
            best = grp[int(np.argmax(defects.amplitude[grp]))]
            keep[grp] = False
            keep[best] = True
            pos[best] = rims.centres[lbl - 1]
    return Defects(pos[keep], defects.motif[keep], defects.amplitude[keep])
