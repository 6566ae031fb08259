"""What a spectroscopy-cube result says per energy, napari-free.

A cube solve (``channel_axis=0``, e.g. a ``.3ds`` dI/dV grid) gives each motif
one small image per energy. A physicist reads that as a *spectrum*: how the
defect kind shows at each bias. :func:`motif_spectra` gives, per motif and
energy,

* the motif's value at its centre pixel and its norm (the motif alone:
  no noise, no neighbours, but in the solver's normalised units),
* the mean measured spectrum at the motif's copies and, for comparison, the
  mean spectrum away from every copy (the data's own units).

:func:`fourier_magnitudes` gives the motif's Fourier magnitude per energy:
Fourier-transform STS reads scattering patterns from the data's transform,
where the random positions of the defects add "phase noise" (a speckle);
the motif's own transform is that pattern without it, shown beside
:func:`data_fourier_magnitude`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .peaks import Defects

__all__ = [
    "MotifSpectra",
    "data_fourier_magnitude",
    "fourier_magnitudes",
    "motif_spectra",
    "write_spectra_csv",
]


@dataclass
class MotifSpectra:
    """Per-energy signatures of the motifs of a cube result.

    Attributes
    ----------
    energies : ndarray
        ``(C,)`` sweep values (e.g. bias) of the channels, ascending or as given.
    label, unit : str
        The sweep's name (``"Bias"``) and unit (``"V"``; empty when unknown).
    centre : ndarray
        ``(N, C)`` each motif's value at its centre pixel, ``(k - 1) // 2``.
    norm : ndarray
        ``(N, C)`` each motif's norm per energy (the solver's motifs have unit
        norm over all energies together).
    at_copies : ndarray
        ``(N, C)`` mean measured spectrum at the centres of the motif's copies
        (NaN for a motif without copies).
    away : ndarray
        ``(C,)`` mean measured spectrum over pixels farther than half a motif
        from every copy (NaN when there are none).
    n_copies : ndarray
        ``(N,)`` how many copies each ``at_copies`` averages.
    """

    energies: np.ndarray
    label: str
    unit: str
    centre: np.ndarray
    norm: np.ndarray
    at_copies: np.ndarray
    away: np.ndarray
    n_copies: np.ndarray

    @property
    def n_motifs(self) -> int:
        """Number of motifs."""
        return int(self.centre.shape[0])

    @property
    def axis_title(self) -> str:
        """``"Bias (V)"``, or the label alone when the unit is unknown."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def nearest(self, value: float) -> int:
        """Index of the energy closest to ``value``."""
        return int(np.argmin(np.abs(np.asarray(self.energies, float) - value)))


