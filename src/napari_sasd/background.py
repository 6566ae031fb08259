"""Background terms of the image model, napari-free.

The model of a scan is ``image = background + sum_n a_n * x_n + noise``: the
motifs and their copies are what the solver learns, the background is what it
should not. A background term is one part of that background (a constant,
per-line offsets, an atomic lattice, ...), estimated from the image before the
solve and subtracted, so that motifs are the departures from it.

Every term has the same small interface, :class:`BackgroundTerm`, so a
pipeline can hold a list of them instead of one branch per kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["BackgroundTerm", "remove_background"]


@runtime_checkable
class BackgroundTerm(Protocol):
    """One part of an image's background, estimated from the image.

    Attributes
    ----------
    name : str
        Short name for layers, logs and records (e.g. ``"lattice"``).

    Methods
    -------
    fit(image, mask=None) -> ndarray
        The term's estimate, an array of ``image``'s shape (``(H, W)`` or
        ``(C, H, W)``), finite everywhere (also at NaN or masked pixels), and
        zero when the term is absent from the image. ``mask`` is ``(H, W)``
        bool, True where a pixel is observed; NaN pixels count as unobserved.
        Must not modify ``image``.
    """

    name: str

    def fit(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray: ...


def remove_background(
    image: np.ndarray, terms: Sequence[BackgroundTerm], mask: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fit the terms one after the other, each on what the previous left.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` or ``(C, H, W)`` float image (NaN allowed).
    terms : sequence of BackgroundTerm
        Applied in order; put the coarse ones (plane, line offsets) first.
    mask : ndarray of bool, optional
        ``(H, W)``, True where a pixel is observed.

    Returns
    -------
    remainder : ndarray
        ``image`` minus all fitted terms (NaN stays NaN).
    fits : dict
        Each term's fit by its ``name``.
    """
    rest = np.asarray(image, dtype=np.float64)
    fits: dict[str, np.ndarray] = {}
    for term in terms:
        f = np.asarray(term.fit(rest, mask), dtype=np.float64)
        if f.shape != rest.shape:
            raise ValueError(f"background term {term.name!r} returned {f.shape}, not {rest.shape}")
        fits[term.name] = f
        rest = rest - f
    return rest, fits
