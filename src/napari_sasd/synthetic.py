"""Synthetic short-and-sparse images with their ground truth.

Feeds the tests, the benchmarks and the plugin's sample data. Motifs look like
STM point-defect signatures (bumps, rings, dumbbells, three-lobed stars,
dips with a halo), stamped at Bernoulli-random places, optionally cut by the
image border, over a background (and optionally an atomic lattice) with noise.

:func:`make_sparse_model` is the papers' own model instead: motifs drawn
uniformly from the sphere, signed Bernoulli-Gaussian activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

SHAPES = ("bump", "ring", "dumbbell", "trimer", "dip_halo")


@dataclass
class SyntheticData:
    """A synthetic image and the truth it was made from.

    Attributes
    ----------
    image : ndarray
        ``(H, W)`` or, with channels, ``(C, H, W)`` float64.
    kernels : ndarray
        True motifs ``(N, kh, kw)`` or ``(N, C, kh, kw)``, unit norm.
    activations : ndarray
        ``(N, H, W)`` true amplitudes, centred convention (see ``method.md``).
    bias : float or ndarray
        Constant background (per channel with channels).
    noise : float
        Standard deviation of the added Gaussian noise.
    theta : float
        Probability that a pixel carries a copy, per motif.
    """

    image: np.ndarray
    kernels: np.ndarray
    activations: np.ndarray
    bias: float | np.ndarray
    noise: float
    theta: float

    @property
    def positions(self) -> list[np.ndarray]:
        """True copy centres per motif, each ``(M, 2)`` integer (row, col)."""
        return [np.argwhere(x != 0) for x in self.activations]


def make_motif(
    kernel_size: int | tuple[int, int], shape: str = "bump", rng: np.random.Generator | None = None
) -> np.ndarray:
    """Make one unit-norm STM-like motif of the given shape.

    Parameters
    ----------
    kernel_size : int or (int, int)
        Motif size ``(kh, kw)``.
    shape : str
        One of ``SHAPES``.
    rng : numpy.random.Generator, optional
        Randomises orientation and widths a little.

    Returns
    -------
    ndarray
        ``(kh, kw)`` float64 with unit Frobenius norm.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    kh, kw = _pair(kernel_size)
    yy, xx = np.mgrid[0:kh, 0:kw].astype(float)
    cy, cx = (kh - 1) / 2, (kw - 1) / 2
    ry, rx = (kh - 1) / 2, (kw - 1) / 2
    r = np.minimum(ry, rx)
    dy, dx = yy - cy, xx - cx
    ang = rng.uniform(0, 2 * np.pi)
    w = r * rng.uniform(0.22, 0.3)

    def blob(oy: float, ox: float, s: float) -> np.ndarray:
        return np.exp(-((dy - oy) ** 2 + (dx - ox) ** 2) / (2 * s**2))

    if shape == "bump":
        a = blob(0, 0, 1.3 * w) + 0.5 * blob(0.4 * r * np.sin(ang), 0.4 * r * np.cos(ang), w)
    elif shape == "ring":
        rho = np.hypot(dy, dx)
        a = np.exp(-((rho - 0.55 * r) ** 2) / (2 * (0.45 * w) ** 2)) - 0.6 * blob(0, 0, 0.6 * w)
    elif shape == "dumbbell":
        oy, ox = 0.45 * r * np.sin(ang), 0.45 * r * np.cos(ang)
        a = blob(oy, ox, 0.8 * w) + blob(-oy, -ox, 0.8 * w)
    elif shape == "trimer":
        a = sum(
            blob(0.5 * r * np.sin(ang + t), 0.5 * r * np.cos(ang + t), 0.7 * w)
            for t in (0, 2 * np.pi / 3, 4 * np.pi / 3)
        )
    elif shape == "dip_halo":
        rho = np.hypot(dy, dx)
        a = -blob(0, 0, w) + 0.5 * np.exp(-((rho - 0.7 * r) ** 2) / (2 * (0.4 * w) ** 2))
    else:
        raise ValueError(f"unknown motif shape {shape!r}; choose one of {SHAPES}")
    # Taper so the motif really is short: zero at its own border.
    taper = np.outer(signal.windows.tukey(kh, 0.5), signal.windows.tukey(kw, 0.5))
    a = a * taper
    return a / np.linalg.norm(a)


