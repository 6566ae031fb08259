"""Putting result layer-data tuples into a viewer, and finding result layers there.

The viewer half of :mod:`napari_sasd.layers`: call these on the main thread
only (napari layers are not thread-safe).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import numpy as np

from .layer_meta import META_KEY
from .result import run_to_end

__all__ = [
    "apply_layer_data",
    "iter_apply_layer_data",
    "layer_key",
    "result_layers",
    "update_points",
]


def layer_key(layer) -> tuple[str, int | None] | None:
    """``(role, motif)`` of a napari-sasd result layer, ``None`` for other layers."""
    meta = getattr(layer, "metadata", {}).get(META_KEY)
    if not isinstance(meta, dict) or "role" not in meta:
        return None
    return meta["role"], meta.get("motif")


def result_layers(viewer, source: str | None, run_id: str | None = None) -> list:
    """Result layers in ``viewer`` made from ``source`` (any source if None),
    optionally of one run only."""
    out = []
    for layer in viewer.layers:
        meta = layer.metadata.get(META_KEY)
        if not isinstance(meta, dict) or "role" not in meta:
            continue
        if source is not None and meta.get("source") != source:
            continue
        if run_id is not None and meta.get("run_id") != run_id:
            continue
        out.append(layer)
    return out


def apply_layer_data(viewer, tuples: list[tuple], replace: Sequence = ()) -> list:
    """Show layer-data tuples in ``viewer`` at once; see :func:`iter_apply_layer_data`.

    Returns
    -------
    list of Layer
        The layers now showing ``tuples``, in the same order.
    """
    return run_to_end(iter_apply_layer_data(viewer, tuples, replace))


def iter_apply_layer_data(
    viewer, tuples: list[tuple], replace: Sequence = ()
) -> Generator[None, None, list]:
    """Show layer-data tuples in ``viewer``, one step per ``next()``; reuse ``replace``.

    Each step builds or adds one layer: napari building a layer and its
    controls takes up to ~0.1 s, so a caller that runs one step per Qt
    event-loop turn keeps the viewer responsive while results appear.

    A layer in ``replace`` with the same ``(role, motif)`` and type (and, for
    images, dimensionality) is updated in place (data, geometry, colours,
    metadata; its name is kept, in case the user renamed it). The other layers
    of ``replace`` are removed, new ones added. Main thread only.

    Every tuple is first built into a layer away from the viewer, so data or
    options napari rejects raise before the viewer changes; if changing the
    viewer still fails, the layers added so far are taken out again.

    Parameters
    ----------
    viewer : napari.Viewer
    tuples : list of (data, kwargs, layer_type)
        From :func:`result_layer_data`.
    replace : sequence of Layer
        The previous result layers this run supersedes (empty to keep them).

    Returns
    -------
    list of Layer
        (as the generator's return value) The layers now showing ``tuples``,
        in the same order. If the generator is closed before its end, the
        layers added so far stay.
    """
    pool = {}
    for layer in replace:
        key = layer_key(layer)
        if key is not None and layer in viewer.layers:
            pool[key] = layer
    from napari.layers import Layer

    plan, stale = [], []
    for data, kwargs, kind in tuples:
        key = (kwargs["metadata"][META_KEY]["role"], kwargs["metadata"][META_KEY].get("motif"))
        old = pool.pop(key, None)
        # Built even when an old layer will be updated instead: the check.
        new = Layer.create(data, kwargs, kind)
        yield
        if old is not None and not _can_update(old, data, kind):
            stale.append(old)
            old = None
        plan.append((old, new))
    stale.extend(pool.values())
    added: list = []
    try:
        shown = []
        for (old, new), (data, kwargs, kind) in zip(plan, tuples, strict=True):
            if old is not None:
                _update_layer(old, data, kwargs, kind)
                shown.append(old)
            else:
                viewer.layers.append(new)
                added.append(new)
                shown.append(new)
            yield
        for layer in stale:
            if layer in viewer.layers:  # the user may have removed it between steps
                viewer.layers.remove(layer)
    except Exception:
        for layer in added:
            if layer in viewer.layers:
                viewer.layers.remove(layer)
        raise
    return shown


def update_points(layer, data: np.ndarray, kwargs: dict) -> None:
    """Update a defects points layer in place from :func:`defects_layer_data`."""
    _update_layer(layer, data, kwargs, "points")


def _can_update(layer, data, kind: str) -> bool:
    if type(layer).__name__.lower() != kind:
        return False
    return kind != "image" or layer.ndim == np.ndim(data)


def _update_layer(layer, data, kwargs: dict, kind: str) -> None:
    if kind == "points":
        # Resize first (napari pads/trims features), then set the real ones.
        layer.data = data
        layer.features = kwargs["features"]
        layer.face_color = kwargs["face_color"]
        for k in ("scale", "translate", "rotate", "shear", "affine", "size", "symbol", "metadata"):
            setattr(layer, k, kwargs[k])
        layer.refresh()
        return
    layer.data = data
    for k, v in kwargs.items():
        if k not in ("name", "data"):
            setattr(layer, k, v)
