"""The dock's run: start, cancel and finish the worker, its progress and status.

A part of :class:`napari_sasd.widget.SasdWidget` (a mixin: it uses the
dock's controls and state), kept apart so the dock reads in parts.
The solve runs in a napari worker thread (:class:`~napari_sasd.worker.SolveRunner`)
and talks back through Qt signals; the results are shown by
:class:`~napari_sasd._qt.result_display.ResultDisplay`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from ..result import SolveProgress, SolveResult
from ..settings import save_settings
from ..worker import SolveRunner

__all__ = ["RunControl"]


class RunControl:
    """Starting, cancelling and finishing a run, its progress and status."""

    def _on_run_clicked(self, *_: Any) -> None:
        if self.runner is not None and self.runner.running:
            self.cancel()
        elif self._steps is None:  # not while the last results are still appearing
            self.run()

    def run(self) -> bool:
        """Start a search with the current settings.

        Returns
        -------
        bool
            False when the input was refused (the reason is shown to the user).
        """
        from napari.utils.notifications import show_error

        if (self.runner is not None and self.runner.running) or self._steps is not None:
            return False
        save_settings(self._values())
        try:
            img, kwargs, ctx = self.prepare()
            runner = SolveRunner(
                img,
                on_progress=self._on_progress,
                on_result=self._on_result,
                on_error=self._on_error,
                on_finished=self._on_finished,
                **kwargs,
            )
            runner.start()
        except (ValueError, TypeError) as exc:  # input refused before any work
            self._status.value = str(exc)
            show_error(f"napari-sasd: {exc}")
            return False
        self.runner = runner
        self._pending = ctx
        self._run.text = "Cancel"
        self._set_enabled(False)
        self.progress.setValue(0)
        again = "kernels" in kwargs
        # A learn run first prepares the data in the worker (flatten, scars,
        # lattice: seconds on 1024^2) before the first progress snapshot.
        self._status.value = (
            "Locating the current motifs…"
            if again
            else "Preparing the data (flatten, scars, lattice), then searching…"
        )
        return True

    def cancel(self) -> None:
        """Stop the running search; the viewer is left as before Run."""
        if self.runner is not None and self.runner.running:
            self._status.value = "Cancelling…"
            self.runner.cancel()

    def _on_progress(self, snap: SolveProgress) -> None:
        self.progress.setValue(round(snap.fraction * 1000))
        self._status.value = (
            f"Stage {snap.stage + 1}/{snap.n_stages}, iteration {snap.iteration}/{snap.total}"
        )
        self.gallery.set_motifs(snap.kernels)

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self._status.value = f"Failed: {exc}"
        show_error(f"napari-sasd: the search failed: {exc}")

    def _on_finished(self, state: str) -> None:
        if self._steps is not None:  # results still appearing: finish after them
            self._deferred = state
            return
        self._finish(state)

    def _finish(self, state: str) -> None:
        if self._show_failed:
            state, self._show_failed = "error", False
        self._run.text = "Run"
        self._set_enabled(True)
        ctx = self._pending
        if state == "done" and self.result is not None and ctx is not None:
            if self.context is ctx:
                r = self.result
                self.progress.setValue(1000)
                a = self.analysis.analysis if self.analysis is not None else None
                self._status.value = _done_message(
                    r, self.current_defects(), ctx.started,
                    a.settings if a is not None else None, a.flags if a is not None else None,
                    user_scars=ctx.scars is not None and bool(ctx.scars.any()),
                    scars_left_out=(
                        ctx.scars_layer is None and a is not None and a.scars is not None
                    ),
                )  # fmt: skip
                conv = "converged" if r.converged else "stopped at the iteration budget"
                self._status.native.setToolTip(f"{r.n_iter} iterations, {conv}.")
        elif state in ("cancelled", "error"):
            self.progress.setValue(0)
            if state == "cancelled":
                self._status.value = "Cancelled."
            # The preview showed unfinished motifs: back to the last result.
            if self.result is not None:
                self._refresh_gallery()
            else:
                self.gallery.set_motifs(np.zeros((0, 1, 1)))
        self._pending = None
        self.run_finished.emit(state)
        if self._locate_with is not None:
            # "Locate in all images": the next one, or the end (stopped on a
            # cancel or an error).
            self._located += state == "done"
            if state != "done":
                self._locate_queue = []
            QTimer.singleShot(0, self._next_located)


def _done_message(
    result: SolveResult,
    defects,
    started: float,
    settings: dict[str, Any] | None = None,
    flags: list[list[str]] | None = None,
    user_scars: bool = False,
    scars_left_out: bool = False,
) -> str:
    """What a finished run found, in the user's terms: the defects, then what
    was left out or removed before the search and which motifs are artefacts."""
    n = result.n_motifs
    total = len(defects)
    per = defects.counts(n)
    split = f" ({' + '.join(str(int(c)) for c in per)})" if n > 1 else ""
    secs = time.perf_counter() - started
    msg = (
        f"Done in {secs:.1f} s: {n} motif{'s' * (n != 1)}, "
        f"{total} defect{'s' * (total != 1)}{split}."
    )
    settings = settings or {}
    if user_scars:
        msg += " Scars: your marks in the scars layer were left out."
    elif scars_left_out:
        frac = 100 * float(settings.get("scar_fraction", 0.0))
        msg += f" Scars: {frac:.1f} % of the pixels marked and left out (layer 'scars')."
    periods = settings.get("lattice_periods_px")
    if settings.get("lattice_found") and periods:
        msg += " Lattice removed: periods " + ", ".join(f"{p:.2f}" for p in periods) + " px."
    bad = [str(i + 1) for i, f in enumerate(flags or []) if f]
    if len(bad) == 1:
        msg += f" Motif {bad[0]} looks like an artefact, not a defect (see the gallery)."
    elif bad:
        msg += f" Motifs {', '.join(bad)} look like artefacts, not defects (see the gallery)."
    return msg
