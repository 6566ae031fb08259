"""The atomic lattice as a background term: detect it, fit it, remove it.

On an atomically resolved scan the lattice is the most repeated pattern in the
image, so a motif solve spends a motif on it (and calls every site a copy).
It is also the easiest pattern to describe: a few sharp Bragg peaks in the
Fourier transform. :func:`find_lattice` finds those peaks and decides whether
a lattice is there at all; :func:`fit_lattice` estimates the periodic image
they make, robustly to the defects, so ``image - fit`` keeps the vacancies,
dopants and adsorbates as departures from the lattice. :class:`LatticeTerm`
wraps both as a :class:`~napari_sasd.background.BackgroundTerm`.

Detection. The image (NaN and masked pixels filled with its median) is
multiplied by a 2-D Hann window, so that its edges do not leak a cross of
energy through the spectrum, and its power spectrum ``P`` is compared with a
local background: the largest of three running medians of ``P`` (over a 9 x 9
square, and 17-bin lines along each axis, so that the spectral lines of scan
artefacts count as background, not peaks). Where the spectrum is noise,
``P / (median / ln 2)`` is exponentially distributed with mean 1, so a bin
exceeds ``t`` with probability ``exp(-t)``; the default threshold
``ln(n_bins / 0.01)`` lets about one false peak through in a hundred images.
A lattice is *present* when two non-collinear reciprocal vectors (peaks or
differences of peaks; not the 8-pixel block grid of a JPEG) generate at least
two non-collinear resolved peaks (periods of 3 px or more) and
at least half of all the significance (each explained peak an integer
combination of the two within about a bin); peaks that fit no such pair (a
single stripe direction, an interference line) are reported apart and not
fitted.

Fit. For each lattice frequency ``k`` (the detected peaks and the low
harmonics of the basis) the image is demodulated, ``z(r) exp(-2 pi i k.r)``,
and low-passed with a Gaussian envelope of 1 to 8 lattice periods (chosen by
generalised cross-validation): a slowly varying complex amplitude, so drift
and creep distortions are followed instead of smeared. In Fourier space this
is a band of Gaussian bumps at ``+-k``. It is a normalised convolution (the
low-pass of ``w z`` divided by that of ``w``): pixels with weight ``w = 0``
(NaN, masked, and after a first pass the defects, i.e. pixels whose residual
is far above the robust noise level) are left out instead of being smeared
into the lattice, and the image border needs no window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import fft, ndimage, signal

from ._lattice_band import BandFit, Spectra, disk
from ._lattice_basis import best_basis, half_plane, refine_peak

__all__ = ["Lattice", "LatticeTerm", "find_lattice", "fit_lattice", "lattice_energy"]

_LN2 = float(np.log(2.0))
# Envelope widths tried by fit_lattice, in lattice periods.
ENVELOPES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


@dataclass(frozen=True)
class Lattice:
    """What :func:`find_lattice` found.

    Frequencies are ``(fy, fx)`` in cycles per pixel, in ``[-0.5, 0.5)``; a
    real image's spectrum is symmetric, so each peak ``k`` stands for the pair
    ``+-k`` and only one of the two (``fx > 0``, or ``fx == 0`` and
    ``fy > 0``) is listed.

    Attributes
    ----------
    present : bool
        Whether a lattice was found (two non-collinear significant peaks that
        generate the others).
    peaks : ndarray
        ``(P, 2)`` refined frequencies of the significant peaks on the lattice,
        strongest first (empty without a lattice).
    significance : ndarray
        ``(P,)`` each peak's power over the local spectral background's mean;
        on pure noise this is exponentially distributed with mean 1.
    indices : ndarray
        ``(P, 2)`` int ``(m, n)`` with ``peak ~= m * basis[0] + n * basis[1]``.
    basis : ndarray
        ``(2, 2)`` the two reciprocal basis vectors (rows), or ``(0, 2)``.
    threshold : float
        Significance a peak had to exceed.
    shape : (int, int)
        ``(H, W)`` of the analysed image.
    others : ndarray
        ``(Q, 2)`` significant peaks not on the lattice (not fitted).
    others_significance : ndarray
        ``(Q,)`` their significance.
    """

    present: bool
    peaks: np.ndarray
    significance: np.ndarray
    indices: np.ndarray
    basis: np.ndarray
    threshold: float
    shape: tuple[int, int]
    others: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    others_significance: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def periods(self) -> np.ndarray:
        """Real-space period (pixels) of each basis vector's planes, ``(2,)``."""
        return 1.0 / np.linalg.norm(self.basis, axis=1) if self.present else np.zeros(0)

    def frequencies(self, harmonics: int = 2) -> np.ndarray:
        """Frequencies a fit uses: the detected peaks and the basis's low harmonics.

        Parameters
        ----------
        harmonics : int
            Add every ``m * b1 + n * b2`` with ``max(|m|, |n|) <= harmonics``
            below the Nyquist frequency that is not already a detected peak
            (0: the detected peaks only).

        Returns
        -------
        ndarray
            ``(Q, 2)`` frequencies, one of each ``+-k`` pair.
        """
        if not self.present:
            return np.zeros((0, 2))
        out = [tuple(p) for p in self.peaks]
        known = {tuple(int(v) for v in i) for i in self.indices}
        known |= {(-m, -n) for m, n in known}
        r = int(harmonics)
        for m in range(-r, r + 1):
            for n in range(-r, r + 1):
                if (m, n) == (0, 0) or (m, n) in known:
                    continue
                k = m * self.basis[0] + n * self.basis[1]
                if np.any(np.abs(k) >= 0.5):
                    continue
                if half_plane(k):
                    out.append((float(k[0]), float(k[1])))
                    known |= {(m, n), (-m, -n)}
        return np.array(out, dtype=np.float64).reshape(-1, 2)


