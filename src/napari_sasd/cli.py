"""Command line: ``napari-sasd solve`` and ``napari-sasd sample``.

Napari-free and Qt-free on purpose (runs on a headless cluster node): it
imports only the core. ``python -m napari_sasd`` is the same program.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ._version import __version__
from .batch import interrupt_once, run_batch, unique_names
from .cli_args import fraction_arg, kernel_size_arg, lam_arg, positive_int_arg, roi_arg
from .cli_locate import (
    LocateSpec,
    add_cluster_options,
    add_commands,
    catalogue_note,
    run_command,
    run_on_cluster,
)
from .imageio import SUPPORTED, expand_inputs
from .nanonis import PartialGridWarning, sweep_axis, sweep_record

PROG = "napari-sasd"

_MAIN_EPILOG = f"""\
examples:
  {PROG} sample topograph --out topo.tif
  {PROG} solve topo.tif --kernel-size 12 --motifs 2 --out results/
  {PROG} solve scans/ --kernel-size 15 --motifs 2 --jobs 2 --out results/

Each input gives a result bundle results/NAME.sasd/ (motifs.tif,
activations.tif, defects.csv, record.json) that napari opens with this plugin.
Run '{PROG} solve --help' for all the options.
"""

_SOLVE_DESC = f"""\
Find the motifs repeated in each image (short-and-sparse blind deconvolution),
locate their copies, and save one result bundle per input in --out.

Inputs: TIFF, .npy, PNG/JPEG, Nanonis .sxm (default channel: Z forward) and
.3ds grids (solved as a multi-channel cube), or folders of such files. A 3-D
TIFF/.npy is taken as a (channels, height, width) stack.
Supported suffixes: {", ".join(SUPPORTED)}.
"""

_SOLVE_EPILOG = f"""\
examples:
  # two kinds of ~12 px defects in a synthetic topograph
  {PROG} sample topograph --out topo.tif
  {PROG} solve topo.tif -k 12 -n 2 --out results/

  # a Nanonis scan: Z forward, flattened, only a 200x200 px region
  {PROG} solve scan.sxm -k 15 -n 1 --roi 0,0,200,200 --out results/

  # every supported file of a folder, two at a time
  {PROG} solve scans/ -k 15 -n 2 --jobs 2 --out results/

output: one line per file, e.g.
  topo.tif: 2 motifs, defects 31+18, lambda 0.21, 4.2 s -> results/topo.sasd
