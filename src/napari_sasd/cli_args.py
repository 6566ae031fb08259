"""Argument types of the command line: each parses one option's text or
raises ``argparse.ArgumentTypeError`` with what was expected (argparse then
prints it with the usage); and the arguments every command over files has
(the files, ``--out``, ``--progress``). Shared by ``solve`` (cli_parser.py)
and ``locate`` / ``library`` (cli_locate.py)."""

from __future__ import annotations

import argparse
from typing import TextIO

__all__ = [
    "add_files_argument",
    "add_output_options",
    "fraction_arg",
    "kernel_size_arg",
    "lam_arg",
    "positive_int_arg",
    "progress_wanted",
    "roi_arg",
]


def kernel_size_arg(text: str) -> tuple[int, int] | None:
    if text.strip().lower() == "auto":
        return None  # suggested per image (napari_sasd.ksize)
    parts = text.lower().replace("*", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K, KHxKW or 'auto', got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 2:
        raise argparse.ArgumentTypeError(f"expected K or KHxKW with sizes >= 2, got {text!r}")
    return vals[0], vals[1]


def lam_arg(text: str) -> float | None:
    if text.lower() == "auto":
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"lambda must be > 0, got {text!r}")
    return v


def roi_arg(text: str) -> tuple[int, int, int, int]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected y0,x0,y1,x1 integers, got {text!r}") from None
    if len(vals) != 4 or vals[0] < 0 or vals[1] < 0 or vals[2] <= vals[0] or vals[3] <= vals[1]:
        raise argparse.ArgumentTypeError(f"expected y0,x0,y1,x1 with y0<y1, x0<x1, got {text!r}")
    return vals  # type: ignore[return-value]


def positive_int_arg(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return v


def fraction_arg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return v


def add_files_argument(p: argparse.ArgumentParser) -> None:
    """The ``FILE ...`` inputs of a command over files."""
    p.add_argument("files", nargs="+", metavar="FILE", help="image files or folders of them")


def add_output_options(p: argparse.ArgumentParser) -> None:
    """``-o/--out DIR`` (the bundles' folder) and ``--progress`` of a command over files."""
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for the bundles")
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr: auto (default) shows it on a terminal",
    )


def progress_wanted(choice: str, stream: TextIO) -> bool:
    """Whether ``--progress CHOICE`` draws a bar on ``stream`` (auto: on a terminal)."""
    return choice == "always" or (choice == "auto" and stream.isatty())
