"""Re-centring: a lifted motif is cropped to the ``k x k`` window that holds all
of it, its activations shifted the opposite way; and the check for a motif
that ends shifted and cut by its border (a local minimum of the ``k x k``
support, method.md)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .tuning import EDGE_EMPTY, EDGE_HEAVY, WINDOW_LOSS


class _Recentring:
    """Re-centring of lifted motifs; mixed into ``_Solver``."""

    def _recentre(self) -> None:
        """Shift each lifted motif so its most energetic k-window is centred,
        and its activation map the opposite way, so the model is unchanged:
        ``a'[p] = a[p - d]``, ``x'[s] = x[s + d]`` (tests check the sign)."""
        kh, kw = self.k
        K = self.a.shape[-2:]
        target = np.array([(K[0] - kh) // 2, (K[1] - kw) // 2])
        a, x = self.a.copy(), self.x.copy()
        moved = 0
        for n in range(len(a)):
            p0 = _centred_window((a[n].astype(np.float64) ** 2).sum(0), (kh, kw))
            d = target - p0
            moved = max(moved, int(np.abs(d).max()))
            if d.any():
                a[n] = shift_zero(a[n], d)
                x[n] = shift_zero(x[n], -d)
        nrm = np.sqrt(np.sum(a.astype(np.float64) ** 2, axis=(1, 2, 3)))
        nrm[nrm == 0] = 1
        a = (a / nrm[:, None, None, None]).astype(np.float32)
        x = (x * nrm[:, None, None]).astype(np.float32)
        self._setup_op(tuple(K), a, x)
        self.moved = moved

    def _centre_kernels(self) -> np.ndarray:
        """Current lifted motifs cropped to ``k x k`` around their centre, ``(N, C, kh, kw)``."""
        kh, kw = self.k
        K = self.a.shape[-2:]
        oh, ow = (K[0] - kh) // 2, (K[1] - kw) // 2
        return self.a[..., oh : oh + kh, ow : ow + kw].astype(np.float64)


def _looks_cut(a: np.ndarray) -> bool:
    """Whether a ``(C, kh, kw)`` motif looks shifted and cut by its border:
    along an axis, one outermost row (column) all but empty while the opposite
    one is heavy, as when a pixel's shift pushed the motif's last row out.

    A whole motif's outermost rows are both light (a short motif's signature
    fades out) or both carry energy (a random one's); for the papers' random
    motifs a ratio under ``EDGE_EMPTY`` between two rows is a chance of about
    1e-3 per axis at k = 8 (an F(8, 8) tail), and a false alarm only costs a
    lifted refinement.
    """
    e = (np.asarray(a, np.float64) ** 2).sum(0)
    tot = e.sum()
    if tot <= 0:
        return False
    for rows in (e.sum(1), e.sum(0)):
        lo, hi = sorted((rows[0], rows[-1]))
        if hi >= EDGE_HEAVY * tot / len(rows) and lo <= EDGE_EMPTY * hi:
            return True
    return False


def _centred_window(energy: np.ndarray, k: tuple[int, int]) -> np.ndarray:
    """Top-left corner of the ``k`` window of a lifted motif's ``energy`` map to
    crop it to: of the windows holding all but ``WINDOW_LOSS`` of the most any
    window holds, the one that puts the energy centroid nearest the kernel's
    centre ((k-1)/2), so activation peaks mark defect centres.

    Only near-best windows: a random (the papers' model) or asymmetric motif
    has no centre, and moving its window by one pixel towards the centroid
    cut a row off the whole motif (similarity about 0.96 at k = 12, 12 of 30
    seeds of the papers' model); a motif smaller than ``k`` has several
    windows holding all of it, and the centroid picks among them.
    """
    kh, kw = k
    K = energy.shape
    # Window sums (uniform_filter centres its window at k//2: top-left = p - k//2).
    e = ndimage.uniform_filter(energy, size=(kh, kw), mode="constant") * (kh * kw)
    e = e[kh // 2 : kh // 2 + K[0] - kh + 1, kw // 2 : kw // 2 + K[1] - kw + 1]
    tot = energy.sum()
    if tot <= 0:
        return np.array([(K[0] - kh) // 2, (K[1] - kw) // 2])
    cy = (energy.sum(1) * np.arange(K[0])).sum() / tot - (kh - 1) / 2
    cx = (energy.sum(0) * np.arange(K[1])).sum() / tot - (kw - 1) / 2
    ii, jj = np.nonzero(e >= e.max() - WINDOW_LOSS * tot)
    best = int(np.argmin((ii - cy) ** 2 + (jj - cx) ** 2))
    return np.array([ii[best], jj[best]])


def shift_zero(arr: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Shift the last two axes by ``d`` (``out[p] = arr[p - d]``), filling with zeros."""
    out = np.zeros_like(arr)
    dh, dw = int(d[0]), int(d[1])
    Hh, Ww = arr.shape[-2:]
    src_h = slice(max(0, -dh), min(Hh, Hh - dh))
    dst_h = slice(max(0, dh), min(Hh, Hh + dh))
    src_w = slice(max(0, -dw), min(Ww, Ww - dw))
    dst_w = slice(max(0, dw), min(Ww, Ww + dw))
    out[..., dst_h, dst_w] = arr[..., src_h, src_w]
    return out
