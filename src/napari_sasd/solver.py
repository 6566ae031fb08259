"""Sphere-constrained short-and-sparse blind deconvolution (SaS-BD), napari-free.

Model (``method.md``): ``y_c ~ sum_n a_{n,c} (*) x_n + b_c`` on the observed
pixels, ``||a_n||_F = 1``, ``x_n >= 0`` by default, minimising
``1/2 ||P_Omega(residual)||^2 + lam sum_n ||x_n||_1``.

Algorithm (the method note's family, with the changes measured to help):

1. Discovery: motifs are found one at a time (deflation) on a crop of about
   a hundred motif areas per motif (``_crop_side``), each from the data
   window least like the ones already found, by a single-motif continuation
   on a lifted support.
2. Several motifs: joint refinement (on the crop when there is one, else on
   the whole image): activations settle with the motifs fixed, then
   alternating steps -- FISTA on all activations (with backtracking from a
   growing step, see ``_step``), a Riemannian gradient step of every motif
   with an exact line search, closed-form background -- with re-centring and
   a collapse guard. Motifs from a crop (or a warm start) then go straight
   to the whole image's ``k x k`` support, where the activations settle.
3. Polish on the ``k x k`` support, where activations are the copies
   centred inside the image (the project's "same"-convolution convention),
   then an amplitude refit without the l1 shrinkage.

Every operator is a few real FFTs of one fast size, batched over motifs and
channels (``convolution.py``), in float32. On a discovery crop the model is
circular (``PeriodicConvOperator``): residuals stay spectra, about a third of
the transforms. So it is for the whole image's settle (zero-padded, its border
copies then corrected) and its polish, where the circular model on a padded
grid is kept exact by filling the pad with the model (``_refill``); images
with missing pixels use the exact windowed model (``ConvOperator``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import fft, ndimage
from skimage.feature import peak_local_max

from ._version import __version__
from .convolution import ConvOperator, PeriodicConvOperator
from .metrics import shift_invariant_similarity
from .result import SolveProgress, SolveResult
from .validation import Problem, prepare

#: Default lambda, as a fraction of the largest data-motif correlation, and
#: its floor in multiples of the estimated noise level (normalised units).
AUTO_LAM_FRACTION = 0.1
AUTO_LAM_NOISE = 2.5
#: Two motifs this similar (shift-invariant) count as collapsed onto one shape.
COLLAPSE_SIMILARITY = 0.85
#: Default iterations: per early continuation stage, last lifted stage, polish
#: on the k x k support, amplitude refit (debias).
STAGE_ITERS = (8, 100, 30, 20)
#: Polish and amplitude refit after a single motif learnt on a crop (or a
#: warm start), which go straight to the k x k support.
DIRECT_ITERS = (15, 10)
#: Activations-only iterations on the whole image before the polish, when the
#: motifs come from a crop, one motif / several (at most: stops on convergence).
#: Several motifs had no whole-image joint stage to settle them: with 16,
#: recall fell (0.80 instead of 0.88 at k = 16) and FeSe's defects were missed.
SETTLE_DIRECT = (16, 48)
#: The polish's activation step works on the pixels that can be non-zero
#: when they are at most this fraction of the grid (about 1 % at sensible
#: lambdas; 75 % at a hundredth of them, where the gathers made the solve
#: 1.05-1.2x slower than the dense step).
SPARSE_MAX_FRACTION = 0.25
#: Activation step: grows by this factor per iteration until backtracking
#: stops it, at most this many times the global 1/Lipschitz step.
BACKTRACK_GROW = 1.5
MAX_STEP_GAIN = 64.0
#: Motifs are discovered on a crop of ``DISCOVERY_SPAN * k * sqrt(n_motifs)``
#: pixels per side, within ``[DISCOVERY_MIN, DISCOVERY_SIZE]``: a hundred motif
#: areas per motif, a hundred-odd copies at the densities of interest. (A
#: cap of 256 left 3 motifs of k = 20 with ~80 copies each: one collapsed, at
#: 0.72 similarity, on 1024^2 seed 0; the 346 crop: 0.990 / 0.999 / 0.988.)
DISCOVERY_SPAN = 10
DISCOVERY_MIN = 128
DISCOVERY_SIZE = 384
#: Several motifs refined on the crop: further stages there (at most) while
#: re-centring still moves a motif by more than a pixel. The whole image's
#: k x k stages cannot move a motif, and one left off-centre loses its edge
#: and its copies' positions (1024^2, 3 motifs, k = 20, seed 1: one motif
#: 3 px off, similarity 0.988, recall 0.03 for it).
CROP_JOINT_MORE = 1
#: Several motifs: the crop is only used when it is at most this share of the image.
CROP_FRACTION = 0.5
#: Iterations of each discovery solve at the target lambda (at most: a stage
#: stops when it converges), several motifs / one. A single motif learnt on a
#: small crop needs the longer stage (k = 16 at 256^2: 7/10 seeds >= 0.99 with
#: 30, 10/10 with 100); it costs little on the crop.
DISCOVERY_FINAL = 30
DISCOVERY_FINAL_ONE = 100
#: Iterations of each earlier discovery stage (at most), where the motif only
#: follows lambda down: 0.95x the time of 8 at 256^2 with two motifs, quality
#: alike over the battery (45/52 seeds >= 0.99 either way).
DISCOVERY_EARLY = 6
#: A motif looks cut by its border (``_looks_cut``) when an outermost row
#: holds at least ``EDGE_HEAVY`` times a row's mean energy and the opposite
#: one at most ``EDGE_EMPTY`` times that.
EDGE_HEAVY = 0.25
EDGE_EMPTY = 0.05
#: Re-centring crops a lifted motif to the window nearest its energy centroid
#: among those that lose at most this share of its energy more than the best.
WINDOW_LOSS = 0.005
#: The whole image on the circular model: the pixels outside it are refilled
#: with the model every this many iterations (two transforms; 4 and 8 measured
#: alike at 256^2).
FILL_EVERY = 4


def solve(
    image: np.ndarray,
    kernel_size: int | tuple[int, int] = 15,
    n_motifs: int = 1,
    lam: float | None = None,
    *,
    channel_axis: int | None = None,
    positive: bool = True,
    mask: np.ndarray | None = None,
    seed: int = 0,
    max_iter: int | None = None,
    init_kernels: np.ndarray | None = None,
    tol: float = 1e-4,
    shrink: float | None = None,
    workers: int | None = None,
) -> SolveResult:
    """Find ``n_motifs`` short motifs and their sparse activation maps in an image.

    Parameters
    ----------
    image : array_like
        2-D image, or 3-D stack with ``channel_axis`` (a spectroscopy cube:
        one kernel per channel, one activation map per motif shared by all
        channels). Integer or float; NaN pixels are left out of the fit.
    kernel_size : int or (int, int)
        Motif size ``k`` or ``(kh, kw)`` in pixels: a bit larger than a defect.
    n_motifs : int
        Number of distinct motifs to find.
    lam : float, optional
        Sparsity weight on the normalised image (median 0, std 1). Larger
        gives fewer, stronger copies. None picks
        ``max(0.1 * lam_max, 2.5 * noise)``, with ``lam_max`` the largest
        correlation of the data with the initial motif and ``noise`` a robust
        estimate of the noise std (:func:`noise_sigma`).
    channel_axis : int, optional
        Axis of a 3-D ``image`` holding channels.
    positive : bool
        Non-negative activations (a copy's sign lives in its motif).
    mask : ndarray of bool, optional
        ``(H, W)`` True where a pixel is observed; False pixels are ignored.
    seed : int
        0 (default) starts from the most energetic, most distinct data
        windows; another seed jitters that choice, for a different start when
        a result looks wrong. Results are deterministic for a given seed.
    max_iter : int, optional
        Iteration budget over all stages, split among them in the default
        proportions; default: about 110-190 for one motif, 380-650 for two or
        three (stages stop early when they converge; most iterations run on
        the discovery crop, a whole-image one costs 5-11 FFTs of the image).
    init_kernels : ndarray, optional
        Warm start: motifs of a previous result, ``(n_motifs, kh, kw)`` (or
        ``(n_motifs, C, kh, kw)``). Skips the data initialisation and most of
        the continuation, so a re-run after changing lambda is fast. A motif
        that looks shifted and cut by its border (one outermost row or column
        empty, the opposite one heavy) is first refined on a lifted support.
    tol : float
        Relative change of activations and motifs at which a stage stops.
    shrink : float
        Factor by which lambda decreases per continuation stage; default 0.7
        for one motif, 0.8 (gentler, measured more reliable) for several.
    workers : int, optional
        Threads for ``scipy.fft`` (-1: all cores); default: one thread for
        transforms below 800^2 pixels (faster there), all cores above.

    Returns
    -------
    SolveResult

    Raises
    ------
    TypeError, ValueError
        On bad input, before any work starts.
    """
    gen = iter_solve(
        image, kernel_size, n_motifs, lam, channel_axis=channel_axis, positive=positive,
        mask=mask, seed=seed, max_iter=max_iter, init_kernels=init_kernels, tol=tol,
        shrink=shrink, workers=workers,
    )  # fmt: skip
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def iter_solve(
    image: np.ndarray,
    kernel_size: int | tuple[int, int] = 15,
    n_motifs: int = 1,
    lam: float | None = None,
    *,
    channel_axis: int | None = None,
    positive: bool = True,
    mask: np.ndarray | None = None,
    seed: int = 0,
    max_iter: int | None = None,
    init_kernels: np.ndarray | None = None,
    tol: float = 1e-4,
    shrink: float | None = None,
    workers: int | None = None,
) -> Generator[SolveProgress, None, SolveResult]:
    """Like :func:`solve`, as a generator of progress snapshots.

    Inputs are checked when this is called (not at the first ``next``). The
    generator yields a :class:`SolveProgress` after every iteration and
    returns the :class:`SolveResult` (``StopIteration.value``; ``result =
    yield from iter_solve(...)``). Closing it cancels the run.

    Parameters and exceptions are those of :func:`solve`.
    """
    prob = prepare(image, kernel_size, n_motifs, lam, channel_axis, mask, init_kernels)
    if shrink is None:
        shrink = 0.7 if prob.n_motifs == 1 else 0.8
    if not 0 < shrink < 1:
        raise ValueError(f"shrink must be between 0 and 1, got {shrink}")
    if max_iter is not None and (isinstance(max_iter, bool) or int(max_iter) < 1):
        raise ValueError(f"max_iter must be a positive int, got {max_iter}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    params: dict[str, Any] = {
        "kernel_size": list(prob.kernel_size),
        "n_motifs": prob.n_motifs,
        "lam": prob.lam,
        "channel_axis": prob.channel_axis,
        "positive": bool(positive),
        "seed": int(seed),
        "max_iter": None if max_iter is None else int(max_iter),
        "tol": float(tol),
        "shrink": float(shrink),
        "warm_start": init_kernels is not None,
        "masked_pixels": 0 if prob.omega is None else int((prob.omega == 0).sum()),
        "version": __version__,
    }
    return _Solver(prob, positive, seed, max_iter, tol, shrink, workers).run(params)


class _Solver:
    """The iPALM iteration over one prepared problem."""

    def __init__(
        self,
        prob: Problem,
        positive: bool,
        seed: int,
        max_iter: int | None,
        tol: float,
        shrink: float,
        workers: int | None,
    ) -> None:
        self.p = prob
        self.positive = positive
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.tol = tol
        self.shrink = shrink
        self.workers = workers
        self.max_iter = max_iter
        self.y = prob.y
        self.omega = prob.omega
        self.n_obs = (
            np.full(prob.n_channels, prob.y[0].size, np.float64)
            if prob.omega is None
            else prob.omega.sum(axis=(1, 2)).astype(np.float64)
        )
        self.k = prob.kernel_size
        self.iteration = 0
        self.fixed_motifs = False
        # Largest shift (px) the last re-centring gave a motif.
        self.moved = 0
        # Circular model (a discovery crop, see ``_sub``), and the data's spectrum.
        self.periodic = False
        self._Y: np.ndarray | None = None
        # The data's own size: a circular crop is zero-padded past it.
        self.shape0 = tuple(self.y.shape[1:])
        # The whole image on the circular model (``_filled``): where the image
        # sits on the grid (the other pixels are filled with the model), and
        # the number of pixels the background is fitted on.
        self.window: tuple[slice, slice] | None = None
        self._zeros: np.ndarray | None = None
        # Non-zero flat indices of x and x_prev, with the arrays they are of
        # (``_sparse_x_step``), and the support as booleans.
        self._nz: tuple[np.ndarray, np.ndarray] | None = None
        self._nz_prev: tuple[np.ndarray, np.ndarray] | None = None
        self._support_bool: tuple[np.ndarray, np.ndarray] | None = None
        # The sparse activation step (``_sparse_x_step``), for the whole
        # image's circular sub-solvers, whose activations are sparse.
        self.sparse_x = False
        self.n_bg = float(self.y[0].size)

    # ------------------------------------------------------------------ setup
    def _lift(self) -> tuple[int, int]:
        # Lifted support: room for a whole motif even when the start window
        # sees it shifted by up to half its size (k + margin, method.md).
        kh, kw = self.k
        return kh + 2 * max(2, kh // 2), kw + 2 * max(2, kw // 2)

    def _windows(self, r: np.ndarray, n: int, avoid: list[np.ndarray]) -> list[np.ndarray]:
        """n data windows of size k at high local energy, unlike each other and ``avoid``."""
        kh, kw = self.k
        H, W = r.shape[1:]
        energy = ndimage.uniform_filter((r**2).sum(0), size=(kh, kw), mode="constant")
        cand = peak_local_max(
            energy, min_distance=max(1, min(kh, kw) // 2), num_peaks=max(12, 6 * n),
            exclude_border=False,
        )  # fmt: skip
        wins, ens = [], []
        for i, j in cand:
            i0 = int(np.clip(i - kh // 2, 0, H - kh))
            j0 = int(np.clip(j - kw // 2, 0, W - kw))
            wins.append(r[:, i0 : i0 + kh, j0 : j0 + kw].astype(np.float64))
            ens.append(energy[i, j])
        if not wins:
            wins, ens = [r[:, :kh, :kw].astype(np.float64)], [1.0]
        ens_a = np.asarray(ens) / max(ens)
        chosen: list[np.ndarray] = []
        for _ in range(n):
            ref = avoid + chosen
            score = [
                e * (1 - max((shift_invariant_similarity(w, c) for c in ref), default=0.0)) ** 2
                for w, e in zip(wins, ens_a, strict=True)
            ]
            if self.seed:
                # Another seed, another start: jitter the scores so a user
                # can try different data windows when a result looks wrong.
                score = np.asarray(score) * self.rng.uniform(0.3, 1.0, len(score))
            best = int(np.argmax(score))
            chosen.append(wins[best])
        return chosen

    def _embed(self, wins: list[np.ndarray], K: tuple[int, int]) -> np.ndarray:
        kh, kw = wins[0].shape[-2:]
        a = np.zeros((len(wins), self.p.n_channels, *K), np.float32)
        oh, ow = (K[0] - kh) // 2, (K[1] - kw) // 2
        for n, w in enumerate(wins):
            a[n, :, oh : oh + kh, ow : ow + kw] = w
        return _normalise(a)

    # -------------------------------------------------------------- iteration
    def _setup_op(self, K: tuple[int, int], a: np.ndarray, x: np.ndarray) -> None:
        if self.periodic:
            self.op = PeriodicConvOperator(self.y.shape[1:], K, self.workers)
            # A filled grid's data spectrum comes from ``_refill``, at the
            # start of every stage.
            if self._Y is None and self.window is None:
                self._Y = self.op.fft_residual(self.y)
        else:
            self.op = ConvOperator(self.y.shape[1:], K, self.workers)
        self.a = a
        # Copies: the steps overwrite the previous iterate's buffers.
        self.x, self.x_prev = x.copy(), x.copy()
        self.A = self.op.fft_kernel(a)
        self._Lx: float | None = None
        self._Lx_last: float | None = None
        # Residuals at x and x_prev, kept while the motifs are fixed (``_step``).
        self._r: np.ndarray | None = None
        self._r_prev: np.ndarray | None = None
        self.x_step = 0.0
        self.X = self.op.fft_x(x)
        self.X_prev = self.X.copy()
        self.t = 1.0

    def _residual(self, A: np.ndarray, X: np.ndarray) -> np.ndarray:
        # The model's window is a strided view of the transform's output; the
        # subtraction makes the residual contiguous for what follows (dots,
        # the next transform's buffer) at no extra pass.
        r = np.subtract(self.op.image(self.op.combine(A, X)), self.y)
        r += self.b.astype(np.float32)[:, None, None]
        if self.omega is not None:
            r *= self.omega
        return r

    def _l1(self) -> float:
        # Non-negative activations: their sum is the l1 norm, no abs temporary.
        return float(self.x.sum() if self.positive else np.abs(self.x).sum())

    def _prox(self, v: np.ndarray, thr: float) -> np.ndarray:
        if self.positive:
            v -= thr
            # Against an array of zeros: numpy's maximum with a scalar was
            # measured 3-5x slower than with an array (no SIMD loop for it).
            if self._zeros is None or self._zeros.shape != v.shape[-2:]:
                self._zeros = np.zeros(v.shape[-2:], v.dtype)
            out = np.maximum(v, self._zeros, out=v)
        else:
            out = np.sign(v) * np.maximum(np.abs(v) - thr, 0)
        if self.support is not None:
            out *= self.support
        return out

    def _step(self, lam: float) -> tuple[float, float]:
        """One iPALM iteration; returns (objective, relative change)."""
        if self.periodic:
            return self._step_periodic(lam)
        op = self.op
        t_new = (1 + math.sqrt(1 + 4 * self.t**2)) / 2
        beta = (self.t - 1) / t_new
        # Activations: FISTA step from the extrapolated point. The FFT is
        # linear, so the extrapolated spectrum costs no transform.
        xe = _extrapolate(self.x, self.x_prev, beta)
        # With the motifs (and background) fixed the residual is affine in x,
        # so the extrapolated point's residual is the same combination of the
        # two last ones: one inverse FFT per activation-only step saved.
        r_x = self._r if self.fixed_motifs else None
        if r_x is not None and (beta == 0 or self._r_prev is not None):
            re = r_x if beta == 0 else _extrapolate(r_x, self._r_prev, beta)
        else:
            re = self._residual(self.A, _extrapolate(self.X, self.X_prev, beta))
            if beta == 0:
                r_x = re
        gx = op.grad_x(self.A, op.fft_residual(re))

        def fit(X: np.ndarray) -> tuple[np.ndarray, float]:
            r = self._residual(self.A, X)
            return r, 0.5 * _dot(r, r)

        x_new, X_new, r, f_new, dxe = self._backtrack(lam, xe, gx, 0.5 * _dot(re, re), fit)
        dx, t_new = self._accept_x(x_new, X_new, dxe, t_new)
        if self.fixed_motifs:
            self._r_prev, self._r = r_x, r
            self.t = t_new
            return f_new + lam * self._l1(), dx
        # Motifs: Riemannian gradient with exact line search, retraction.
        # No momentum here: the line search already takes the best step, and
        # without extrapolation the residual of the activation check is the
        # one the motif gradient needs (one inverse FFT saved per iteration).
        # Background: closed form (mean residual on the observed pixels).
        db = r.sum(axis=(1, 2), dtype=np.float64) / self.n_obs
        self.b -= db
        r -= (db[:, None, None] if self.omega is None else db[:, None, None] * self.omega).astype(
            r.dtype
        )
        da = self._update_motifs(op.fft_residual(r))
        self._r = self._r_prev = None
        self.t = t_new
        obj = 0.5 * _dot(r, r) + lam * self._l1()
        return obj, max(dx, da / math.sqrt(self.p.n_motifs))

    def _backtrack(
        self,
        lam: float,
        xe: np.ndarray,
        gx: np.ndarray,
        fe: float,
        fit: Callable[[np.ndarray], tuple[np.ndarray, float]],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
        """The proximal activation step from ``xe`` (gradient ``gx``, fit
        ``fe``), its size found by backtracking; ``fit(X)`` gives the residual
        and the fit at the trial's spectrum. Returns the new activations, their
        spectrum, residual and fit, and the move from ``xe``."""
        # The global Lipschitz bound max_w sum |A(w)|^2 is set by the motifs'
        # DC (tens of times the restricted curvature on a sparse support for
        # smooth, positive motifs), so FISTA with it crawls. Backtracking from
        # a growing step finds the local curvature; one residual per trial,
        # which the caller then reuses.
        Lx = self._lipschitz()
        step = min(max(self.x_step * BACKTRACK_GROW, 1 / Lx), MAX_STEP_GAIN / Lx)
        while True:
            v = gx * np.float32(-step)
            v += xe
            x_new = self._prox(v, np.float32(lam * step))
            X_new = self.op.fft_x(x_new)
            res, f_new = fit(X_new)
            dxe = x_new - xe
            if step <= 1 / Lx or f_new <= fe + _dot(gx, dxe) + _dot(dxe, dxe) / (2 * step):
                break
            step = max(step / 2, 1 / Lx)
        self.x_step = step
        return x_new, X_new, res, f_new, dxe

    def _accept_x(
        self, x_new: np.ndarray, X_new: np.ndarray, dxe: np.ndarray, t_new: float
    ) -> tuple[float, float]:
        """Take the activation step; returns its relative change and the
        momentum counter, reset when the step turned against the momentum."""
        # The previous iterate's buffer (or the extrapolated point's, which
        # took it over) is free now: the change goes there.
        d = np.subtract(x_new, self.x, out=self.x_prev)
        dx, t_new = _restart(dxe, d, x_new, t_new)
        self.x_prev, self.x = self.x, x_new
        self.X_prev, self.X = self.X, X_new
        return dx, t_new

    def _lipschitz(self) -> float:
        """Global Lipschitz bound of the activation gradient, max_w sum |A(w)|^2."""
        if self._Lx is None:
            # |A|^2 summed over motifs and channels: squares of the float32
            # views (re and im side by side, contiguous), then the pairs added.
            Av = self.A.view(np.float32).reshape(-1, *self.A.shape[2:-1], 2 * self.A.shape[-1])
            A2 = np.square(Av[0])
            for m in range(1, len(Av)):
                A2 += np.square(Av[m])
            self._Lx = self._Lx_last = float(np.max(A2[..., 0::2] + A2[..., 1::2])) + 1e-12
        return self._Lx

    def _update_motifs(self, R: np.ndarray) -> float:
        """The motif step from the residual's spectrum ``R`` at the current
        activations; returns how far the motifs moved."""
        op, ae, Ae = self.op, self.a, self.A
        ga = op.grad_kernel(self.X, R)
        rg = ga - np.sum(ga * ae, axis=(1, 2, 3), keepdims=True) * ae
        # Exact line search along the Riemannian gradient, in the ambient
        # space: f(a - s rg) is quadratic in s. A Lipschitz step would be
        # set by the DC frequency (|X(0)|^2 = (sum x)^2 for x >= 0), hundreds
        # of times stiffer than the other directions, and crawl.
        RG = op.fft_kernel(rg)
        N = len(rg)
        # f(ae - sum_n s_n rg_n) is quadratic in s: minimise it exactly over
        # the N step sizes (an N x N system; motifs with strong activation
        # maps need far shorter steps than weak ones), with no transform. The
        # slope v_n = <rg_n (*) x_n, r> = <rg_n, ga_n> is exact and costs a
        # product of kernels. The curvature M comes from the spectra
        # (Parseval), over the whole grid instead of the observed window: an
        # upper bound, so the step minimises a majoriser and still decreases f.
        v = np.sum(rg.astype(np.float64) * ga, axis=(1, 2, 3))
        GX = RG * self.X[:, None]
        M = np.empty((N, N))
        for i in range(N):
            for j in range(i, N):
                M[i, j] = M[j, i] = float(op.inner(GX[i], GX[j]).sum())
        if N == 1:
            step = v / (M[0] + 1e-30)
        else:
            try:
                step = np.linalg.solve(M + 1e-9 * np.trace(M) * np.eye(N), v)
            except np.linalg.LinAlgError:
                step = np.zeros(N)
        # Keep each move on the sphere modest (at most ~0.3 rad per motif).
        rgn = np.sqrt(np.sum(rg.astype(np.float64) ** 2, axis=(1, 2, 3)))
        step = np.clip(step, 0, 0.3 / (rgn + 1e-12)).astype(np.float32)[:, None, None, None]
        a_raw = ae - step * rg
        nrm2 = np.sqrt(np.sum(a_raw**2, axis=(1, 2, 3), dtype=np.float64)).astype(np.float32)
        a_new = a_raw / nrm2[:, None, None, None]
        da = float(np.linalg.norm(a_new - self.a))
        self.a = a_new
        # Linearity again: the new motifs' spectrum without a transform,
        # (Ae - step RG) / nrm in place, the real scalings on float32 views.
        RGv, Av = RG.view(np.float32), Ae.view(np.float32)
        RGv *= step
        Av -= RGv
        Av *= (1 / nrm2)[:, None, None, None]
        self._Lx = None
        return da

    def _step_periodic(self, lam: float) -> tuple[float, float]:
        """:meth:`_step` for the circular model: residuals are spectra
        (``_residual_spectrum``) and objectives come by Parseval, so an
        iteration transforms only the activations (per backtracking trial)
        and their gradient."""
        op = self.op
        t_new = (1 + math.sqrt(1 + 4 * self.t**2)) / 2
        beta = (self.t - 1) / t_new
        re = self._residual_spectrum(_extrapolate(self.X, self.X_prev, beta))
        gx = op.grad_x(self.A, re)

        def fit(X: np.ndarray) -> tuple[np.ndarray, float]:
            R = self._residual_spectrum(X)
            return R, 0.5 * float(op.inner(R, R).sum())

        fe = 0.5 * float(op.inner(re, re).sum())
        # The whole image's settle, polish and refit have sparse activations;
        # discovery's, on a crop under continuation, are denser and smaller:
        # with the sparse step there too, the 256^2 two-motif solve took 1.17x
        # the time.
        sparse = None
        if self.positive and self.sparse_x:
            sparse = self._sparse_x_step(lam, beta, gx, fe, fit, t_new)
        if sparse is not None:
            X_new, R, f_new, dx, t_new, l1 = sparse
        else:
            xe = _extrapolate(self.x, self.x_prev, beta)
            x_new, X_new, R, f_new, dxe = self._backtrack(lam, xe, gx, fe, fit)
            dx, t_new = self._accept_x(x_new, X_new, dxe, t_new)
            l1 = self._l1()
        self.t = t_new
        if self.fixed_motifs:
            return f_new + lam * l1, dx
        # Background: the residual's mean is its spectrum's DC term, and the
        # fit changes by that term's change alone (Parseval, weight 1 / L0 L1).
        dc = R[:, 0, 0].real.astype(np.float64)
        db = dc / self.n_bg
        self.b -= db
        R[:, 0, 0] -= (db * self.y[0].size).astype(np.float32)
        f_new += 0.5 * op.parseval * float(np.sum(R[:, 0, 0].real.astype(np.float64) ** 2 - dc**2))
        obj = f_new + lam * l1
        da = self._update_motifs(R)
        return obj, max(dx, da / math.sqrt(self.p.n_motifs))

    def _sparse_x_step(
        self,
        lam: float,
        beta: float,
        gx: np.ndarray,
        fe: float,
        fit: Callable[[np.ndarray], tuple[np.ndarray, float]],
        t_new: float,
    ) -> tuple[np.ndarray, np.ndarray, float, float, float, float] | None:
        """:meth:`_backtrack` and :meth:`_accept_x` for non-negative
        activations, on the few pixels where they can be non-zero (None,
        having changed nothing, when more than ``SPARSE_MAX_FRACTION`` can).

        The activations are sparse (about 1 % of the grid in the polish), and
        ``max(xe - step (gx + lam), 0)`` is non-zero only where the
        extrapolated point is (inside the supports of ``x`` and ``x_prev``) or
        where ``gx < -lam``, whatever the step. On that set the step is the
        same arithmetic as the dense one, and the grid is touched by one
        comparison with the gradient and one scatter per trial instead of
        about twenty passes. Returns the new spectrum, residual spectrum and
        fit, the relative change, the momentum counter and the l1 norm.
        """
        x, xp = self.x, self.x_prev
        nz = _cached_nonzero(self._nz, x)
        nzp = _cached_nonzero(self._nz_prev, xp)
        g = gx.reshape(-1)
        cand = np.less(gx, np.float32(-lam))
        if self.support is not None:
            cand &= self._support_mask()
        # The union as a mask: flatnonzero gives it sorted, no sort needed.
        flat = cand.reshape(-1)
        flat[nz] = True
        flat[nzp] = True
        if np.count_nonzero(flat) > SPARSE_MAX_FRACTION * x.size:
            return None
        S = np.flatnonzero(flat)
        xf = x.reshape(-1)
        x_S = xf[S]
        xe_S = x_S - xp.reshape(-1)[S]
        xe_S *= np.float32(beta)
        xe_S += x_S
        g_S = g[S]
        sup_S = None
        if self.support is not None:
            plane = self.support[0].size
            sup = self.support.reshape(-1)
            sup_S = sup[S % plane] if len(self.support) == 1 else sup[S]
        # The new activations go into the previous iterate's buffer, no longer
        # needed: it is non-zero only inside S, which every trial writes.
        x_new = xp
        # The bound of the last motifs sets the first trial's range (the
        # motifs move little in a step); the current one is computed only when
        # the backtracking nears its floor, where it is a guarantee. It costs
        # several passes over the spectra, and is rarely needed.
        Lx = self._Lx or self._Lx_last or self._lipschitz()
        step = min(max(self.x_step * BACKTRACK_GROW, 1 / Lx), MAX_STEP_GAIN / Lx)
        while True:
            v = g_S * np.float32(-step)
            v += xe_S
            v -= np.float32(lam * step)
            np.maximum(v, 0, out=v)
            if sup_S is not None:
                v *= sup_S
            x_new.reshape(-1)[S] = v
            X_new = self.op.fft_x(x_new)
            R, f_new = fit(X_new)
            dxe = v - xe_S
            if f_new <= fe + _dot(g_S, dxe) + _dot(dxe, dxe) / (2 * step):
                break
            if step < 4 / Lx:
                Lx = self._lipschitz()
                if step <= 1 / Lx:
                    break
            step = max(step / 2, 1 / Lx)
        self.x_step = step
        # As :meth:`_accept_x`: x, x_new and the move from xe vanish outside S.
        dx, t_new = _restart(dxe, v - x_S, v, t_new)
        self.x_prev, self.x = x, x_new
        self.X_prev, self.X = self.X, X_new
        self._nz_prev, self._nz = (x, nz), (x_new, S[v != 0])
        return X_new, R, f_new, dx, t_new, float(v.sum())

    def _support_mask(self) -> np.ndarray:
        """The support as booleans (kept while the support is the same array)."""
        if self._support_bool is None or self._support_bool[0] is not self.support:
            self._support_bool = (self.support, self.support != 0)
        return self._support_bool[1]

    def _residual_spectrum(self, X: np.ndarray) -> np.ndarray:
        """Spectrum of the circular model's residual at activations ``X``."""
        R = self.op.combine(self.A, X)
        R -= self._Y
        # The background is the DC term of a constant image.
        R[:, 0, 0] += (self.b * self.y[0].size).astype(R.real.dtype)
        return R

    def _refill(self) -> None:
        """Fill the pixels outside the image with the current model.

        The windowed model is the circular one on a grid of at least
        ``H + k - 1`` with only the image's pixels observed. Filling the others
        with the model makes the circular objective a majoriser of the exact
        one that touches it here (the EM step for missing data), so steps on
        it decrease the exact objective while their residuals stay spectra.
        """
        model = self.op.image(self.op.combine(self.A, self.X))
        model += self.b.astype(np.float32)[:, None, None]
        win = (slice(None), *self.window)
        model[win] = self.y[win]
        self._Y = self.op.fft_residual(model)

    def _stage(
        self, s: int, lam: float, n_iter: int, tol: float
    ) -> Generator[SolveProgress, None, bool]:
        self.t = 1.0
        for i in range(n_iter):
            if self.window is not None and i % FILL_EVERY == 0:
                self._refill()
            self.obj, change = self._step(lam)
            self.iteration += 1
            yield SolveProgress(
                s, self.n_stages, self.iteration, self.total, self.obj, lam, self._snapshot()
            )
            if change < tol:
                return True
        return False

    def _fixed_stage(
        self, s: int, lam: float, n_iter: int, tol: float
    ) -> Generator[SolveProgress, None, bool]:
        """A stage of activation steps only, the motifs held fixed."""
        self.fixed_motifs = True
        try:
            return (yield from self._stage(s, lam, n_iter, tol))
        finally:
            self.fixed_motifs = False

    def _snapshot(self) -> np.ndarray:
        kh, kw = self.k
        K = self.a.shape[-2:]
        oh, ow = (K[0] - kh) // 2, (K[1] - kw) // 2
        snap = self.a[..., oh : oh + kh, ow : ow + kw].astype(np.float64)
        snap /= np.linalg.norm(snap.reshape(len(snap), -1), axis=1)[:, None, None, None] + 1e-12
        return snap[:, 0] if self.p.channel_axis is None else snap

    # -------------------------------------------------------- re-centring
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

    def _uncollapse(self) -> None:
        """Re-seed a motif that converged onto the shape of another from the
        residual's most energetic window (shift-invariant similarity test)."""
        N = self.p.n_motifs
        if N < 2:
            return
        snap = self._snapshot()
        if snap.ndim == 3:
            snap = snap[:, None]
        energy = [float(np.abs(self.x[n]).sum()) for n in range(N)]
        for i in range(N):
            for j in range(i + 1, N):
                if shift_invariant_similarity(snap[i], snap[j]) > COLLAPSE_SIMILARITY:
                    weak = j if energy[j] <= energy[i] else i
                    others = [snap[m] for m in range(N) if m != weak]
                    r = self.y - self._model()
                    (w,) = self._windows(r, 1, others)
                    a = self.a.copy()
                    a[weak] = self._embed([w], self.a.shape[-2:])[0]
                    x = self.x.copy()
                    x[weak] = 0
                    self._setup_op(self.a.shape[-2:], a, x)
                    return

    def _model(self) -> np.ndarray:
        z = self.op.image(self.op.combine(self.A, self.X)) + self.b[:, None, None]
        return z if self.omega is None else z * self.omega

    # --------------------------------------------------------------- driver
    def _lam_max(self, K: tuple[int, int], wins: list[np.ndarray]) -> float:
        """Smallest lambda at which x = 0 is optimal for the motifs ``wins``;
        leaves the operator set up with those motifs and x = 0."""
        H, W = self.y.shape[1:]
        a0 = self._embed(wins, K)
        grid = (H, W) if self.periodic else (H + K[0] - 1, W + K[1] - 1)
        self._setup_op(K, a0, np.zeros((len(wins), *grid), np.float32))
        corr = -self.op.grad_x(self.A, self.op.fft_residual(self._residual(self.A, self.X)))
        return max(float(corr.max() if self.positive else np.abs(corr).max()), 1e-6)

    def _schedule(self, lam0: float, lam: float) -> list[float]:
        if lam >= lam0:
            return [lam]
        n = max(0, math.ceil(math.log(lam / lam0) / math.log(self.shrink)))
        return [lam0 * self.shrink**s for s in range(n)] + [lam]

    def _continuation(
        self, lams: list[float], early: int, final: int, uncollapse: bool
    ) -> Generator[SolveProgress, None, bool]:
        """Stages of decreasing lambda on the lifted support, re-centring after each."""
        conv = False
        for s, lam_s in enumerate(lams):
            last = s == len(lams) - 1
            conv = yield from self._stage(
                self.stage0 + s, lam_s, final if last else early, self.tol if last else 1e-3
            )
            self._recentre()
            if uncollapse and s < len(lams) - 2:
                self._uncollapse()
        self.stage0 += len(lams)
        return conv

    def _centre_kernels(self) -> np.ndarray:
        """Current lifted motifs cropped to ``k x k`` around their centre, ``(N, C, kh, kw)``."""
        kh, kw = self.k
        K = self.a.shape[-2:]
        oh, ow = (K[0] - kh) // 2, (K[1] - kw) // 2
        return self.a[..., oh : oh + kh, ow : ow + kw].astype(np.float64)

    def _discover_one(
        self,
        avoid: list[np.ndarray],
        lam: float,
        early: int,
        final: int,
    ) -> Generator[SolveProgress, None, tuple[np.ndarray, np.ndarray]]:
        """Single-motif continuation from the data window least like ``avoid``.
        Returns the ``k x k`` motif and its model image (for deflation)."""
        K = self._lift()
        self.b = np.zeros(self.p.n_channels, np.float64)
        self.support = None
        (w,) = self._windows(self.y, 1, avoid)
        lam0 = 0.8 * self._lam_max(K, [w])
        yield from self._continuation(self._schedule(lam0, lam), early, final, False)
        model = self.op.image(self.op.combine(self.A, self.X))
        if self.omega is not None:
            model *= self.omega
        # The model on the data's own pixels (a padded crop's grid is larger).
        h, w = self.shape0
        return self._centre_kernels()[0], model[:, :h, :w]

    def _discover(
        self, lam: float, early: int, final: int
    ) -> Generator[SolveProgress, None, list[np.ndarray]]:
        """Find the motifs one at a time by deflation, on a crop of the image.

        Solving all motifs jointly from data windows lets several of them
        settle on the same shape (windows mix copies of different motifs).
        One motif at a time is the well-understood single-motif landscape;
        each next one starts from what the previous ones leave unexplained.
        A crop (:meth:`_crop_side`) holds plenty of copies to learn a motif
        from, at a fraction of the cost of the whole image.

        The first motifs keep some of what belongs to the later ones; the
        joint refinement that follows (for several motifs) sorts that out. A
        second pass refitting each motif on the image minus the others' copies
        used to do it first: dropped, measured 0.85x the time at 256^2 with two
        motifs, quality alike (20 seeds: 20/20 >= 0.99 instead of 18/20; 384^2
        with three motifs 6/6; 1024^2, three motifs, k = 20: 2/2 seeds).
        """
        p = self.p
        crop, om = self._crop
        found: list[np.ndarray] = []
        models: list[np.ndarray] = []
        for n in range(p.n_motifs):
            resid = crop - sum(models, np.zeros_like(crop))
            sub = self._sub(resid, om, 1, lam, self.seed + 1000 * n if self.seed else 0)
            gen = sub._discover_one(found, lam, early, final)
            kern, model = yield from self._forward(
                sub, gen, lambda k, n=n: self._preview(found, k, n)
            )
            found.append(kern)
            models.append(model)
        return found

    @functools.cached_property
    def _crop(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The discovery crop of the data and of the mask: the window of
        :meth:`_crop_side` with the most signal energy (most copies); found
        once, used by discovery and by the joint refinement on the crop."""
        H, W = self.y.shape[1:]
        side = self._crop_side()
        ch, cw = min(H, side), min(W, side)
        i0 = j0 = 0
        if (ch, cw) != (H, W):
            e = ndimage.uniform_filter((self.y**2).sum(0), size=(ch, cw), mode="constant")
            ci, cj = np.unravel_index(int(np.argmax(e)), e.shape)
            i0 = int(np.clip(ci - ch // 2, 0, H - ch))
            j0 = int(np.clip(cj - cw // 2, 0, W - cw))
        crop = self.y[:, i0 : i0 + ch, j0 : j0 + cw]
        om = None if self.omega is None else self.omega[:, i0 : i0 + ch, j0 : j0 + cw]
        return crop, om

    def _sub(
        self,
        y: np.ndarray,
        omega: np.ndarray | None,
        n: int,
        lam: float,
        seed: int,
        circular: bool = False,
    ):
        """A solver of ``n`` motifs on ``y`` (a crop, or ``circular``: the
        image on the circular model), counting on this one's progress."""
        p = self.p
        # A crop without missing pixels is fitted with the circular model: about
        # a third of the transforms. Its grid is the crop zero-padded to fast
        # FFT lengths (the crop itself unchanged: rounding its side instead
        # changed which copies it holds, and lost a motif at 1024^2, seed 0).
        shape0 = y.shape[1:]
        # A narrow crop (a strip of an image) is fitted with the exact windowed
        # model: the lifted motif (about 2k) must fit on the circular grid, and
        # on a grid hardly larger than the motif its wrapped copies would
        # overlap themselves (a 20 x 128 crop with k = 12 crashed here).
        wide = min(shape0) >= 2 * max(self._lift())
        periodic = circular or (omega is None and shape0 != self.y.shape[1:] and wide)
        if periodic:
            grid = tuple(fft.next_fast_len(int(v), real=True) for v in shape0)
            y = np.pad(y, [(0, 0)] + [(0, g - v) for g, v in zip(grid, shape0, strict=True)])
        sub_p = Problem(
            y=y.astype(np.float32, copy=False), omega=omega, offset=np.zeros(p.n_channels),
            scale=1.0,
            kernel_size=self.k, n_motifs=n, lam=lam, channel_axis=p.channel_axis,
            image_shape=y.shape, init_kernels=None,
        )  # fmt: skip
        sub = _Solver(sub_p, self.positive, seed, None, self.tol, self.shrink, self.workers)
        sub.periodic, sub.shape0 = periodic, shape0
        sub.n_stages, sub.total, sub.stage0 = self.n_stages, self.total, self.stage0
        sub.iteration = self.iteration
        return sub

    def _forward(
        self, sub: _Solver, gen: Generator, preview: Callable[[np.ndarray], np.ndarray]
    ) -> Generator:
        """Run a sub-solver's generator, passing its progress on as this one's."""
        while True:
            try:
                prog = next(gen)
            except StopIteration as stop:
                self.stage0 = sub.stage0
                return stop.value
            self.iteration = prog.iteration
            yield replace(prog, kernels=preview(prog.kernels))

    def _joint(
        self, wins: list[np.ndarray], lams: list[float], early: int, final: int, settle: bool
    ) -> Generator[SolveProgress, None, bool]:
        """All motifs together on the lifted support, from ``wins``: the
        activations settle first (when the motifs come from discovery or a
        previous run), then the continuation over ``lams``."""
        self.b = np.zeros(self.p.n_channels, np.float64)
        self.support = None
        self._lam_max(self._lift(), wins)
        if settle:
            # A motif step against activations that are still near zero can
            # throw a good but weak motif far off.
            yield from self._fixed_stage(self.stage0, lams[-1], 2 * early, 1e-3)
            self.stage0 += 1
        return (yield from self._continuation(lams, early, final, self.p.n_motifs > 1))

    def _joint_on_crop(
        self, wins: list[np.ndarray], lam: float, early: int, final: int
    ) -> Generator[SolveProgress, None, list[np.ndarray]]:
        """The joint refinement of discovered motifs on the discovery crop:
        a quarter of the whole-image cost at 512^2, a sixteenth at 1024^2."""
        crop, om = self._crop
        sub = self._sub(crop, om, self.p.n_motifs, lam, self.seed)
        yield from self._forward(sub, sub._joint(wins, [lam], early, final, True), lambda k: k)
        for extra in range(CROP_JOINT_MORE):
            if sub.moved <= 1:
                # Every motif sits where re-centring wants it: the k x k
                # stages that follow can't shift a motif, so only then stop.
                self.stage0 += CROP_JOINT_MORE - extra
                break
            gen = sub._continuation([lam], early, final, True)
            yield from self._forward(sub, gen, lambda k: k)
        return list(sub._centre_kernels())

    def _settle_circular(
        self, lam: float, n_iter: int, a: np.ndarray
    ) -> Generator[SolveProgress, None, np.ndarray]:
        """The whole image's activations settle with the ``k x k`` motifs ``a``
        fixed, on the circular model of the image zero-padded to fast FFT
        lengths (a third of the transforms). Returns them on the windowed grid,
        where the exact stages then correct the copies cut by the border."""
        H, W = self.y.shape[1:]
        kh, kw = self.k
        sub = self._sub(self.y, None, self.p.n_motifs, lam, self.seed, circular=True)
        sub.b, sub.support, sub.sparse_x = self.b.copy(), None, True
        Hp, Wp = sub.y.shape[1:]
        sub._setup_op((kh, kw), a, np.zeros((self.p.n_motifs, Hp, Wp), np.float32))
        gen = sub._fixed_stage(self.stage0, lam, n_iter, 1e-3)
        yield from self._forward(sub, gen, lambda k: k)
        # A copy at circular index p sits at windowed index p + k - 1 (the
        # window starts k - 1 into the full convolution); wrapped indices are
        # the copies cut by the top and left borders.
        iq = (np.arange(kh // 2, kh // 2 + H) - kh + 1) % Hp
        jq = (np.arange(kw // 2, kw // 2 + W) - kw + 1) % Wp
        x = np.zeros((self.p.n_motifs, H + kh - 1, W + kw - 1), np.float32)
        x[:, kh // 2 : kh // 2 + H, kw // 2 : kw // 2 + W] = sub.x[:, iq][:, :, jq]
        return x

    def _finish_circular(
        self, lam: float, polish: int, debias: int, a: np.ndarray, x: np.ndarray
    ) -> Generator[SolveProgress, None, bool]:
        """:meth:`_polish` on the exact circular model of the whole image
        (:meth:`_filled`); leaves the windowed operator set up with the result."""
        sub = self._filled(lam, a, x)
        converged = yield from self._forward(sub, sub._polish(lam, polish, debias), lambda k: k)
        G = x.shape[1:]
        self.b, self.obj, self.support = sub.b, sub.obj, sub.support[:, : G[0], : G[1]]
        self._setup_op(self.k, sub.a, np.ascontiguousarray(sub.x[:, : G[0], : G[1]]))
        return converged

    def _filled(self, lam: float, a: np.ndarray, x: np.ndarray) -> _Solver:
        """A solver of the whole image on the circular model, kept exact by
        filling the pixels outside the image with the model (:meth:`_refill`),
        set up with ``k x k`` motifs ``a`` and activations ``x`` on the windowed
        grid: the circular grid's corner, the same indices."""
        C, N = self.p.n_channels, self.p.n_motifs
        H, W = self.y.shape[1:]
        kh, kw = self.k
        G = (H + kh - 1, W + kw - 1)
        L = tuple(fft.next_fast_len(v, real=True) for v in G)
        # The image sits where the windowed operator observes it.
        y = np.zeros((C, *L), np.float32)
        y[:, kh - 1 : kh - 1 + H, kw - 1 : kw - 1 + W] = self.y
        sub = self._sub(y, None, N, lam, self.seed, circular=True)
        sub.window = (slice(kh - 1, kh - 1 + H), slice(kw - 1, kw - 1 + W))
        sub.sparse_x = True
        sub.n_bg = float(H * W)
        sub.b = self.b.copy()
        sub.support = np.zeros((1, *L), np.float32)
        sub.support[:, : G[0], : G[1]] = self.support
        xs = np.zeros((N, *L), np.float32)
        xs[:, : G[0], : G[1]] = x
        sub._setup_op((kh, kw), a, xs)
        return sub

    def _crop_side(self) -> int:
        """Side of the discovery crop, in pixels."""
        H, W = self.y.shape[1:]
        side = DISCOVERY_SPAN * max(self.k) * math.sqrt(self.p.n_motifs)
        side = int(min(max(side, DISCOVERY_MIN), DISCOVERY_SIZE))
        if self.p.n_motifs > 1 and min(H, side) * min(W, side) > CROP_FRACTION * H * W:
            # Several motifs: a crop that is most of the image saves little
            # and loses the whole-image joint stage (k = 16 at 256^2, a 226
            # crop: recall 0.88 instead of 0.91; FeSe, 212 of 224: defects
            # missed), so crop only when it leaves out at least half the pixels.
            return max(H, W)
        return side

    def _preview(self, found: list[np.ndarray], current: np.ndarray, slot: int) -> np.ndarray:
        """All motifs for a progress snapshot: the found ones, the one being
        fitted in its ``slot``, zeros for those not found yet."""
        kh, kw = self.k
        out = np.zeros((self.p.n_motifs, self.p.n_channels, kh, kw))
        for i, f in enumerate(found):
            out[i] = f / (np.linalg.norm(f) + 1e-12)
        cur = current if current.ndim == 4 else current[:, None]
        out[slot] = cur[0]
        return out[:, 0] if self.p.channel_axis is None else out

    def run(self, params: dict[str, Any]) -> Generator[SolveProgress, None, SolveResult]:
        p = self.p
        N, C = p.n_motifs, p.n_channels
        H, W = p.y.shape[1:]
        kh, kw = self.k
        K = self._lift()
        self.b = np.zeros(C, np.float64)
        self.support = None
        self.stage0 = 0
        warm = p.init_kernels is not None
        first = [p.init_kernels[0]] if warm else self._windows(self.y, 1, [])
        lam_max = self._lam_max(K, first)
        if p.lam is None:
            noise = noise_sigma(p.y, p.omega)
            lam = max(AUTO_LAM_FRACTION * lam_max, AUTO_LAM_NOISE * noise)
        else:
            lam = p.lam
        full = self._schedule(0.8 * lam_max, lam)
        cropped = max(H, W) > self._crop_side()
        discover = not warm and (N > 1 or cropped)
        # Motifs learnt on a crop (for several motifs: discovered, then refined
        # jointly on the crop), or from a previous run, are finished on the
        # whole image directly on the k x k support: activations settle with
        # the motifs fixed (half the transforms of a joint step), then the
        # joint polish. Every whole-image iteration is dear.
        direct = warm or (discover and cropped)
        # A warm start whose motif looks cut by its border (``_looks_cut``) is
        # refined the same way first: on the lifted support a motif given
        # shifted and cut by a pixel (a local minimum of the k x k support)
        # grows back its missing edge before the re-centring crop. Others go
        # straight on (a re-run after changing lambda stays fast).
        crop_joint = (discover and cropped and N > 1) or (
            warm and any(_looks_cut(w) for w in p.init_kernels)
        )
        settle = discover and not direct
        joint = [] if direct else ([lam] if settle else full)
        # Iteration budget: short early stages, a longer stage at the target
        # lambda, then the polish on the k x k support.
        early, final, polish, debias = STAGE_ITERS
        if direct and N == 1:
            # From a crop's motif the polish only refines: measured at 256^2
            # and 512^2, 15 + 10 iterations keep every seed >= 0.998 (30 + 20
            # gained < 0.002 similarity and no recall).
            polish, debias = DIRECT_ITERS
        disc_final = DISCOVERY_FINAL if N > 1 else DISCOVERY_FINAL_ONE
        settle_iters = SETTLE_DIRECT[N > 1]
        n_disc = N if discover else 0
        disc_early = DISCOVERY_EARLY

        def budget() -> int:
            total = n_disc * (disc_early * (len(full) - 1) + disc_final)
            if joint:
                total += early * (len(joint) - 1) + final
            if crop_joint:
                total += 2 * early + final * (1 + CROP_JOINT_MORE)
            return total + polish + debias + 2 * early * settle + settle_iters * direct

        total = budget()
        if self.max_iter is not None:
            f = self.max_iter / total
            early, final, disc_final, disc_early = (
                max(2, int(v * f)) for v in (early, final, disc_final, disc_early)
            )
            settle_iters = max(2, int(settle_iters * f))
            polish, debias = max(2, int(polish * f)), int(debias * f)
            total = budget()
        self.total = total
        self.n_stages = n_disc * len(full) + len(joint) + 2 + (debias > 0)
        self.n_stages += (settle or direct) + (2 + CROP_JOINT_MORE) * crop_joint
        if discover:
            wins = yield from self._discover(lam, disc_early, disc_final)
            if crop_joint:
                wins = yield from self._joint_on_crop(wins, lam, early, final)
        elif warm:
            wins = list(p.init_kernels)
            if crop_joint:
                wins = yield from self._joint_on_crop(wins, lam, early, final)
        else:
            wins = first
        if direct:
            a, x = self._direct_start(wins)
        else:
            # Joint refinement of all motifs on the whole image, lifted support.
            yield from self._joint(wins, joint, early, final, settle)
            # Crop to k x k; activations become copies centred inside the image.
            oh, ow = (K[0] - kh) // 2, (K[1] - kw) // 2
            a = self.a[..., oh : oh + kh, ow : ow + kw]
            x = self.x[:, K[0] - kh - oh :, K[1] - kw - ow :][:, : H + kh - 1, : W + kw - 1]
        finish = (settle_iters, polish, debias)
        converged = yield from self._finish(lam, a, x, direct, *finish)
        if any(_looks_cut(m) for m in self.a):
            # A motif that ends shifted and cut by its border is a local minimum
            # of the k x k support (method.md): refine it on the lifted support
            # of the crop, re-centre, and finish again. A safety net: since the
            # re-centring keeps whole motifs (``_centred_window``) it fired on
            # none of 180 solves (256^2, 1-3 motifs of the papers' model,
            # smooth random and STM-like shapes, clean and noisy), and it
            # flagged each of the 12 cut motifs of 30 seeds the solver used to
            # return on the papers' model (k = 12).
            self.stage0 += 1 + (debias > 0)
            self.n_stages += 2 + CROP_JOINT_MORE + 2 + (debias > 0)
            self.total += 2 * early + final * (1 + CROP_JOINT_MORE) + sum(finish)
            wins = yield from self._joint_on_crop(list(self.a), lam, early, final)
            a, x = self._direct_start(wins)
            converged = yield from self._finish(lam, a, x, True, *finish)
        self.total = self.iteration
        return self._result(lam, converged, params)

    def _direct_start(self, wins: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``k x k`` motifs from ``wins`` and zero activations, for :meth:`_finish`."""
        N, C = self.p.n_motifs, self.p.n_channels
        H, W = self.y.shape[1:]
        kh, kw = self.k
        self.b = np.zeros(C, np.float64)
        a = np.stack([np.asarray(w, np.float32).reshape(C, kh, kw) for w in wins])
        return a, np.zeros((N, H + kh - 1, W + kw - 1), np.float32)

    def _finish(
        self,
        lam: float,
        a: np.ndarray,
        x: np.ndarray,
        direct: bool,
        settle_iters: int,
        polish: int,
        debias: int,
    ) -> Generator[SolveProgress, None, bool]:
        """The whole image on the ``k x k`` support from motifs ``a`` and
        activations ``x`` (on the windowed grid): the activations settle first
        when ``direct`` (motifs from a crop or a warm start), then the polish
        and the amplitude refit."""
        H, W = self.y.shape[1:]
        kh, kw = self.k
        nrm = np.sqrt(np.sum(a.astype(np.float64) ** 2, axis=(1, 2, 3)))
        nrm[nrm == 0] = 1
        self.support = np.zeros((1, H + kh - 1, W + kw - 1), np.float32)
        self.support[:, kh // 2 : kh // 2 + H, kw // 2 : kw // 2 + W] = 1
        x = (x * nrm[:, None, None] * self.support).astype(np.float32)
        a = (a / nrm[:, None, None, None]).astype(np.float32)
        circular = self.omega is None
        if direct and circular:
            x = yield from self._settle_circular(lam, settle_iters, a)
        if circular:
            # Polish and amplitude refit on the exact circular model: 7
            # transforms per joint iteration instead of 11, 0.6-0.67x its time
            # (0.93x the time of a 256^2 two-motif solve).
            self.stage0 += direct
            return (yield from self._finish_circular(lam, polish, debias, a, x))
        self._setup_op((kh, kw), a, x)
        if direct:
            yield from self._fixed_stage(self.stage0, lam, settle_iters, 1e-3)
        self.stage0 += direct
        return (yield from self._polish(lam, polish, debias))

    def _polish(
        self, lam: float, polish: int, debias: int
    ) -> Generator[SolveProgress, None, bool]:
        """The joint polish on the ``k x k`` support, then the amplitude refit."""
        converged = yield from self._stage(self.stage0, lam, polish, self.tol)
        if debias:
            # Refit the amplitudes on the found support without the l1 term:
            # lambda shrinks every copy by about lambda, which would make weak
            # but real copies fall under the peak threshold and bias heights.
            self.support = self.support * (self.x != 0)
            yield from self._fixed_stage(self.stage0 + 1, 0.0, debias, self.tol)
        return converged

    def _result(self, lam: float, converged: bool, params: dict[str, Any]) -> SolveResult:
        p = self.p
        kh, kw = self.k
        H, W = p.y.shape[1:]
        a = self.a.astype(np.float64)
        x = self.x[:, kh // 2 : kh // 2 + H, kw // 2 : kw // 2 + W].astype(np.float64)
        if not self.positive:
            # Sign convention: the largest-magnitude value of each motif is positive.
            flat = a.reshape(len(a), -1)
            sgn = np.sign(flat[np.arange(len(a)), np.abs(flat).argmax(1)])
            a *= sgn[:, None, None, None]
            x *= sgn[:, None, None]
        denom = _dot(p.y, p.y) + 1e-12
        explained = np.array(
            [
                np.sum(
                    (
                        self.op.image(self.op.combine(self.A[n : n + 1], self.X[n : n + 1]))
                        * (1 if self.omega is None else self.omega)
                    )
                    ** 2
                )
                / denom
                for n in range(p.n_motifs)
            ]
        )
        order = np.argsort(-explained, kind="stable")
        a, x, explained = a[order], x[order], explained[order]
        a /= np.linalg.norm(a.reshape(len(a), -1), axis=1)[:, None, None, None]
        model = self.op.image(self.op.combine(self.A, self.X)).astype(np.float64)
        bias = self.b * p.scale + p.offset
        recon = model * p.scale + bias[:, None, None]
        if p.channel_axis is None:
            kernels, bias_out, recon = a[:, 0], float(bias[0]), recon[0]
        else:
            kernels, bias_out = a, bias
            recon = np.moveaxis(recon, 0, p.channel_axis)
        params = {**params, "lam_used": float(lam)}
        return SolveResult(
            kernels=kernels,
            activations=(x * p.scale).astype(np.float32),
            bias=bias_out,
            lam=float(lam),
            reconstruction=recon.astype(np.float32),
            objective=float(self.obj),
            n_iter=self.iteration,
            converged=bool(converged),
            explained=explained,
            params=params,
        )


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


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product by numpy's own loop (einsum), not BLAS: a multithreaded
    BLAS ``vdot`` on a busy 2-core machine was measured 1000x slower. In the
    arrays' precision: float32 einsum keeps ~1e-7 relative error here and is
    4x faster than accumulating in float64."""
    # Subscripts over every axis rather than ravel(): a strided view (the
    # gradient's window of its transform) is read in place, not copied.
    sub = "abcdefgh"[: a.ndim]
    return float(np.einsum(f"{sub},{sub}->", a, b))


def _extrapolate(cur: np.ndarray, prev: np.ndarray, beta: float) -> np.ndarray:
    """``cur + beta (cur - prev)``, into ``prev``'s buffer: every caller is done
    with the previous iterate. ``cur`` itself when beta is 0. Complex arrays
    are scaled as their float32 views (a real scaling of complex64 runs the
    complex product loop)."""
    if beta == 0:
        return cur
    c = cur.view(np.float32) if np.iscomplexobj(cur) else cur
    o = prev.view(np.float32) if np.iscomplexobj(prev) else prev
    o -= c
    o *= np.float32(-beta)
    o += c
    return prev


def _restart(
    dxe: np.ndarray, d: np.ndarray, x_new: np.ndarray, t_new: float
) -> tuple[float, float]:
    """The activation step's relative change ``|d| / |x_new|`` and the momentum
    counter, reset to 1 when the step ``d`` turned against the proximal move
    ``dxe``: gradient-based adaptive restart (O'Donoghue & Candes), which keeps
    momentum from overshooting in this non-convex landscape."""
    if _dot(dxe, d) < 0:
        t_new = 1.0
    return math.sqrt(_dot(d, d)) / (math.sqrt(_dot(x_new, x_new)) + 1e-12), t_new


def _cached_nonzero(cache: tuple[np.ndarray, np.ndarray] | None, arr: np.ndarray) -> np.ndarray:
    """Flat indices of the non-zeros of ``arr``, from ``cache`` if it holds them."""
    if cache is not None and cache[0] is arr:
        return cache[1]
    return np.flatnonzero(arr)


def _normalise(a: np.ndarray) -> np.ndarray:
    nrm = np.sqrt(np.sum(a.astype(np.float64) ** 2, axis=(1, 2, 3)))
    nrm[nrm == 0] = 1
    return (a / nrm[:, None, None, None]).astype(np.float32)


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
