"""The command line's argument parser: every command, option, help and example.

The commands run in :mod:`napari_sasd.cli_solve` (``solve``),
:mod:`napari_sasd.cli_sample` (``sample``, ``demo``) and
:mod:`napari_sasd.cli_locate` (``locate``, ``library``, which adds its own
parsers here); :mod:`napari_sasd.cli` dispatches. Napari-free and Qt-free.
"""

from __future__ import annotations

import argparse

from ._version import __version__
from .cli_args import (
    add_files_argument,
    add_output_options,
    fraction_arg,
    kernel_size_arg,
    lam_arg,
    positive_int_arg,
    roi_arg,
)
from .cli_locate import add_cluster_options, add_commands
from .imageio import SUPPORTED

__all__ = ["PROG", "build_parser"]

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
    add_files_argument(s)
    s.add_argument(
        "-k",
        "--kernel-size",
        type=kernel_size_arg,
        required=True,
        metavar="K",
        help="motif size in pixels: K or KHxKW (a defect with its halo), or 'auto' "
        "(suggested per image: the typical defect size)",
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
        help="remove a plane and/or the scan lines' offsets and shared shape (the scan-start "
        "band) first; auto (default): both",
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
        "motif's matched filter (default 4), or Z - 1 when it spans many scan lines",
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
    add_output_options(s)

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
