"""The finish on the whole image and the ``k x k`` support: activations settled
with the motifs fixed (on the circular model of the zero-padded image), the
joint polish and the amplitude refit (on the exact circular model of a padded
grid, or the windowed model with missing pixels), and the result."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import fft

from ..result import SolveProgress, SolveResult

if TYPE_CHECKING:
    from .driver import _Solver
from .iteration import _dot


class _Finish:
    """Settle, polish and result on the whole image; mixed into ``_Solver``."""

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

    def _window_model(self, n: int | None) -> np.ndarray:
        """The model ``(C, H, W)`` on the observed window: motif ``n``'s part,
        or (None) all of it. ``napari_sasd.locate`` has its own, from its copies."""
        if n is None:
            return self.op.image(self.op.combine(self.A, self.X))
        return self.op.image(self.op.combine(self.A[n : n + 1], self.X[n : n + 1]))

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
                np.sum((self._window_model(n) * (1 if self.omega is None else self.omega)) ** 2)
                / denom
                for n in range(p.n_motifs)
            ]
        )
        order = np.argsort(-explained, kind="stable")
        a, x, explained = a[order], x[order], explained[order]
        a /= np.linalg.norm(a.reshape(len(a), -1), axis=1)[:, None, None, None]
        model = self._window_model(None).astype(np.float64)
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
