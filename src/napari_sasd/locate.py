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
image. About six rounds reach the optimum (0.15-0.18x a 512^2 solve).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import numpy as np
from scipy import optimize, signal, sparse

from ._version import __version__
from .convolution import ConvOperator
from .result import SolveProgress, SolveResult, run_to_end
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
POWER_TOL = 1e-3
#: A copy joins the working set when its correlation passes lambda by this
#: fraction; the fit stops when none does. What such a copy would add is of
#: that order (normalised units, lambda is a few noise levels): far below any
#: defect threshold.
KKT_SLACK = 0.05
#: A solve's exact finish (:func:`exact_finish_fits`) when its copies have at
#: most this many others within reach, on average (two motifs, k = 12, 1.5
#: copies per motif area: about 7).
EXACT_FINISH_MAX_OVERLAPS = 20
#: ... and when the overlaps it must sum tap by tap (copies cut by the border
#: or the mask) stay under this many multiply-adds. A real scan with its
#: scan-line scars masked has nearly every copy cut: the 100 nm WSe2 scan
#: (k 20, 7.5 % of pixels marked) spent 290 s there, against 2 s for the
#: whole-image refit.
EXACT_FINISH_MAX_TAPS = 1e7


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
    return run_to_end(gen)


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


def exact_finish_fits(solver: _Solver) -> bool:
    """Whether a solve's copies are sparse enough for :func:`exact_finish`:
    on average at most ``EXACT_FINISH_MAX_OVERLAPS`` copies within a motif's
    reach of each. Denser (a lattice of overlapping copies, Si(111) 7x7 with
    k = 27: about 130), the working set's Gram matrix is nearly dense and its
    fit took a minute where the whole-image refit takes a second. Copies cut
    by the border or missing pixels have their overlaps summed tap by tap:
    their cost is bounded too (``EXACT_FINISH_MAX_TAPS``)."""
    kh, kw = solver.k
    C, H, W = solver.y.shape
    x = solver.x[:, kh // 2 : kh // 2 + H, kw // 2 : kw // 2 + W]
    _, r, c = np.nonzero(x)
    overlaps = len(r) * (2 * kh - 1) * (2 * kw - 1) / (H * W)
    if overlaps > EXACT_FINISH_MAX_OVERLAPS:
        return False
    n_cut = np.count_nonzero(_cut_centres((C, H, W), (kh, kw), solver.omega)[r, c])
    return n_cut * max(overlaps, 1.0) * kh * kw * C <= EXACT_FINISH_MAX_TAPS


def exact_finish(solver: _Solver, lam: float) -> Generator[SolveProgress, None, bool]:
    """A solve's last stage: its activations brought to the optimum of the
    lasso with its final motifs fixed, then the amplitude refit, by the
    working set of :func:`locate` warm-started from the solve's own copies.

    The whole-image stages stop short of that optimum and leave weak true
    copies under the threshold, which a locate with the same motifs then
    finds (512^2, two motifs: locate's precision against the solve's defects
    0.977-0.984). From the solve's copies this takes two or three rounds
    (0.06 s at 512^2), where the whole-image refit it replaces took 20
    iterations (0.14-0.18 s). Leaves ``solver``'s activations, operator,
    background and objective set for its result; returns whether the
    working set was complete."""
    kh, kw = solver.k
    H, W = solver.y.shape[1:]
    x = solver.x[:, kh // 2 : kh // 2 + H, kw // 2 : kw // 2 + W]
    m, r, c = np.nonzero(x)
    fit = _Locator(
        solver.p, solver.positive, solver.seed, None, solver.tol, solver.shrink, solver.workers
    )
    fit.iteration, fit.total, fit.n_stages = solver.iteration, solver.total, solver.n_stages
    a = solver.a.astype(np.float32)
    gen = fit._fit(a, lam, OUTER_MAX, solver.stage0 + 1, (np.stack([m, r, c]), x[m, r, c]))
    while True:
        try:
            prog = next(gen)
        except StopIteration as stop:
            complete = bool(stop.value)
            break
        solver.iteration, solver.total = fit.iteration, fit.total
        solver.n_stages = max(solver.n_stages, prog.n_stages)
        yield prog
    solver.iteration, solver.b, solver.obj = fit.iteration, fit.b, fit.obj
    solver.stage0 += 2
    solver._setup_op(solver.k, a, fit.x)
    return complete


class _Locator(_Solver):
    """Fixed-motif fit by a working set, on the solver's state.

    The whole image's correlations with the motifs (where a copy would lower
    the objective) come from the solver's windowed operator; the lasso on the
    working set is solved on its Gram matrix (:class:`_Pool`); the result is
    built by the solver's own :meth:`_result`, so its conventions (centres,
    signs, units, background, explained energy) are the solver's."""

    def locate(self, params: dict[str, Any]) -> Generator[SolveProgress, None, SolveResult]:
        """The fit with the problem's motifs (``init_kernels``), and its result."""
        p = self.p
        a = p.init_kernels.astype(np.float32)
        lam = self.auto_lam() if p.lam is None else p.lam
        rounds = OUTER_MAX if self.max_iter is None else max(1, int(self.max_iter))
        self.total = rounds + 1
        self.n_stages = 2
        converged = yield from self._fit(a, lam, rounds, 0)
        self.total = self.iteration
        res = self._result(lam, converged, params)
        return _keep_order(res, a, p.channel_axis is None)

    def _fit(
        self,
        a: np.ndarray,
        lam: float,
        rounds: int,
        stage0: int,
        start: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Generator[SolveProgress, None, bool]:
        """The lasso with the motifs ``a`` (``(N, C, kh, kw)`` float32) fixed,
        by at most ``rounds`` rounds of the working set, then the amplitude
        refit; from the copies ``start`` (``(3, M)`` and their activations,
        normalised units) if given, else from none. Leaves the activations
        on the solver's grid (``x``), the background and the objective set.
        Returns whether the working set was complete (no copy left to add)."""
        C = self.p.n_channels
        self.support = None
        self.b = np.zeros(C, np.float64)
        # The solver's windowed operator, for the correlations of a residual
        # with the motifs at every copy centre (the activations' transforms,
        # all zero here, are only set up for the result).
        self.op = ConvOperator(self.y.shape[1:], self.k, self.workers)
        self.a, self.A = a, self.op.fft_kernel(a)
        pool = _Pool(self, a)
        if start is not None and start[0].shape[1]:
            pool.add(start[0])
            pool.x = np.asarray(start[1], np.float64).copy()
            pool.solve(lam, max(self.tol, ROUND_TOL))
            self.b = pool.bias()
        r = pool.residual(self.b)
        converged = False

        def progress(stage: int) -> SolveProgress:
            self.total = max(self.total, self.iteration)
            return SolveProgress(
                stage0 + stage, max(self.n_stages, stage0 + 2), self.iteration, self.total,
                self.obj, lam, self._snapshot(),
            )  # fmt: skip

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
            yield progress(0)
        pool.solve(lam, self.tol)
        self.b = pool.bias()
        self.obj = pool.objective(lam)
        yield progress(0)
        # Amplitude refit on the found copies without the l1 shrinkage (as
        # the solver's last stage), the background with them.
        pool.keep_support()
        pool.solve(0.0, self.tol)
        self.b = pool.bias()
        # The objective the solver reports: the refit's (no l1 term).
        self.obj = pool.objective(0.0)
        self.iteration += 1
        # The activations on the solver's grid, for its result; the model
        # comes from the copies (``_window_model``), not from transforms.
        kh, kw = self.k
        H, W = self.y.shape[1:]
        self.x = np.zeros((self.p.n_motifs, H + kh - 1, W + kw - 1), np.float32)
        self.x[pool.cols[0], pool.cols[1] + kh // 2, pool.cols[2] + kw // 2] = pool.x
        self._pool = pool
        if self.omega is not None:
            # The reconstruction shows the model on the missing pixels too,
            # which the copies (cut by the mask) do not hold: transforms.
            self._setup_op(self.k, a, self.x)
        yield progress(1)
        return converged

    def auto_lam(self) -> float:
        """Lambda (normalised units) exactly as solve picks it (``_Solver.run``:
        from the most energetic data window, not from a motif), so that
        locating a solve's motifs in the same image uses the solve's lambda."""
        (w,) = self._windows(self.y, 1, [])
        K = self._lift()
        # ``_Solver._lam_max`` without its model of zero activations (two
        # transforms of zeros): the residual is the data itself, negated as
        # there, so the value is the same to the bit.
        op = ConvOperator(self.y.shape[1:], K, self.workers)
        r = np.negative(self.y)
        if self.omega is not None:
            r *= self.omega
        corr = -op.grad_x(op.fft_kernel(self._embed([w], K)), op.fft_residual(r))
        lam_max = max(float(corr.max() if self.positive else np.abs(corr).max()), 1e-6)
        noise = noise_sigma(self.p.y, self.p.omega)
        return max(AUTO_LAM_FRACTION * lam_max, AUTO_LAM_NOISE * noise)

    def _window_model(self, n: int | None) -> np.ndarray:
        """The model on the observed window from the copies (``_Solver._result``
        asks for it): motif ``n``'s part, or (None) all of it."""
        if self.omega is not None:
            return super()._window_model(n)
        return self._pool.model(n)

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
        H, W = mag.shape[1:]
        idx = np.flatnonzero(mag > lam * (1 + slack))
        if pool.size:
            idx = idx[pool.index.reshape(-1)[idx] < 0]
        n, rc = np.divmod(idx, H * W)
        r, c = np.divmod(rc, W)
        v = mag[n, r, c]
        keep = np.ones(len(idx), bool)
        # The 3 x 3 test on the candidates only. A neighbour clipped into the
        # image is the copy itself or another of its neighbours: clipping
        # ignores the pixels outside, as it should.
        for dr in (-1, 0, 1):
            rr = np.clip(r + dr, 0, H - 1)
            for dc in (-1, 0, 1):
                if dr or dc:
                    keep &= mag[n, rr, np.clip(c + dc, 0, W - 1)] <= v
        return np.stack([n[keep], r[keep], c[keep]]).astype(np.int64)


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

    def _overlaps(self, new: np.ndarray, start: int) -> tuple[np.ndarray, ...]:
        """Gram entries of the copies ``start..`` (``new`` their columns)
        with every copy of the set (themselves included): rows, cols, values."""
        kh, kw = self.k
        i, j = _neighbours(new[1:], self.cols[1:], (kh - 1, kw - 1))
        gi = i + start
        m, r, c = self.cols
        dr, dc = r[gi] - r[j], c[gi] - c[j]
        vals = self.xc[m[gi], m[j], dr + kh - 1, dc + kw - 1]
        q = np.flatnonzero(self.cut[r[gi], c[gi]] | self.cut[r[j], c[j]])
        if len(q):
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
        gi, j, v = self._overlaps(cols, start)
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
