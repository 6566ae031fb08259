"""The whole analysis of a scan, as a microscopist runs it, napari-free.

``solve`` fits the model; real scans need more around it, and this module
is that chain, shared by the command line and the dock:

1. flatten (plane and scan-line offsets, :mod:`.flatten`);
2. mark scan-line scars and leave them out of the fit (:mod:`.scars`);
3. remove an atomic lattice found from its Bragg peaks (:mod:`.lattice`),
   so that motifs are departures from it;
4. solve (:func:`.solver.iter_solve`);
5. one point per copy, with a threshold set by significance against the
   residual's noise (:mod:`.detection`); copies of motifs that look like scan
   artefacts (:mod:`.flags`) are left out of the defects, and said so.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from .detection import DEFAULT_SIGNIFICANCE, CopyMaps, copy_maps, detect_copies
from .flags import motif_flags
from .flatten import flatten as flatten_image
from .lattice import LatticeTerm
from .peaks import Defects
from .result import SolveProgress, SolveResult, run_to_end
from .rims import Rims, merge_rims
from .scars import ScarOptions, defect_cores, has_scars, mark_scars
from .solver import iter_solve
from .validation import prepare as check_inputs

__all__ = [
    "Analysis",
    "analyse",
    "analysis_record",
    "flag_motifs",
    "iter_analyse",
    "user_defects",
    "without_artefacts",
]

Auto = Literal["auto", "on", "off"]


@dataclass
class Analysis:
    """Everything one analysis produced.

    Attributes
    ----------
    result : SolveResult
        The solve on the prepared data.
    defects : Defects
        One point per copy, of the motifs that are not flagged as artefacts
        (all motifs with ``keep_artefacts``), at the significance threshold.
    copies : CopyMaps
        The smoothed activation maps and their noise levels (defects at
        another significance: :meth:`redetect`).
    significance : float
        The significance threshold used (:func:`~napari_sasd.detection.detect_copies`).
    data : ndarray
        The data that was solved (flattened, lattice removed), ``(H, W)`` or
        ``(C, H, W)``.
    scars : ndarray or None
        ``(H, W)`` bool, the scar pixels left out of the fit (None: not used).
    lattice : ndarray or None
        The periodic background removed before solving (None: none found or off).
    flags : list of list of str
        Artefact flags per motif (:data:`napari_sasd.flags.FLAG_TEXT`).
    settings : dict
        What was done, for the record.
    """

    result: SolveResult
    defects: Defects
    copies: CopyMaps
    significance: float
    data: np.ndarray
    scars: np.ndarray | None
    lattice: np.ndarray | None
    flags: list[list[str]]
    settings: dict[str, Any] = field(default_factory=dict)

    def redetect(
        self, significance: float = DEFAULT_SIGNIFICANCE, keep_artefacts: bool | None = None
    ) -> Defects:
        """Defects at another significance, without a new solve."""
        keep = (
            self.settings.get("keep_artefacts", False)
            if keep_artefacts is None
            else keep_artefacts
        )
        return user_defects(
            detect_copies(self.copies, significance), self.copies.rims, self.flags, keep
        )


def without_artefacts(
    defects: Defects, flags: list[list[str]], keep_artefacts: bool = False
) -> Defects:
    """The defects of the motifs with no artefact flag (all with ``keep_artefacts``)."""
    if keep_artefacts or not any(flags):
        return defects
    ok = np.array([not flags[m] for m in defects.motif], bool).reshape(-1)
    return Defects(defects.positions[ok], defects.motif[ok], defects.amplitude[ok])


def user_defects(
    every: Defects, rims: Rims | None, flags: list[list[str]], keep_artefacts: bool = False
) -> Defects:
    """The points a user gets from the significant copies: flagged motifs'
    left out (unless ``keep_artefacts``), then the copies on one large
    defect's rim merged into one point (:func:`napari_sasd.rims.merge_rims`;
    after the flags, so that a flagged motif's copy on the defect's core
    cannot take the merged point with it)."""
    return merge_rims(without_artefacts(every, flags, keep_artefacts), rims)


def flag_motifs(
    kernels: np.ndarray,
    copies: CopyMaps,
    defects: Defects,
    image_shape: tuple[int, int],
    significance: float,
) -> list[list[str]]:
    """Artefact flags per motif (:func:`napari_sasd.flags.motif_flags`), from
    its shape, how many copies it has and how significant they are (the
    ``defects`` found at ``significance``)."""
    n = len(kernels)
    sig = copies.significance(defects) / max(float(significance), 1e-12)
    strength = [
        float(np.median(sig[defects.motif == m])) if np.any(defects.motif == m) else 0.0
        for m in range(n)
    ]
    evidence = [float(np.sum(sig[defects.motif == m])) for m in range(n)]
    return motif_flags(kernels, defects.counts(n), image_shape, strength, evidence)


#: What the preparation hands the solve: data, mask, scar mask, lattice, record.
Prepared = tuple[
    np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None, dict[str, Any]
]


def _prepare(
    image: np.ndarray,
    channel_axis: int | None,
    mask: np.ndarray | None,
    flatten: bool,
    scars: Auto,
    lattice: str,
    kernel_size: tuple[int, int],
) -> Generator[None, None, Prepared]:
    """Flatten, mark scars, remove the lattice: the data to solve, its mask,
    the scar mask and the lattice (channels first for a cube).

    A generator that yields ``None`` between its steps (0.3-1 s each on
    1024^2), so that a run being cancelled stops there rather than after the
    whole preparation; its value is the prepared data."""
    data = np.asarray(image, np.float64)
    if channel_axis is not None:
        data = np.moveaxis(data, channel_axis, 0)
    obs = None if mask is None else np.asarray(mask, bool)
    info: dict[str, Any] = {"flatten": bool(flatten), "scars": scars, "lattice": lattice}
    if flatten:
        # columns: the line shape all lines share (the scan-start band):
        # with it the labelled WSe2 scans' best reachable F1 went from
        # 0.66-0.84 to 0.76-0.91 (benchmarks/README.md, issue 14 notes).
        data = flatten_image(data, mask=obs, columns=True)
        yield None
    scar_mask = None
    if scars != "off":
        # ScarOptions' defaults, not a length tied to the motif size: at
        # min_length = k (or k / 2) the 100 nm WSe2 scan's streaks were only
        # partly marked and a motif learnt them (F1 0.38 instead of 0.61).
        marked = mark_scars(data, ScarOptions(), mask=obs)
        yield None
        # Defect cores span many lines; scars a few: never leave a defect out.
        marked &= ~defect_cores(data, kernel_size, obs)
        info["scar_fraction"] = float(marked.mean())
        if scars == "on" or has_scars(marked):
            scar_mask = marked
            obs = ~marked if obs is None else obs & ~marked
    lat = None
    if lattice != "off":
        yield None
        term = LatticeTerm()
        fit = term.fit(data, obs)
        found = term.lattice
        info["lattice_found"] = bool(found is not None and found.present)
        if info["lattice_found"]:
            info["lattice_periods_px"] = [float(v) for v in found.periods]
            lat = fit
            data = data - lat
    return data, obs, scar_mask, lat, info


def iter_analyse(
    image: ArrayLike,
    kernel_size: int | tuple[int, int] = 15,
    n_motifs: int = 1,
    lam: float | None = None,
    *,
    channel_axis: int | None = None,
    mask: ArrayLike | None = None,
    flatten: bool = True,
    scars: Auto = "auto",
    lattice: str = "auto",
    significance: float = DEFAULT_SIGNIFICANCE,
    keep_artefacts: bool = False,
    **solve_kwargs: Any,
) -> Generator[SolveProgress, None, Analysis]:
    """Like :func:`analyse`, as a generator of the solver's progress snapshots.

    Inputs are checked when this is called; the work starts at the first
    ``next()``. The preparation (flatten, scars, lattice) yields ``None``
    between its steps, so a caller can stop there; then come the solver's
    :class:`~napari_sasd.result.SolveProgress` snapshots. Returns the
    :class:`Analysis` (``StopIteration.value``).
    """
    if scars not in ("auto", "on", "off"):
        raise ValueError(f"scars must be 'auto', 'on' or 'off', got {scars!r}")
    if lattice not in ("auto", "off"):
        raise ValueError(f"lattice must be 'auto' (removed when found) or 'off', got {lattice!r}")
    if not np.isfinite(significance) or significance < 0:
        raise ValueError(f"significance must be a number >= 0, got {significance!r}")
    img = np.asarray(image)
    if img.dtype.kind not in "biuf":
        raise TypeError(f"image must be numeric, got dtype {img.dtype}")
    ks = (kernel_size, kernel_size) if np.ndim(kernel_size) == 0 else tuple(kernel_size)
    try:
        ksize = (int(ks[0]), int(ks[1]))
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"kernel_size must be K or (KH, KW), got {kernel_size!r}") from None
    # The solver's own checks (sizes, lambda, mask, ...), before any work.
    check_inputs(
        img, kernel_size, n_motifs, lam, channel_axis, mask, solve_kwargs.get("init_kernels")
    )
    prep = _prepare(img, channel_axis, mask, flatten, scars, lattice, ksize)
    return _run(prep, kernel_size, n_motifs, lam, solve_kwargs, significance, keep_artefacts)


def _run(prep, kernel_size, n_motifs, lam, solve_kwargs, significance, keep_artefacts):
    # Preparation, solve and detection, yielding ``None`` during the
    # preparation (:func:`_prepare`) and the solver's snapshots after it.
    data, obs, scar_mask, lat, info = yield from prep
    cax = None if data.ndim == 2 else 0
    gen = iter_solve(data, kernel_size, n_motifs, lam, channel_axis=cax, mask=obs, **solve_kwargs)
    result: SolveResult = yield from gen
    recon = np.asarray(result.reconstruction, np.float64)
    if data.ndim == 3 and recon.ndim == 3 and recon.shape != data.shape:
        recon = np.moveaxis(recon, -1, 0)
    resid = data - recon
    copies = copy_maps(result.activations, result.kernels, resid, obs, data)
    all_defects = detect_copies(copies, significance)
    flags = flag_motifs(result.kernels, copies, all_defects, data.shape[-2:], significance)
    defects = user_defects(all_defects, copies.rims, flags, keep_artefacts)
    info.update(significance=float(significance), keep_artefacts=bool(keep_artefacts))
    return Analysis(
        result=result, defects=defects, copies=copies, significance=float(significance), data=data,
        scars=scar_mask, lattice=lat, flags=flags, settings=info,
    )  # fmt: skip


def analyse(
    image: ArrayLike,
    kernel_size: int | tuple[int, int] = 15,
    n_motifs: int = 1,
    lam: float | None = None,
    **kwargs: Any,
) -> Analysis:
    """Find the defects of a scan: flatten, leave out scars, remove the
    lattice, solve, and detect one point per significant copy.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` scan, or a cube with ``channel_axis``.
    kernel_size : int or (int, int)
        Motif size in pixels (about a defect with its halo).
    n_motifs : int
        Number of motif kinds.
    lam : float, optional
        Sparsity weight (see :func:`napari_sasd.solve`); None: automatic.
    **kwargs
        ``channel_axis``, ``mask`` (True = observed), ``flatten`` (plane and
        line offsets, default True), ``scars`` (``"auto"``: left out of the
        fit when the image shows them, ``"on"``, ``"off"``), ``lattice``
        (``"auto"``: removed when its Bragg peaks are found, ``"off"``),
        ``significance`` (a copy's amplitude in units of its matched filter's
        noise, default :data:`~napari_sasd.detection.DEFAULT_SIGNIFICANCE`),
        ``keep_artefacts`` (count copies of flagged motifs too), and any
        keyword of :func:`napari_sasd.solve` (``seed``, ``max_iter``, ...).

    Returns
    -------
    Analysis
    """
    return run_to_end(iter_analyse(image, kernel_size, n_motifs, lam, **kwargs))


def analysis_record(analysis: Analysis) -> dict[str, Any]:
    """What a result bundle's record says of the analysis: the steps taken,
    the detection's significance and noise levels, and each motif's flags."""
    from .flags import FLAG_TEXT

    rec: dict[str, Any] = {k: v for k, v in analysis.settings.items() if k != "flatten"}
    rec["noise_per_motif"] = [float(v) for v in analysis.copies.noise]
    rec["motif_flags"] = [list(f) for f in analysis.flags]
    rec["motif_notes"] = ["; ".join(FLAG_TEXT[f] for f in fl) or "defect" for fl in analysis.flags]
    rec["kernel_size"] = [int(v) for v in analysis.result.kernels.shape[-2:]]
    return rec