def motif_spectra(
    kernels: np.ndarray,
    defects: Defects,
    data: np.ndarray,
    energies: Sequence[float] | None = None,
    *,
    label: str = "energy",
    unit: str = "",
) -> MotifSpectra:
    """Spectra of each motif of a cube result.

    Parameters
    ----------
    kernels : ndarray
        ``(N, C, kh, kw)`` motifs (``SolveResult.kernels`` of a cube solve).
    defects : Defects
        Copies, positions in pixels of ``data``'s plane (the analysed region).
    data : ndarray
        ``(C, H, W)`` measured cube of that region, raw (unflattened) so the
        spectra are in the data's units; NaN pixels are left out.
    energies : sequence of float, optional
        ``(C,)`` sweep values; default ``0..C-1``.
    label, unit : str
        Name and unit of the sweep.

    Returns
    -------
    MotifSpectra
    """
    kernels = np.asarray(kernels, dtype=float)
    data = np.asarray(data, dtype=float)
    if kernels.ndim != 4 or data.ndim != 3 or kernels.shape[1] != data.shape[0]:
        raise ValueError(
            f"need (N, C, kh, kw) motifs and a (C, H, W) cube with the same C, got "
            f"{kernels.shape} and {data.shape}"
        )
    n, c, kh, kw = kernels.shape
    e = np.arange(c, dtype=float) if energies is None else np.asarray(energies, dtype=float)
    if e.shape != (c,):
        raise ValueError(f"{len(e)} energies for {c} channels")
    centre = kernels[:, :, (kh - 1) // 2, (kw - 1) // 2].copy()
    norm = np.sqrt((kernels**2).sum(axis=(-2, -1)))

    h, w = data.shape[-2:]
    pos = np.rint(np.asarray(defects.positions, float).reshape(-1, 2)).astype(int)
    motif = np.asarray(defects.motif, int)
    inside = (pos[:, 0] >= 0) & (pos[:, 0] < h) & (pos[:, 1] >= 0) & (pos[:, 1] < w)
    pos, motif = pos[inside], motif[inside]
    at = np.full((n, c), np.nan)
    counts = np.zeros(n, int)
    for m in range(n):
        p = pos[motif == m]
        if len(p):
            spec = data[:, p[:, 0], p[:, 1]]  # (C, copies)
            ok = np.isfinite(spec).all(axis=0)
            counts[m] = int(ok.sum())
            if counts[m]:
                at[m] = spec[:, ok].mean(axis=1)
    # "Away": outside the footprint of every copy (a box the motif's size
    # around each centre), so neighbours' halos do not leak in.
    near = np.zeros((h, w), bool)
    near[pos[:, 0], pos[:, 1]] = True
    near = ndimage.binary_dilation(near, structure=np.ones((kh, kw), bool))
    far = ~near & np.isfinite(data).all(axis=0)
    away = data[:, far].mean(axis=1) if far.any() else np.full(c, np.nan)
    return MotifSpectra(
        energies=e,
        label=label,
        unit=unit,
        centre=centre,
        norm=norm,
        at_copies=at,
        away=away,
        n_copies=counts,
    )


def fourier_magnitudes(kernels: np.ndarray, size: int = 64) -> np.ndarray:
    """Each motif's Fourier magnitude per energy, zero frequency in the middle.

    Parameters
    ----------
    kernels : ndarray
        ``(N, C, kh, kw)`` (or ``(N, kh, kw)``, taken as one energy).
    size : int
        The motif is zero-padded to ``size x size``, so frequencies run over
        ``[-0.5, 0.5)`` cycles per pixel in ``size`` steps.

    Returns
    -------
    ndarray
        ``(N, C, size, size)`` magnitudes.
    """
    k = np.asarray(kernels, dtype=float)
    if k.ndim == 3:
        k = k[:, None]
    f = np.fft.fft2(k, s=(max(size, k.shape[-2]), max(size, k.shape[-1])))
    mag = np.abs(np.fft.fftshift(f, axes=(-2, -1)))
    return _resize_last2(mag, size)


def data_fourier_magnitude(data: np.ndarray, size: int = 64) -> np.ndarray:
    """The data's Fourier magnitude per energy, on the grid of :func:`fourier_magnitudes`.

    Each channel is de-meaned (NaN pixels set to its mean), transformed, and
    its magnitude averaged over blocks down to ``size x size``: the same
    frequency range, ``[-0.5, 0.5)`` cycles per pixel. Averaging tames only
    part of the speckle the random defect positions cause; the motif's own
    magnitude has none.

    Parameters
    ----------
    data : ndarray
        ``(C, H, W)`` or ``(H, W)``.
    size : int
        Output side.

    Returns
    -------
    ndarray
        ``(C, size, size)`` magnitudes.
    """
    d = np.asarray(data, dtype=float)
    if d.ndim == 2:
        d = d[None]
    mean = np.nanmean(d, axis=(-2, -1), keepdims=True)
    d = np.where(np.isfinite(d), d, mean) - mean
    mag = np.abs(np.fft.fftshift(np.fft.fft2(d), axes=(-2, -1)))
    return _resize_last2(mag, size)


def _resize_last2(a: np.ndarray, size: int) -> np.ndarray:
    # Block means when shrinking (a smoothed magnitude, no aliasing), linear
    # interpolation when a small image has to grow.
    from skimage.transform import resize

    if a.shape[-2:] == (size, size):
        return a
    lead = a.shape[:-2]
    flat = a.reshape(-1, *a.shape[-2:])
    out = np.stack(
        [resize(x, (size, size), order=1, anti_aliasing=True, preserve_range=True) for x in flat]
    )
    return out.reshape(*lead, size, size)


def write_spectra_csv(path: str | os.PathLike[str], spectra: MotifSpectra) -> Path:
    """Write the spectra as a CSV table, one row per energy.

    Columns: the sweep (``"Bias (V)"``), ``away``, then per motif ``n``
    (1-based) ``motif n at copies``, ``motif n centre``, ``motif n norm``.

    Returns
    -------
    Path
        ``path``.
    """
    p = Path(path)
    head = [spectra.axis_title, "away"]
    for m in range(spectra.n_motifs):
        head += [f"motif {m + 1} at copies", f"motif {m + 1} centre", f"motif {m + 1} norm"]
    with open(p, "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        wr.writerow(head)
        for i, e in enumerate(spectra.energies):
            row = [repr(float(e)), repr(float(spectra.away[i]))]
            for m in range(spectra.n_motifs):
                row += [
                    repr(float(spectra.at_copies[m, i])),
                    repr(float(spectra.centre[m, i])),
                    repr(float(spectra.norm[m, i])),
                ]
            wr.writerow(row)
    return p