Errors are printed as 'FILE: message' on stderr and do not stop the other
files (a worker process that dies fails only its file). Inputs of the same
name get distinct bundles (x_d1, x_d2 for d1/x.tif, d2/x.tif); each line says
where its bundle went. A bundle is replaced only once its new version is
complete. Ctrl-C stops every file (exit status 130).
Exit status: 0 all files done, 1 some failed, 2 bad command line,
130 interrupted.
"""


class UsageError(Exception):
    """Bad command-line value (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Find repeated motifs (point-defect signatures) in microscopy images "
        "by short-and-sparse blind deconvolution.",
        epilog=_MAIN_EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser(
        "solve",
        help="find motifs and defects in image files",
        description=_SOLVE_DESC,
        epilog=_SOLVE_EPILOG,
        formatter_class=fmt,
    )
    s.add_argument("files", nargs="+", metavar="FILE", help="image files or folders of them")
    s.add_argument(
        "-k",
        "--kernel-size",
        type=kernel_size_arg,
        required=True,
        metavar="K",
        help="motif size in pixels: K or KHxKW (a defect with its halo), or 'auto' "
        "(suggested per image from its dominant blob scale)",
    )
    s.add_argument(
        "-n",
        "--motifs",
        type=positive_int_arg,
        default=1,
        metavar="N",
        help="number of motif kinds",
    )
    s.add_argument(
        "--lam",
        type=lam_arg,
        default=None,
        metavar="L",
        help="sparsity weight (normalised units; larger finds fewer copies) or 'auto' (default)",
    )
    s.add_argument(
        "--channel",
        metavar="NAME",
        help="Nanonis channel, e.g. 'Z' (forward, the default), 'Z (bwd)', 'LIY 1 omega'; "
        "for .3ds the grid channel (default: the first lock-in channel)",
    )
    s.add_argument(
        "--flatten",
        choices=("auto", "none", "plane", "lines", "both"),
        default="auto",
        help="remove a plane and/or scan-line offsets first; auto (default): both",
    )
    s.add_argument(
        "--scars",
        choices=("auto", "none"),
        default="auto",
        help="scan-line scars (partial streaks) left out of the fit; auto (default): when "
        "the image shows them",
    )
    s.add_argument(
        "--lattice",
        choices=("auto", "none"),
        default="auto",
        help="atomic lattice (Bragg peaks) removed before the solve, so motifs are the "
        "departures from it; auto (default): when one is found",
    )
    s.add_argument(
        "--significance",
        type=float,
        default=None,
        metavar="Z",
        help="count a copy when its amplitude exceeds Z times the local noise of its "
        "motif's matched filter (default 4)",
    )
    s.add_argument(
        "--keep-artefacts",
        action="store_true",
        help="also count copies of motifs that look like scan artefacts (streaks, lattice, "
        "texture)",
    )
    s.add_argument(
        "--roi",
        type=roi_arg,
        metavar="Y0,X0,Y1,X1",
        help="analyse only rows Y0..Y1-1 and columns X0..X1-1 (pixels)",
    )
    s.add_argument(
        "--threshold",
        type=fraction_arg,
        metavar="T",
        help="instead of the significance: count a defect where a raw activation peak "
        "exceeds T times the largest one (0-1)",
    )
    s.add_argument(
        "--threshold-per-motif",
        action="store_true",
        help="take the threshold from each motif's own map, so a faint kind of defect is "
        "found beside a bright one (default: one threshold from all maps)",
    )
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument(
        "--max-iter",
        type=positive_int_arg,
        metavar="I",
        help="iteration budget (default: solver's)",
    )
    s.add_argument(
        "-j",
        "--jobs",
        type=positive_int_arg,
        default=1,
        metavar="J",
        help="files solved in parallel",
    )
    s.add_argument(
        "--library",
        metavar="LIB",
        help="a motif library: say of each motif found whether it is a known one "
        "(\"same as 'Se vacancy' (0.96)\") or new, in the summary and the record",
    )
    add_cluster_options(s)
    s.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for the bundles")
    s.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr: auto (default) shows it on a terminal",
    )

    m = sub.add_parser(
        "sample",
        help="write a synthetic test image",
        description="Write a synthetic image with known defects (the napari sample data): "
        "'topograph' is a 256x256 STM-like topograph with two defect kinds (12 px); "
        "'cube' is a (channels, 128, 128) spectroscopy stack with two defect kinds.",
        epilog=f"example:\n  {PROG} sample topograph --out topo.tif\n"
        f"  {PROG} solve topo.tif -k 12 -n 2 --out results/",
        formatter_class=fmt,
    )
    m.add_argument("name", choices=("topograph", "cube"), help="which sample")
    m.add_argument("-o", "--out", required=True, metavar="FILE", help="output .tif/.tiff/.npy")

    d = sub.add_parser(
        "demo",
        help="find the motifs of the bundled sample (in napari when there is a display)",
        description="Open napari with the synthetic topograph sample and the motif finder, "
        "and run it. Without a display (or with --headless) solve the sample here, "
        "compare the motifs with the sample's ground truth and write a result bundle.",
        epilog=f"example:\n  {PROG} demo\n  {PROG} demo --headless --out demo-results/",
        formatter_class=fmt,
    )
    d.add_argument("--headless", action="store_true", help="never open a window")
    d.add_argument(
        "-o", "--out", default="sasd-demo", metavar="DIR", help="bundle folder (headless)"
    )
    add_commands(sub)
    return parser


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
    if mode == "auto":
        # Every scan needs it (tilt, line offsets), pictures of scans too.
        mode = "both"
    if mode != "none":
        data = flatten(data, plane=mode in ("plane", "both"), lines=mode in ("lines", "both"))
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
        if bar is not None:
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


def _cmd_solve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    files = list(dict.fromkeys(expand_inputs(args.files)))  # a file named twice runs once
    if not files:
        err.write(f"{PROG} solve: no supported files ({', '.join(SUPPORTED)}) in the inputs\n")
        return 2
    # Bundles are named after the inputs, unique: a.tif and a.npy give a_tif
    # and a_npy, d1/x.tif and d2/x.tif give x_d1 and x_d2.
    names = unique_names(files)
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        err.write(f"{args.out}: {exc.strerror or exc}\n")
        return 2
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
    progress = args.progress == "always" or (args.progress == "auto" and err.isatty())
    if args.scheduler or args.dask:
        return run_on_cluster(files, names, opts, args, out, err)

    def report(ok: bool, msg: str) -> None:
        stream = out if ok else err
        stream.write(msg + "\n")
        stream.flush()

    # Processes, not threads, for --jobs: the solver is numpy/FFT-bound and
    # holds the GIL between calls. Only a lone run draws a progress bar.
    serial = args.jobs == 1 or len(files) == 1
    work = partial(_run_task, opts=opts, progress=progress and serial)
    tasks = [(str(f), name) for f, name in zip(files, names, strict=True)]
    outcomes = run_batch(tasks, work, jobs=args.jobs, report=report, label=_task_label)
    return 1 if not all(ok for ok, _ in outcomes) else 0


