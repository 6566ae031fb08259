"""The lattice fit's band filter (see :mod:`napari_sasd.lattice`), napari-free."""

from __future__ import annotations

import numpy as np
from scipy import fft

from ._lattice_basis import wrap


class BandFit:
    """Normalised band-pass at the lattice frequencies, on a zero-padded grid.

    Zero padding by a few envelope widths makes the FFT convolutions linear,
    so the two sides of the image do not mix; the weights then handle the
    border like any other missing pixel.
    """

    def __init__(
        self, shape: tuple[int, int], freqs: np.ndarray, sigma: float, smooth: float
    ) -> None:
        H, W = shape
        pad = int(np.ceil(3 * max(sigma, smooth)))
        self.shape = shape
        self.padded = (
            fft.next_fast_len(H + pad, real=True),
            fft.next_fast_len(W + pad, real=True),
        )
        Hp, Wp = self.padded
        fy = fft.fftfreq(Hp)[:, None]
        fx = fft.rfftfreq(Wp)[None, :]
        # Gaussian envelope of std sigma (px) <-> Gaussian bump of std 1/(2 pi sigma) in frequency.
        s2 = 2 * (np.pi * sigma) ** 2
        band = np.zeros((Hp, Wp // 2 + 1))
        for k in freqs:
            for s in (1.0, -1.0):
                gy = np.exp(-s2 * wrap(fy - s * k[0]) ** 2)
                gx = np.exp(-s2 * wrap(fx - s * k[1]) ** 2)
                np.maximum(band, gy * gx, out=band)
        self.band = band
        self.low = np.exp(-s2 * (fy**2 + fx**2))
        b2 = 2 * (np.pi * smooth) ** 2
        self.low_smooth = np.exp(-b2 * (fy**2 + fx**2))

    def _filter(self, a: np.ndarray, transfer: np.ndarray) -> np.ndarray:
        H, W = self.shape
        return fft.irfft2(fft.rfft2(a, self.padded) * transfer, self.padded)[:H, :W]

    def __call__(self, z: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The lattice and the smooth (sub-lattice-frequency) background of ``z``."""
        # The smooth background first: left in, it would leak into the bands
        # wherever the weights jump (holes left by defects, the border).
        ws = self._filter(w, self.low_smooth)
        smooth = self._filter(w * z, self.low_smooth) / np.maximum(ws, 1e-3)
        wl = self._filter(w, self.low)
        wl = np.maximum(wl, 0.1 * float(wl.max()))  # no data nearby: no lattice claimed
        lat = self._filter(w * (z - smooth), self.band) / wl
        return lat, smooth


def disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy**2 + xx**2 <= radius**2
