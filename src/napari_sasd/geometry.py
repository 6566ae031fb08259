"""Where napari draws a pixel: the 2-D placement of layers and bundles, napari-free.

napari puts pixel ``p`` of a layer at ``affine(translate + rotate @ shear @
(scale * p))`` in the world. Result layers, bundle records and the labels mask
all go through these matrices, so they agree with each other and with napari.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def plane_from(rotate: Any = None, shear: Any = None, affine: Any = None) -> dict[str, Any]:
    """A 2-D placement's rotation, shear and affine as matrices, from
    napari-style values (a layer's, a layer-data tuple's or a bundle record's):
    rotation matrix, shear matrix or its upper-triangular value, ``3 x 3``
    affine; None for the identity. Empty unless 2-D and not the identity."""
    eye2 = np.eye(2)
    r = eye2 if rotate is None else np.asarray(rotate, float)
    sh = eye2 if shear is None else np.asarray(shear, float)
    if sh.ndim < 2:  # napari's upper-triangular values
        sh = np.array([[1.0, float(sh.reshape(-1)[0])], [0.0, 1.0]])
    a = np.eye(3) if affine is None else np.asarray(affine, float)
    if r.shape != (2, 2) or sh.shape != (2, 2) or a.shape != (3, 3):
        return {}
    if all(np.allclose(m, np.eye(len(m))) for m in (r, sh, a)):
        return {}
    return {"rotate": r, "shear": sh, "affine": a}


def placement(
    scale: Sequence[float], translate: Sequence[float], plane: dict[str, Any] | None = None
) -> np.ndarray:
    """``3 x 3`` homogeneous matrix from (row, col) pixels to napari's
    physical coordinates (before the affine): ``translate + rotate @ shear @
    (scale * p)``, from the last two axes of ``scale`` and ``translate``."""
    m = np.eye(3)
    lin = np.diag(np.asarray(scale, float)[-2:])
    if plane:
        lin = plane["rotate"] @ plane["shear"] @ lin
    m[:2, :2], m[:2, 2] = lin, np.asarray(translate, float)[-2:]
    return m


def world_matrix(
    scale: Sequence[float], translate: Sequence[float], plane: dict[str, Any] | None = None
) -> np.ndarray:
    """``3 x 3`` homogeneous matrix from (row, col) pixels to world coordinates."""
    m = placement(scale, translate, plane)
    return plane["affine"] @ m if plane else m


def to_world(matrix: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``(M, 2)`` pixels through a ``3 x 3`` homogeneous matrix."""
    return np.asarray(pixels, float) @ matrix[:2, :2].T + matrix[:2, 2]
