"""Command line: ``napari-sasd locate``, ``napari-sasd library``, and the
``--scheduler`` / ``--dask`` options of ``solve`` and ``locate``.

Kept apart from :mod:`napari_sasd.cli` (which imports this) so that the
commands of known motifs grow here; ``locate`` reuses ``solve``'s per-file
work (reading, region, flattening, thresholds, bundle) with the fit swapped
for :func:`napari_sasd.locate`. Napari-free and Qt-free.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .cli_solve import SolveOptions

PROG = "napari-sasd"

_LOCATE_DESC = """\
Locate known motifs in each image -- those of a motif library or of a result
bundle -- with the motifs held fixed: the activations, background and
amplitudes only, a convex fit that takes a fraction of a solve's time. Saves
one result bundle per input in --out, as 'solve' does, its motifs named after
the library's. Images larger than --tile pixels on a side are located tile by
tile with bounded memory.
"""

_LOCATE_EPILOG = f"""\
examples:
  # learn on one scan, locate the same defects in the others
  {PROG} solve scans/first.sxm -k 12 -n 2 --out learnt/
  {PROG} locate --motifs learnt/first.sasd scans/ --out located/

  # with a named library, on a dask cluster
  {PROG} library make defects.sasdlib learnt/first.sasd --name "Se vacancy" --name adatom
  {PROG} locate --motifs defects.sasdlib scans/ --scheduler tcp://head:8786 --out located/

Errors are printed as 'FILE: message' on stderr and do not stop the other
files. Exit status: 0 all files done, 1 some failed, 2 bad command line.
"""

_LIBRARY_DESC = """\
Motif libraries: named motifs (a folder NAME.sasdlib with motifs.tif and
library.json) to locate in new scans ('locate --motifs') and to compare the
motifs of new solves with ('solve --library': "same as 'Se vacancy' (0.96)" or
"new" for each motif, in the summary and the bundle's record).

A SOURCE is a result bundle (all its motifs) or BUNDLE:I,J for its motifs
number I and J (1-based, as the summaries and the gallery number them).
"""

_LIBRARY_EPILOG = f"""\
examples:
  {PROG} library make defects.sasdlib results/scan1.sasd:2 results/scan7.sasd:1 \\
      --name "Se vacancy" --name "Fe adatom"
  {PROG} library add defects.sasdlib results/scan9.sasd:1 --name dimer
  {PROG} library show defects.sasdlib
"""

_CLUSTER_NOTE = (
    "one task per file on a dask.distributed cluster (needs pip install 'napari-sasd[dask]')"
)


@dataclass(frozen=True)
class LocateSpec:
    """Known motifs to locate in each file (picklable for workers)."""

    kernels: np.ndarray
    names: tuple[str, ...]
    source: str
    tile: int | None
    overlap: int | None

    def start(
        self, data: np.ndarray, lam: float | None, channel_axis: int | None
    ) -> Generator[Any, None, Any]:
        """The fit of one file: :func:`napari_sasd.iter_locate`."""
        from .locate import TILE_SIZE, iter_locate

        return iter_locate(
            data, self.kernels, lam, channel_axis=channel_axis,
            tile=TILE_SIZE if self.tile is None else self.tile, overlap=self.overlap,
        )  # fmt: skip

    def record(self) -> dict[str, Any]:
        """What the bundle's record says about the motifs."""
        return {
            "command": f"{PROG} locate",
            "motifs_from": self.source,
            "motif_names": list(self.names),
        }


# ------------------------------------------------------------------ parsers
def _motifs_arg(text: str) -> tuple[np.ndarray, list[str], str]:
    """``--motifs``: a library or a bundle, read (and checked) at parse time."""
    from .library import LibraryError, load_motifs

    try:
        kernels, names = load_motifs(text)
    except LibraryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return kernels, names, os.fspath(Path(text).resolve())


def _library_arg(text: str) -> str:
    """``--library``: a library folder, checked at parse time."""
    from .library import LibraryError, load_library

    try:
        load_library(text)
    except LibraryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return os.fspath(Path(text).resolve())


def _source_arg(text: str) -> tuple[str, list[int] | None]:
    """A library SOURCE: ``BUNDLE`` or ``BUNDLE:I,J`` (1-based)."""
    path, sep, sel = text.rpartition(":")
    if not sep or not sel or not all(p.strip().isdigit() for p in sel.split(",")):
        return text, None
    idx = [int(p) - 1 for p in sel.split(",")]
    if min(idx) < 0:
        raise argparse.ArgumentTypeError(f"motif numbers start at 1, got {text!r}")
    return path, idx


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """``--scheduler ADDRESS`` / ``--dask N`` for a command over files."""
    from .cli_args import positive_int_arg

    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help=f"run {_CLUSTER_NOTE}: the scheduler's address, e.g. tcp://head:8786 "
        "(its workers need napari-sasd installed)",
    )
    g.add_argument(
        "--dask",
        type=positive_int_arg,
        metavar="N",
        help=f"run {_CLUSTER_NOTE} started here with N worker processes",
    )


