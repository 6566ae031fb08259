"""npe2 writer: save napari-sasd result layers as a bundle ``NAME.sasd/``.

napari's built-in writers already save a single layer well (an image as TIFF,
points as CSV with the ``features`` -- ``motif``, ``amplitude`` -- as
columns, coordinates in data pixels), so this writer only adds what they
cannot: one folder with motifs, activations, defects in source pixels *and*
world units, and the run's record (see :mod:`napari_sasd.bundle`).

The layers are recognised by ``metadata['napari_sasd']`` (written by
:func:`napari_sasd.layers.result_layer_data`): ``role`` is ``"motifs"``
(one image per motif, key ``motif``), ``"activation"`` (one per motif) or
``"defects"`` (points with features ``motif`` and ``amplitude``); the other
keys (``params``, ``lam``, ``seed``, ``region``, ``source``,
``source_path``, ``version``, ``threshold``, ``run_id``...) form the record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .bundle import BundleError, bundle_path, write_bundle_files
from .geometry import placement, plane_from
from .peaks import Defects

META_KEY = "napari_sasd"  # same as napari_sasd.layers.META_KEY (kept Qt/napari-free)
# Keys that describe one layer, not the run.
_PER_LAYER = ("role", "motif", "color", "counts")

__all__ = ["write_bundle"]


def _features(meta: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    feats = meta.get("features")
    if feats is None or (n and len(feats) == 0):
        raise ValueError("the defects layer has no 'motif'/'amplitude' features")
    if n == 0:
        return np.zeros(0, int), np.zeros(0)
    motif = np.asarray(feats["motif"]).astype(int)
    amp = np.asarray(feats["amplitude"], float)
    return motif, amp


def write_bundle(path: str, layer_data: list[tuple[Any, dict, str]]) -> list[str]:
    """Write napari-sasd result layers to a bundle folder.

    Parameters
    ----------
    path : str
        Target; ``.sasd`` is appended when missing.
    layer_data : list of (data, meta, layer_type)
        The selected layers (npe2 multi-layer writer signature). Needs the
        activation image layers of one run (its motif layers and defects
        points layer too, when present) with ``metadata['napari_sasd']``.

    Returns
    -------
    list of str
        The bundle folder written.

    Raises
    ------
    ValueError
        When the layers are not napari-sasd results (one-line message).
    """
    out = bundle_path(path)
    motifs: dict[int, np.ndarray] = {}
    acts: dict[int, np.ndarray] = {}
    defects: Defects | None = None
    metas: list[dict[str, Any]] = []
    geo: dict[str, Any] = {}
    for data, meta, kind in layer_data:
        m = (meta.get("metadata") or {}).get(META_KEY)
        if not isinstance(m, dict) or "role" not in m:
            continue
        role = m["role"]
        if role == "motifs" and kind == "image":
            motifs[int(m.get("motif", len(motifs)))] = np.asarray(data)
            # A cube's motif layers hold the channel axis's scale and translate.
            geo.setdefault("motif_scale", meta.get("scale"))
            geo.setdefault("motif_translate", meta.get("translate"))
        elif role == "activation" and kind == "image":
            acts[int(m.get("motif", len(acts)))] = np.asarray(data)
            geo.setdefault("scale", meta.get("scale"))
            geo.setdefault("translate", meta.get("translate"))
            geo.setdefault(
                "plane", plane_from(meta.get("rotate"), meta.get("shear"), meta.get("affine"))
            )
        elif role == "defects" and kind == "points":
            pos = np.asarray(data, float)
            # (N, D) points, N may be 0 (no defect found); the last two axes.
            pos = (pos if pos.ndim == 2 else pos.reshape(-1, 2))[:, -2:]
            try:
                motif, amp = _features(meta, len(pos))
            except (KeyError, ValueError) as exc:
                raise BundleError(out, f"cannot save the defects: {exc}") from None
            defects = Defects(pos, motif, amp)
        else:
            continue
        metas.append(m)
    runs = list(dict.fromkeys(m.get("run_id") for m in metas if m.get("run_id") is not None))
    if len(runs) > 1:
        # e.g. 'Save All Layers' with 'Keep previous results': one run's maps
        # would silently be saved with another run's record and defects.
        raise BundleError(
            out,
            f"the selected layers come from {len(runs)} different runs: select the result "
            "layers of one run only",
        )
    if not acts:
        raise BundleError(
            out,
            "select the result layers of a napari-sasd run (activation maps, motifs, "
            "defects) to save a bundle",
        )
    n = max(acts) + 1
    if sorted(acts) != list(range(n)):
        raise BundleError(out, f"activation maps of motifs {sorted(acts)} only: select all {n}")
    activations = np.stack([acts[i] for i in range(n)])
    if sorted(motifs) == list(range(n)):
        kernels = np.stack([motifs[i] for i in range(n)])
    else:
        # Motif layers not selected: the bundle still needs kernels; zeros of
        # the recorded size say "not saved" rather than inventing them.
        ks = next((m.get("kernel_size") for m in metas if m.get("kernel_size")), [1, 1])
        kernels = np.zeros((n, *ks), np.float32)

    record: dict[str, Any] = {}
    for m in metas:  # later layers do not override earlier ones' run keys
        for k, v in m.items():
            if k not in _PER_LAYER:
                record.setdefault(k, v)
    record["n_motifs"] = n
    record["kernel_size"] = list(kernels.shape[-2:])
    colors = {int(m["motif"]): m["color"] for m in metas if m.get("color") and "motif" in m}
    if len(colors) == n:
        record["colors"] = [colors[i] for i in range(n)]
    region = record.get("region") or [0, 0, *activations.shape[-2:]]
    record["region"] = [int(v) for v in region]
    if "scale" not in record and geo.get("scale") is not None:
        # The activation layers sit at the source's scale, shifted by the region.
        s = np.asarray(geo["scale"], float)[-2:]
        t = np.asarray(geo.get("translate") or (0.0, 0.0), float)[-2:]
        # The region's offset went through the source's scale, rotation and shear.
        plane = geo.get("plane")
        t = t - placement(s, (0.0, 0.0), plane)[:2, :2] @ np.asarray(region[:2], float)
        record.update(plane or {})
        ms, mt = geo.get("motif_scale"), geo.get("motif_translate")
        if kernels.ndim == 4 and ms is not None and len(ms) >= 3:
            # A cube: the channel axis first, as the source layer has it.
            s = np.concatenate([[float(ms[-3])], s])
            t = np.concatenate([[float(mt[-3]) if mt is not None else 0.0], t])
        record["scale"] = s.tolist()
        record["translate"] = t.tolist()
    if defects is None:
        defects = Defects(np.zeros((0, 2)), np.zeros(0, int), np.zeros(0))
    # The quick look every bundle holds. The source image is not among the
    # result layers, so the picture shows the strongest activation per pixel.
    from .quicklook import bundle_pictures

    source = record.get("source") or out.stem
    pictures = bundle_pictures(
        np.max(activations, axis=0) if len(activations) else np.zeros(activations.shape[-2:]),
        defects,
        kernels,
        colors=record.get("colors"),
        title=f"{source} (activation maps)",
    )
    folder = write_bundle_files(out, kernels, activations, defects, record, extra_files=pictures)
    return [str(Path(folder))]
