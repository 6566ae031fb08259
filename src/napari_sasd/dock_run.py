"""What the dock's worker thread computes for one run, napari-free.

The dock (:mod:`napari_sasd.widget`) hands :class:`~napari_sasd.worker.SolveRunner`
one of the generators below. Everything long -- flattening, scar marking,
the lattice fit, the solve, the copy maps and the detection -- runs inside
them, so in the worker thread: the generators do no work until their first
``next()``, which happens there. They return a :class:`DockAnalysis`: the
:class:`~napari_sasd.pipeline.Analysis` and every candidate copy with its
significance, so that the significance slider on the main thread is a filter
of a table (:meth:`Candidates.select`), not a new peak search.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .detection import CopyMaps, copy_maps, detect_copies, merge_motifs
from .peaks import Defects
from .pipeline import Analysis, flag_motifs, iter_analyse, user_defects
from .result import SolveProgress, SolveResult
from .rims import Rims
from .spans import counted

__all__ = ["Candidates", "DockAnalysis", "iter_dock_analysis", "iter_dock_locate"]


@dataclass
class Candidates:
    """Every peak of the copy maps (a copy at significance 0) and its significance.

    ``select(z)`` gives what :func:`~napari_sasd.detection.detect_copies` gives
    at ``z`` (the peaks above a threshold are the peaks at 0 filtered by it:
    skimage's spacing is greedy from the strongest peak, so a prefix keeps its
    decisions; the merge of close copies of different motifs is greedy by
    significance, likewise), in milliseconds instead of a peak search over
    the maps (0.3-0.4 s on 1024^2, too long for a slider on the main thread).
    """

    defects: Defects
    significance: np.ndarray
    radius: int
    n_motifs: int
    rims: Rims | None = None
    tall: np.ndarray | None = None

    @classmethod
    def of(cls, copies: CopyMaps) -> Candidates:
        """All peaks of ``copies`` (worker thread: a peak search over the maps,
        and each peak's span in scan lines, :mod:`napari_sasd.spans`)."""
        found = detect_copies(copies, 0.0, merge=False)
        tall = None if copies.spans is None else copies.spans.tall(found)
        return cls(
            found, copies.significance(found), int(copies.radius), len(copies.maps), copies.rims,
            tall,
        )  # fmt: skip

    def select(
        self, significance: float, flags: list[list[str]] | None = None, keep_artefacts=False
    ) -> Defects:
        """The copies above ``significance`` (one per defect; a faint one that
        spans many scan lines down to ``significance - FAINT_MARGIN``),
        flagged motifs' left out unless ``keep_artefacts``: as
        :meth:`Analysis.redetect`."""
        d, z = self.defects, self.significance
        ok = counted(z, significance, self.tall)
        found = Defects(d.positions[ok], d.motif[ok], d.amplitude[ok])
        zk = z[ok]
        if self.n_motifs >= 2:
            found = merge_motifs(found, zk, self.radius)
        flags = flags or [[] for _ in range(self.n_motifs)]
        return user_defects(found, self.rims, flags, bool(keep_artefacts))


@dataclass
class DockAnalysis:
    """A run's analysis and its candidate copies (what the main thread gets)."""

    analysis: Analysis
    candidates: Candidates

    @property
    def result(self) -> SolveResult:
        """The solve."""
        return self.analysis.result


def _with_candidates(
    gen: Iterator[SolveProgress],
) -> Generator[SolveProgress, None, DockAnalysis]:
    analysis = yield from gen
    return DockAnalysis(analysis, Candidates.of(analysis.copies))


def iter_dock_analysis(
    image: np.ndarray, **kwargs: Any
) -> Generator[SolveProgress, None, DockAnalysis]:
    """:func:`~napari_sasd.pipeline.iter_analyse` started on the first ``next()``.

    Everything, the input checks included, happens inside the generator, so
    in the worker thread; the preparation yields ``None`` between its steps
    (flatten, scars, lattice), where the worker's Cancel takes effect.
    """
    analysis = yield from _with_candidates(iter_analyse(image, **kwargs))
    return analysis


def iter_dock_locate(
    image: np.ndarray,
    *,
    locate,
    significance: float,
    keep_artefacts: bool = False,
    scars: np.ndarray | None = None,
    lattice: np.ndarray | None = None,
    info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Generator[SolveProgress, None, DockAnalysis]:
    """A locate run (known motifs, or the last ones at another lambda) with the
    same detection as a learn run: copy maps, significance, flags.

    ``image`` is the data to fit, ``(H, W)`` or ``(C, H, W)`` (already
    prepared: flattened, lattice removed); ``kwargs`` go to ``locate``
    (``kernels``, ``lam``, ``mask``, ...); ``scars`` and ``lattice`` are the
    ones the data was prepared with (kept in the analysis for display).
    """
    result: SolveResult = yield from locate(image, **kwargs)
    data = np.asarray(image, np.float64)
    recon = np.asarray(result.reconstruction, np.float64)
    if data.ndim == 3 and recon.ndim == 3 and recon.shape != data.shape:
        recon = np.moveaxis(recon, -1, 0)
    mask = kwargs.get("mask")
    copies = copy_maps(result.activations, result.kernels, data - recon, mask, data)
    every = detect_copies(copies, significance)
    flags = flag_motifs(result.kernels, copies, every, data.shape[-2:], significance)
    settings = dict(info or {})
    settings.update(significance=float(significance), keep_artefacts=bool(keep_artefacts))
    analysis = Analysis(
        result=result, defects=user_defects(every, copies.rims, flags, bool(keep_artefacts)),
        copies=copies,
        significance=float(significance), data=data, scars=scars, lattice=lattice, flags=flags,
        settings=settings,
    )  # fmt: skip
    return DockAnalysis(analysis, Candidates.of(copies))
