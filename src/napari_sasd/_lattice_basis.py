"""Bragg peaks to a reciprocal lattice basis (see :mod:`napari_sasd.lattice`), napari-free.

Sub-bin peak positions, the search for the basis whose integer combinations
explain the significant peaks, and its reduction.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np


def refine_peak(logp: np.ndarray, r: int, c: int) -> tuple[float, float]:
    """Sub-bin peak position by a parabola through the log power (a Hann
    window's main lobe is close to a Gaussian, whose log is a parabola)."""
    H, W = logp.shape

    def vertex(a: float, b: float, d: float) -> float:
        den = a - 2 * b + d
        return 0.0 if den >= 0 else float(np.clip(0.5 * (a - d) / den, -0.5, 0.5))

    dy = vertex(logp[(r - 1) % H, c], logp[r, c], logp[(r + 1) % H, c])
    dx = vertex(logp[r, (c - 1) % W], logp[r, c], logp[r, (c + 1) % W])
    return r + dy, c + dx


def best_basis(
    freqs: np.ndarray,
    sig: np.ndarray,
    shape: tuple[int, int],
    tol: float,
    min_cycles: float,
    max_freq: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The reciprocal basis whose integer combinations explain the most significance.

    Candidate basis vectors are the peaks and the differences of the strongest
    ones (a difference of two Bragg peaks is a reciprocal-lattice vector, so a
    lattice whose fundamentals are weak, as the 7x7 reconstruction's, is still
    found from its strong harmonics). Ties go to the coarser reciprocal
    lattice (fewer points explaining the same peaks). The explained peaks
    must span two directions; the basis is then refined by least squares on
    them.
    """
    scale = np.array(shape, dtype=np.float64)  # cycles/px -> bins
    if len(freqs) < 2:
        return None
    top = freqs[:8]
    # No wrap-around: a "lattice" made of aliased peaks near the Nyquist
    # frequency (JPEG blocks on interlaced lines) must not be assembled.
    diffs = (top[:, None, :] - top[None, :, :]).reshape(-1, 2)
    # A difference along an axis by a multiple of 1/8 cycle/px is the 8 x 8
    # block grid of a JPEG, which copies every spectral feature by that step:
    # not a lattice vector (a real lattice's own peaks are candidates anyway).
    on_axis = np.min(np.abs(diffs * scale), axis=1) <= 1.0
    eighth = np.abs(np.max(np.abs(diffs), axis=1) * 8 - np.rint(np.max(np.abs(diffs), axis=1) * 8))
    diffs = diffs[~(on_axis & (eighth * np.max(scale) / 8 <= 1.0))]
    vecs = []
    for v in np.concatenate([freqs, diffs]):
        if not half_plane(v):
            v = -v
        cyc = float(np.linalg.norm(v * scale))
        if cyc < min_cycles or np.linalg.norm(v) > max_freq:
            continue
        if all(np.linalg.norm((v - u) * scale) > 1.0 for u in vecs):
            vecs.append(v)
    vecs = sorted(vecs, key=lambda v: float(np.linalg.norm(v * scale)))[:40]
    tol_k = tol + 0.02 * np.linalg.norm(freqs * scale, axis=1)  # creep stretches far peaks
    best = None
    best_key = None
    for i, j in combinations(range(len(vecs)), 2):
        b = np.stack([vecs[i], vecs[j]])
        cross = abs(b[0, 0] * b[1, 1] - b[0, 1] * b[1, 0])
        if cross < np.sin(np.radians(15)) * np.prod(np.linalg.norm(b, axis=1)):
            continue
        on, idx = _explained(freqs, b, scale, tol_k)
        if np.linalg.matrix_rank(idx[on].astype(float)) < 2:
            continue  # peaks along one direction only: stripes, not a lattice
        resolved = on & (np.linalg.norm(freqs, axis=1) <= max_freq)
        if np.linalg.matrix_rank(idx[resolved].astype(float)) < 2:
            continue  # only fine peaks (aliasing, interlaced lines): not resolved atoms
        key = (round(float(sig[on].sum()), 6), float(cross))
        if best_key is None or key > best_key:
            best, best_key = (b, on, idx), key
    if best is None:
        return None
    b, on, idx = best
    if sig[on].sum() < 0.5 * sig.sum():
        # Most sharp peaks are something else (JPEG blocks, interference): the
        # few this basis explains are more likely a coincidence than atoms.
        return None
    # Least-squares basis from every explained peak: the harmonics pin it down
    # much better than the two vectors it was found from.
    b = _reduce(np.linalg.lstsq(idx[on].astype(float), freqs[on], rcond=None)[0])
    on, idx = _explained(freqs, b, scale, tol_k)
    return b, on, idx


def _reduce(b: np.ndarray) -> np.ndarray:
    """Lagrange-Gauss reduction: the shortest basis of the same lattice, both
    vectors in the half-plane, so that equivalent bases read the same."""
    u, v = b[0].copy(), b[1].copy()
    for _ in range(64):
        if u @ u > v @ v:
            u, v = v, u
        m = np.rint((u @ v) / (u @ u))
        if m == 0:
            break
        v = v - m * u
    u = u if half_plane(u) else -u
    v = v if half_plane(v) else -v
    return np.stack([u, v])


def _explained(
    freqs: np.ndarray, b: np.ndarray, scale: np.ndarray, tol: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which peaks are integer combinations ``m b1 + n b2`` of the basis ``b``."""
    coef = np.linalg.solve(b.T, freqs.T).T  # freqs = coef @ b
    idx = np.rint(coef).astype(int)
    err = np.linalg.norm((freqs - idx @ b) * scale, axis=1)
    on = (err <= tol) & (np.abs(idx).max(axis=1) <= 12) & (np.abs(idx).sum(axis=1) > 0)
    return on, idx


def half_plane(k: np.ndarray) -> bool:
    return bool(k[1] > 1e-12 or (abs(k[1]) <= 1e-12 and k[0] > 0))


def wrap(f: np.ndarray) -> np.ndarray:
    """Frequency differences folded into [-0.5, 0.5)."""
    return (f + 0.5) % 1.0 - 0.5
