"""The lattice fit's band filter (see :mod:`napari_sasd.lattice`), napari-free."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft

from ._lattice_basis import wrap


@dataclass
class Spectra:
    """What one set of weights gives, reused for every envelope width."""

    smooth: np.ndarray  # (H, W) sub-lattice-frequency background
    weights: np.ndarray  # rfft2 of the weights (padded)
    data: np.ndarray  # rfft2 of weights * (image - smooth) (padded)
    n: float  # number of pixels with weight


class BandFit:
    """Normalised band-pass at the lattice frequencies, on a zero-padded grid.

    A Gaussian envelope of std ``sigma`` pixels is a Gaussian bump of std
    ``1 / (2 pi sigma)`` cycles/px around each ``+-k``. Zero padding by three
    envelope widths makes the FFT convolutions linear, so the two sides of the
    image do not mix; the weights then handle the border like any other
    missing pixel.
    """

    def __init__(
        self, shape: tuple[int, int], freqs: np.ndarray, max_sigma: float, smooth: float
    ) -> None:
        H, W = shape
        pad = int(np.ceil(3 * max(max_sigma, smooth)))
        self.shape = shape
        self.freqs = freqs
        self.padded = (
            fft.next_fast_len(H + pad, real=True),
            fft.next_fast_len(W + pad, real=True),
        )
        Hp, Wp = self.padded
        self.fy = fft.fftfreq(Hp)[:, None]
        self.fx = fft.rfftfreq(Wp)[None, :]
        b2 = 2 * (np.pi * smooth) ** 2
        self.low_smooth = np.exp(-b2 * (self.fy**2 + self.fx**2))
        # rfft keeps columns 0..Wp/2; all but the first (and Nyquist) stand for two.
        self.multiplicity = np.full(self.fx.shape, 2.0)
        self.multiplicity[:, 0] = 1.0
        if Wp % 2 == 0:
            self.multiplicity[:, -1] = 1.0

    def band(self, sigma: float) -> np.ndarray:
        """The transfer function: the largest Gaussian bump at any ``+-k``."""
        s2 = 2 * (np.pi * sigma) ** 2
        out = np.zeros((len(self.fy), self.fx.shape[1]))
        for k in self.freqs:
            for s in (1.0, -1.0):
                gy = np.exp(-s2 * wrap(self.fy - s * k[0]) ** 2)
                gx = np.exp(-s2 * wrap(self.fx - s * k[1]) ** 2)
                np.maximum(out, gy * gx, out=out)
        return out

    def _inverse(self, spec: np.ndarray) -> np.ndarray:
        H, W = self.shape
        return fft.irfft2(spec, self.padded)[:H, :W]

    def prepare(self, z: np.ndarray, w: np.ndarray) -> Spectra:
        """Spectra of the weighted data, ``z`` less its smooth background."""
        # The smooth background first: left in, it would leak into the bands
        # wherever the weights jump (holes left by defects, the border).
        fw = fft.rfft2(w, self.padded)
        ws = self._inverse(fw * self.low_smooth)
        smooth = self._inverse(fft.rfft2(w * z, self.padded) * self.low_smooth)
        smooth /= np.maximum(ws, 1e-3)
        return Spectra(smooth, fw, fft.rfft2(w * (z - smooth), self.padded), float(w.sum()))

    def lattice(self, spec: Spectra, sigma: float) -> tuple[np.ndarray, float]:
        """The lattice for envelope ``sigma``, and the fit's degrees of freedom."""
        band = self.band(sigma)
        low = np.exp(-2 * (np.pi * sigma) ** 2 * (self.fy**2 + self.fx**2))
        wl = self._inverse(spec.weights * low)
        wl = np.maximum(wl, 0.1 * float(wl.max()))  # no data nearby: no lattice claimed
        lat = self._inverse(spec.data * band) / wl
        # Trace of the (unweighted) band filter, in image pixels: its degrees of freedom.
        H, W = self.shape
        dof = float((band * self.multiplicity).sum()) * H * W / np.prod(self.padded)
        return lat, dof


def disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy**2 + xx**2 <= radius**2
