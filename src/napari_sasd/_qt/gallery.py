"""The motif gallery: one small thumbnail per motif, its count of copies and
what it looks like when not a defect (a scan artefact, the lattice, texture)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QWidget

from ..layers import motif_color


class MotifGallery(QWidget):
    """A row of small motif thumbnails with a caption each (count of copies)."""

    def __init__(self, parent: QWidget | None = None, size: int = 64) -> None:
        super().__init__(parent)
        self._size = size
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self.images: list[QLabel] = []
        self.captions: list[QLabel] = []

    def set_motifs(
        self,
        kernels: np.ndarray,
        counts: np.ndarray | None = None,
        notes: list[str] | None = None,
        tooltips: list[str] | None = None,
        flagged: list[bool] | None = None,
    ) -> None:
        """Show ``kernels`` ``(N, kh, kw)`` or ``(N, C, kh, kw)``; ``counts``
        per motif; ``notes`` per motif (its artefact flags' text, "" for a
        defect), shown under it; ``tooltips`` per motif (hover text);
        ``flagged`` per motif: looks like an artefact (caption in a warning colour)."""
        n = len(kernels)
        while len(self.images) > n:
            for w in (self.images.pop(), self.captions.pop()):
                self._grid.removeWidget(w)
                w.deleteLater()
        while len(self.images) < n:
            i = len(self.images)
            img, cap = QLabel(), QLabel()
            img.setAlignment(Qt.AlignmentFlag.AlignCenter)
            img.setFixedSize(self._size + 8, self._size + 8)
            cap.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            cap.setMinimumHeight(2 * cap.fontMetrics().height() + 4)
            # A flag's sentence wraps under its thumbnail instead of widening the dock.
            cap.setWordWrap(True)
            cap.setMaximumWidth(max(self._size + 8, 120))
            img.setStyleSheet(f"border: 2px solid {motif_color(i)};")
            self._grid.addWidget(img, 0, i)
            self._grid.addWidget(cap, 1, i)
            self.images.append(img)
            self.captions.append(cap)
        for i, k in enumerate(kernels):
            self.images[i].setPixmap(_kernel_pixmap(np.asarray(k), self._size))
            text = f"Motif {i + 1}"
            if counts is not None:
                text += f"\n{int(counts[i])} copies"
            note = notes[i] if notes is not None and i < len(notes) else ""
            if note:
                text += f"\n{note}"
            self.captions[i].setText(text)
            tip = tooltips[i] if tooltips is not None and i < len(tooltips) else ""
            self.captions[i].setToolTip(tip)
            self.images[i].setToolTip(tip)
            # Flagged motifs' copies are not counted: say it with the colour too.
            bad = flagged is not None and i < len(flagged) and flagged[i]
            self.captions[i].setStyleSheet("color: #d08770;" if bad else "")


def _kernel_pixmap(k: np.ndarray, size: int) -> QPixmap:
    # Channels side by side; zero is mid-grey so dips and bumps both show.
    if k.ndim == 3:
        k = np.concatenate(list(k), axis=1)
    lim = float(np.abs(k).max()) or 1.0
    g = np.ascontiguousarray(np.clip(127.5 + 127.5 * k / lim, 0, 255).astype(np.uint8))
    h, w = g.shape
    qimg = QImage(g.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    scale = max(1, size // max(h, 1))
    return QPixmap.fromImage(qimg).scaled(
        w * scale, h * scale, transformMode=Qt.TransformationMode.FastTransformation
    )
