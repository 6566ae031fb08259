"""The working set of :mod:`napari_sasd.locate`: the lasso with fixed motifs
restricted to a set of copies, solved on the set's Gram matrix, napari-free.

Split from ``locate.py`` (what locating is, its stages and the solve's exact
finish) because this is the numerical engine under it: the copies' design
columns cut by the border and the mask, their overlaps (the Gram matrix,
looked up from the motifs' cross-correlations where no tap is cut), FISTA on
the set, and the violator search on the whole image's correlations.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal, sparse

if TYPE_CHECKING:  # the locator holds the pool; only its type is needed here
    from .locate import _Locator

#: Overlaps of copies cut by the border or the mask are summed tap by tap up
#: to this many taps in one batch; past it, from the design's sparse product.
CUT_TAPS_MAX = 2_000_000
#: FISTA iterations (at most) on one working set.
INNER_MAX = 2000
#: Power iterations for the working set's Lipschitz constant (from the last
#: set's top eigenvector, padded), and the margin on what they reach.
POWER_ITERS = 12
POWER_MARGIN = 1.2
POWER_TOL = 1e-3


class _Pool:
    """The lasso restricted to a working set of copies, on its Gram matrix.

    Columns of the design ``D`` are the motifs placed at the copies, cut by
    the image border and the mask: the exact windowed model. The background
    is eliminated in closed form (per channel, the mean residual), which
    leaves ``D^T P D``, ``P`` the projection off constants: the sparse Gram
    matrix and a rank-``C`` correction. Copies only join: the set grows by the
    violators of each round, and the Gram matrix by their overlaps.

    The overlap of two copies that are both whole (every tap inside the image,
    on observed pixels) is the motifs' cross-correlation at their offset,
    looked up; only pairs with a cut copy are summed over their taps. Forming
    the Gram matrix as a sparse product ``D^T D`` instead (over every pixel of
    every copy) was the largest single cost of a locate at 512^2."""

    def __init__(self, solver: _Locator, a: np.ndarray) -> None:
        C, H, W = solver.y.shape
        self.shape = (C, H, W)
        self.k = solver.k
        self.omega = solver.omega
        self.positive = solver.positive
        self.y = solver.y.reshape(-1).astype(np.float64)
        self.n = solver.n_obs
        self.ysum = solver.y.reshape(C, -1).sum(axis=1, dtype=np.float64)
        self.yy = float(np.dot(self.y, self.y))
        kh, kw = self.k
        self.kern = a.reshape(len(a), C, kh * kw).astype(np.float64)
        uu, vv = np.mgrid[0:kh, 0:kw]
        self.tr, self.tc = uu.ravel(), vv.ravel()
        self.du = (self.tr - (kh - 1) // 2)[None]
        self.dv = (self.tc - (kw - 1) // 2)[None]
        # Pixel indices fit int32 (sparse products on int32 indices are the
        # faster ones) up to 2^31 pixels.
        self.itype = np.int32 if C * H * W < 2**31 else np.int64
        self.off = (self.du * W + self.dv).astype(self.itype)
        self.cut = _cut_centres(self.shape, self.k, self.omega)
        # xc[m, n, dr + kh - 1, dc + kw - 1]: overlap of motif m with motif n
        # shifted by (dr, dc), summed over channels.
        N = len(a)
        self.xc = np.zeros((N, N, 2 * kh - 1, 2 * kw - 1))
        k64 = self.kern.reshape(N, C, kh, kw)
        for m in range(N):
            for n in range(N):
                for c in range(C):
                    self.xc[m, n] += signal.correlate(k64[n, c], k64[m, c], mode="full")
        self.index = np.full((N, H, W), -1, np.int64)
        self.cols = np.zeros((3, 0), np.int64)
        self.x = np.zeros(0)
        # D in column blocks, one per round (CSC: pixels x copies).
        self.blocks: list[sparse.csc_matrix] = []
        # The Gram matrix's entries, as (row, column, value), each round's appended.
        self._tri: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.G = sparse.csr_matrix((0, 0))
        self.c = np.zeros(0)
        self.s = np.zeros((C, 0))
        self.cp = np.zeros(0)
        self._L: float | None = None
        self._v: np.ndarray | None = None
        # After ``keep_support``: the copies kept, of all (their motifs).
        self._kept: np.ndarray | None = None
        self._m_all = np.zeros(0, np.int64)

    @property
    def size(self) -> int:
        return self.cols.shape[1]

    def contains(self, cols: np.ndarray) -> np.ndarray:
        return self.index[cols[0], cols[1], cols[2]] >= 0

    def _taps(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The copies' taps: values ``(M, C, taps)``, zero where a tap falls
        outside the image or on a missing pixel, and their flat pixel indices
        ``(M, C, taps)`` (0 for the zeroed ones outside)."""
        C, H, W = self.shape
        pix = (cols[1] * W + cols[2]).astype(self.itype)[:, None] + self.off
        vals = self.kern[cols[0]]
        cut = np.flatnonzero(self.cut[cols[1], cols[2]])
        if len(cut):
            r = cols[1][cut][:, None] + self.du
            c = cols[2][cut][:, None] + self.dv
            ok = (r >= 0) & (r < H) & (c >= 0) & (c < W)
            p = np.where(ok, r * W + c, 0)
            ok_c = ok[:, None]
            if self.omega is not None:
                ok_c = ok_c & (self.omega.reshape(C, -1)[:, p].transpose(1, 0, 2) > 0)
            vals[cut] = np.where(ok_c, vals[cut], 0.0)
            pix[cut] = p
        if C == 1:
            return vals, pix[:, None]
        return vals, pix[:, None] + (np.arange(C, dtype=self.itype) * (H * W))[None, :, None]

    def _overlaps(
        self, new: np.ndarray, start: int, new_blk: sparse.csc_matrix
    ) -> tuple[np.ndarray, ...]:
        """Gram entries of the copies ``start..`` (``new`` their columns,
        ``new_blk`` their design block) with every copy of the set
        (themselves included): rows, cols, values."""
        kh, kw = self.k
        i, j = _neighbours(new[1:], self.cols[1:], (kh - 1, kw - 1))
        gi = i + start
        m, r, c = self.cols
        dr, dc = r[gi] - r[j], c[gi] - c[j]
        vals = self.xc[m[gi], m[j], dr + kh - 1, dc + kw - 1]
        q = np.flatnonzero(self.cut[r[gi], c[gi]] | self.cut[r[j], c[j]])
        if len(q) * kh * kw > CUT_TAPS_MAX:
            # Most copies cut (scan-line scars masked on a real scan cut nearly
            # every window): tap by tap took minutes and gigabytes on a 512^2
            # crop of a WSe2 scan; the design columns' sparse product is one
            # pass with bounded memory.
            d_all = sparse.hstack(self.blocks, format="csc")
            g = (new_blk.T @ d_all).tocsr()
            vals[q] = np.asarray(g[gi[q] - start, j[q]]).ravel()
        elif len(q):
            vals[q] = self._cut_overlaps(gi[q], j[q])
        return gi, j, vals

    def _cut_overlaps(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Overlaps of the copies ``a`` and ``b`` (set indices), summed over
        the taps of ``a`` on observed pixels inside the image."""
        kh, kw = self.k
        C, H, W = self.shape
        m, r, c = self.cols
        # Tap u of copy a sits where tap u + (p_a - p_b) of copy b does.
        tr = self.tr + (r[a] - r[b])[:, None]
        tc = self.tc + (c[a] - c[b])[:, None]
        pr = r[a][:, None] + self.du
        pc = c[a][:, None] + self.dv
        ok = (tr >= 0) & (tr < kh) & (tc >= 0) & (tc < kw)
        ok &= (pr >= 0) & (pr < H) & (pc >= 0) & (pc < W)
        t = np.where(ok, tr * kw + tc, 0)
        mb = m[b][:, None]
        out = np.zeros(len(a))
        for ch in range(C):
            okc = ok
            if self.omega is not None:
                pix = np.where(ok, pr * W + pc, 0)
                okc = ok & (self.omega[ch].reshape(-1)[pix] > 0)
            ka = self.kern[m[a], ch]
            kb = self.kern[:, ch][mb, t]
            out += np.einsum("qt,qt->q", np.where(okc, ka, 0.0), kb)
        return out

    def add(self, cols: np.ndarray) -> None:
        """Add the copies ``cols`` ``(3, M)`` to the working set (at zero)."""
        M = cols.shape[1]
        if M == 0:
            return
        C, H, W = self.shape
        vals, pix = self._taps(cols)
        taps = vals.shape[1] * vals.shape[2]
        indptr = np.arange(M + 1, dtype=self.itype) * taps
        # Pixels x copies; the zeroed taps stay as explicit zeros (harmless in
        # the products, and cheaper than cutting them out).
        blk = sparse.csc_matrix((vals.reshape(-1), pix.reshape(-1), indptr), shape=(C * H * W, M))
        new_blk = blk
        start = self.size
        c_new = blk.T @ self.y
        # The first round's block and the later ones merged: the model (one
        # product per block, each a pass over the whole image) in two.
        if len(self.blocks) > 1:
            blk = sparse.hstack([self.blocks.pop(), blk], format="csc")
        self.blocks.append(blk)
        self.index[cols[0], cols[1], cols[2]] = start + np.arange(M)
        self.cols = np.concatenate([self.cols, cols], axis=1)
        self.x = np.concatenate([self.x, np.zeros(M)])
        gi, j, v = self._overlaps(cols, start, new_blk)
        old = j < start
        # Each pair with an earlier copy once, mirrored; pairs among the new
        # copies come in both orders.
        self._tri.append((np.concatenate([gi, j[old]]), np.concatenate([j, gi[old]]),
                          np.concatenate([v, v[old]])))  # fmt: skip
        rows, cols_, data = (np.concatenate(t) for t in zip(*self._tri, strict=True))
        self.G = sparse.csr_matrix((data, (rows, cols_)), shape=(self.size, self.size))
        self.c = np.concatenate([self.c, c_new])
        self.s = np.concatenate([self.s, vals.sum(axis=2).T], axis=1)
        self.cp = self.c - (self.s * (self.ysum / self.n)[:, None]).sum(axis=0)
        self._L = None

    def keep_support(self) -> None:
        """Drop the copies whose activation is zero (for the refit)."""
        keep = self.x != 0
        if keep.all():
            return
        idx = np.flatnonzero(keep)
        m_all = self.cols[0].copy()
        self.index[self.cols[0], self.cols[1], self.cols[2]] = -1
        self.cols, self.x = self.cols[:, idx], self.x[idx]
        self.index[self.cols[0], self.cols[1], self.cols[2]] = np.arange(len(idx))
        # The refit needs only the Gram matrix; the design's blocks stay
        # for the model, over every copy there was (``_kept`` of them now).
        self._tri = []
        self._m_all, self._kept = m_all, idx
        self.G = self.G[idx][:, idx]
        self.c, self.s, self.cp = self.c[idx], self.s[:, idx], self.cp[idx]
        self._L, self._v = None, None

    def _gram(self, x: np.ndarray) -> np.ndarray:
        return self.G @ x - ((self.s @ x) / self.n) @ self.s

    def bias(self) -> np.ndarray:
        """The background (normalised units) that is optimal for the activations."""
        return (self.ysum - self.s @ self.x) / self.n

    def model(self, n: int | None = None) -> np.ndarray:
        """``D x`` (motif ``n``'s copies only, unless None), ``(C, H, W)``."""
        C, H, W = self.shape
        if self._kept is None:
            x, m = self.x, self.cols[0]
        else:
            m = self._m_all
            x = np.zeros(len(m))
            x[self._kept] = self.x
        if n is not None:
            x = np.where(m == n, x, 0.0)
        out = np.zeros(C * H * W)
        start = 0
        for blk in self.blocks:
            out += blk @ x[start : start + blk.shape[1]]
            start += blk.shape[1]
        return out.reshape(C, H, W)

    def residual(self, b: np.ndarray) -> np.ndarray:
        """``y - D x - b`` on the observed pixels, ``(C, H, W)`` float32."""
        C, H, W = self.shape
        r = np.zeros(C * H * W)
        start = 0
        for blk in self.blocks:
            r -= blk @ self.x[start : start + blk.shape[1]]
            start += blk.shape[1]
        r += self.y
        r = r.reshape(C, H, W)
        r -= b[:, None, None]
        if self.omega is not None:
            r *= self.omega
        return r.astype(np.float32)

    def objective(self, lam: float) -> float:
        """``1/2 ||D x + b - y||^2 + lam |x|_1`` at the optimal background."""
        x = self.x
        fit = 0.5 * float(x @ self._gram(x)) - float(self.cp @ x)
        const = 0.5 * (self.yy - float(np.sum(self.ysum**2 / self.n)))
        return fit + const + lam * float(np.abs(x).sum())

    def solve(self, lam: float, tol: float) -> None:
        """FISTA with gradient-based restart on the working set, from the
        current activations."""
        if not self.size:
            return
        step = 1.0 / self._lipschitz()
        # The gradient step as few passes as can be over the set's vectors
        # (the loop is bound by numpy's per-call cost, not by arithmetic):
        # y - step (G y - (s y) s / n - cp) - step lam = y - Gs y + S (S^T y) + c1.
        Gs = self.G * step
        S = self.s * np.sqrt(step / self.n)[:, None]
        c1 = step * (self.cp - lam) if self.positive else step * self.cp
        thr = step * lam
        x = self.x.copy()
        y = x
        t = 1.0
        for _ in range(INNER_MAX):
            v = Gs @ y
            np.subtract(y, v, out=v)
            v += (S @ y) @ S
            v += c1
            if self.positive:
                x_new = np.maximum(v, 0.0, out=v)
            else:
                x_new = np.sign(v) * np.maximum(np.abs(v) - thr, 0.0)
            d = x_new - x
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            if np.dot(y, d) > np.dot(x_new, d):
                # The step turned against the momentum: restart (as the
                # solver's activation step, O'Donoghue & Candes).
                t_new, y = 1.0, x_new
            else:
                y = x_new + ((t - 1) / t_new) * d
            x, t = x_new, t_new
            if math.sqrt(np.dot(d, d)) <= tol * (math.sqrt(np.dot(x, x)) + 1e-12):
                break
        self.x = x

    def _lipschitz(self) -> float:
        """Largest eigenvalue of the projected Gram matrix: power iteration
        from the last one's vector, with a margin for what it has not reached.

        From the last set's vector (padded), the estimate is usually settled
        after two or three products: it stops when it moves by less than
        ``POWER_TOL`` (at most ``POWER_ITERS`` products)."""
        if self._L is None:
            v = np.random.default_rng(0).uniform(0.5, 1.0, self.size)
            warm = self._v is not None and len(self._v) <= self.size
            if warm:
                v[: len(self._v)] += self._v * math.sqrt(self.size)
            ev = 1.0
            for it in range(POWER_ITERS):
                w = self._gram(v)
                ev_new = float(np.linalg.norm(w))
                if ev_new == 0:
                    ev_new = 1.0
                    break
                v = w / ev_new
                done = warm and it >= 2 and abs(ev_new - ev) <= POWER_TOL * ev_new
                ev = ev_new
                if done:
                    break
            self._v = v
            self._L = POWER_MARGIN * ev
        return self._L


def _cut_centres(
    shape: tuple[int, int, int], k: tuple[int, int], omega: np.ndarray | None
) -> np.ndarray:
    """``(H, W)`` True where a copy centred there has a tap outside the image
    or on a missing pixel (of any channel)."""
    H, W = shape[1:]
    kh, kw = k
    ch, cw = (kh - 1) // 2, (kw - 1) // 2
    cut = np.ones((H, W), bool)
    cut[ch : H - (kh - 1 - ch), cw : W - (kw - 1 - cw)] = False
    if omega is not None:
        # Any missing pixel in the copy's window, by a summed-area table.
        bad = np.pad((omega.min(axis=0) <= 0).astype(np.int32),
                     ((ch + 1, kh - 1 - ch), (cw + 1, kw - 1 - cw)))  # fmt: skip
        t = bad.cumsum(0).cumsum(1)
        cut |= (t[kh:, kw:] - t[:-kh, kw:] - t[kh:, :-kw] + t[:-kh, :-kw]) > 0
    return cut


def _neighbours(
    pa: np.ndarray, pb: np.ndarray, reach: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` of points ``pa[:, i]``, ``pb[:, j]`` (rows, cols) at
    most ``reach`` apart along each axis: by cells of that size, each point's
    partners are in its own cell and the eight around it."""
    sr, sc = reach[0] + 1, reach[1] + 1
    ncol = int(max(pa[1].max(initial=0), pb[1].max(initial=0))) // sc + 3
    cell_b = (pb[0] // sr + 1) * ncol + (pb[1] // sc + 1)
    order = np.argsort(cell_b, kind="stable")
    sorted_b = cell_b[order]
    base = (pa[0] // sr + 1) * ncol + (pa[1] // sc + 1)
    ii, jj = [], []
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            target = base + dr * ncol + dc
            lo = np.searchsorted(sorted_b, target, "left")
            cnt = np.searchsorted(sorted_b, target, "right") - lo
            tot = int(cnt.sum())
            if not tot:
                continue
            i = np.repeat(np.arange(len(base)), cnt)
            first = np.cumsum(cnt) - cnt
            j = order[np.arange(tot) - np.repeat(first - lo, cnt)]
            ii.append(i)
            jj.append(j)
    if not ii:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, j = np.concatenate(ii), np.concatenate(jj)
    near = (np.abs(pa[0][i] - pb[0][j]) <= reach[0]) & (np.abs(pa[1][i] - pb[1][j]) <= reach[1])
    return i[near], j[near]
