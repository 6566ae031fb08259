"""Where result layers sit: the source layer's geometry carried over to its region.

The analysed region ``[y0, x0, y1, x1]`` is in pixels of the source layer's
data. Results are placed with the source's ``scale`` and a ``translate``
shifted by the region offset, so they line up with the source in world
coordinates; a 2-D source's rotation, shear and affine are carried over too
(the offset then goes through its rotation and shear). The matrices
themselves are in :mod:`napari_sasd.geometry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .geometry import placement, plane_from, to_world, world_matrix

__all__ = ["pixel_to_world", "plane_transform", "region_geometry"]


def region_geometry(
    scale: Sequence[float],
    translate: Sequence[float],
    region: Sequence[int],
    plane: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and translate (last two axes) of layers covering ``region``.

    Parameters
    ----------
    scale, translate : sequence of float
        The source layer's ``scale`` and ``translate`` (any number of axes;
        the last two are the image plane).
    region : sequence of int
        ``[y0, x0, y1, x1]`` in source pixels.
    plane : dict, optional
        The source's ``rotate`` and ``shear`` (:func:`plane_transform`): the
        offset of the region goes through them, as napari places pixels
        (``translate + rotate @ shear @ (scale * pixel)``).

    Returns
    -------
    scale, translate : ndarray
        ``(2,)`` each: a layer whose pixel (0, 0) is source pixel (y0, x0).
    """
    return _offset(scale, translate, np.asarray(region[:2], float), plane)


def _offset(
    scale: Sequence[float], translate: Sequence[float], pixel: np.ndarray, plane: dict | None
) -> tuple[np.ndarray, np.ndarray]:
    # Scale, and the translate that puts a layer's pixel (0, 0) at ``pixel``.
    return np.asarray(scale, float)[-2:], to_world(placement(scale, translate, plane), pixel)


def pixel_to_world(layer: Any) -> np.ndarray:
    """``3 x 3`` homogeneous matrix from a layer's (row, col) pixel, in its last
    two axes, to world coordinates, as napari places it."""
    return world_matrix(layer.scale, layer.translate, plane_transform(layer))


def plane_transform(layer: Any) -> dict[str, Any]:
    """A 2-D source layer's ``rotate``, ``shear`` and ``affine`` as matrices,
    to give the result layers (empty when they are all the identity, or for
    layers of more dimensions, whose results keep only scale and translate)."""
    if getattr(layer, "ndim", 2) != 2:
        return {}
    return plane_from(layer.rotate, layer.shear, getattr(layer.affine, "affine_matrix", None))


def _plane_kwargs(plane: dict[str, Any] | None) -> dict[str, Any]:
    # Always set on 2-D result layers, identity included, so that updating a
    # layer in place also undoes a previous run's rotation.
    eye2, eye3 = np.eye(2), np.eye(3)
    plane = plane or {}
    return {
        "rotate": plane.get("rotate", eye2),
        "shear": plane.get("shear", eye2),
        "affine": plane.get("affine", eye3),
    }