def add_commands(sub: Any) -> None:
    """Add ``locate`` and ``library`` to the command line's subparsers."""
    from .cli_args import (
        add_files_argument,
        add_output_options,
        fraction_arg,
        lam_arg,
        positive_int_arg,
        roi_arg,
    )

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "locate",
        help="locate known motifs (a library or a bundle's) in image files",
        description=_LOCATE_DESC,
        epilog=_LOCATE_EPILOG,
        formatter_class=fmt,
    )
    add_files_argument(p)
    p.add_argument(
        "-m",
        "--motifs",
        type=_motifs_arg,
        required=True,
        metavar="LIB",
        help="a motif library (.sasdlib) or a result bundle (.sasd) whose motifs to locate",
    )
    p.add_argument(
        "--lam",
        type=lam_arg,
        default=None,
        metavar="L",
        help="sparsity weight (normalised units) or 'auto' (default: as solve picks it)",
    )
    p.add_argument("--channel", metavar="NAME", help="Nanonis channel, as for solve")
    p.add_argument(
        "--flatten",
        choices=("auto", "none", "plane", "lines", "both"),
        default="auto",
        help="as for solve (auto, the default: both)",
    )
    p.add_argument("--roi", type=roi_arg, metavar="Y0,X0,Y1,X1", help="analyse only this region")
    p.add_argument(
        "--threshold",
        type=fraction_arg,
        metavar="T",
        help="relative defect threshold, as for solve",
    )
    p.add_argument(
        "--threshold-per-motif", action="store_true", help="threshold per motif, as for solve"
    )
    p.add_argument(
        "--tile",
        type=positive_int_arg,
        metavar="PX",
        help="locate images larger than PX on a side tile by tile (default 1024)",
    )
    p.add_argument(
        "-j", "--jobs", type=positive_int_arg, default=1, metavar="J", help="files run in parallel"
    )
    add_cluster_options(p)
    add_output_options(p)

    lib = sub.add_parser(
        "library",
        help="make, extend or show a motif library",
        description=_LIBRARY_DESC,
        epilog=_LIBRARY_EPILOG,
        formatter_class=fmt,
    )
    lsub = lib.add_subparsers(dest="library_command", metavar="ACTION", required=True)
    for action, text in (("make", "a new library"), ("add", "add motifs to a library")):
        a = lsub.add_parser(action, help=text, description=_LIBRARY_DESC, formatter_class=fmt)
        a.add_argument("library", metavar="LIB", help="the library folder (.sasdlib)")
        a.add_argument(
            "sources", nargs="+", type=_source_arg, metavar="SOURCE", help="BUNDLE or BUNDLE:I,J"
        )
        a.add_argument(
            "--name",
            action="append",
            metavar="NAME",
            help="a name per motif taken, in order (default: BUNDLE #I)",
        )
    s = lsub.add_parser("show", help="list a library's motifs")
    s.add_argument("library", metavar="LIB")


