"""npe2 reader: Nanonis ``.sxm``/``.3ds`` files and napari-sasd result bundles.

Parsing lives in the napari-free :mod:`napari_sasd.nanonis` and
:mod:`napari_sasd.bundle`; this module only turns their output into
layer-data tuples. Bundles come back as the very layers the widget makes
(:func:`napari_sasd.layers.result_layer_data`: same names, colours, geometry
and ``metadata['napari_sasd']``), so they can be saved again unchanged.

A corrupt or truncated file raises a ``ValueError`` whose message is one line
naming the file, which napari shows as a notification.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import DEFAULT_COLORS, load_bundle
from .nanonis import read_3ds, read_sxm, split_unit, sweep_axis

LayerData = tuple[Any, dict[str, Any], str]
PathLike = str | os.PathLike[str]
ReaderFunction = Callable[[PathLike | Sequence[PathLike]], list[LayerData]]

__all__ = ["get_reader", "read_3ds_layers", "read_bundle_layers", "read_sxm_layers"]


def _kind(path: PathLike) -> str | None:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".sasd" and p.is_dir():
        return "bundle"
    if p.name == "record.json" and p.parent.suffix.lower() == ".sasd":
        return "bundle"
    if suffix == ".sxm" and not p.is_dir():
        return "sxm"
    if suffix == ".3ds" and not p.is_dir():
        return "3ds"
    return None


def get_reader(path: PathLike | Sequence[PathLike]) -> ReaderFunction | None:
    """Return a reader for ``path`` if this plugin can read it, else None.

    Parameters
    ----------
    path : str or list of str
        A ``.sxm`` or ``.3ds`` file, a ``NAME.sasd`` bundle folder (or its
        ``record.json``), or a list of them.

    Returns
    -------
    callable or None
        A function returning a list of layer-data tuples. Only the file name
        is checked here; reading errors are raised by that function.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or any(_kind(p) is None for p in paths):
        return None
    return _read


