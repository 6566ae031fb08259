"""The ``metadata['napari_sasd']`` of a result layer: what it shows and of which run.

The bundle writer and the reader rely on it (its role, motif, source, region,
solver parameters); a re-run finds its own layers by ``run_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .bundle import _jsonable
from .layer_colors import motif_color
from .result import SolveResult

__all__ = ["META_KEY", "ROLES", "result_metadata"]

#: Metadata key of every result layer (the bundle writer relies on it).
META_KEY = "napari_sasd"
#: What a result layer shows (``metadata[META_KEY]["role"]``).
ROLES = ("motifs", "activation", "defects", "reconstruction", "residual", "scars", "lattice")


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
