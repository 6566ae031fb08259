"""Discovery: motifs found one at a time (deflation) on a crop of the image, each
from a data window by a single-motif continuation on a lifted support; the
sub-solvers (a crop, or the image on the circular model) they run on."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import fft, ndimage
from skimage.feature import peak_local_max

from ..metrics import shift_invariant_similarity
from ..result import SolveProgress
from ..validation import Problem

if TYPE_CHECKING:
    from .driver import _Solver
from .iteration import _normalise
from .tuning import CROP_FRACTION, DISCOVERY_MIN, DISCOVERY_SIZE, DISCOVERY_SPAN


class _Discovery:
    """Discovery of motifs on a crop; mixed into ``_Solver``."""

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
                self.stage0 + s,
                lam_s,
                final if last else early,
                self.tol if last else 1e-3,
            )
            self._recentre()
            if uncollapse and s < len(lams) - 2:
                self._uncollapse()
        self.stage0 += len(lams)
        return conv

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
        from .driver import _Solver  # the class mixing this one in

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
