"""From a :class:`~napari_sasd.SolveResult` to napari layers.

Two halves: pure functions that turn a result into layer-data tuples
(``(data, kwargs, layer_type)``, no viewer needed, easy to test), and
:func:`apply_layer_data`, which puts those tuples into a viewer, updating the
previous result layers of the same source in place. Call the latter on the main
thread only (napari layers are not thread-safe).

Geometry: the analysed region ``[y0, x0, y1, x1]`` is in pixels of the source
layer's data. Results are placed with the source's ``scale`` and a
``translate`` shifted by the region offset, so they line up with the source in
world coordinates; a 2-D source's rotation, shear and affine are carried over
too (the offset then goes through its rotation and shear).
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from ._version import __version__
from .bundle import DEFAULT_COLORS, _jsonable
from .geometry import placement, plane_from, to_world, world_matrix
from .peaks import Defects
from .result import SolveResult

#: Metadata key of every result layer (the bundle writer relies on it).
META_KEY = "napari_sasd"
#: One colour per motif, readable on a black background and distinct from
#: each other; cycles after eight motifs. One palette for layers and bundles.
PALETTE = DEFAULT_COLORS
ROLES = ("motifs", "activation", "defects", "reconstruction", "residual", "scars", "lattice")
#: Pixels between the region's right edge and the motifs, and between motifs.
MOTIF_GAP = 3


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


def result_metadata(
    role: str,
    result: SolveResult,
    *,
    region: Sequence[int],
    source: str,
    source_path: str | None = None,
    seed: int | None = None,
    motif: int | None = None,
    run_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON-serialisable ``metadata['napari_sasd']`` dict of a result layer.

    Parameters
    ----------
    role : str
        One of :data:`ROLES`.
    result : SolveResult
        The solve the layer shows.
    region : sequence of int
        ``[y0, x0, y1, x1]`` analysed, in source pixels.
    source, source_path : str
        Name of the source layer and the file it came from (if any).
    seed : int, optional
        Random seed of the solve (default: ``result.params['seed']``).
    motif : int, optional
        Motif index, for per-motif layers (activation maps, motifs).
    run_id : str, optional
        Identifies the run, so a re-run replaces exactly its own layers.
    **extra
        More JSON-serialisable entries (e.g. the detection threshold).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if seed is None:
        seed = result.params.get("seed")
    meta: dict[str, Any] = {
        "role": role,
        "params": _jsonable(result.params),
        "lam": float(result.lam),
        "region": [int(v) for v in region],
        "source": str(source),
        "source_path": None if source_path is None else str(source_path),
        "color": motif_color(motif) if motif is not None else None,
        "version": __version__,
        "seed": None if seed is None else int(seed),
        "run_id": run_id,
    }
    if motif is not None:
        meta["motif"] = int(motif)
    if role == "motifs":
        meta["kernel_size"] = list(result.kernel_size)
    meta.update(_jsonable(extra))
    return meta


def defects_layer_data(
    defects: Defects,
    result: SolveResult,
    *,
    scale: Sequence[float],
    translate: Sequence[float],
    region: Sequence[int],
    source: str,
    source_path: str | None = None,
    run_id: str | None = None,
    threshold: float | Sequence[float] | None = None,
    threshold_relative: float | None = None,
    plane: dict[str, Any] | None = None,
    significance: float | None = None,
) -> tuple:
    """Points layer-data tuple of the defects, coloured by motif.

    Point positions are in pixels of the analysed region; ``scale`` and
    ``translate`` (from :func:`region_geometry`) and the source's ``plane``
    transform (:func:`plane_transform`) place them in the world.
    ``threshold`` (image units) and ``threshold_relative`` (fraction of the
    strongest copy) are recorded in the metadata, and ``significance`` (the
    copies' smallest amplitude in units of their local noise) when given.
    """
    n = len(defects)
    pos = np.asarray(defects.positions, float).reshape(n, 2)
    motif = np.asarray(defects.motif, int).reshape(n)
    kh, kw = result.kernel_size
    meta = result_metadata(
        "defects",
        result,
        region=region,
        source=source,
        source_path=source_path,
        run_id=run_id,
        threshold=threshold,
        threshold_relative=threshold_relative,
        counts=defects.counts(result.n_motifs).tolist(),
        **({} if significance is None else {"significance": float(significance)}),
    )
    kwargs = {
        "name": f"{source} defects",
        "scale": tuple(scale),
        "translate": tuple(translate),
        # features before face_color: the colours are per point.
        "features": {"motif": motif, "amplitude": np.asarray(defects.amplitude, float)},
        "face_color": _face_colors(motif),
        "symbol": "ring",
        "size": max(4.0, 0.6 * max(kh, kw)),
        "border_width": 0.0,
        "metadata": {META_KEY: meta},
        **_plane_kwargs(plane),
    }
    return pos, kwargs, "points"


def _face_colors(motif: np.ndarray) -> np.ndarray | str:
    # One colour per point; with no point, one colour for the layer: napari
    # takes the min/max of a per-point colour array, which fails when empty.
    return motif_rgba(motif).reshape(-1, 4) if len(motif) else motif_color(0)


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


def result_layer_data(
    result: SolveResult,
    defects: Defects,
    *,
    source: str,
    region: Sequence[int],
    scale: Sequence[float] = (1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0),
    source_path: str | None = None,
    analysed: np.ndarray | None = None,
    with_reconstruction: bool = False,
    run_id: str | None = None,
    threshold: float | Sequence[float] | None = None,
    threshold_relative: float | None = None,
    plane: dict[str, Any] | None = None,
    significance: float | None = None,
) -> list[tuple]:
    """All result layers of a solve, as napari layer-data tuples.

    Parameters
    ----------
    result : SolveResult
        The solve.
    defects : Defects
        Peaks of ``result.activations`` (:func:`napari_sasd.find_defects`).
    source : str
        Name of the source image layer (prefixes the layer names).
    region : sequence of int
        ``[y0, x0, y1, x1]`` analysed, in source pixels.
    scale, translate : sequence of float
        The source layer's ``scale`` and ``translate``; 3 axes for a
        spectroscopy cube (the channel axis first), else 2 (or more: only the
        last two are used).
    source_path : str, optional
        File the source came from.
    analysed : ndarray, optional
        The image that was solved (after flattening); needed for the residual.
    with_reconstruction : bool
        Also return reconstruction and residual layers.
    run_id : str, optional
        Run identifier stored in the metadata; a new one if not given.
    threshold, threshold_relative : float, optional
        Detection threshold used for ``defects``, in image units (one per
        motif when each had its own) and as a fraction of the strongest copy
        (stored in the metadata).
    plane : dict, optional
        A 2-D source's rotation, shear and affine (:func:`plane_transform`),
        given to every 2-D result layer.
    significance : float, optional
        The detection's significance (recorded with the defects).

    Returns
    -------
    list of (data, kwargs, layer_type)
        Motifs (one image per motif, right of the region), activation maps
        (one additive image per motif), defects (points), and optionally
        reconstruction and residual.
    """
    run_id = run_id or uuid.uuid4().hex
    common = {"region": region, "source": source, "source_path": source_path, "run_id": run_id}
    cube = result.kernels.ndim == 4
    if cube:
        plane = None
    s2, t2 = region_geometry(scale, translate, region, plane)
    # 2-D layers carry the source's rotation, shear and affine; a cube's
    # results (3-D motifs) keep scale and translate only.
    geo2 = {} if cube else _plane_kwargs(plane)
    # The channel axis (cube) keeps the source's scale/translate on axis 0.
    s_lead = [float(np.asarray(scale)[-3])] if cube and len(scale) >= 3 else [1.0] * cube
    t_lead = [float(np.asarray(translate)[-3])] if cube and len(translate) >= 3 else [0.0] * cube
    kh = result.kernel_size[0]
    y0, x1 = int(region[0]), int(region[3])
    out: list[tuple] = []
    for n in range(result.n_motifs):
        k = np.asarray(result.kernels[n], np.float32)
        lim = float(np.abs(k).max()) or 1.0
        # Beside the region, one under the other, at the source's pixel size.
        off = np.array([y0 + n * (kh + MOTIF_GAP), x1 + MOTIF_GAP], float)
        t = _offset(scale, translate, off, plane)[1]
        out.append(
            (
                k,
                {
                    "name": f"{source} motif {n + 1}",
                    "scale": (*s_lead, *s2),
                    "translate": (*t_lead, *t),
                    "colormap": "gray",
                    # Symmetric limits: zero is mid-grey, dips read as dark.
                    "contrast_limits": (-lim, lim),
                    "metadata": {META_KEY: result_metadata("motifs", result, motif=n, **common)},
                    **geo2,
                },
                "image",
            )
        )
    for n in range(result.n_motifs):
        a = np.asarray(result.activations[n], np.float32)
        hi = float(a.max()) if a.size and a.max() > 0 else 1.0
        out.append(
            (
                a,
                {
                    "name": f"{source} activation {n + 1}",
                    "scale": tuple(s2),
                    "translate": tuple(t2),
                    "colormap": motif_colormap(n),
                    "contrast_limits": (0.0, hi),
                    "blending": "additive",
                    "metadata": {
                        META_KEY: result_metadata("activation", result, motif=n, **common)
                    },
                    **_plane_kwargs(plane),
                },
                "image",
            )
        )
    out.append(
        defects_layer_data(
            defects,
            result,
            scale=s2,
            translate=t2,
            threshold=threshold,
            threshold_relative=threshold_relative,
            plane=plane,
            significance=significance,
            **common,
        )
    )
    if with_reconstruction:
        rec = np.asarray(result.reconstruction, np.float32)
        geo = {"scale": (*s_lead, *s2), "translate": (*t_lead, *t2), **geo2}
        out.append(
            (
                rec,
                {
                    "name": f"{source} reconstruction",
                    "colormap": "gray",
                    "metadata": {META_KEY: result_metadata("reconstruction", result, **common)},
                    **geo,
                },
                "image",
            )
        )
        if analysed is not None:
            res = np.asarray(analysed, np.float32) - rec
            out.append(
                (
                    res,
                    {
                        "name": f"{source} residual",
                        "colormap": "gray",
                        "metadata": {META_KEY: result_metadata("residual", result, **common)},
                        **geo,
                    },
                    "image",
                )
            )
    return out


def prepared_layer_data(
    role: str,
    data: np.ndarray,
    result: SolveResult,
    *,
    source: str,
    region: Sequence[int],
    scale: Sequence[float] = (1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0),
    source_path: str | None = None,
    run_id: str | None = None,
    plane: dict[str, Any] | None = None,
    **extra: Any,
) -> tuple:
    """Layer-data tuple of what the data was prepared with, over the region.

    ``role`` ``"scars"``: ``data`` is the ``(H, W)`` scar mask (or the user's
    edited labels), shown as a Labels layer ``"<source> scars"`` to correct
    and re-run with. ``"lattice"``: the ``(H, W)`` periodic background that
    was removed, a hidden image ``"<source> lattice"``. Both sit over the
    analysed region like the activation maps.
    """
    if role not in ("scars", "lattice"):
        raise ValueError(f"role must be 'scars' or 'lattice', got {role!r}")
    s2, t2 = region_geometry(scale, translate, region, plane)
    meta = result_metadata(
        role, result, region=region, source=source, source_path=source_path, run_id=run_id,
        **extra,
    )  # fmt: skip
    kwargs: dict[str, Any] = {
        "name": f"{source} {role}",
        "scale": tuple(s2),
        "translate": tuple(t2),
        "metadata": {META_KEY: meta},
        **_plane_kwargs(plane),
    }
    if role == "scars":
        labels = np.asarray(data)
        if labels.dtype == bool:
            labels = labels.astype(np.uint8)
        kwargs["opacity"] = 0.5
        return labels, kwargs, "labels"
    lat = np.asarray(data, np.float32)
    lim = float(np.abs(lat).max()) or 1.0
    # Hidden: the user looks at it when wanted (the eye icon), and it never
    # covers the scan by surprise.
    kwargs.update(colormap="gray", contrast_limits=(-lim, lim), opacity=0.5, visible=False)
    return lat, kwargs, "image"


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
    steps = iter_apply_layer_data(viewer, tuples, replace)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


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


def _hex_to_rgba(c: str) -> np.ndarray:
    c = c.lstrip("#")
    return np.array([int(c[i : i + 2], 16) / 255 for i in (0, 2, 4)] + [1.0])