def find_lattice(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    threshold: float | None = None,
    false_alarm: float = 0.01,
    min_cycles: float = 4.0,
    min_period: float = 3.0,
    max_peaks: int = 24,
    tolerance: float = 1.0,
) -> Lattice:
    """Detect an atomic lattice from the Bragg peaks of the image's spectrum.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` float image, flattened (plane and line offsets removed), or
        a ``(C, H, W)`` stack: one lattice shared by all channels (their
        normalised spectra are averaged). NaN pixels are allowed.
    mask : ndarray of bool, optional
        ``(H, W)``, True where a pixel is observed.
    threshold : float, optional
        Significance (peak power over the local background's mean) a peak
        must exceed; default ``ln(n_bins / false_alarm)`` with ``n_bins`` the
        number of independent frequencies, ``H * W / 2``.
    false_alarm : float
        Expected number of noise peaks over the threshold per image.
    min_cycles : float
        Lowest frequency considered, in cycles across the image: a lattice
        shows several periods; slower modulations are background.
    min_period : float
        Shortest lattice period (pixels) accepted for the basis: a lattice
        sampled more coarsely is barely resolved, while JPEG block grids and
        interlaced scan lines put sharp peaks near the Nyquist frequency.
        (Harmonics of an accepted basis may lie beyond.)
    max_peaks : int
        Largest number of peaks examined (strongest first).
    tolerance : float
        Distance in frequency bins (plus 2 % of the peak's frequency, for
        creep) within which a peak counts as an integer combination of the
        basis.

    Returns
    -------
    Lattice
        ``present=False`` (and empty peaks) when no lattice is found.

    Raises
    ------
    ValueError
        Not ``(H, W)`` or ``(C, H, W)``, smaller than 16 x 16, a mask of the
        wrong shape, or no observed finite pixel.
    """
    stack, ok = _prepare(image, mask)
    _, H, W = stack.shape
    win = np.outer(signal.windows.hann(H, sym=False), signal.windows.hann(W, sym=False))
    P = np.zeros((H, W))
    for z in stack:
        fill = float(np.median(z[ok]))
        z = np.where(ok, z, fill) - fill
        p = np.abs(fft.fftshift(fft.fft2(z * win))) ** 2
        P += p / max(float(np.median(p)), np.finfo(float).tiny)
    P /= len(stack)
    # Local background: a square median, and medians along each axis so that a
    # line of energy (scan-line artefacts put one along fx = 0) is background.
    # The footprints take every other bin: the Hann window correlates
    # neighbours anyway, and a third of the points makes it three times faster.
    square = np.zeros((9, 9), bool)
    square[::2, ::2] = True
    line = np.zeros((1, 17), bool)
    line[:, ::2] = True
    bg = np.maximum.reduce(
        [
            ndimage.median_filter(P, footprint=square, mode="wrap"),
            ndimage.median_filter(P, footprint=line, mode="wrap"),
            ndimage.median_filter(P, footprint=line.T, mode="wrap"),
        ]
    )
    S = P / np.maximum(bg / _LN2, np.finfo(float).tiny)
    thr = float(np.log(H * W / 2 / false_alarm)) if threshold is None else float(threshold)

    fy = (np.arange(H) - H // 2) / H
    fx = (np.arange(W) - W // 2) / W
    cyc = np.hypot(fy[:, None] * H, fx[None, :] * W)
    half = (fx[None, :] > 0) | ((fx[None, :] == 0) & (fy[:, None] > 0))
    cand = (S == ndimage.maximum_filter(S, size=5, mode="wrap")) & (S > thr)
    cand &= half & (cyc >= min_cycles)
    rows, cols = np.nonzero(cand)
    order = np.argsort(S[rows, cols])[::-1][:max_peaks]
    rows, cols = rows[order], cols[order]
    sig = S[rows, cols]
    logp = np.log(np.maximum(P, np.finfo(float).tiny))
    freqs = np.array([refine_peak(logp, r, c) for r, c in zip(rows, cols, strict=True)])
    freqs = freqs.reshape(-1, 2)
    freqs = (freqs - np.array([H // 2, W // 2])) / np.array([H, W])

    best = best_basis(freqs, sig, (H, W), tolerance, min_cycles, 1.0 / min_period)
    empty2 = np.zeros((0, 2))
    if best is None:
        return Lattice(False, empty2, np.zeros(0), np.zeros((0, 2), int), empty2, thr, (H, W),
                       freqs, sig)  # fmt: skip
    basis, on, idx = best
    return Lattice(
        present=True,
        peaks=freqs[on],
        significance=sig[on],
        indices=idx[on],
        basis=basis,
        threshold=thr,
        shape=(H, W),
        others=freqs[~on],
        others_significance=sig[~on],
    )


def fit_lattice(
    image: np.ndarray,
    lattice: Lattice,
    mask: np.ndarray | None = None,
    *,
    harmonics: int = 2,
    envelope: float | None = None,
    passes: int = 2,
    clip: float = 3.0,
) -> np.ndarray:
    """Estimate the periodic lattice image, robustly to the defects on it.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` float image, or ``(C, H, W)``: each channel is fitted at the
        shared lattice frequencies with its own amplitudes.
    lattice : Lattice
        From :func:`find_lattice` on this image (its ``shape`` must match).
    mask : ndarray of bool, optional
        ``(H, W)``, True where a pixel is observed (NaN pixels never are).
    harmonics : int
        Also fit the basis's harmonics up to this order (see
        :meth:`Lattice.frequencies`).
    envelope : float, optional
        Standard deviation (pixels) of the Gaussian envelope over which the
        lattice's amplitude and phase may vary. Default: chosen per channel
        among 1 to 8 lattice periods (3 px to half the image) by generalised
        cross-validation on the non-defect pixels, after the first robust
        pass: short for a lattice distorted by creep, long for a rigid one.
    passes : int
        Robust reweighting passes after the first fit: pixels whose residual
        exceeds ``clip`` robust standard deviations (grown by half a lattice
        period, 1.5 to 4 px) are left out of the next fit.
    clip : float
        Outlier threshold in robust standard deviations of the residual.

    Returns
    -------
    ndarray
        The lattice, ``image``'s shape, finite everywhere; zeros when
        ``lattice.present`` is False.

    Raises
    ------
    ValueError
        Bad shapes, or a lattice found on an image of another size.
    """
    stack, ok = _prepare(image, mask)
    _, H, W = stack.shape
    if tuple(lattice.shape) != (H, W):
        raise ValueError(
            f"the lattice was found on a {lattice.shape} image, this one is {(H, W)}: "
            "run find_lattice on this image"
        )
    out = np.zeros(stack.shape)
    if not lattice.present:
        return out.reshape(np.shape(image))
    freqs = lattice.frequencies(harmonics)
    period = float(lattice.periods.max())
    if envelope is None:
        # Candidates from loose (drift, creep) to stiff, at most half the image.
        cands = np.unique(np.clip(period * np.array(ENVELOPES), 3.0, max(H, W) / 2))
    else:
        if not float(envelope) > 0:
            raise ValueError(f"envelope must be positive, got {envelope}")
        cands = np.array([float(envelope)])
    fitter = BandFit((H, W), freqs, float(cands.max()), smooth=max(1.0, period))
    # Grow outliers by about an atom, so a defect's fainter rim goes with its core.
    grow = disk(float(np.clip(period / 2, 1.5, 4.0)))
    for c, z in enumerate(stack):
        w = ok.astype(np.float64)
        z = np.where(ok, z, 0.0)
        sigma = float(cands[len(cands) // 2])
        for p in range(passes + 1):
            spec = fitter.prepare(z, w)
            if p == min(1, passes) and len(cands) > 1:
                sigma = _choose_envelope(fitter, spec, z, w, cands)
            lat, _ = fitter.lattice(spec, sigma)
            if p == passes:
                break
            res = np.abs(z - spec.smooth - lat)[ok]
            med = float(np.median(res))
            # A robust cut, but never more than 40 % of the pixels: a fit that
            # is off everywhere (a distorted lattice) must not starve itself.
            cut = max(clip * 1.4826 * med, float(np.percentile(res, 60)))
            bad = np.zeros((H, W), bool)
            bad[ok] = res > cut
            w = (ok & ~ndimage.binary_dilation(bad, grow)).astype(np.float64)
        out[c] = lat
    return out.reshape(np.shape(image))


def _choose_envelope(
    fitter: BandFit, spec: Spectra, z: np.ndarray, w: np.ndarray, cands: np.ndarray
) -> float:
    """The envelope width with the smallest generalised cross-validation score.

    ``GCV = (RSS / n) / (1 - dof / n)^2`` over the weighted (non-defect)
    pixels: a short envelope follows a distorted lattice but also the noise, a
    long one is steadier but smears a lattice whose period drifts; GCV weighs
    the two without a held-out set (Golub, Heath & Wahba 1979).
    """
    best, best_score = float(cands[0]), np.inf
    for sigma in cands:
        lat, dof = fitter.lattice(spec, float(sigma))
        rss = float((w * (z - spec.smooth - lat) ** 2).sum())
        if dof >= spec.n:
            continue
        score = rss / spec.n / (1 - dof / spec.n) ** 2
        if score < best_score:
            best, best_score = float(sigma), score
    return best


def lattice_energy(kernel: np.ndarray, lattice: Lattice, harmonics: int = 1) -> float:
    """Fraction of a motif's energy that the lattice's sinusoids explain.

    The motif, less its mean, is fitted by least squares with ``cos`` and
    ``sin`` at the lattice's frequencies (:meth:`Lattice.frequencies`); the
    explained fraction of its energy is returned. A motif that learned the
    lattice is close to 1; a defect's compact signature much lower (how much
    lower depends on how many sinusoids fit in the motif's window: a motif
    smaller than the lattice's cell is explained by anything smooth, so the
    measure only means something for lattices with several periods per motif).

    Parameters
    ----------
    kernel : ndarray
        ``(kh, kw)`` motif (or ``(C, kh, kw)``: channels pooled).
    lattice : Lattice
        The lattice of the image the motif came from.
    harmonics : int
        Harmonic order of the frequencies used (see :meth:`Lattice.frequencies`).

    Returns
    -------
    float
        In [0, 1] (0 without a lattice or for a constant motif).
    """
    a = np.asarray(kernel, dtype=np.float64)
    a = a.reshape(-1, *a.shape[-2:])
    a = a - a.mean(axis=(1, 2), keepdims=True)
    total = float((a**2).sum())
    if not lattice.present or total == 0:
        return 0.0
    kh, kw = a.shape[-2:]
    yy, xx = np.mgrid[0:kh, 0:kw].astype(np.float64)
    cols = []
    for k in lattice.frequencies(harmonics):
        ph = 2 * np.pi * (k[0] * yy + k[1] * xx)
        cols += [np.cos(ph).ravel(), np.sin(ph).ravel()]
    A = np.stack(cols, axis=1)
    A -= A.mean(axis=0)  # the motif's mean is not the lattice's to explain
    coef = np.linalg.lstsq(A, a.reshape(len(a), -1).T, rcond=None)[0]
    explained = float(((A @ coef) ** 2).sum())
    return min(1.0, explained / total)


@dataclass
class LatticeTerm:
    """The atomic lattice as a :class:`~napari_sasd.background.BackgroundTerm`
    (it satisfies the protocol structurally; ``isinstance`` works).

    ``fit`` detects the lattice (:func:`find_lattice`) and, when present,
    returns its fit (:func:`fit_lattice`), else zeros. The last detection is
    kept in ``lattice`` for display and records.

    Parameters
    ----------
    harmonics, envelope : see :func:`fit_lattice`.
    false_alarm : see :func:`find_lattice`.
    """

    harmonics: int = 2
    envelope: float | None = None
    false_alarm: float = 0.01
    name: str = "lattice"
    lattice: Lattice | None = None

    def fit(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """The lattice in ``image`` (zeros if none is found)."""
        self.lattice = find_lattice(image, mask, false_alarm=self.false_alarm)
        return fit_lattice(
            image, self.lattice, mask, harmonics=self.harmonics, envelope=self.envelope
        )


def _prepare(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(C, H, W)`` float64 copy and the ``(H, W)`` observed-pixel mask."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim not in (2, 3):
        raise ValueError(f"the lattice needs an image (H, W) or a stack (C, H, W), got {a.shape}")
    stack = a.reshape(-1, *a.shape[-2:])
    H, W = stack.shape[-2:]
    if min(H, W) < 16:
        raise ValueError(f"image {a.shape} is too small to hold a lattice (at least 16 x 16)")
    ok = np.isfinite(stack).all(axis=0)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (H, W):
            raise ValueError(f"mask shape {m.shape} does not match the image's {(H, W)}")
        ok &= m
    if not ok.any():
        raise ValueError("no observed finite pixel: nothing to find a lattice in")
    return stack, ok
