"""Synthetic atomically resolved images: a strong atomic lattice with dopants.

:func:`napari_sasd.synthetic.make_synthetic` (``lattice=...``) adds a weak
three-cosine modulation under copies placed anywhere. A real doped-TMD or
FeSe topograph is the other way round: the lattice is as bright as the
defects, has sharp atoms (harmonics), and the dopants sit on lattice sites.
This generator makes that, with its truth, for the lattice background term
(:mod:`napari_sasd.lattice`) and its benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from .synthetic import SyntheticData, make_motif

__all__ = ["LatticeData", "make_lattice_dopants"]


@dataclass
class LatticeData(SyntheticData):
    """A :class:`~napari_sasd.synthetic.SyntheticData` with its lattice.

    Attributes
    ----------
    lattice : ndarray
        ``(H, W)`` the lattice image alone (included in ``image``).
    basis : ndarray
        ``(2, 2)`` reciprocal basis of the lattice, rows ``(fy, fx)`` in
        cycles per pixel (before any strain).
    """

    lattice: np.ndarray | None = None
    basis: np.ndarray | None = None


def make_lattice_dopants(
    shape: tuple[int, int] = (256, 256),
    kernel_size: int = 11,
    *,
    period: float = 5.0,
    angle: float = 0.2,
    lattice: float = 1.0,
    atom_width: float = 0.22,
    kinds: tuple[str, ...] = ("bump", "dip_halo"),
    dopant_fraction: float = 0.02,
    amplitude: tuple[float, float] = (0.8, 1.2),
    noise: float = 0.05,
    strain: float = 0.0,
    nan_fraction: float = 0.0,
    seed: int | None = 0,
) -> LatticeData:
    """A triangular atomic lattice with dopants on some of its sites.

    Parameters
    ----------
    shape : (int, int)
        Image size ``(H, W)``.
    kernel_size : int
        Size of the dopant motifs.
    period : float
        Nearest-neighbour atom spacing in pixels.
    angle : float
        Lattice rotation (radians).
    lattice : float
        Height of an atom relative to a dopant motif's mean peak height (the
        motifs are unit-norm, so a peak is about ``1 / kernel_size``); the
        lattice image spans ``[0, lattice * peak]``.
    atom_width : float
        Gaussian std of an atom, in units of ``period``.
    kinds : tuple of str
        One dopant motif per entry (shapes of :func:`~napari_sasd.synthetic.make_motif`).
    dopant_fraction : float
        Fraction of lattice sites carrying a dopant (all kinds together).
    amplitude : (float, float)
        Dopant amplitudes, uniform in this range.
    noise : float
        Gaussian noise std, relative to a dopant's mean peak height.
    strain : float
        Creep: the lattice's x coordinate is stretched by ``1 + strain * y / H``,
        so its frequencies drift slowly across the image.
    nan_fraction : float
        Fraction of pixels set to NaN.
    seed : int, optional
        Random seed.

    Returns
    -------
    LatticeData
        ``activations`` hold each dopant's amplitude at its site (pixel
        nearest to it); ``noise`` is the absolute std added.
    """
    rng = np.random.default_rng(seed)
    H, W = shape
    k = int(kernel_size)
    kern = np.stack([make_motif((k, k), s, rng) for s in kinds])
    peak = float(np.mean([np.abs(a).max() for a in kern]))

    # Real-space basis of the triangular lattice and its reciprocal.
    a1 = period * np.array([np.sin(angle), np.cos(angle)])  # (y, x)
    a2 = period * np.array([np.sin(angle + np.pi / 3), np.cos(angle + np.pi / 3)])
    basis = np.linalg.inv(np.stack([a1, a2])).T  # rows b with a_i . b_j = delta_ij
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    xs = xx * (1 + strain * yy / H)
    origin = rng.uniform(0, period, 2)
    # Gaussian atoms on the lattice as a Fourier series (exact, sub-pixel sites).
    s = atom_width * period
    lat = np.zeros((H, W))
    r = int(np.ceil(1.0 / (2 * np.pi * s * np.linalg.norm(basis[0])) * 4)) + 1
    for m in range(-r, r + 1):
        for n in range(-r, r + 1):
            g = m * basis[0] + n * basis[1]
            c = np.exp(-2 * np.pi**2 * s**2 * (g @ g))
            if c < 1e-4:
                continue
            lat += c * np.cos(2 * np.pi * (g[0] * (yy - origin[0]) + g[1] * (xs - origin[1])))
    lat = (lat - lat.min()) / (lat.max() - lat.min()) * lattice * peak

    # Dopants on sites (nearest pixel), at least half a motif apart.
    span = int(np.ceil(max(H, W) * (1 + abs(strain)) / period)) + 2
    ii, jj = np.mgrid[-2 * span : 2 * span + 1, -2 * span : 2 * span + 1]
    sites = origin + ii.reshape(-1, 1) * a1 + jj.reshape(-1, 1) * a2
    sites[:, 1] /= 1 + strain * sites[:, 0] / H  # the strained x of each site
    inside = (sites[:, 0] > -0.5) & (sites[:, 0] < H - 0.5)
    inside &= (sites[:, 1] > -0.5) & (sites[:, 1] < W - 0.5)
    sites = np.rint(sites[inside]).astype(int)
    n_dop = rng.binomial(len(sites), dopant_fraction)
    act = np.zeros((len(kinds), H, W))
    taken: list[np.ndarray] = []
    for idx in rng.permutation(len(sites)):
        if len(taken) == n_dop:
            break
        p = sites[idx]
        if taken and np.min(np.hypot(*(np.array(taken) - p).T)) < k / 2:
            continue
        taken.append(p)
        act[rng.integers(len(kinds)), p[0], p[1]] = rng.uniform(*amplitude)
    img = lat + sum(signal.fftconvolve(act[i], kern[i], mode="same") for i in range(len(kinds)))
    sigma = noise * peak
    if sigma:
        img = img + sigma * rng.standard_normal((H, W))
    if nan_fraction:
        img[rng.random((H, W)) < nan_fraction] = np.nan
    theta = len(taken) / (H * W * len(kinds))
    return LatticeData(img, kern, act, 0.0, sigma, theta, lattice=lat, basis=basis)