def make_synthetic(
    shape: tuple[int, int] = (128, 128),
    kernel_size: int | tuple[int, int] = 12,
    n_motifs: int = 1,
    *,
    copies_per_area: float = 1.5,
    theta: float | None = None,
    n_channels: int | None = None,
    noise: float = 0.0,
    bias: float = 0.0,
    amplitude: tuple[float, float] = (0.7, 1.3),
    lattice: float = 0.0,
    nan_fraction: float = 0.0,
    border: bool = True,
    shapes: tuple[str, ...] | None = None,
    seed: int | None = 0,
) -> SyntheticData:
    """Generate a short-and-sparse image with its ground truth.

    Parameters
    ----------
    shape : (int, int)
        Image size ``(H, W)``.
    kernel_size : int or (int, int)
        Motif size.
    n_motifs : int
        Number of distinct motifs.
    copies_per_area : float
        Expected copies (of all motifs together) per kernel area; sets
        ``theta = copies_per_area / (kh * kw * n_motifs)`` unless ``theta`` is given.
    theta : float, optional
        Per-motif Bernoulli probability of a copy at each pixel.
    n_channels : int, optional
        Make a ``(C, H, W)`` stack: each motif gets one (different) kernel per
        channel, all channels share the activation map.
    noise : float
        Gaussian noise std, relative to the typical copy amplitude (1).
    bias : float
        Constant background.
    amplitude : (float, float)
        Copies have uniform random amplitudes in this range.
    lattice : float
        Amplitude of a weak atomic-lattice modulation added to the background.
    nan_fraction : float
        Fraction of pixels set to NaN (dropped measurements).
    border : bool
        Let copies centred outside the image reach in (motifs cut by the border).
    shapes : tuple of str, optional
        Motif shapes, default a different one per motif.
    seed : int, optional
        Random seed.

    Returns
    -------
    SyntheticData
    """
    rng = np.random.default_rng(seed)
    kh, kw = _pair(kernel_size)
    H, W = shape
    if shapes is None:
        start = rng.integers(len(SHAPES)) if n_motifs == 1 else 0
        shapes = tuple(SHAPES[(start + i) % len(SHAPES)] for i in range(n_motifs))
    C = n_channels or 1
    kern = np.empty((n_motifs, C, kh, kw))
    for n in range(n_motifs):
        for c in range(C):
            # Across energies a defect's signature changes shape: use a
            # different shape per channel, then unit norm over all channels.
            s = shapes[n] if c == 0 else SHAPES[(SHAPES.index(shapes[n]) + c) % len(SHAPES)]
            kern[n, c] = make_motif((kh, kw), s, rng) * (1.0 if c == 0 else rng.uniform(0.5, 1))
        kern[n] /= np.linalg.norm(kern[n])
    if theta is None:
        theta = copies_per_area / (kh * kw * n_motifs)
    # Activations on a grid padded by a kernel each side, so copies centred
    # just outside the image still reach in; the image is then the centre crop.
    ph, pw = (kh, kw) if border else (0, 0)
    big = (H + 2 * ph, W + 2 * pw)
    x = (rng.random((n_motifs, *big)) < theta) * rng.uniform(*amplitude, size=(n_motifs, *big))
    if not border:
        # No copy may be cut: keep centres at least half a kernel inside.
        m = np.zeros(big, bool)
        m[kh // 2 : H - (kh - 1) // 2, kw // 2 : W - (kw - 1) // 2] = True
        x *= m
    img = np.zeros((C, *big))
    for n in range(n_motifs):
        for c in range(C):
            img[c] += signal.fftconvolve(x[n], kern[n, c], mode="same")
    img = img[:, ph : ph + H, pw : pw + W]
    act = x[:, ph : ph + H, pw : pw + W].astype(np.float64)
    bias_c = np.full(C, float(bias))
    img += bias_c[:, None, None]
    if lattice:
        yy, xx = np.mgrid[0:H, 0:W]
        period = max(3.0, min(kh, kw) / 3)
        lat = sum(
            np.cos(2 * np.pi / period * (np.cos(t) * xx + np.sin(t) * yy))
            for t in (0, np.pi / 3, 2 * np.pi / 3)
        )
        img += lattice * lat / 3
    if noise:
        img += noise * rng.standard_normal(img.shape)
    if nan_fraction:
        img[:, rng.random((H, W)) < nan_fraction] = np.nan
    if n_channels is None:
        return SyntheticData(img[0], kern[:, 0], act, float(bias), noise, float(theta))
    return SyntheticData(img, kern, act, bias_c, noise, float(theta))


def make_sparse_model(
    shape: tuple[int, int] = (256, 256),
    kernel_size: int | tuple[int, int] = 12,
    n_motifs: int = 1,
    *,
    theta: float | None = None,
    noise: float = 0.0,
    smooth: float = 0.0,
    positive: bool = False,
    seed: int | None = 0,
) -> SyntheticData:
    """Generate an image of the short-and-sparse papers' model, with its truth.

    Each motif is drawn uniformly from the unit sphere (i.i.d. Gaussian
    entries, normalised): no centre, no smoothness, no sign. Each pixel of
    each motif's activation map carries a copy with probability ``theta``,
    with a standard Gaussian amplitude (signed: solve with
    ``positive=False``). Copies centred up to a kernel outside the image reach
    in, as in :func:`make_synthetic` with ``border=True``.

    Parameters
    ----------
    shape : (int, int)
        Image size ``(H, W)``.
    kernel_size : int or (int, int)
        Motif size ``(kh, kw)``.
    n_motifs : int
        Number of motifs.
    theta : float, optional
        Bernoulli probability of a copy per pixel and motif; default
        ``1.5 / (kh * kw)`` (the talk's setting for one motif).
    noise : float
        Gaussian noise std, relative to the image's std without noise.
    smooth : float
        If positive, each motif is the random one smoothed by a Gaussian of
        this std (pixels, within its window, before normalising): a smooth
        motif with no centre and energy up to its border.
    positive : bool
        Amplitudes ``|N(0, 1)|`` instead of signed (solve with ``positive=True``).
    seed : int, optional
        Random seed.

    Returns
    -------
    SyntheticData
        ``theta`` as used; ``noise`` as the absolute std added.
    """
    rng = np.random.default_rng(seed)
    kh, kw = _pair(kernel_size)
    H, W = shape
    if theta is None:
        theta = 1.5 / (kh * kw)
    kern = rng.standard_normal((n_motifs, kh, kw))
    if smooth > 0:
        kern = ndimage.gaussian_filter(kern, (0, smooth, smooth), mode="constant")
    kern /= np.linalg.norm(kern.reshape(n_motifs, -1), axis=1)[:, None, None]
    big = (H + 2 * kh, W + 2 * kw)
    x = (rng.random((n_motifs, *big)) < theta) * rng.standard_normal((n_motifs, *big))
    if positive:
        x = np.abs(x)
    img = sum(signal.fftconvolve(x[n], kern[n], mode="same") for n in range(n_motifs))
    img = img[kh : kh + H, kw : kw + W]
    act = x[:, kh : kh + H, kw : kw + W]
    sigma = noise * float(img.std())
    if sigma:
        img = img + sigma * rng.standard_normal(img.shape)
    return SyntheticData(img, kern, act, 0.0, sigma, float(theta))


def scan_streaks(
    shape: tuple[int, int],
    n: int,
    amplitude: float,
    rng: np.random.Generator,
    max_lines: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Partial scan-line streaks (tip noise): offsets on pieces of lines.

    Parameters
    ----------
    shape : (int, int)
        Image size; rows are scan lines.
    n : int
        Number of streaks.
    amplitude : float
        Each streak's offset, with a random sign.
    rng : numpy.random.Generator
        Random source.
    max_lines : int
        Streaks are 1 to ``max_lines`` lines thick (20-80 px long).

    Returns
    -------
    offsets, truth : ndarray, ndarray of bool
        ``(H, W)`` offsets to add to an image, and where they are.
    """
    out = np.zeros(shape)
    truth = np.zeros(shape, bool)
    for _ in range(n):
        r = int(rng.integers(2, shape[0] - 4))
        c = int(rng.integers(0, shape[1] - 80))
        length, thick = int(rng.integers(20, 80)), int(rng.integers(1, max_lines + 1))
        out[r : r + thick, c : c + length] += amplitude * rng.choice([-1, 1])
        truth[r : r + thick, c : c + length] = True
    return out, truth


def _pair(k: int | tuple[int, int]) -> tuple[int, int]:
    if np.ndim(k) == 0:
        return int(k), int(k)
    kh, kw = k
    return int(kh), int(kw)
