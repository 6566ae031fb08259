"""Command line: ``napari-sasd solve``, ``sample``, ``demo``, ``locate``, ``library``.

Napari-free and Qt-free on purpose (runs on a headless cluster node): it
imports only the core. ``python -m napari_sasd`` is the same program.

This module dispatches; the parser is in :mod:`napari_sasd.cli_parser`, the
commands in :mod:`napari_sasd.cli_solve`, :mod:`napari_sasd.cli_sample` and
:mod:`napari_sasd.cli_locate`.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Sequence

from .batch import interrupt_once
from .cli_locate import run_command
from .cli_parser import PROG, build_parser
from .cli_sample import _cmd_demo, _cmd_sample
from .cli_solve import ProgressBar, SolveOptions, _cmd_solve, solve_file


class UsageError(Exception):
    """Bad command-line value (exit status 2)."""


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


__all__ = ["PROG", "ProgressBar", "SolveOptions", "build_parser", "main", "solve_file"]
