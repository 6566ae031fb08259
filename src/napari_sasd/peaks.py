"""Defect positions from activation maps (peaks), napari-free."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.feature import peak_local_max


@dataclass
class Defects:
    """A table of detected defects.

    Attributes
    ----------
    positions : ndarray
        ``(M, 2)`` float (row, col) in pixels of the analysed image.
    motif : ndarray
        ``(M,)`` int, which motif each defect is a copy of.
    amplitude : ndarray
        ``(M,)`` float, the activation value at the peak (image units).
    """

    positions: np.ndarray
    motif: np.ndarray
    amplitude: np.ndarray

    def __len__(self) -> int:
        return len(self.motif)

    def counts(self, n_motifs: int) -> np.ndarray:
        """Number of defects per motif, ``(n_motifs,)``."""
        return np.bincount(self.motif, minlength=n_motifs)


def default_threshold(activations: np.ndarray) -> float:
    """A peak threshold relative to the activations: a quarter of the 99.9th
    percentile of the non-zero amplitudes (robust to a few outliers)."""
    nz = activations[activations > 0]
    if nz.size == 0:
        return 0.0
    return 0.25 * float(np.percentile(nz, 99.9))


def find_defects(
    activations: np.ndarray,
    threshold: float | Sequence[float] | None = None,
    min_distance: int = 1,
    *,
    relative: bool = False,
    per_motif: bool = False,
) -> Defects:
    """Find defect copies as local maxima of each motif's activation map.

    Parameters
    ----------
    activations : ndarray
        ``(N, H, W)`` activation maps (``SolveResult.activations``).
    threshold : float or sequence of float, optional
        Smallest amplitude counted as a defect (image units), or, with
        ``relative=True``, a fraction of the largest amplitude over all maps
        (of each motif's map with ``per_motif``); one value, or one per motif.
        Default: :func:`default_threshold`.
    min_distance : int
        Minimum distance in pixels between two peaks of the same motif.
    relative : bool
        Interpret ``threshold`` as a fraction of the largest amplitude.
    per_motif : bool
        Take the default or relative threshold from each motif's own map
        instead of all maps together, so that a faint kind of defect is not
        held to a bright one's strength (an absolute threshold is the same
        for all motifs either way).

    Returns
    -------
    Defects
        Empty (with its columns) when nothing passes the threshold, or for
        ``(0, H, W)`` maps.

    Raises
    ------
    ValueError
        Maps that are not ``(N, H, W)`` or hold NaN/inf, a NaN threshold.
    """
    acts = np.asarray(activations)
    if acts.ndim != 3:
        raise ValueError(f"activations must be (n_motifs, H, W), got shape {acts.shape}")
    _check_finite(acts)
    thr = motif_thresholds(acts, threshold, relative=relative, per_motif=per_motif)
    # Seeded with an empty table: no motif (0, H, W) is no defect.
    pos, mot, amp = [np.zeros((0, 2))], [np.zeros(0, int)], [np.zeros(0)]
    for n, x in enumerate(acts):
        # skimage's peak_local_max: plateau handling and min_distance done right.
        p = peak_local_max(
            x,
            min_distance=max(1, int(min_distance)),
            threshold_abs=max(float(thr[n]), 1e-12),
            exclude_border=False,
        )
        pos.append(p.astype(float))
        mot.append(np.full(len(p), n, int))
        amp.append(x[tuple(p.T)] if len(p) else np.zeros(0))
    return Defects(
        np.concatenate(pos).reshape(-1, 2), np.concatenate(mot), np.concatenate(amp).astype(float)
    )


def motif_thresholds(
    activations: np.ndarray,
    threshold: float | Sequence[float] | None = None,
    *,
    relative: bool = False,
    per_motif: bool = False,
) -> np.ndarray:
    """The amplitude threshold of each motif's map, ``(N,)``, in image units,
    as :func:`find_defects` applies it (same parameters)."""
    acts = np.asarray(activations)
    maps = [acts[n : n + 1] for n in range(len(acts))] if per_motif else [acts] * len(acts)
    if threshold is None:
        return np.array([default_threshold(m) for m in maps], float)
    try:
        thr = np.broadcast_to(np.asarray(threshold, float), (len(acts),)).copy()
    except ValueError:
        raise ValueError(
            f"threshold: one value or one per motif ({len(acts)}), got {threshold!r}"
        ) from None
    if np.isnan(thr).any():
        # NaN compares false with everything: it would silently find nothing.
        raise ValueError(f"threshold must be a number, got {threshold!r}")
    if relative:
        _check_finite(acts)
        thr *= [float(m.max(initial=0.0)) for m in maps]
    return thr


def _check_finite(acts: np.ndarray) -> None:
    # One inf would make every relative or default threshold inf (no defect
    # for any motif), a NaN none: say which map is broken instead.
    bad = ~np.isfinite(acts).reshape(len(acts), -1).all(axis=1) if acts.size else []
    if np.any(bad):
        n = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"activation map of motif {n + 1} contains NaN or inf; the activations of a "
            "solve are finite: was the map edited or read from a damaged file?"
        )
