"""Joint refinement: all motifs together on the lifted support (on the crop or
the whole image), activations settled first, with re-centring and a guard
against two motifs collapsing onto one shape."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from ..metrics import shift_invariant_similarity
from ..result import SolveProgress
from .tuning import COLLAPSE_SIMILARITY, CROP_JOINT_MORE


class _JointRefinement:
    """Joint refinement of several motifs; mixed into ``_Solver``."""

    def _joint(
        self,
        wins: list[np.ndarray],
        lams: list[float],
        early: int,
        final: int,
        settle: bool,
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
