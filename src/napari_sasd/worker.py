"""Run :func:`napari_sasd.iter_solve` in a napari worker thread.

The solver is a generator yielding a :class:`~napari_sasd.SolveProgress` per
iteration. :class:`SolveRunner` drives it from ``napari.qt.threading`` and
hands the main thread only what it needs:

- snapshots, throttled in the worker thread (one every ``interval`` seconds),
  so a fast solver cannot flood the Qt event queue;
- no ``napari.utils.progress`` bar: the dock shows its own progress bar and
  stage. While a napari progress bar exists, napari's activity indicator
  repaints the main window continuously, and that took the worker thread's
  CPU: a 1024^2 scan with two motifs took 58 s in the dock with one, 26 s
  without, 22 s as a plain ``analyse`` (``benchmarks/bench_dock_time.py``,
  2 cores, Xvfb);
- a cancel flag checked at *every* iteration, so Cancel takes effect within
  one iteration even between throttled yields; the solver generator is closed
  in the worker thread;
- the result, the error, or nothing (cancelled), then "finished".

All callbacks run on the main thread (they are slots of the worker's signals),
so they may touch layers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np

from .result import SolveProgress, SolveResult


class SolveError(Exception):
    """A ``RuntimeError`` raised by the solver, re-raised under another class.

    superqt's worker treats a ``RuntimeError`` as "the worker was deleted":
    it would emit neither ``errored`` nor ``finished``, and the widget would
    wait forever.
    """


def throttled(
    gen: Iterator[SolveProgress], cancel: threading.Event, interval: float = 0.2
) -> Generator[SolveProgress, None, SolveResult | None]:
    """Re-yield ``gen``'s snapshots at most every ``interval`` s; stop on ``cancel``.

    Runs in the worker thread. The last snapshot is always yielded, so the
    progress bar ends full.

    Returns
    -------
    SolveResult or None
        ``gen``'s return value, or ``None`` if cancelled.
    """
    last = -np.inf
    pending = None
    try:
        while True:
            if cancel.is_set():
                return None
            try:
                snap = next(gen)
            except RuntimeError as exc:
                raise SolveError(str(exc) or type(exc).__name__) from exc
            except StopIteration as stop:
                if pending is not None:
                    yield pending
                return stop.value
            if snap is None:
                # A step of the work before the solve (the analysis'
                # preparation): nothing to show, but the cancel check above
                # now runs between those steps.
                continue
            now = time.monotonic()
            if now - last >= interval:
                last, pending = now, None
                yield snap
            else:
                pending = snap
    finally:
        # Close in this thread: the solver's cleanup runs where it ran.
        close = getattr(gen, "close", None)
        if close is not None:
            close()


class SolveRunner:
    """One solve in a napari worker thread, with progress, preview and cancel.

    Parameters
    ----------
    image : ndarray
        Passed to :func:`napari_sasd.iter_solve`.
    on_progress : callable(SolveProgress), optional
        Called on the main thread with throttled snapshots (live preview).
    on_result : callable(SolveResult), optional
        Called on the main thread with the result (not when cancelled).
    on_error : callable(Exception), optional
        Called on the main thread when the solver raises.
    on_finished : callable(str), optional
        Called last, on the main thread, with ``"done"``, ``"cancelled"`` or
        ``"error"``.
    interval : float
        Minimum seconds between two snapshots handed to the main thread.
    solve : callable, optional
        The generator function (default :func:`napari_sasd.iter_solve`).
    **solve_kwargs
        Passed to ``solve``.

    Notes
    -----
    :meth:`start` calls ``solve(image, **solve_kwargs)`` on the caller's
    thread, so input errors raised before any work propagate to the caller.
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        on_progress: Callable[[SolveProgress], Any] | None = None,
        on_result: Callable[[SolveResult], Any] | None = None,
        on_error: Callable[[Exception], Any] | None = None,
        on_finished: Callable[[str], Any] | None = None,
        interval: float = 0.2,
        solve: Callable[..., Iterator[SolveProgress]] | None = None,
        **solve_kwargs: Any,
    ) -> None:
        self.image = image
        self.solve_kwargs = solve_kwargs
        self.on_progress = on_progress
        self.on_result = on_result
        self.on_error = on_error
        self.on_finished = on_finished
        self.interval = float(interval)
        self._solve = solve
        self._cancel = threading.Event()
        self._state = "idle"
        self.worker = None
        self.last_progress: SolveProgress | None = None

    @property
    def running(self) -> bool:
        """Whether the worker thread is working."""
        return self._state == "running"

    @property
    def state(self) -> str:
        """``idle``, ``running``, ``done``, ``cancelled`` or ``error``."""
        return self._state

    def start(self):
        """Create the solver generator (may raise on bad input) and start the thread.

        Returns
        -------
        GeneratorWorker
            The napari worker (its signals can be waited on in tests).
        """
        from napari.qt.threading import create_worker

        solve = self._solve
        if solve is None:
            from . import iter_solve as solve
        gen = solve(self.image, **self.solve_kwargs)
        worker = create_worker(
            throttled, gen, self._cancel, self.interval, _start_thread=False, _ignore_errors=True
        )
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._state = "running"
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the solver to stop; it does within one iteration. Idempotent."""
        if self._state != "running":
            return
        self._state = "cancelled"
        self._cancel.set()
        if self.worker is not None:
            self.worker.quit()

    # --- slots: main thread ---------------------------------------------------
    def _on_yielded(self, snap: SolveProgress) -> None:
        if self._state != "running" or snap is None:
            return
        self.last_progress = snap
        if self.on_progress is not None:
            self.on_progress(snap)

    def _on_returned(self, result: SolveResult | None) -> None:
        if self._state != "running" or result is None:
            # Cancelled between the last iteration and the return.
            self._state = "cancelled"
            return
        self._state = "done"
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception as exc:  # showing the result failed: report it like a solver error
                self._on_errored(exc)

    def _on_errored(self, exc: Exception) -> None:
        if self._state == "cancelled":
            return
        self._state = "error"
        if self.on_error is not None:
            self.on_error(exc)

    def _on_finished(self) -> None:
        if self._state == "running":
            # The worker ended without result or error: treat as cancelled.
            self._state = "cancelled"
        if self.on_finished is not None:
            self.on_finished(self._state)
