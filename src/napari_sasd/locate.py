"""Locate known motifs in an image: activations, background and amplitudes with
the motifs held fixed, napari-free.

With the motifs fixed, the model ``y ~ sum_n a_n (*) x_n + b`` (``method.md``)
is a convex lasso in the activations and the background: non-negative by
default, with the solver's normalisation, lambda, support (copies centred
inside the image), exact border and mask handling and final amplitude refit
without the l1 shrinkage. The result is built by the solver's own
``_Solver._result``, so its conventions are the solver's.

The solver's whole-image stages (settle, polish, refit: 100 iterations of a
few image-sized transforms) were measured at 0.4-0.7x the time of a whole
512^2 solve when run alone with the motifs fixed, from zero or from the
correlation peaks: they are most of a solve's time. Here the lasso is solved
where it lives, on the copies: a working set (active set) of copies grows
from the peaks of the data's correlation with the motifs by the copies whose
correlation with the residual still passes lambda (one transform of the image
per round, the solver's operator); on the set, the lasso is solved by FISTA
on its sparse Gram matrix (the copies' overlaps), which is tiny next to the
image. About six rounds reach the optimum (0.2x a 512^2 solve).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import numpy as np
from scipy import optimize, sparse

from ._version import __version__
from .result import SolveProgress, SolveResult
from .solver import AUTO_LAM_FRACTION, AUTO_LAM_NOISE, _Solver, noise_sigma
from .validation import Problem, prepare

__all__ = ["iter_locate", "locate"]

#: Images with a side longer than this are located tile by tile: the working
#: memory is then that of one tile (plus the result's maps). Tiles of 1024
#: located a 2048^2 image in 0.48x the time of one untiled fit (which needed
#: more rounds, over larger arrays), the defects the same (P/R 0.9996/0.9994).
TILE_SIZE = 1024
#: Working-set rounds (at most): each solves the lasso on the working set,
#: then adds the copies the whole image's correlations say are missing.
OUTER_MAX = 20
#: FISTA iterations (at most) on one working set.
INNER_MAX = 2000
#: Relative change at which the lasso on an incomplete working set stops.
ROUND_TOL = 1e-3
#: Power iterations for the working set's Lipschitz constant (from the last
#: set's top eigenvector, padded), and the margin on what they reach.
POWER_ITERS = 12
POWER_MARGIN = 1.2
#: A copy joins the working set when its correlation passes lambda by this
#: fraction; the fit stops when none does. What such a copy would add is of
#: that order (normalised units, lambda is a few noise levels): far below any
#: defect threshold.
KKT_SLACK = 0.05


def locate(
    image: np.ndarray,
    kernels: np.ndarray,
    lam: float | None = None,
    *,
    mask: np.ndarray | None = None,
    channel_axis: int | None = None,
    positive: bool = True,
    max_iter: int | None = None,
    tol: float = 1e-4,
    workers: int | None = None,
    tile: int | None = TILE_SIZE,
    overlap: int | None = None,
) -> SolveResult:
    """Find where known motifs sit in an image, the motifs held fixed.

    Parameters
    ----------
    image : array_like
        2-D image, or 3-D stack with ``channel_axis`` (as :func:`napari_sasd.solve`).
    kernels : array_like
        The motifs, ``(N, kh, kw)`` (or ``(N, C, kh, kw)`` with channels), e.g.
        ``SolveResult.kernels`` of another scan or a motif library's. Each is
        normalised to unit norm; their order is kept in the result.
    lam : float, optional
        Sparsity weight on the normalised image, as in :func:`napari_sasd.solve`.
        None picks it as a solve warm-started from these motifs does:
        ``max(0.1 * lam_max, 2.5 * noise)``, ``lam_max`` the largest
        correlation of the data with the first motif.
    mask : ndarray of bool, optional
        ``(H, W)`` True where a pixel is observed.
    channel_axis : int, optional
        Axis of a 3-D ``image`` holding channels.
    positive : bool
        Non-negative activations.
    max_iter : int, optional
        Rounds of the working set at most (default 20; it stops when the
        working set is complete, about six rounds at 512^2).
    tol : float
        Relative change of the activations at which the lasso on the final
        working set, and the amplitude refit, stop.
    workers : int, optional
        Threads for ``scipy.fft``, as in :func:`napari_sasd.solve`.
    tile : int, optional
        An image with a side longer than this is located tile by tile
        (:mod:`napari_sasd.tiling`), with bounded memory: ``image`` may then
        be any array that slices (a ``numpy.memmap``, a memory-mapped TIFF,
        a zarr or dask array) and is read one tile at a time. None: never tile.
    overlap : int, optional
        Pixels each tile extends past its core on every side; default, and at
        least, twice the motif size.

    Returns
    -------
    SolveResult
        ``kernels`` are the given motifs (unit norm, in the given order);
        ``params["mode"]`` is ``"locate"``.

    Raises
    ------
    TypeError, ValueError
        On bad input, before any work starts.
    """
    gen = iter_locate(
        image, kernels, lam, mask=mask, channel_axis=channel_axis, positive=positive,
        max_iter=max_iter, tol=tol, workers=workers, tile=tile, overlap=overlap,
    )  # fmt: skip
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def iter_locate(
    image: np.ndarray,
    kernels: np.ndarray,
    lam: float | None = None,
    *,
    mask: np.ndarray | None = None,
    channel_axis: int | None = None,
    positive: bool = True,
    max_iter: int | None = None,
    tol: float = 1e-4,
    workers: int | None = None,
    tile: int | None = TILE_SIZE,
    overlap: int | None = None,
) -> Generator[SolveProgress, None, SolveResult]:
    """Like :func:`locate`, as a generator of progress snapshots (as
    :func:`napari_sasd.iter_solve`). Inputs are checked when this is called."""
    kern = _as_kernels(kernels, np.ndim(image), channel_axis)
    if max_iter is not None and (isinstance(max_iter, bool) or int(max_iter) < 1):
        raise ValueError(f"max_iter must be a positive int, got {max_iter}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if tile is not None:
        from .tiling import iter_locate_tiled, spatial_shape

        if max(spatial_shape(image, channel_axis)) > tile:
            return iter_locate_tiled(
                image, kern, lam, mask=mask, channel_axis=channel_axis, positive=positive,
                max_iter=max_iter, tol=tol, workers=workers, tile=tile, overlap=overlap,
            )  # fmt: skip
    prob = prepare(image, kern.shape[-2:], len(kern), lam, channel_axis, mask, kern)
    solver = _Locator(prob, positive, 0, max_iter, tol, 0.8, workers)
    return solver.locate(locate_params(prob, positive, max_iter, tol))


def locate_params(
    prob: Problem, positive: bool, max_iter: int | None, tol: float
) -> dict[str, Any]:
    """The ``params`` record of a locate run (JSON-serialisable)."""
    return {
        "mode": "locate",
        "kernel_size": list(prob.kernel_size),
        "n_motifs": prob.n_motifs,
        "lam": prob.lam,
        "channel_axis": prob.channel_axis,
        "positive": bool(positive),
        "max_iter": None if max_iter is None else int(max_iter),
        "tol": float(tol),
        "masked_pixels": 0 if prob.omega is None else int((prob.omega == 0).sum()),
        "version": __version__,
    }


def _as_kernels(kernels: object, image_ndim: int, channel_axis: int | None) -> np.ndarray:
    """The motifs as a float array ``(N, kh, kw)`` / ``(N, C, kh, kw)``, checked."""
    arr = np.asarray(kernels)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"kernels must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    want = 4 if channel_axis is not None else 3
    if arr.ndim == want - 1:
        arr = arr[None]
    if arr.ndim != want:
        shape = "(N, C, kh, kw)" if want == 4 else "(N, kh, kw)"
        raise ValueError(f"kernels must be {shape} for this image, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("kernels is empty: give at least one motif")
    if not np.all(np.isfinite(arr)):
        raise ValueError("kernels contains NaN or inf")
    nrm = np.sqrt(np.sum(arr.reshape(len(arr), -1) ** 2, axis=1))
    if np.any(nrm == 0):
        bad = int(np.flatnonzero(nrm == 0)[0])
        raise ValueError(f"motif {bad} is all zeros: remove it or give a real motif")
    return arr / nrm.reshape(-1, *[1] * (arr.ndim - 1))


class _Locator(_Solver):
    """Fixed-motif fit by a working set, on the solver's state.

    The whole image's correlations with the motifs (where a copy would lower
    the objective) come from the solver's windowed operator; the lasso on the
    working set is solved on its Gram matrix (:class:`_Pool`); the result is
    built by the solver's own :meth:`_result`, so its conventions (centres,
    signs, units, background, explained energy) are the solver's."""

    def locate(self, params: dict[str, Any]) -> Generator[SolveProgress, None, SolveResult]:
        p = self.p
        C = p.n_channels
        a = p.init_kernels.astype(np.float32)
        lam = self.auto_lam() if p.lam is None else p.lam
        self.support = None
        self.b = np.zeros(C, np.float64)
        rounds = OUTER_MAX if self.max_iter is None else max(1, int(self.max_iter))
        self.total = rounds + 1
        self.n_stages = 2
        # The solver's windowed operator, for the correlations of a residual
        # with the motifs at every copy centre.
        self._set_x(a, np.zeros((3, 0), np.int64), np.zeros(0))
        pool = _Pool(self, a)
        r = pool.residual(self.b)
        converged = False
        for _ in range(rounds):
            add = self._violators(self._correlation(r), lam, pool)
            self.iteration += 1
            if add.shape[1] == 0:
                converged = True
                break
            pool.add(add)
            # Loosely while copies still join (the next round moves the
            # optimum anyway), to the tolerance once the set is complete.
            pool.solve(lam, max(self.tol, ROUND_TOL))
            self.b = pool.bias()
            self.obj = pool.objective(lam)
            r = pool.residual(self.b)
            yield SolveProgress(0, 2, self.iteration, self.total, self.obj, lam, self._snapshot())
        pool.solve(lam, self.tol)
        self.b = pool.bias()
        self.obj = pool.objective(lam)
        yield SolveProgress(0, 2, self.iteration, self.total, self.obj, lam, self._snapshot())
        # Amplitude refit on the found copies without the l1 shrinkage (as
        # the solver's last stage), the background with them.
        pool.keep_support()
        pool.solve(0.0, self.tol)
        self.b = pool.bias()
        # The objective the solver reports: the refit's (no l1 term).
        self.obj = pool.objective(0.0)
        self.iteration += 1
        self._set_x(a, pool.cols, pool.x)
        yield SolveProgress(1, 2, self.iteration, self.total, self.obj, lam, self._snapshot())
        self.total = self.iteration
        res = self._result(lam, converged, params)
        return _keep_order(res, a, p.channel_axis is None)

    def auto_lam(self) -> float:
        """Lambda (normalised units) exactly as solve picks it (``_Solver.run``:
        from the most energetic data window, not from a motif), so that
        locating a solve's motifs in the same image uses the solve's lambda."""
        self.b = np.zeros(self.p.n_channels, np.float64)
        self.support = None
        lam_max = self._lam_max(self._lift(), self._windows(self.y, 1, []))
        noise = noise_sigma(self.p.y, self.p.omega)
        return max(AUTO_LAM_FRACTION * lam_max, AUTO_LAM_NOISE * noise)

    def _set_x(self, a: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        """Set up the windowed operator with the activations ``vals`` at
        ``cols`` (motif, row, col of the copy's centre in the image)."""
        kh, kw = self.k
        H, W = self.y.shape[1:]
        x = np.zeros((self.p.n_motifs, H + kh - 1, W + kw - 1), np.float32)
        x[cols[0], cols[1] + kh // 2, cols[2] + kw // 2] = vals
        self._setup_op((kh, kw), a, x)

    def _correlation(self, r: np.ndarray) -> np.ndarray:
        """Correlation of the residual ``y - model`` (``(C, H, W)``, zero at
        missing pixels) with each motif at every copy centre, ``(N, H, W)``:
        minus the gradient of the fit."""
        kh, kw = self.k
        H, W = self.y.shape[1:]
        g = self.op.grad_x(self.A, self.op.fft_residual(r))
        return g[:, kh // 2 : kh // 2 + H, kw // 2 : kw // 2 + W]

    def _violators(self, corr: np.ndarray, lam: float, pool: _Pool) -> np.ndarray:
        """Copies outside the working set whose correlation passes lambda (a
        non-zero activation there would lower the objective), ``(3, M)``.

        Only those that peak among their 3 x 3 neighbours: every violator at
        once (all the neighbours of a copy first found a pixel off) made the
        working set ten times larger than the solution, its Gram matrix a
        hundred. At the start (an empty set) these are the correlation peaks.
        """
        slack = KKT_SLACK if pool.size else 0.0
        mag = corr if self.positive else np.abs(corr)
        n, r, c = np.nonzero(mag > lam * (1 + slack))
        v = mag[n, r, c]
        H, W = mag.shape[1:]
        keep = np.ones(len(n), bool)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if dr or dc:
                    rr, cc = r + dr, c + dc
                    inside = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
                    nb = mag[n, np.clip(rr, 0, H - 1), np.clip(cc, 0, W - 1)]
                    keep &= ~inside | (nb <= v)
        out = np.stack([n[keep], r[keep], c[keep]]).astype(np.int64)
        if pool.size:
            out = out[:, ~pool.contains(out)]
        return out


class _Pool:
    """The lasso restricted to a working set of copies, on its Gram matrix.

    Columns of the design ``D`` (kept transposed, one sparse row per copy) are
    the motifs placed at the copies, cut by the image border and the mask:
    the exact windowed model. The background is eliminated in closed form
    (per channel, the mean residual), which leaves ``D^T P D``, ``P`` the
    projection off constants: the sparse Gram matrix and a rank-``C``
    correction. Copies only join: the set grows by the violators of each
    round, and the Gram matrix by their blocks."""

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
        self.du = (uu.ravel() - (kh - 1) // 2)[None]
        self.dv = (vv.ravel() - (kw - 1) // 2)[None]
        self.index = np.full((len(a), H, W), -1, np.int64)
        self.cols = np.zeros((3, 0), np.int64)
        self.x = np.zeros(0)
        # D in column blocks, one per round (pixel-major, CSR).
        self.blocks: list[sparse.csr_matrix] = []
        # and copy-major (D^T), for the model.
        self.rows: list[sparse.csr_matrix] = []
        self.G = sparse.csr_matrix((0, 0))
        self.c = np.zeros(0)
        self.s = np.zeros((C, 0))
        self.cp = np.zeros(0)
        self._L: float | None = None
        self._v: np.ndarray | None = None

    @property
    def size(self) -> int:
        return self.cols.shape[1]

    def contains(self, cols: np.ndarray) -> np.ndarray:
        return self.index[cols[0], cols[1], cols[2]] >= 0

    def _rows(self, cols: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray]:
        """``D^T`` rows of the copies ``cols`` (each motif's taps inside the
        image, on observed pixels) and their sums per channel ``(C, M)``."""
        C, H, W = self.shape
        M = cols.shape[1]
        rr = cols[1][:, None] + self.du
        cc = cols[2][:, None] + self.dv
        ok = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        pix = rr * W + cc
        vals = self.kern[cols[0]]  # (M, C, taps)
        if C == 1 and self.omega is None:
            # The common case without the per-channel copies below.
            v = vals[:, 0]
            if not ok.all():
                v = np.where(ok, v, 0.0)
            sums = v.sum(axis=1)[None]
            counts = ok.sum(axis=1)
            data, idx = v[ok], pix[ok]
        else:
            pix_c = pix[:, None] + (np.arange(C) * H * W)[None, :, None]
            ok_c = np.broadcast_to(ok[:, None], pix_c.shape)
            if self.omega is not None:
                ok_c = ok_c & (self.omega.reshape(-1)[np.where(ok_c, pix_c, 0)] > 0)
            v = np.where(ok_c, vals, 0.0)
            sums = v.sum(axis=2).T
            counts = ok_c.reshape(M, -1).sum(axis=1)
            data, idx = v[ok_c], pix_c[ok_c]
        indptr = np.zeros(M + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        # Row-major order keeps the pixel indices of each row sorted.
        rows = sparse.csr_matrix((data, idx, indptr), shape=(M, C * H * W))
        return rows, sums

    def add(self, cols: np.ndarray) -> None:
        """Add the copies ``cols`` ``(3, M)`` to the working set (at zero)."""
        if cols.shape[1] == 0:
            return
        new, s_new = self._rows(cols)
        # Pixel-major (D itself) for the overlaps with the earlier copies:
        # each of the new copies' pixels meets the few copies covering it,
        # where D^T D over the whole set visits every copy's every pixel.
        new_d = new.T.tocsr()
        G_nn = new @ new_d
        if self.size:
            BT = sparse.hstack([new @ blk for blk in self.blocks], format="csr")
            self.G = sparse.bmat([[self.G, BT.T], [BT, G_nn]], format="csr")
        else:
            self.G = G_nn.tocsr()
        self.blocks.append(new_d)
        self.rows.append(new)
        self.index[cols[0], cols[1], cols[2]] = self.size + np.arange(cols.shape[1])
        self.cols = np.concatenate([self.cols, cols], axis=1)
        self.x = np.concatenate([self.x, np.zeros(cols.shape[1])])
        self.c = np.concatenate([self.c, new @ self.y])
        self.s = np.concatenate([self.s, s_new], axis=1)
        self.cp = self.c - (self.s * (self.ysum / self.n)[:, None]).sum(axis=0)
        self._L = None

    def keep_support(self) -> None:
        """Drop the copies whose activation is zero (for the refit)."""
        keep = self.x != 0
        if keep.all():
            return
        idx = np.flatnonzero(keep)
        self.index[self.cols[0], self.cols[1], self.cols[2]] = -1
        self.cols, self.x = self.cols[:, idx], self.x[idx]
        self.index[self.cols[0], self.cols[1], self.cols[2]] = np.arange(len(idx))
        # The refit needs only the Gram matrix.
        self.blocks, self.rows = [], []
        self.G = self.G[idx][:, idx]
        self.c, self.s, self.cp = self.c[idx], self.s[:, idx], self.cp[idx]
        self._L, self._v = None, None

    def _gram(self, x: np.ndarray) -> np.ndarray:
        return self.G @ x - ((self.s @ x) / self.n) @ self.s

    def bias(self) -> np.ndarray:
        """The background (normalised units) that is optimal for the activations."""
        return (self.ysum - self.s @ self.x) / self.n

    def residual(self, b: np.ndarray) -> np.ndarray:
        """``y - D x - b`` on the observed pixels, ``(C, H, W)`` float32."""
        C, H, W = self.shape
        model = np.zeros(C * H * W)
        start = 0
        for rows in self.rows:
            model += rows.T @ self.x[start : start + rows.shape[0]]
            start += rows.shape[0]
        r = (self.y - model).reshape(C, H, W) - b[:, None, None]
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
        x = self.x.copy()
        y = x.copy()
        t = 1.0
        for _ in range(INNER_MAX):
            v = y - step * (self._gram(y) - self.cp)
            if self.positive:
                x_new = np.maximum(v - lam * step, 0.0)
            else:
                x_new = np.sign(v) * np.maximum(np.abs(v) - lam * step, 0.0)
            d = x_new - x
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            if np.dot(y - x_new, d) > 0:
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
        from the last one's vector, with a margin for what it has not reached."""
        if self._L is None:
            v = np.random.default_rng(0).uniform(0.5, 1.0, self.size)
            if self._v is not None and len(self._v) <= self.size:
                v[: len(self._v)] += self._v * math.sqrt(self.size)
            ev = 1.0
            for _ in range(POWER_ITERS):
                w = self._gram(v)
                ev = float(np.linalg.norm(w))
                if ev == 0:
                    ev = 1.0
                    break
                v = w / ev
            self._v = v
            self._L = POWER_MARGIN * ev
        return self._L


def _keep_order(res: SolveResult, a: np.ndarray, two_d: bool) -> SolveResult:
    """Put the result's motifs back in the given order (``_Solver._result``
    sorts them by how much of the image each explains)."""
    given = a[:, 0] if two_d else a
    k = res.kernels.reshape(len(res.kernels), -1)
    g = given.reshape(len(given), -1).astype(np.float64)
    rows, cols = optimize.linear_sum_assignment(-np.abs(g @ k.T))
    order = cols[np.argsort(rows)]
    if np.array_equal(order, np.arange(len(order))):
        return res
    res.kernels = res.kernels[order]
    res.activations = res.activations[order]
    res.explained = res.explained[order]
    return res
