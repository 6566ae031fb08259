"""The solver: one prepared problem through its stages (``run``), in the order
the package's docstring describes; each stage lives in its own module."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from ..result import SolveProgress, SolveResult
from ..validation import Problem
from .discovery import _Discovery
from .finish import _Finish
from .iteration import _Iteration
from .joint import _JointRefinement
from .noise import noise_sigma
from .recentring import _looks_cut, _Recentring
from .tuning import (
    AUTO_LAM_FRACTION,
    AUTO_LAM_NOISE,
    CROP_JOINT_MORE,
    DIRECT_ITERS,
    DISCOVERY_EARLY,
    DISCOVERY_FINAL,
    DISCOVERY_FINAL_ONE,
    EXACT_FINISH,
    EXACT_FINISH_ROUNDS,
    SETTLE_DIRECT,
    STAGE_ITERS,
)


class _Solver(_Discovery, _JointRefinement, _Finish, _Recentring, _Iteration):
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
        # The whole-image refit gives way to the exact finish (below), but
        # stays for copies too dense for it.
        refit = debias
        debias = 0 if EXACT_FINISH else debias
        if direct and N == 1:
            # From a crop's motif the polish only refines: measured at 256^2
            # and 512^2, 15 + 10 iterations keep every seed >= 0.998 (30 + 20
            # gained < 0.002 similarity and no recall).
            polish, debias = DIRECT_ITERS
            refit = debias
            debias = 0 if EXACT_FINISH else debias
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
            total += EXACT_FINISH_ROUNDS * EXACT_FINISH
            return total + polish + debias + 2 * early * settle + settle_iters * direct

        total = budget()
        if self.max_iter is not None:
            f = self.max_iter / total
            early, final, disc_final, disc_early = (
                max(2, int(v * f)) for v in (early, final, disc_final, disc_early)
            )
            settle_iters = max(2, int(settle_iters * f))
            polish, debias = max(2, int(polish * f)), int(debias * f)
            refit = int(refit * f)
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
        if EXACT_FINISH:
            from ..locate import exact_finish, exact_finish_fits

            if exact_finish_fits(self):
                converged = (yield from exact_finish(self, lam)) and converged
            elif refit:
                # Copies too dense for the working set: the whole-image refit
                # on the found support (the windowed model).
                self.support = self.support * (self.x != 0)
                self.n_stages = max(self.n_stages, self.stage0 + 2)
                yield from self._fixed_stage(self.stage0 + 1, 0.0, refit, self.tol)
        self.total = self.iteration
        return self._result(lam, converged, params)
