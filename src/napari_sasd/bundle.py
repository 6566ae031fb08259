"""Result bundles: a folder ``NAME.sasd/`` holding one run, napari-free.

Layout::

    NAME.sasd/
        motifs.tif       kernels, (N, kh, kw) or (N, C, kh, kw), dtype kept
        activations.tif  (N, H, W) activation maps of the analysed region
        defects.csv      motif, amplitude, row, col (source pixels), y, x (world)
        record.json      everything needed to reproduce and re-display the run

Plain TIFF, CSV and JSON so that any tool (Fiji, pandas, a spreadsheet) opens
them; nothing is pickled. ``record.json`` uses the same keys as the result
layers' ``metadata['napari_sasd']`` (see :mod:`napari_sasd.layers`): ``params``,
``lam``, ``seed``, ``region`` ``[y0, x0, y1, x1]`` (source pixels), ``source``
(layer name), ``source_path``, ``version``, ``threshold``, ``run_id``; plus
``scale``/``translate`` of the source, ``bias``, ``explained``, ``colors``
(one hex colour per motif) and the run statistics; for a rotated, sheared or
affine-transformed 2-D source also its ``rotate``, ``shear`` (2 x 2) and
``affine`` (3 x 3) matrices.

Coordinates: ``row``/``col`` in ``defects.csv`` are pixels of the *source*
image (the region offset added) and ``y``/``x`` are world units
(``translate + scale * (row, col)``, through the rotation, shear and affine
when there are any, as napari places pixels), so the table lines up with the
original image. :attr:`Bundle.defects` positions are relative to the region, like the
activation maps (what :func:`napari_sasd.find_defects` returns).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ._version import __version__
from .bundle_files import (
    CSV_COLUMNS,
    MAX_RECORD_BYTES,
    BundleError,
    check_record,
    check_replaceable,
    member,
    move_into_place,
    quiet_tifffile,  # noqa: F401 (imported from here by imageio)
    read_defects,
    read_tiff,
)
from .geometry import plane_from, to_world, world_matrix
from .peaks import Defects, find_defects
from .result import SolveResult

__all__ = [
    "CSV_COLUMNS",
    "FORMAT",
    "Bundle",
    "BundleError",
    "build_record",
    "load_bundle",
    "save_bundle",
    "write_bundle_files",
]

FORMAT = "napari-sasd bundle"
FORMAT_VERSION = 1
SUFFIX = ".sasd"
#: Same palette as the plugin's result layers (kept here so this module stays
#: napari-free and importable without the plugin half).
DEFAULT_COLORS = (
    "#ff4d4d",
    "#33c3ff",
    "#ffd23f",
    "#5ee35e",
    "#ff66e0",
    "#ff9a3c",
    "#a68cff",
    "#3fffd2",
)


@dataclass
class Bundle:
    """A loaded result bundle.

    Attributes
    ----------
    kernels : ndarray
        ``(N, kh, kw)`` or ``(N, C, kh, kw)``.
    activations : ndarray
        ``(N, H, W)``, over the analysed region.
    defects : Defects
        Positions in pixels of the analysed region (like the activations).
    record : dict
        Contents of ``record.json``.
    path : Path
        The bundle folder.
    """

    kernels: np.ndarray
    activations: np.ndarray
    defects: Defects
    record: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def n_motifs(self) -> int:
        """Number of motifs."""
        return int(self.kernels.shape[0])

    def to_result(self) -> SolveResult:
        """A :class:`SolveResult` from the saved arrays and record.

        The reconstruction is not stored in a bundle; it is an empty array
        here (recompute it from kernels and activations if needed).
        """
        rec = self.record
        bias = rec.get("bias", 0.0)
        return SolveResult(
            kernels=self.kernels,
            activations=self.activations,
            bias=np.asarray(bias, float) if isinstance(bias, list) else float(bias or 0.0),
            lam=float(rec.get("lam") or 0.0),
            reconstruction=np.zeros((0,), np.float32),
            objective=float(rec.get("objective") or math.nan),
            n_iter=int(rec.get("n_iter") or 0),
            converged=bool(rec.get("converged", False)),
            explained=np.asarray(rec.get("explained") or [math.nan] * self.n_motifs, float),
            params=dict(rec.get("params") or {}),
        )


def _jsonable(x: Any) -> Any:
    """numpy scalars/arrays, tuples and paths -> plain JSON types."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x


