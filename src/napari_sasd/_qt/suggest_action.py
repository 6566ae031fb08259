"""The *Suggest* button: a motif size from the region, in a worker thread (issue 14).

A part of :class:`napari_sasd.widget.SasdWidget` (a mixin: it uses the
dock's controls and state), kept apart so the dock reads in parts."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..flatten import flatten
from ..settings import save_settings


class SuggestAction:
    """The *Suggest* button: a motif size from the region, in a worker thread (issue 14)."""

    def suggest_size(self, *_: Any) -> bool:
        """Suggest the motif size from the chosen region, in a worker thread
        (seconds on 1024^2); the size box is set and ``size_suggested`` emitted.

        Returns
        -------
        bool
            False when there is nothing to suggest from (said in the status).
        """
        if self._suggest_worker is not None:
            return False
        layer = self._image.value
        if layer is None or layer.rgb or layer.ndim not in (2, 3):
            self._status.value = "Pick a 2-D image or a 3-D stack to suggest a motif size."
            return False
        y0, x0, y1, x1 = self.region_for(layer)
        data = layer.data[0] if layer.multiscale else layer.data
        if layer.ndim == 3 and self._stack.value != "cube":
            data = data[self._plane_index(layer)[0]]
        # A view of the region: the copy and the numerics happen in the worker.
        img = data[..., y0:y1, x0:x1]
        mask = self._mask_for(layer, (y0, x0, y1, x1))
        from napari.qt.threading import create_worker

        worker = create_worker(
            _suggest, img, mask, bool(self._flatten.value), _start_thread=False,
            _ignore_errors=True,
        )  # fmt: skip
        worker.returned.connect(self._on_suggested)
        worker.errored.connect(self._on_suggest_failed)
        worker.finished.connect(self._on_suggest_finished)
        self._suggest_worker = worker
        self.parameters.suggest.enabled = False
        self._status.value = "Suggesting a motif size…"
        worker.start()
        return True

    def _on_suggested(self, k: int) -> None:
        lo, hi = self._k.min, self._k.max
        k = int(min(max(k, lo), hi))
        self._k.value = k
        self._status.value = (
            f"Suggested motif size: {k} px (the typical defect's size in the region)."
        )
        save_settings(self._values())
        self.size_suggested.emit(k)

    def _on_suggest_failed(self, exc: Exception) -> None:
        self._status.value = f"No motif size suggested: {exc}"
        self.size_suggested.emit(0)

    def _on_suggest_finished(self) -> None:
        self._suggest_worker = None
        self.parameters.suggest.enabled = True


def _suggest(img, mask: np.ndarray | None, flat: bool) -> int:
    """Worker thread: the region flattened as a run would, then its motif size."""
    from ..ksize import suggest_kernel_size

    z = np.asarray(img, dtype=np.float64)
    if flat:
        z = flatten(z, plane=True, lines=True, mask=mask, columns=True)
    return suggest_kernel_size(z, mask)
