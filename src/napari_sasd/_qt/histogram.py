"""Candidate copies per motif (significance or amplitude), with the threshold that splits them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from ..quicklook import BG, draw_histogram
from .canvas import LazyCanvas


class HistogramPanel(QWidget):
    """A matplotlib canvas (Qt backend) with one step histogram per motif.

    Every local maximum of the activation maps is a candidate; those right of
    the threshold line are the defects shown, and with a faint margin those
    between the dotted line and it that span many scan lines
    (:mod:`napari_sasd.spans`). The lines follow the slider
    (:meth:`set_thresholds`) without recomputing the histogram.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.6, 2.4), facecolor=BG)
        self.canvas = LazyCanvas(self.figure)
        self.canvas.setMinimumHeight(190)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.ax = self.figure.add_subplot()
        self.lines: list = []
        self.faint_lines: list = []
        self._faint: float | None = None
        self.n_motifs = 0
        self._amp = np.zeros(0)
        self._motif = np.zeros(0, int)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)

    def set_peaks(
        self,
        amplitudes: np.ndarray,
        motif: np.ndarray,
        thresholds: Sequence[float],
        n_motifs: int,
        colors: Sequence[str] | None = None,
        xlabel: str | None = None,
        counted: int | None = None,
        faint: float | None = None,
    ) -> None:
        """Draw the histograms of a new result and its threshold lines.

        ``amplitudes`` are the candidates' values on the threshold's scale:
        their significance (``xlabel`` says so) or amplitude (image units).
        ``counted``: how many defects they give (close copies merged, flagged
        motifs left out), when not simply those right of the line. ``faint``:
        how far under the threshold a copy that spans many scan lines still
        counts (a dotted line there); None: no such tier.
        """
        self.n_motifs = n_motifs
        self._amp = np.asarray(amplitudes, float)
        self._motif = np.asarray(motif, int)
        self.lines = draw_histogram(self.ax, amplitudes, motif, thresholds, n_motifs, colors)
        self._faint = faint
        self.faint_lines = []
        if faint is not None:
            for line in self.lines:
                t = float(np.asarray(line.get_xdata())[0])
                self.faint_lines.append(
                    self.ax.axvline(t - faint, color=line.get_color(), lw=1.0, ls=":")
                )
        if xlabel:
            self.ax.set_xlabel(xlabel)
        self.figure.subplots_adjust(left=0.16, right=0.97, bottom=0.2, top=0.88)
        self._title(thresholds, counted)
        self.canvas.request_draw()

    def _title(self, thresholds: Sequence[float], counted: int | None = None) -> None:
        # The split in numbers: how many candidate peaks the threshold keeps.
        if counted is not None:
            self.ax.set_title(f"{counted} of {len(self._amp)} candidate copies counted")
            return
        thr = np.resize(np.asarray(list(thresholds) or [0.0], float), max(self.n_motifs, 1))
        amp, mot = self._amp, self._motif
        kept = sum(int((amp[mot == m] >= thr[m]).sum()) for m in range(self.n_motifs))
        self.ax.set_title(f"{kept} of {len(self._amp)} peaks counted (right of the line)")

    def set_thresholds(self, thresholds: Sequence[float], counted: int | None = None) -> None:
        """Move the threshold lines (one value for all motifs, or one per motif);
        ``counted``: the defects they give (see :meth:`set_peaks`)."""
        thr = list(thresholds)
        if len(thr) == 1:
            thr = thr * len(self.lines)
        for line, t in zip(self.lines, thr, strict=False):
            line.set_xdata([t, t])
        for line, t in zip(self.faint_lines, thr, strict=False):
            lo = t - (self._faint or 0.0)
            line.set_xdata([lo, lo])
        if self.lines:
            self._title(thr, counted)
        self.canvas.request_draw()

    def threshold_positions(self) -> list[float]:
        """Where the threshold lines are drawn (image units)."""
        return [float(np.asarray(line.get_xdata())[0]) for line in self.lines]

    def faint_positions(self) -> list[float]:
        """Where the faint tier's lower lines are drawn (empty: no tier)."""
        return [float(np.asarray(line.get_xdata())[0]) for line in self.faint_lines]

    def clear(self) -> None:
        """No result: an empty plot."""
        self.ax.clear()
        self.lines = []
        self.faint_lines = []
        self._faint = None
        self.n_motifs = 0
        self.canvas.request_draw()
