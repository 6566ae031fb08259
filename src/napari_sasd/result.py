"""Data model of a solve: the progress snapshots and the final result."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np


@dataclass(frozen=True)
class SolveProgress:
    """A snapshot yielded by :func:`napari_sasd.iter_solve` while it works.

    Attributes
    ----------
    stage, n_stages : int
        Current continuation stage (0-based) and how many there are.
    iteration : int
        Iterations done so far, over all stages.
    total : int
        Estimate of the total number of iterations (the work budget). The
        solver may stop earlier when it converges; ``fraction`` then jumps.
    objective : float
        Current objective value (on the normalised image).
    lam : float
        Lambda of the current stage (normalised units).
    kernels : ndarray
        Current motifs, ``(n_motifs, kh, kw)`` or ``(n_motifs, C, kh, kw)``,
        each of unit Frobenius norm. A copy: safe to keep.
    """

    stage: int
    n_stages: int
    iteration: int
    total: int
    objective: float
    lam: float
    kernels: np.ndarray

    @property
    def fraction(self) -> float:
        """Work done, between 0 and 1."""
        return min(1.0, self.iteration / max(1, self.total))


@dataclass
class SolveResult:
    """What :func:`napari_sasd.solve` found.

    Attributes
    ----------
    kernels : ndarray
        ``(n_motifs, kh, kw)``, or ``(n_motifs, C, kh, kw)`` for a channel
        stack; each motif has unit Frobenius norm (over all its channels).
        Ordered by how much of the image each explains, largest first.
    activations : ndarray
        ``(n_motifs, H, W)``, float32: amplitude (in image units) of a copy of
        motif n centred at pixel (i, j) of the analysed image. Kernel centre
        is index ``(k - 1) // 2`` per axis, as in ``scipy.signal.convolve(...,
        mode="same")``.
    bias : float or ndarray
        Constant background, in image units; ``(C,)`` for a channel stack.
    lam : float
        Lambda used, in normalised units (the image is shifted by its median
        and divided by its standard deviation before solving, so a given lam
        means the same on any image).
    reconstruction : ndarray
        ``sum_n convolve(activations[n], kernels[n], mode="same") + bias``, of
        the analysed image's shape (channel axis where it was given).
    objective : float
        Final objective value, on the normalised image.
    n_iter : int
        Iterations run, over all stages.
    converged : bool
        Whether the final stage met its tolerance before the budget ran out.
    explained : ndarray
        ``(n_motifs,)`` fraction of the image's (de-meaned) energy each motif
        explains; the order of the motifs follows it.
    params : dict
        Every argument needed to reproduce the run (JSON-serialisable).
    """

    kernels: np.ndarray
    activations: np.ndarray
    bias: float | np.ndarray
    lam: float
    reconstruction: np.ndarray
    objective: float
    n_iter: int
    converged: bool
    explained: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_motifs(self) -> int:
        """Number of motifs."""
        return int(self.kernels.shape[0])

    @property
    def kernel_size(self) -> tuple[int, int]:
        """``(kh, kw)`` of the motifs."""
        return int(self.kernels.shape[-2]), int(self.kernels.shape[-1])


_R = TypeVar("_R")


def run_to_end(gen: Generator[Any, Any, _R]) -> _R:
    """Run a progress generator (``iter_solve``, ``iter_locate``, ...) to its end.

    Returns
    -------
    object
        The generator's return value (its ``StopIteration.value``): what the
        blocking form of an ``iter_*`` function returns.
    """
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
