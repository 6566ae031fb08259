"""Motifs that look like scan artefacts rather than defects, napari-free.

Three signs, each cheap and each measured on real scans
(``benchmarks/bench_real.py``):

- ``scan lines``: the motif's energy lies along the rows (a streak of tip
  noise learnt as a motif): nearly all of it is in its row profile, little in
  its column profile.
- ``periodic``: the motif repeats inside its own window (an atomic lattice
  learnt as a motif): its autocorrelation has a strong secondary peak.
- ``dense``: its copies cover most of the image (a texture, not defects).
- ``texture``: its energy is spread over its window, where another motif of
  the same solve holds its energy at the centre: with several motifs, one of
  them absorbs the scan's background texture (streaks across many lines) and
  the others are the defects.
- ``weak``: its copies are much less significant than another motif's (the
  median copy, in units of the local noise) and barely pass the threshold:
  with several motifs, one fits the scan's texture with many copies just
  past it. A second defect kind that is fainter than the first but clearly
  above the noise is not weak.

Shapes alone misjudge real defects: a defect smeared along the scan lines,
or bigger than the motif window, fills its window and looks like a streak or
a stripe pattern. So the motif whose copies are the most significant is a
defect unless its copies are dense: each solve keeps at least its strongest
motif.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage, signal

__all__ = ["FLAG_TEXT", "main_channel_sign", "motif_flags"]

#: What the gallery and the record say for each flag.
FLAG_TEXT = {
    "scan lines": "looks like a scan artefact (energy along the scan lines)",
    "periodic": "looks like the atomic lattice (periodic)",
    "dense": "looks like a texture (copies cover most of the image)",
    "texture": "looks like background texture (not localised, unlike the other motifs)",
    "weak": "looks like noise or texture (its copies are much weaker than another motif's)",
}
#: Share of a motif's energy in its row profile (mean over each row, spread
#: back along it) above which, with little in its column profile, it is a
#: streak: a round blob holds about 0.5-0.6 in both, a streak 0.9+ in rows.
ROW_ENERGY = 0.8
ROW_EXCESS = 0.35
#: Secondary autocorrelation peak (relative to the centre) that makes a motif periodic.
PERIODIC_PEAK = 0.45
#: How many times over copies (motif-sized squares) may cover the image: the
#: synthetic generator's dense defects cover 1.5 times, labelled WSe2 defects
#: 0.04, a lattice learnt as a motif (FeSe, k = 15: a copy per Se site) 13.
DENSE_COVER = 4.0
#: A motif with less than this share of its energy in the central disc
#: (radius a third of its size; a blob holds 0.95+, stripes across the window
#: about its area share, 0.35), and less than ``TEXTURE_RELATIVE`` times the
#: most localised motif's share, is texture. Measured on the labelled WSe2
#: scans: defect motifs 0.56-0.57, streak-texture motifs 0.23-0.30.
TEXTURE_SHARE = 0.45
TEXTURE_RELATIVE = 0.6
#: A motif whose median copy significance is below this share of the
#: strongest motif's is ``weak``. Measured on the labelled WSe2 scans (with
#: the scan-start band removed and defect cores kept in the fit): defect
#: motifs 6.4-12.1, the other motif 0.49-0.78 of that. Only a motif whose
#: median copy is also under ``WEAK_ABSOLUTE`` times the threshold is weak
#: (WSe2 texture motifs: 1.0-1.3; the synthetic lattice's fainter dopant
#: kind, 0.61 of the brighter one: 7).
WEAK_RELATIVE = 0.8
WEAK_ABSOLUTE = 2.0


def main_channel_sign(a: np.ndarray) -> tuple[int, float]:
    """A ``(C, kh, kw)`` motif's strongest channel (a cube's motif speaks
    through it) and the sign of the motif's centre there (its sum over the
    central third of the window): +1 for a bright defect, -1 for a dark one,
    0 for a centre that sums to nothing."""
    c = int(np.argmax((a**2).sum(axis=(1, 2))))
    kh, kw = a.shape[-2:]
    ch, cw = kh // 6, kw // 6
    centre = a[c, kh // 2 - ch : kh // 2 + ch + 1, kw // 2 - cw : kw // 2 + cw + 1].sum()
    return c, float(np.sign(centre))


def centre_share(a: np.ndarray) -> float:
    """Share of a motif's energy (about its median) in its central disc."""
    a = a - np.median(a)
    tot = float((a**2).sum())
    if tot <= 0:
        return 0.0
    kh, kw = a.shape
    yy, xx = np.mgrid[:kh, :kw]
    r = np.hypot((yy - (kh - 1) / 2) / kh, (xx - (kw - 1) / 2) / kw)
    return float((a[r <= 1 / 3] ** 2).sum()) / tot


def _profile_energy(a: np.ndarray, axis: int) -> float:
    """Share of ``a``'s (centred) energy in its mean along ``axis``."""
    a = a - a.mean()
    tot = float((a**2).sum())
    if tot <= 0:
        return 0.0
    prof = a.mean(axis=axis, keepdims=True)
    return float((np.broadcast_to(prof, a.shape) ** 2).sum()) / tot