# ----------------------------------------------------------------- commands
def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``locate`` or ``library`` (exit status)."""
    if args.command == "library":
        return _cmd_library(args, out, err)
    return _cmd_locate(args, out, err)


def _cmd_library(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .bundle import BundleError
    from .library import LibraryError, load_library, make_library

    try:
        if args.library_command == "show":
            lib = load_library(args.library)
            out.write(f"{lib.path}: {len(lib)} motif{'s' * (len(lib) != 1)}\n")
            for name, m, prov in zip(lib.names, lib.motifs, lib.provenance, strict=True):
                where = prov.get("bundle") or "?"
                i = prov.get("motif")
                src = f"{where} #{i + 1}" if isinstance(i, int) else where
                out.write(f"  {name!r}: {'x'.join(map(str, m.shape))} from {src}\n")
            return 0
        base = load_library(args.library) if args.library_command == "add" else None
        if base is None and Path(args.library).exists() and any(Path(args.library).iterdir()):
            err.write(f"{args.library}: exists; use '{PROG} library add' to extend it\n")
            return 2
        lib = make_library(args.sources, args.name, library=base)
        path = lib.save(args.library)
    except (LibraryError, BundleError, ValueError) as exc:
        err.write(f"{exc}\n")
        return 1 if isinstance(exc, LibraryError | BundleError) else 2
    out.write(f"{path}: {len(lib)} motif{'s' * (len(lib) != 1)}: {', '.join(lib.names)}\n")
    return 0


def _cmd_locate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .cli_args import progress_wanted
    from .cli_solve import SolveOptions, files_bar, files_report, inputs_and_names

    found = inputs_and_names(args, "locate", err)
    if found is None:
        return 2
    files, names = found
    kernels, motif_names, source = args.motifs
    spec = LocateSpec(kernels, tuple(motif_names), source, args.tile, None)
    opts = SolveOptions(
        kernel_size=tuple(int(v) for v in kernels.shape[-2:]),
        n_motifs=len(kernels),
        lam=args.lam,
        channel=args.channel,
        flatten=args.flatten,
        roi=args.roi,
        threshold=args.threshold,
        threshold_per_motif=args.threshold_per_motif,
        seed=0,
        max_iter=None,
        out=str(args.out),
        locate=spec,
    )
    if args.scheduler or args.dask:
        return run_on_cluster(files, names, opts, args, out, err)
    progress = progress_wanted(args.progress, err)
    tasks = [(str(f), n) for f, n in zip(files, names, strict=True)]
    serial = args.jobs == 1 or len(files) == 1
    work = partial(_task, opts=opts, progress=progress and serial)
    # A lone run draws each file's progress, the process pool one bar over files.
    bar = files_bar(err, len(tasks)) if progress and not serial else None
    outcomes = _run_local(tasks, work, args.jobs, files_report(out, err, bar, len(tasks)))
    return 1 if not all(ok for ok, _ in outcomes) else 0


def _task(task: tuple[str, str], opts: SolveOptions, progress: bool = False) -> tuple[bool, str]:
    """One file of a batch, ``(path, bundle name)`` -> (ok, summary or error)."""
    from .cli_solve import _run_one

    path, name = task
    return _run_one(path, name, opts, progress)


def _label(task: tuple[str, str]) -> str:
    return task[0]


def _run_local(tasks: list, work: Any, jobs: int, report: Any) -> list[tuple[bool, str]]:
    """The command line's local runner (:func:`napari_sasd.batch.run_batch`)."""
    from .batch import run_batch

    return run_batch(tasks, work, jobs=jobs, report=report, label=_label)


def run_on_cluster(
    files: Sequence[Path],
    names: Sequence[str],
    opts: SolveOptions,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
) -> int:
    """``--scheduler`` / ``--dask``: the files as tasks on dask.distributed, a
    progress bar over files (exit status)."""
    from .cli_args import progress_wanted
    from .cli_solve import files_bar, files_report
    from .distributed import DaskMissing, run_distributed

    progress = progress_wanted(args.progress, err)
    tasks = [(str(f), n) for f, n in zip(files, names, strict=True)]
    bar = files_bar(err, len(tasks)) if progress else None
    try:
        outcomes = run_distributed(
            tasks, partial(_task, opts=opts), address=args.scheduler, n_workers=args.dask,
            report=files_report(out, err, bar, len(tasks)), label=_label,
        )  # fmt: skip
    except DaskMissing as exc:
        err.write(f"{PROG}: {exc}\n")
        return 2
    except OSError as exc:
        err.write(f"{args.scheduler}: cannot reach the dask scheduler: {exc}\n")
        return 1
    return 1 if not all(ok for ok, _ in outcomes) else 0


def catalogue_note(kernels: np.ndarray, library: str, extra: dict[str, Any]) -> str:
    """Catalogue a run's motifs against ``library``: into the record's
    ``extra["catalogue"]``, and as a note for the summary line."""
    from .library import catalogue, load_library

    entries = catalogue(kernels, load_library(library))
    extra["catalogue"] = entries
    extra["catalogue_library"] = library
    return "; " + ", ".join(f"motif {e['motif'] + 1} {e['text']}" for e in entries)
