"""From a :class:`~napari_sasd.SolveResult` to napari layers.

Pure functions that turn a result into layer-data tuples (``(data, kwargs,
layer_type)``, no viewer needed, easy to test). The parts they use, each in
its own module and importable from here too: the colours
(:mod:`~napari_sasd.layer_colors`), the placement over the source
(:mod:`~napari_sasd.layer_geometry`), the metadata
(:mod:`~napari_sasd.layer_meta`), and putting the tuples into a viewer,
updating the previous result layers of the same source in place
(:mod:`~napari_sasd.layer_apply`, main thread only).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from .layer_apply import (
    apply_layer_data,
    iter_apply_layer_data,
    layer_key,
    result_layers,
    update_points,
)
from .layer_colors import PALETTE, motif_color, motif_colormap, motif_rgba
from .layer_geometry import (
    _offset,
    _plane_kwargs,
    pixel_to_world,
    plane_transform,
    region_geometry,
)
from .layer_meta import META_KEY, ROLES, result_metadata
from .peaks import Defects
from .result import SolveResult

__all__ = [
    "META_KEY",
    "MOTIF_GAP",
    "PALETTE",
    "ROLES",
    "apply_layer_data",
    "defects_layer_data",
    "iter_apply_layer_data",
    "layer_key",
    "motif_color",
    "motif_colormap",
    "motif_rgba",
    "pixel_to_world",
    "plane_transform",
    "prepared_layer_data",
    "region_geometry",
    "result_layer_data",
    "result_layers",
    "result_metadata",
    "update_points",
]

#: Pixels between the region's right edge and the motifs, and between motifs.
MOTIF_GAP = 3


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
