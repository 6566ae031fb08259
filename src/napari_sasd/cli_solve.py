"""``napari-sasd solve``: one file's solve and bundle, and the batch over the inputs.

Napari-free and Qt-free (runs on a headless cluster node); ``locate``
(:mod:`napari_sasd.cli_locate`) reuses the per-file work with the fit swapped.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .batch import run_batch, unique_names
from .cli_args import progress_wanted
from .cli_locate import LocateSpec, catalogue_note, run_on_cluster
from .cli_parser import PROG
from .imageio import SUPPORTED, expand_inputs
from .nanonis import PartialGridWarning, sweep_axis, sweep_record

__all__ = ["ProgressBar", "SolveOptions", "solve_file"]


@dataclass(frozen=True)
class SolveOptions:
    """The per-file settings of ``solve`` (picklable for worker processes)."""

    kernel_size: tuple[int, int] | None
    n_motifs: int
    lam: float | None
    channel: str | None
    flatten: str
    roi: tuple[int, int, int, int] | None
    threshold: float | None
    threshold_per_motif: bool
    seed: int
    max_iter: int | None
    out: str
    #: A motif library to catalogue the found motifs against (``--library``).
    library: str | None = None
    #: Known motifs to locate instead of a solve (``napari-sasd locate``).
    locate: LocateSpec | None = None
    #: Real-scan handling (:mod:`napari_sasd.pipeline`): scars and lattice
    #: ("auto" or "none"), the detection's significance, flagged motifs' copies.
    scars: str = "auto"
    lattice: str = "auto"
    significance: float | None = None
    keep_artefacts: bool = False


class ProgressBar:
    """A one-line text progress bar (``\\r``-redrawn), throttled to 10 Hz."""

    def __init__(self, label: str, stream: TextIO, width: int = 30) -> None:
        self.label, self.stream, self.width = label, stream, width
        self._last = 0.0

    def update(self, fraction: float, note: str = "", force: bool = False) -> None:
        """Redraw at ``fraction`` in [0, 1] (at most every 0.1 s unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        n = round(self.width * min(max(fraction, 0.0), 1.0))
        bar = "#" * n + "." * (self.width - n)
        self.stream.write(f"\r{self.label} [{bar}] {100 * fraction:3.0f}% {note}")
        self.stream.flush()

    def close(self) -> None:
        """Erase the bar's line."""
        self.stream.write("\r" + " " * (len(self.label) + self.width + 30) + "\r")
        self.stream.flush()


def files_report(
    out: TextIO, err: TextIO, bar: ProgressBar | None = None, total: int = 0
) -> Callable[[bool, str], None]:
    """The report callback of a command over files: a line per file (stdout
    done, stderr failed) and the progress bar over files, redrawn under the
    lines (the local and the dask runners alike)."""
    done = [0]

    def report(ok: bool, msg: str) -> None:
        if bar is not None:
            bar.close()
        stream = out if ok else err
        stream.write(msg + "\n")
        stream.flush()
        done[0] += 1
        if bar is not None and done[0] < total:
            bar.update(done[0] / total, f"{done[0]}/{total} files", force=True)

    return report


def files_bar(err: TextIO, total: int) -> ProgressBar:
    """The progress bar over ``total`` files, drawn at 0."""
    bar = ProgressBar("files", err)
    bar.update(0.0, f"0/{total} files", force=True)
    return bar


def solve_file(
    path: Path, opts: SolveOptions, bar: ProgressBar | None = None, name: str | None = None
) -> str:
    """Solve one file and write its bundle ``opts.out/NAME.sasd``; return the summary.

    ``name`` defaults to the file's stem.

    Raises ``ValueError``/``TypeError`` (bad input), ``OSError``; messages are
    prefixed with the file by :func:`_run_one`.
    """
    from .bundle import save_bundle
    from .detection import DEFAULT_SIGNIFICANCE
    from .flatten import flatten
    from .imageio import read_image
    from .ksize import suggest_kernel_size
    from .peaks import find_defects, motif_thresholds
    from .pipeline import Analysis, analysis_record, iter_analyse
    from .quicklook import bundle_pictures
    from .spectra import motif_spectra

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        # A partial .3ds grid warns; say it in the file's summary line instead.
        warnings.simplefilter("always", PartialGridWarning)
        img = read_image(path, opts.channel)
    notes = [str(w.message) for w in caught if issubclass(w.category, PartialGridWarning)]
    data = img.data
    h, w = data.shape[-2:]
    region = [0, 0, h, w]
    if opts.roi is not None:
        y0, x0, y1, x1 = opts.roi
        if y1 > h or x1 > w:
            raise ValueError(f"--roi {y0},{x0},{y1},{x1} is outside the {h}x{w} image")
        data = data[..., y0:y1, x0:x1]
        region = [y0, x0, y1, x1]
    raw = data  # the measured values, for the spectra
    mode = opts.flatten
    # auto: both; every scan needs it (tilt, line offsets), pictures of scans
    # too. Line flattening includes the line shape all lines share (the
    # scan-start band), as analyse does: the record says "both" for auto, and
    # giving that back as --flatten both must reproduce the run (without the
    # shape it did not: 26 points instead of 34 on a labelled WSe2 scan,
    # median F1 0.77 instead of 0.85 over the five).
    if mode == "auto":
        mode = "both"
    shape = mode in ("lines", "both")
    if mode != "none":
        data = flatten(
            data, plane=mode in ("plane", "both"), lines=mode in ("lines", "both"), columns=shape
        )
    kernel_size = opts.kernel_size
    if kernel_size is None and opts.locate is None:
        k = suggest_kernel_size(
            data if img.channel_axis is None else np.moveaxis(data, img.channel_axis, 0)
        )
        kernel_size = (k, k)

    analysis = None
    if opts.locate is not None:
        gen = opts.locate.start(data, opts.lam, img.channel_axis)
    else:
        gen = iter_analyse(
            data,
            kernel_size,
            opts.n_motifs,
            opts.lam,
            channel_axis=img.channel_axis,
            flatten=False,
            scars="auto" if opts.scars == "auto" else "off",
            lattice="auto" if opts.lattice == "auto" else "off",
            significance=DEFAULT_SIGNIFICANCE if opts.significance is None else opts.significance,
            keep_artefacts=opts.keep_artefacts,
            seed=opts.seed,
            max_iter=opts.max_iter,
        )
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if bar is not None and p is not None:  # None: a preparation step (analyse)
            bar.update(p.fraction, f"stage {p.stage + 1}/{p.n_stages}")
    if bar is not None:
        bar.close()
    if isinstance(result, Analysis):
        analysis, result = result, result.result

    acts = result.activations
    per = opts.threshold_per_motif
    extra: dict[str, Any] = {}
    if analysis is not None and opts.threshold is None:
        # One point per significant copy (napari_sasd.detection).
        defects = analysis.defects
        thr_rec = analysis.copies.thresholds(analysis.significance).tolist()
        extra.update(analysis_record(analysis))
    else:
        thr = motif_thresholds(acts, opts.threshold, relative=True, per_motif=per)
        defects = find_defects(acts, thr)
        # Recorded in image units: one value, or one per motif.
        thr_rec = thr.tolist() if per else float(thr[0]) if len(thr) else None
    scale = tuple(img.scale)
    translate = tuple(img.translate)
    if img.channel_axis is not None:  # the layer convention for a cube: channel axis first
        sweep = img.metadata.get("sweep")
        ax = sweep_axis(sweep) if sweep is not None else None
        scale, translate = (ax[1] if ax else 1.0, *scale), (ax[0] if ax else 0.0, *translate)
        if sweep is not None:
            extra["sweep"] = sweep_record(
                sweep, img.metadata.get("sweep_label", ""), img.metadata.get("sweep_unit", "")
            )
    if "measured_points" in img.metadata:
        extra["measured_points"] = img.metadata["measured_points"]
    catalogued = ""
    if opts.locate is not None:
        extra.update(opts.locate.record())
    if opts.library is not None:
        catalogued = catalogue_note(result.kernels, opts.library, extra)
    spectra = None
    if img.channel_axis is not None:
        spectra = motif_spectra(
            result.kernels,
            defects,
            raw,
            img.metadata.get("sweep"),
            label=img.metadata.get("sweep_label") or "channel",
            unit=img.metadata.get("sweep_unit", ""),
        )
    pictures = bundle_pictures(
        data, defects, result.kernels, spectra=spectra, title=f"{path.name}: {img.name}"
    )
    out = save_bundle(
        Path(opts.out) / (name or path.stem),
        result,
        defects=defects,
        source=img.name,
        source_path=str(path.resolve()),
        region=region,
        scale=scale,
        translate=translate,
        threshold=thr_rec,
        extra={
            "flatten": mode,
            # The line shape all scan lines share, removed with "auto".
            "line_shape_removed": bool(shape),
            "threshold_relative": opts.threshold,
            "threshold_per_motif": per,
            "channel": img.name,
            "units": img.units,
            "space_units": img.metadata.get("space_units", "px"),
            "command": "napari-sasd solve",
            **extra,
        },
        extra_files=pictures,
    )
    counts = "+".join(str(c) for c in defects.counts(result.n_motifs))
    secs = time.perf_counter() - t0
    note = "".join(f" ({m.removeprefix(f'{path}: ')})" for m in notes)
    return (
        f"{path}: {result.n_motifs} motif{'s' * (result.n_motifs != 1)}, defects {counts}, "
        f"lambda {result.lam:.3g}, {secs:.1f} s -> {out}{note}{catalogued}"
    )


def _run_one(path: str, name: str, opts: SolveOptions, progress: bool) -> tuple[bool, str]:
    """Worker entry: (ok, summary or 'FILE: error') -- never raises."""
    p = Path(path)
    bar = ProgressBar(p.name, sys.stderr) if progress else None
    try:
        return True, solve_file(p, opts, bar, name=name)
    except Exception as exc:  # report and carry on with the other files
        if bar is not None:
            bar.close()
        msg = " ".join(str(exc).split()) or type(exc).__name__
        # Our readers already prefix the path; don't say it twice.
        if not msg.startswith(str(p)):
            msg = f"{p}: {msg}"
        return False, msg


def inputs_and_names(
    args: argparse.Namespace, command: str, err: TextIO
) -> tuple[list[Path], list[str]] | None:
    """The input files of ``solve`` or ``locate`` and their bundles' names,
    with ``--out`` made; None (said on ``err``: exit status 2) when there is
    no supported file or the folder cannot be made."""
    files = list(dict.fromkeys(expand_inputs(args.files)))  # a file named twice runs once
    if not files:
        err.write(f"{PROG} {command}: no supported files ({', '.join(SUPPORTED)}) in the inputs\n")
        return None
    # Bundles are named after the inputs, unique: a.tif and a.npy give a_tif
    # and a_npy, d1/x.tif and d2/x.tif give x_d1 and x_d2.
    names = unique_names(files)
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        err.write(f"{args.out}: {exc.strerror or exc}\n")
        return None
    return files, names


def _cmd_solve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    found = inputs_and_names(args, "solve", err)
    if found is None:
        return 2
    files, names = found
    opts = SolveOptions(
        scars=args.scars,
        lattice=args.lattice,
        significance=args.significance,
        keep_artefacts=args.keep_artefacts,
        kernel_size=args.kernel_size,
        n_motifs=args.motifs,
        lam=args.lam,
        channel=args.channel,
        flatten=args.flatten,
        roi=args.roi,
        threshold=args.threshold,
        threshold_per_motif=args.threshold_per_motif,
        seed=args.seed,
        max_iter=args.max_iter,
        out=str(args.out),
        library=args.library,
    )
    progress = progress_wanted(args.progress, err)
    if args.scheduler or args.dask:
        return run_on_cluster(files, names, opts, args, out, err)

    # Processes, not threads, for --jobs: the solver is numpy/FFT-bound and
    # holds the GIL between calls. A lone run draws each file's progress,
    # the process pool one bar over the files.
    serial = args.jobs == 1 or len(files) == 1
    work = partial(_run_task, opts=opts, progress=progress and serial)
    tasks = [(str(f), name) for f, name in zip(files, names, strict=True)]
    bar = files_bar(err, len(tasks)) if progress and not serial else None
    report = files_report(out, err, bar, len(tasks))
    outcomes = run_batch(tasks, work, jobs=args.jobs, report=report, label=_task_label)
    return 1 if not all(ok for ok, _ in outcomes) else 0


def _task_label(task: tuple[str, str]) -> str:
    return task[0]


def _run_task(task: tuple[str, str], opts: SolveOptions, progress: bool) -> tuple[bool, str]:
    """:func:`run_batch`'s per-file callable: one ``(path, bundle name)``."""
    path, name = task
    return _run_one(path, name, opts, progress)
