"""For a cube result: the motif spectra, and their Fourier magnitudes beside the data's."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from ..quicklook import BG, FG, draw_spectra, style_axes
from ..spectra import MotifSpectra, data_fourier_magnitude, fourier_magnitudes
from .canvas import LazyCanvas


class SpectraPanel(QWidget):
    """Each motif's signature against the sweep (bias), the viewer's energy marked.

    Two plots, stacked for the narrow dock: the mean measured spectrum at the
    motif's copies against away from all copies, and the motif's own centre
    value and norm per energy (:func:`napari_sasd.quicklook.draw_spectra`).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.6, 4.6), facecolor=BG)
        self.canvas = LazyCanvas(self.figure)
        self.canvas.setMinimumHeight(360)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.axes = self.figure.subplots(2, 1)
        self.spectra: MotifSpectra | None = None
        self.markers: list = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self.clear()

    def set_spectra(
        self,
        spectra: MotifSpectra,
        colors: Sequence[str] | None = None,
        current: float | None = None,
    ) -> None:
        """Draw ``spectra``; mark ``current`` (the viewer's energy)."""
        self.spectra = spectra
        self.markers = draw_spectra(self.axes, spectra, colors, current)
        self.figure.subplots_adjust(left=0.17, right=0.97, bottom=0.12, top=0.94, hspace=0.55)
        self.canvas.request_draw()

    def set_current(self, value: float) -> None:
        """Move the current-energy marker."""
        for m in self.markers:
            m.set_xdata([value, value])
            m.set_visible(True)
        if self.markers:
            self.canvas.request_draw()

    def curves(self, kind: str = "at copies") -> list[np.ndarray]:
        """The y data drawn for each motif: ``"at copies"``, ``"centre"`` or ``"norm"``."""
        ax = self.axes[0] if kind == "at copies" else self.axes[1]
        out = []
        for line in ax.lines:
            label = str(line.get_label())
            if label.startswith("motif") and (kind == "at copies" or label.endswith(kind)):
                out.append(np.asarray(line.get_ydata(), float))
        return out

    def clear(self) -> None:
        """No cube result: say so in the plot."""
        self.spectra = None
        self.markers = []
        for ax in self.axes:
            ax.clear()
            style_axes(ax)
            ax.set_xticks([])
            ax.set_yticks([])
        self.axes[0].text(
            0.5, 0.5, "Spectra appear here after a\nspectroscopy-cube search.",
            color=FG, ha="center", va="center", transform=self.axes[0].transAxes, fontsize=8,
        )  # fmt: skip
        self.canvas.request_draw()


class FourierPanel(QWidget):
    """|FFT| of the data and of each motif at the viewer's energy.

    Fourier-transform STS reads scattering from the data's transform, where the
    defects' random positions add speckle ("phase noise"); the motif's own
    transform is that pattern without it. Both on ``[-0.5, 0.5)`` cycles per
    pixel; computed for an energy only when shown.
    """

    SIZE = 64

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.6, 3.6), facecolor=BG)
        self.canvas = LazyCanvas(self.figure)
        self.canvas.setMinimumHeight(300)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self._kernels: np.ndarray | None = None
        self._data: np.ndarray | None = None
        self._colors: list[str] = []
        self._motif_mag: np.ndarray | None = None
        self._cache: dict[int, np.ndarray] = {}
        self._energies: np.ndarray | None = None
        self.index: int | None = None

    def set_result(
        self,
        kernels: np.ndarray,
        data: np.ndarray,
        colors: Sequence[str],
        energies: Sequence[float] | None = None,
    ) -> None:
        """Keep a cube result (``(N, C, kh, kw)`` motifs, ``(C, H, W)`` data); draw lazily."""
        self._kernels = np.asarray(kernels)
        self._data = data
        self._colors = list(colors)
        self._motif_mag = None
        self._cache = {}
        self._energies = None if energies is None else np.asarray(energies, float)
        self.index = None

    def show_energy(self, index: int, label: str = "") -> None:
        """Draw the magnitudes at channel ``index``."""
        if self._kernels is None or self._data is None:
            return
        index = int(np.clip(index, 0, self._kernels.shape[1] - 1))
        if self._motif_mag is None:
            self._motif_mag = fourier_magnitudes(self._kernels, self.SIZE)
        if index not in self._cache:
            self._cache[index] = data_fourier_magnitude(self._data[index], self.SIZE)[0]
        self.index = index
        n = len(self._kernels)
        self.figure.clear()
        cols = 2
        rows = -(-(n + 1) // cols)
        panels = [("data", self._cache[index], FG)] + [
            (f"motif {m + 1}", self._motif_mag[m, index], self._colors[m]) for m in range(n)
        ]
        for i, (title, mag, col) in enumerate(panels):
            ax = self.figure.add_subplot(rows, cols, i + 1)
            style_axes(ax)
            # sqrt: the speckle and the motif's rings both stay visible.
            img = np.sqrt(mag)
            ax.imshow(img, cmap="magma", extent=(-0.5, 0.5, 0.5, -0.5), vmin=0)
            ax.set_title(title, color=col)
            ax.tick_params(labelsize=6)
        where = f" at {label}" if label else ""
        self.figure.suptitle(f"|FFT|{where} (cycles/px)", color=FG, fontsize=8)
        self.figure.subplots_adjust(left=0.1, right=0.97, bottom=0.07, top=0.86, hspace=0.45)
        self.canvas.request_draw()

    def clear(self) -> None:
        """No cube result."""
        self._kernels = self._data = None
        self.index = None
        self.figure.clear()
        self.canvas.request_draw()
