"""The motifs' colours in napari: one colour per motif, for layers, plots and bundles."""

from __future__ import annotations

import numpy as np

from .bundle import DEFAULT_COLORS

__all__ = ["PALETTE", "motif_color", "motif_colormap", "motif_rgba"]

#: One colour per motif, readable on a black background and distinct from
#: each other; cycles after eight motifs. One palette for layers and bundles.
PALETTE = DEFAULT_COLORS


def motif_color(n: int) -> str:
    """Hex colour of motif ``n`` (0-based), from :data:`PALETTE`."""
    return PALETTE[n % len(PALETTE)]


def motif_rgba(n: int | np.ndarray) -> np.ndarray:
    """RGBA in [0, 1] of motif(s) ``n``: ``(4,)`` or ``(M, 4)``."""
    table = np.array([_hex_to_rgba(c) for c in PALETTE])
    return table[np.asarray(n) % len(PALETTE)]


def motif_colormap(n: int):
    """A black-to-colour napari colormap for motif ``n``'s activation map.

    Black is transparent under additive blending, so several activation maps
    (and the image below) stay visible together.
    """
    from napari.utils.colormaps import Colormap

    rgba = _hex_to_rgba(motif_color(n))
    return Colormap(
        colors=np.array([[0.0, 0.0, 0.0, 1.0], rgba]), name=f"napari-sasd motif {n + 1}"
    )


def _hex_to_rgba(c: str) -> np.ndarray:
    c = c.lstrip("#")
    return np.array([int(c[i : i + 2], 16) / 255 for i in (0, 2, 4)] + [1.0])