def _read(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    out: list[LayerData] = []
    for p in paths:
        kind = _kind(p)
        if kind == "sxm":
            out.extend(read_sxm_layers(p))
        elif kind == "3ds":
            out.extend(read_3ds_layers(p))
        else:
            out.extend(read_bundle_layers(p))
    return out


def read_sxm_layers(path: PathLike) -> list[LayerData]:
    """One image layer per channel and direction of a ``.sxm`` scan.

    Layers are named like ``"Z (fwd)"``, have ``scale`` in nm per pixel and
    ``metadata`` with ``header`` (the raw header dict), ``units`` (of the
    values, e.g. ``"m"``), ``source_path``, ``scan_angle`` and
    ``scan_direction``. Only ``Z (fwd)`` (or the first channel) is visible.
    """
    scan = read_sxm(path)
    first = "Z (fwd)" if "Z (fwd)" in scan.images else next(iter(scan.images))
    out: list[LayerData] = []
    for name, img in scan.images.items():
        meta = {
            "name": name,
            "scale": scan.pixel_size,
            "units": ("nm", "nm"),
            "colormap": "gray",
            "visible": name == first,
            "metadata": {
                "header": scan.header,
                "units": scan.units[name],
                "source_path": str(path),
                "scan_angle": scan.angle,
                "scan_direction": scan.direction,
            },
        }
        out.append((img, meta, "image"))
    return out


def read_3ds_layers(path: PathLike) -> list[LayerData]:
    """One ``(n_points, H, W)`` image layer per channel of a ``.3ds`` grid.

    The sweep axis (energy) comes first, as the multi-channel solve expects
    (``channel_axis=0``). A uniform sweep is a physical napari axis: its
    label and unit (e.g. ``"Bias"``, volts) and its values through
    ``translate``/``scale``; a non-uniform one counts points and keeps its
    values in ``metadata['sweep']`` (always there). Unmeasured points of a
    grid stopped early are NaN; ``metadata['measured_points']`` says how many
    were measured.
    """
    grid = read_3ds(path)
    out: list[LayerData] = []
    names = list(grid.channels)
    lockin = [n for n in names if n.upper().startswith("LI") or "dI" in n]
    first = lockin[0] if lockin else names[0]
    geo = sweep_layer_geometry(grid.sweep, grid.sweep_label, grid.sweep_unit)
    n_total = grid.measured.size if grid.measured is not None else 0
    for name, cube in grid.channels.items():
        meta = {
            "name": name,
            "scale": (geo["scale"], *grid.pixel_size),
            "translate": (geo["translate"], 0.0, 0.0),
            "units": (geo["unit"], "nm", "nm"),
            "axis_labels": (geo["label"], "y", "x"),
            "colormap": "gray",
            "visible": name == first,
            "metadata": {
                "header": grid.header,
                "units": split_unit(name)[1],
                "source_path": str(path),
                "sweep_signal": grid.sweep_signal,
                "sweep": grid.sweep.tolist(),
                "sweep_label": grid.sweep_label,
                "sweep_unit": grid.sweep_unit,
                "sweep_uniform": geo["uniform"],
                "measured_points": [grid.n_measured, n_total],
            },
        }
        out.append((cube, meta, "image"))
    return out


def sweep_layer_geometry(values: Sequence[float], label: str, unit: str) -> dict[str, Any]:
    """napari geometry of a sweep axis: ``scale``, ``translate``, ``unit``, ``label``.

    A uniform ascending sweep becomes a physical axis (start and step in its
    unit); otherwise the axis counts points (unit ``"pixel"``, the label says
    ``"(index)"``) and the values stay in metadata.
    """
    ax = sweep_axis(values)
    if ax is None:
        return {
            "scale": 1.0,
            "translate": 0.0,
            "unit": "pixel",
            "label": f"{label} (index)",
            "uniform": False,
        }
    if unit and not _napari_unit(unit):  # e.g. "a.u.": keep it in the label instead
        label, unit = f"{label} ({unit})", ""
    return {
        "scale": ax[1],
        "translate": ax[0],
        "unit": unit or "pixel",
        "label": label,
        "uniform": True,
    }


def _napari_unit(unit: str) -> bool:
    """Whether napari (through pint) understands ``unit`` as the physical unit meant."""
    import re

    if re.fullmatch(r"(?i)\s*(a\.?\s*u\.?|arb.*)\s*", unit):
        return False  # arbitrary units; pint would read "a.u." as years x atomic mass units
    try:
        import pint

        pint.get_application_registry().Unit(unit)
    except Exception:  # pint raises several kinds for an unknown unit
        return False
    return True


def read_bundle_layers(path: PathLike) -> list[LayerData]:
    """The result layers of a saved bundle, as the widget shows them."""
    from .geometry import plane_from
    from .layers import META_KEY, result_layer_data

    b = load_bundle(path)
    rec = b.record
    source = rec.get("source") or Path(b.path or path).stem
    tuples = result_layer_data(
        b.to_result(),
        b.defects,
        source=source,
        region=rec.get("region") or [0, 0, *b.activations.shape[-2:]],
        scale=rec.get("scale") or (1.0, 1.0),
        translate=rec.get("translate") or (0.0, 0.0),
        source_path=rec.get("source_path"),
        run_id=rec.get("run_id"),
        threshold=rec.get("threshold"),
        plane=plane_from(rec.get("rotate"), rec.get("shear"), rec.get("affine")),
    )
    colors = list(rec.get("colors") or [])
    # Everything in the record rides along in each layer's metadata, so saving
    # these layers again writes the same record.
    for _, kw, _ in tuples:
        kw["metadata"][META_KEY] = {**rec, **kw["metadata"][META_KEY]}
    _apply_colors(tuples, colors)
    _apply_units(tuples, rec)
    return tuples


def _apply_units(tuples: list[LayerData], rec: dict[str, Any]) -> None:
    """The record's units on the layers: ``space_units`` on the image plane and,
    for a cube's motifs, the sweep's unit when it is a uniform axis.

    napari stops using units as soon as two layers disagree, so a bundle
    opened beside its scan (nm; a grid's bias in volts) must say the same.
    """
    space = str(rec.get("space_units") or "")
    if space in ("", "px", "pixel") or not _napari_unit(space):
        return
    sweep = rec.get("sweep") if isinstance(rec.get("sweep"), dict) else {}
    su = str(sweep.get("unit") or "") if sweep.get("uniform") else ""
    su = su if su and _napari_unit(su) else "pixel"
    for data, kw, kind in tuples:
        nd = int(np.shape(data)[1]) if kind == "points" else int(np.ndim(data))
        if nd == 2:
            kw["units"] = (space, space)
        elif nd == 3:
            kw["units"] = (su, space, space)


def _apply_colors(tuples: list[LayerData], colors: list[str]) -> None:
    """Use the record's colours when they differ from the default palette."""
    n = len(colors)
    if not n or colors == [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(n)]:
        return
    from napari.utils.colormaps import Colormap
    from napari.utils.colormaps.standardize_color import transform_color

    from .layers import META_KEY

    rgba = np.array([transform_color(c)[0] for c in colors])
    for data, kw, _ in tuples:
        meta = kw["metadata"][META_KEY]
        role, motif = meta.get("role"), meta.get("motif")
        if role == "activation" and motif is not None and motif < n:
            kw["colormap"] = Colormap(
                colors=np.array([[0.0, 0.0, 0.0, 1.0], rgba[motif]]),
                name=f"napari-sasd {colors[motif]}",
            )
            meta["color"] = colors[motif]
        elif role == "motifs" and motif is not None and motif < n:
            meta["color"] = colors[motif]
        elif role == "defects" and len(data):
            m = np.asarray(kw["features"]["motif"], int)
            kw["face_color"] = rgba[np.clip(m, 0, n - 1)]