def _secondary_peak(a: np.ndarray) -> float:
    """Largest autocorrelation maximum away from the centre, relative to it.

    One pair of such maxima is enough: stripes repeating across the scan
    lines (the 100 nm WSe2 scan's streak texture, 0.49 at a 6-line shift)
    are as much an artefact as a two-period lattice. Requiring two pairs let
    that texture through (F1 0.40 instead of 0.61 there)."""
    a = a - a.mean()
    ac = signal.fftconvolve(a, a[::-1, ::-1], mode="full")
    c = np.array(ac.shape) // 2
    centre = ac[tuple(c)]
    if centre <= 0:
        return 0.0
    ac = ac / centre
    # The central lobe: everything connected to the centre above half height.
    lab, _ = ndimage.label(ac > 0.5)
    lobe = lab == lab[tuple(c)]
    lobe = ndimage.binary_dilation(lobe, iterations=1)
    peaks = (ac == ndimage.maximum_filter(ac, size=3)) & ~lobe
    # Only shifts that keep most of the window: the overlap at a large shift is a few pixels.
    kh, kw = a.shape
    yy, xx = np.ogrid[: ac.shape[0], : ac.shape[1]]
    near = (np.abs(yy - c[0]) <= kh // 2) & (np.abs(xx - c[1]) <= kw // 2)
    sel = peaks & near
    return float(ac[sel].max()) if sel.any() else 0.0


def motif_flags(
    kernels: ArrayLike,
    counts: ArrayLike | None = None,
    image_shape: tuple[int, int] | None = None,
    strength: ArrayLike | None = None,
    evidence: ArrayLike | None = None,
) -> list[list[str]]:
    """Artefact flags per motif.

    Parameters
    ----------
    kernels : array_like
        ``(N, kh, kw)`` or ``(N, C, kh, kw)`` motifs (rows are scan lines).
    counts : array_like, optional
        ``(N,)`` number of copies found of each motif (for ``dense``).
    image_shape : (int, int), optional
        The analysed image's size (for ``dense``).
    strength : array_like, optional
        ``(N,)`` each motif's median copy significance in units of the
        detection threshold (NaN or 0: no copies). With it, the strongest
        motif keeps only a ``dense`` flag and motifs much weaker than it,
        near the threshold, are ``weak``.
    evidence : array_like, optional
        ``(N,)`` each motif's summed copy significance: which motif is the
        strongest (default: ``strength``). A kind with two huge copies (large
        bright defects) must not outrank one with forty clear ones.

    Returns
    -------
    list of list of str
        For each motif, the keys of :data:`FLAG_TEXT` that apply (empty: a defect).
    """
    k = np.asarray(kernels, np.float64)
    if k.ndim == 3:
        k = k[:, None]
    if k.ndim != 4:
        raise ValueError(f"kernels must be (N, kh, kw) or (N, C, kh, kw), got {k.shape}")
    out: list[list[str]] = []
    # Channels of a cube: the channel with the most energy speaks for the motif.
    main = [a[main_channel_sign(a)[0]] for a in k]
    shares = [centre_share(a2) for a2 in main]
    for n, a2 in enumerate(main):
        flags = []
        if shares[n] < min(TEXTURE_SHARE, TEXTURE_RELATIVE * max(shares)):
            flags.append("texture")
        rows, cols = _profile_energy(a2, 1), _profile_energy(a2, 0)
        if rows > ROW_ENERGY and rows - cols > ROW_EXCESS:
            flags.append("scan lines")
        if _secondary_peak(a2) > PERIODIC_PEAK:
            flags.append("periodic")
        if counts is not None and image_shape is not None:
            cover = float(np.asarray(counts)[n]) * a2.size / float(np.prod(image_shape))
            if cover > DENSE_COVER:
                flags.append("dense")
        out.append(flags)
    # One motif too: a dumbbell-shaped defect's autocorrelation has the
    # side peak of a lattice, and as the only motif it lost all its copies
    # (a synthetic scene's 67 to 0); a lattice learnt as one is still dense.
    if strength is not None and len(k) >= 1:
        st = np.nan_to_num(np.asarray(strength, np.float64).reshape(-1), nan=0.0)
        if len(st) != len(k):
            raise ValueError(f"strength has {len(st)} values for {len(k)} motifs")
        ev = st if evidence is None else np.nan_to_num(np.asarray(evidence, np.float64))
        best = int(np.argmax(ev.reshape(-1)))
        if st[best] > 0:
            out[best] = [f for f in out[best] if f == "dense"]
            for n in range(len(k)):
                weak = st[n] < WEAK_RELATIVE * st[best] and st[n] < WEAK_ABSOLUTE
                if n != best and weak and "weak" not in out[n]:
                    out[n].append("weak")
    return out
