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

Modules, by stage: ``api`` (the entry points), ``driver`` (``_Solver.run``,
the order of the stages), ``discovery``, ``joint`` (joint refinement),
``recentring``, ``finish`` (settle, polish, amplitude refit, result),
``iteration`` (operators and the iPALM steps), ``tuning`` (measured
parameters), ``noise`` (the noise level behind the default lambda).
"""

from __future__ import annotations

# The public API is ``__all__``. The private names re-exported below (``as``
# marks them re-exported) are for the package's own modules: locate.py
# subclasses _Solver and reuses its settle and polish stages; tests and
# benchmarks reach its stages and checks.
from ..validation import prepare as prepare
from .api import iter_solve, solve
from .driver import _Solver as _Solver
from .noise import noise_sigma
from .recentring import _centred_window as _centred_window
from .recentring import _looks_cut as _looks_cut
from .recentring import shift_zero
from .tuning import AUTO_LAM_FRACTION as AUTO_LAM_FRACTION
from .tuning import AUTO_LAM_NOISE as AUTO_LAM_NOISE

__all__ = ["iter_solve", "noise_sigma", "shift_zero", "solve"]