def bundle_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with the ``.sasd`` suffix added when missing."""
    p = Path(path)
    return p if p.suffix == SUFFIX else p.with_name(p.name + SUFFIX)


def build_record(
    result: SolveResult,
    *,
    source: str | None = None,
    source_path: str | os.PathLike[str] | None = None,
    region: Sequence[int] | None = None,
    scale: Sequence[float] = (1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0),
    colors: Sequence[str] | None = None,
    threshold: float | Sequence[float] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``record.json`` dictionary of a run (JSON-serialisable).

    Parameters are those of :func:`save_bundle`.
    """
    h, w = result.activations.shape[-2:]
    region = [0, 0, int(h), int(w)] if region is None else [int(v) for v in region]
    if len(region) != 4 or region[2] - region[0] != h or region[3] - region[1] != w:
        raise ValueError(
            f"region {region} does not match the activations' size {h}x{w} (y0, x0, y1, x1)"
        )
    n = result.n_motifs
    colors = list(colors) if colors is not None else [DEFAULT_COLORS[i % 8] for i in range(n)]
    rec: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "params": result.params,
        "lam": float(result.lam),
        "seed": result.params.get("seed"),
        "region": region,
        "source": source,
        "source_path": None if source_path is None else os.fspath(source_path),
        "scale": [float(v) for v in scale],
        "translate": [float(v) for v in translate],
        "bias": result.bias,
        "explained": result.explained,
        "objective": float(result.objective),
        "n_iter": int(result.n_iter),
        "converged": bool(result.converged),
        "n_motifs": n,
        "kernel_size": list(result.kernel_size),
        "colors": colors,
        "threshold": threshold,
    }
    if extra:
        rec.update(extra)
    return _jsonable(rec)


def save_bundle(
    path: str | os.PathLike[str],
    result: SolveResult,
    *,
    defects: Defects | None = None,
    source: str | None = None,
    source_path: str | os.PathLike[str] | None = None,
    region: Sequence[int] | None = None,
    scale: Sequence[float] = (1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0),
    colors: Sequence[str] | None = None,
    threshold: float | Sequence[float] | None = None,
    extra: dict[str, Any] | None = None,
    extra_files: Callable[[Path], None] | None = None,
) -> Path:
    """Save a solve as a bundle folder ``NAME.sasd/``.

    Parameters
    ----------
    path : str or PathLike
        Folder to write; ``.sasd`` is appended when missing. An existing
        bundle there is replaced once the new one is complete (see
        :func:`write_bundle_files`).
    result : SolveResult
        The solve.
    defects : Defects, optional
        Detected copies, positions relative to the region; default
        ``find_defects(result.activations, threshold)``.
    source : str, optional
        Name of the source image (napari layer name).
    source_path : str or PathLike, optional
        File the source image came from.
    region : sequence of int, optional
        ``[y0, x0, y1, x1]`` analysed, in source pixels; default the whole
        activation map.
    scale, translate : sequence of float
        The source's pixel size and origin in world units (2 values, or 3
        with the channel axis first for a cube).
    colors : sequence of str, optional
        One colour per motif (hex), default the plugin's palette.
    threshold : float or sequence of float, optional
        Detection threshold used (absolute, image units; one per motif when
        each motif had its own).
    extra : dict, optional
        More JSON-serialisable entries for ``record.json``.
    extra_files : callable, optional
        Writes more files (pictures, tables) into the folder being written,
        called with its path after the bundle's own files; e.g.
        :func:`napari_sasd.quicklook.bundle_pictures`.

    Returns
    -------
    Path
        The bundle folder.
    """
    if defects is None:
        defects = find_defects(result.activations, threshold)
    record = build_record(
        result,
        source=source,
        source_path=source_path,
        region=region,
        scale=scale,
        translate=translate,
        colors=colors,
        threshold=threshold,
        extra=extra,
    )
    return write_bundle_files(
        path, result.kernels, result.activations, defects, record, extra_files=extra_files
    )


