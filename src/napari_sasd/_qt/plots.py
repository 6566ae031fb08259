"""The dock's result plots as tabs: Spectra, Fourier (cube results) and Amplitudes.

Holds what the plots need from the last result (motifs, the measured cube of
the region, the sweep) so the widget only says *what changed*: a new result,
a new threshold, a new energy on the viewer's slider.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qtpy.QtWidgets import QTabWidget, QWidget

from ..layers import motif_color
from ..peaks import Defects, find_defects
from ..spectra import MotifSpectra, motif_spectra
from .histogram import HistogramPanel
from .spectra import FourierPanel, SpectraPanel


class ResultPlots(QTabWidget):
    """Tabs *Spectra*, *Fourier* (enabled for cube results) and *Amplitudes*."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.spectra_panel = SpectraPanel()
        self.fourier = FourierPanel()
        self.histogram = HistogramPanel()
        self.addTab(self.spectra_panel, "Spectra")
        self.addTab(self.fourier, "Fourier")
        self.addTab(self.histogram, "Amplitudes")
        self.setCurrentWidget(self.histogram)
        self.spectra: MotifSpectra | None = None
        self._kernels: np.ndarray | None = None
        self._measured: np.ndarray | None = None
        self._sweep: tuple[np.ndarray, str, str] | None = None
        self._index = 0
        self._set_cube(False)
        self.currentChanged.connect(lambda *_: self.set_energy(self._index))

    def _set_cube(self, on: bool) -> None:
        for w in (self.spectra_panel, self.fourier):
            self.setTabEnabled(self.indexOf(w), on)

    @staticmethod
    def _colors(n: int) -> list[str]:
        return [motif_color(i) for i in range(n)]

    def show_histogram(self, activations: np.ndarray, thresholds: Sequence[float]) -> None:
        """Peak amplitudes of a new result's maps, split at ``thresholds`` (image units)."""
        peaks = find_defects(activations, 0.0)  # every local maximum: the candidates
        n = len(activations)
        self.histogram.set_peaks(peaks.amplitude, peaks.motif, thresholds, n, self._colors(n))

    def show_significance(
        self,
        significance: np.ndarray,
        motif: np.ndarray,
        threshold: float,
        n_motifs: int,
        counted: int | None = None,
        faint: float | None = None,
    ) -> None:
        """Every candidate copy's significance (computed in the worker), per
        motif, split at the slider's ``threshold``; ``counted`` defects;
        ``faint``: the margin under it where tall copies count."""
        self.histogram.set_peaks(
            significance,
            motif,
            [float(threshold)],
            n_motifs,
            self._colors(n_motifs),
            xlabel="copy significance (× local noise)",
            counted=counted,
            faint=faint,
        )

    def show_cube(
        self,
        kernels: np.ndarray | None,
        defects: Defects | None = None,
        measured: np.ndarray | None = None,
        sweep: tuple[np.ndarray, str, str] | None = None,
        index: int = 0,
    ) -> None:
        """A new result: for a cube (``(N, C, kh, kw)`` motifs, the ``(C, H, W)``
        measured region, its sweep ``(values, label, unit)``, the viewer's
        channel ``index``) draw the spectra and show their tab; else clear."""
        cube = kernels is not None and np.ndim(kernels) == 4 and measured is not None
        self._set_cube(cube)
        if not cube:
            self.spectra = self._kernels = self._measured = self._sweep = None
            self.spectra_panel.clear()
            self.fourier.clear()
            self.setCurrentWidget(self.histogram)
            return
        self._kernels, self._measured, self._sweep = np.asarray(kernels), measured, sweep
        self._index = index
        self.update_defects(defects)
        colors = self._colors(len(self._kernels))
        self.fourier.set_result(self._kernels, measured, colors)
        self.setCurrentWidget(self.spectra_panel)

    def update_defects(self, defects: Defects | None, thresholds=None) -> None:
        """The threshold changed: move the histogram's lines, recompute the spectra."""
        if thresholds is not None:
            self.histogram.set_thresholds(thresholds, None if defects is None else len(defects))
        if self._kernels is None or defects is None:
            return
        values, label, unit = self._sweep or (None, "channel", "")
        self.spectra = motif_spectra(
            self._kernels, defects, self._measured, values, label=label, unit=unit
        )
        current = float(self.spectra.energies[self._index])
        self.spectra_panel.set_spectra(self.spectra, self._colors(len(self._kernels)), current)

    def set_energy(self, index: int) -> None:
        """The viewer shows channel ``index``: mark it; redraw Fourier if on show."""
        s = self.spectra
        if s is None:
            return
        self._index = index = int(np.clip(index, 0, len(s.energies) - 1))
        self.spectra_panel.set_current(float(s.energies[index]))
        if self.currentWidget() is self.fourier and self.fourier.index != index:
            self.fourier.show_energy(
                index, f"{s.label} = {s.energies[index]:.4g} {s.unit}".rstrip()
            )