def _task_label(task: tuple[str, str]) -> str:
    return task[0]


def _run_task(task: tuple[str, str], opts: SolveOptions, progress: bool) -> tuple[bool, str]:
    """:func:`run_batch`'s per-file callable: one ``(path, bundle name)``."""
    path, name = task
    return _run_one(path, name, opts, progress)


def _cmd_sample(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .sample_data import cube_data, topograph_data

    path = Path(args.out)
    suffix = path.suffix.lower()
    if suffix not in (".tif", ".tiff", ".npy"):
        err.write(f"{path}: the sample is written as .tif, .tiff or .npy\n")
        return 2
    data = (topograph_data if args.name == "topograph" else cube_data)()
    img = np.asarray(data.image, np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            np.save(path, img, allow_pickle=False)
        else:
            import tifffile

            tifffile.imwrite(path, img, photometric="minisblack")
    except OSError as exc:
        err.write(f"{path}: {exc.strerror or exc}\n")
        return 1
    k = data.kernels.shape[-1]
    out.write(
        f"{path}: synthetic {args.name} {'x'.join(map(str, img.shape))}, "
        f"{data.kernels.shape[0]} motifs of {k} px; try: {PROG} solve {path} "
        f"-k {k} -n {data.kernels.shape[0]} --out results/\n"
    )
    return 0


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import os

    if not args.headless and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        try:
            import napari
        except ImportError:
            err.write(
                "napari is not installed (pip install 'napari-sasd[all]'); running headless\n"
            )
        else:
            viewer = napari.Viewer(title="napari-sasd demo")
            viewer.open_sample("napari-sasd", "topograph")
            _dock, widget = viewer.window.add_plugin_dock_widget(
                "napari-sasd", "Find motifs (SaS-BD)"
            )
            widget.run()
            napari.run()
            return 0
    import time

    from .bundle import save_bundle
    from .metrics import match_motifs
    from .peaks import find_defects
    from .sample_data import TOPOGRAPH, topograph_data
    from .solver import solve

    data = topograph_data()
    k, n = TOPOGRAPH["kernel_size"], TOPOGRAPH["n_motifs"]
    out.write(f"synthetic topograph {data.image.shape}, {n} defect kinds of {k} px\n")
    t0 = time.perf_counter()
    res = solve(data.image, k, n)
    dt = time.perf_counter() - t0
    sims, assign = match_motifs(res.kernels, data.kernels)
    defects = find_defects(res.activations)
    counts = defects.counts(n)
    for m, i in enumerate(assign):
        out.write(
            f"motif {i + 1}: {counts[i]} copies found ({len(data.positions[m])} true), "
            f"similarity to the true motif {sims[m]:.4f}\n"
        )
    path = save_bundle(Path(args.out) / "topograph.sasd", res, defects=defects)
    out.write(f"lambda {res.lam:.3g}, {res.n_iter} iterations, {dt:.2f} s; bundle: {path}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 success, 1 some file failed, 2 usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on errors (2)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    # The first Ctrl-C stops the command (workers terminated, see
    # napari_sasd.batch); further ones are ignored until it has: one line,
    # exit status 130, no traceback.
    # Not around the demo's napari window, whose Qt loop handles its own.
    guard = contextlib.nullcontext() if args.command == "demo" else interrupt_once()
    with guard:
        try:
            if args.command == "solve":
                return _cmd_solve(args, sys.stdout, sys.stderr)
            if args.command == "demo":
                return _cmd_demo(args, sys.stdout, sys.stderr)
            if args.command in ("locate", "library"):
                return run_command(args, sys.stdout, sys.stderr)
            return _cmd_sample(args, sys.stdout, sys.stderr)
        except KeyboardInterrupt:
            if threading.current_thread() is threading.main_thread():
                # Ending: a further Ctrl-C must not kill the shutdown.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            sys.stderr.write("interrupted\n")
            sys.stderr.flush()
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["build_parser", "main", "solve_file"]