def write_bundle_files(
    path: str | os.PathLike[str],
    kernels: np.ndarray,
    activations: np.ndarray,
    defects: Defects,
    record: dict[str, Any],
    extra_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write the four bundle files from arrays and a ready record.

    The lower half of :func:`save_bundle`, also used by the napari writer,
    which has layers and their ``metadata['napari_sasd']`` rather than a
    :class:`SolveResult`. ``record`` needs ``region``, ``scale`` and
    ``translate`` (defaults: whole map, unit pixels) for the CSV coordinates;
    ``n_motifs`` and ``kernel_size`` are set from the arrays.
    ``extra_files``: as in :func:`save_bundle`.

    The files are written into a temporary folder beside the target, which is
    renamed into place when complete: an existing bundle is replaced only
    then, and an interrupted write leaves the old bundle (or none).

    Returns
    -------
    Path
        The bundle folder.

    Raises
    ------
    BundleError
        Arrays of the wrong shape, a target that exists and is not a bundle
        (a file, or a folder with other files), or a write error.
    """
    out = bundle_path(path)
    record = _jsonable(dict(record))
    record.setdefault("format", FORMAT)
    record.setdefault("format_version", FORMAT_VERSION)
    record.setdefault("version", __version__)
    kernels = np.asarray(kernels)
    activations = np.asarray(activations)
    if activations.ndim != 3 or kernels.ndim not in (3, 4):
        raise BundleError(
            out,
            f"need kernels (N,kh,kw)/(N,C,kh,kw) and activations (N,H,W), got "
            f"{kernels.shape} and {activations.shape}",
        )
    # What the reader checks the files against: a bundle cut short or mixed
    # from two runs is refused rather than opened wrong.
    record["n_motifs"] = len(kernels)
    record["kernel_size"] = [int(v) for v in kernels.shape[-2:]]
    region = record.get("region") or [0, 0, *activations.shape[-2:]]
    scale = np.asarray(record.get("scale") or (1.0, 1.0), float)[-2:]
    translate = np.asarray(record.get("translate") or (0.0, 0.0), float)[-2:]
    check_replaceable(out)  # before any work
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed into place when complete, so
        # an interrupted run leaves the old bundle (or none), never a mix.
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise BundleError(out, exc.strerror or str(exc)) from None
    try:
        tifffile.imwrite(tmp / "motifs.tif", kernels, photometric="minisblack")
        tifffile.imwrite(tmp / "activations.tif", activations, photometric="minisblack")
        pos = np.asarray(defects.positions, float).reshape(-1, 2) + np.asarray(region[:2], float)
        # As napari places the source's pixels (rotation etc. of a 2-D source).
        plane = plane_from(record.get("rotate"), record.get("shear"), record.get("affine"))
        world = to_world(world_matrix(scale, translate, plane), pos)
        with open(tmp / "defects.csv", "w", newline="", encoding="utf-8") as f:
            wr = csv.writer(f)
            wr.writerow(CSV_COLUMNS)
            table = zip(
                np.asarray(defects.motif).tolist(),
                np.asarray(defects.amplitude, float).tolist(),
                pos.tolist(),
                world.tolist(),
                strict=True,
            )
            for m, a, (r, c), (y, x) in table:
                # repr() of Python floats round-trips exactly
                wr.writerow([int(m), repr(a), repr(r), repr(c), repr(y), repr(x)])
        (tmp / "record.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        if extra_files is not None:
            # Into the temporary folder too: pictures and tables arrive with
            # the bundle, all at once.
            extra_files(tmp)
        move_into_place(tmp, out)
    except BaseException as exc:  # KeyboardInterrupt too: no half-written folder left
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise BundleError(out, exc.strerror or str(exc)) from None
        raise
    return out


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Load a bundle folder written by :func:`save_bundle`.

    Only the four bundle files are opened, and only when they are regular
    files inside the folder. They are checked against each other before being
    used: the record's motif count and size against the motifs, its region
    against the maps' size, and each defect's motif id and position against
    them. Rows may have been removed from ``defects.csv`` (e.g. false
    positives, in a spreadsheet): that is not an inconsistency.

    Parameters
    ----------
    path : str or PathLike
        The ``NAME.sasd`` folder (or its ``record.json``).

    Returns
    -------
    Bundle

    Raises
    ------
    BundleError
        Missing, malformed or inconsistent files (one-line message naming the
        bundle).
    """
    p = Path(path)
    if p.name == "record.json":
        p = p.parent
    if not p.is_dir():
        raise BundleError(p, "not a napari-sasd bundle folder")
    rec_path = member(p, "record.json")
    if rec_path is None:
        raise BundleError(p, "no record.json: not a napari-sasd bundle")
    if rec_path.stat().st_size > MAX_RECORD_BYTES:
        raise BundleError(p, "record.json is too large to be a bundle record")
    try:
        # utf-8-sig: a record saved by an editor may start with a byte-order mark.
        record = json.loads(rec_path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, RecursionError) as exc:
        raise BundleError(p, f"record.json unreadable: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise BundleError(p, "record.json is not a napari-sasd bundle record")
    kernels = read_tiff(p, "motifs.tif")
    activations = read_tiff(p, "activations.tif")
    # tifffile keeps the written shape (its 'shaped' description); a 2-D file
    # edited by another tool is one motif / one map.
    if kernels.ndim == 2:
        kernels = kernels[None]
    if activations.ndim == 2:
        activations = activations[None]
    # A corrupt TIFF can read as an empty array rather than fail.
    if kernels.ndim not in (3, 4) or kernels.size == 0:
        raise BundleError(p, f"motifs.tif is corrupt or not motifs (shape {kernels.shape})")
    if activations.ndim != 3 or activations.size == 0:
        raise BundleError(p, f"activations.tif is corrupt or not maps (shape {activations.shape})")
    if len(kernels) != len(activations):
        raise BundleError(
            p, f"motifs.tif has {len(kernels)} motifs but activations.tif {len(activations)} maps"
        )
    for name, arr in (("motifs.tif", kernels), ("activations.tif", activations)):
        if arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
            raise BundleError(p, f"{name} holds NaN, inf or non-numbers: the file is damaged")
    check_record(p, record, kernels, activations)
    region = record.get("region") or [0, 0, *activations.shape[-2:]]
    defects = read_defects(p, region, len(kernels))
    return Bundle(kernels, activations, defects, record, p)
