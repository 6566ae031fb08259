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

from collections.abc import Generator
from typing import Any

import numpy as np
from scipy import optimize

from ._version import __version__
from .convolution import ConvOperator
from .locate_pool import _cut_centres, _Pool
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
#: Relative change at which the lasso on an incomplete working set stops.
ROUND_TOL = 1e-3
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
