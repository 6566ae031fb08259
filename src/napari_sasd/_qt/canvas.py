"""A matplotlib canvas (Qt backend) that renders only when it can be seen."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg


class LazyCanvas(FigureCanvasQTAgg):
    """``request_draw()`` renders now if the canvas is on screen, else on its next show.

    The dock's plots sit in tabs: rendering a hidden one (50-100 ms of Agg
    work on the main thread) while a result arrives would only stall the
    event loop for a picture nobody sees yet.
    """

    def __init__(self, figure) -> None:
        super().__init__(figure)
        self._stale = False

    def request_draw(self) -> None:
        """Draw at the next idle moment if visible; otherwise when shown."""
        if self.isVisible():
            self._stale = False
            self.draw_idle()
        else:
            self._stale = True

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._stale:
            self._stale = False
            self.draw_idle()
