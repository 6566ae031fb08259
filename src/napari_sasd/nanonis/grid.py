"""The Nanonis ``.3ds`` grid spectroscopy reader: :class:`Grid`, :func:`read_3ds`,
the :class:`PartialGridWarning` it gives for a grid stopped early, the row
orientation test (:func:`_grid_is_bottom_up`), and the sweep-axis helpers
(:func:`sweep_axis`, :func:`sweep_record`) the reader, CLI and bundles share.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._common import NanonisError, _read_head, split_unit

_3DS_END = b":HEADER_END:"
# Largest grid (float32 values, all channels and parameters) read_3ds
# allocates: 8 GB. A header declaring more is refused before any allocation.
_MAX_GRID_VALUES = 1 << 31


class PartialGridWarning(UserWarning):
    """A ``.3ds`` grid was stopped before its end: only some points are measured."""


@dataclass
class Grid:
    """A Nanonis ``.3ds`` grid spectroscopy file.

    Attributes
    ----------
    channels : dict of str to ndarray
        One ``(n_points, H, W)`` float32 cube per recorded channel (energy or
        sweep axis first), row 0 at the top of the grid.
    sweep : ndarray
        ``(n_points,)`` sweep-signal values, ascending (from the first
        measured point's ``Sweep Start``/``Sweep End`` fixed parameters,
        else ``0..n-1``).
    sweep_signal : str
        Name of the swept signal, e.g. ``"Bias (V)"``.
    parameters : dict of str to ndarray
        Per-pixel fixed and experiment parameters, each ``(H, W)``.
    header : dict of str to str
        The raw header.
    pixel_size : (float, float)
        ``(dy, dx)`` in nm per pixel, from ``Grid settings`` (1, 1 if absent).
    angle : float
        Grid angle in degrees.
    measured : ndarray of bool
        ``(H, W)``, True where the point was measured (a grid stopped early
        has NaN spectra elsewhere).
    """

    channels: dict[str, np.ndarray]
    sweep: np.ndarray
    sweep_signal: str
    parameters: dict[str, np.ndarray] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)
    pixel_size: tuple[float, float] = (1.0, 1.0)
    angle: float = 0.0
    measured: np.ndarray | None = None

    @property
    def n_measured(self) -> int:
        """How many grid points were measured."""
        h, w = next(iter(self.channels.values())).shape[-2:]
        return h * w if self.measured is None else int(self.measured.sum())

    @property
    def sweep_label(self) -> str:
        """The swept signal without its unit, e.g. ``"Bias"``."""
        return split_unit(self.sweep_signal)[0] or "sweep"

    @property
    def sweep_unit(self) -> str:
        """The sweep's unit, e.g. ``"V"`` (empty when unknown)."""
        return split_unit(self.sweep_signal)[1]


def _parse_3ds_header(path: Path, text: str) -> dict[str, str]:
    header: dict[str, str] = {}
    for line in text.splitlines():
        if "=" not in line:
            continue
        k, v = line.split("=", 1)
        header[k.strip()] = v.strip().strip('"')
    return header


def _int(path: Path, header: dict[str, str], key: str) -> int:
    try:
        return int(float(header[key]))
    except KeyError:
        raise NanonisError(path, f"header has no {key!r}") from None
    except ValueError:
        raise NanonisError(path, f"bad {key!r} value {header[key]!r}") from None


def _names(header: dict[str, str], key: str) -> list[str]:
    return [s.strip() for s in header.get(key, "").split(";") if s.strip()]


def read_3ds(path: str | os.PathLike[str]) -> Grid:
    """Read a Nanonis ``.3ds`` grid spectroscopy file, complete or partial.

    Parameters
    ----------
    path : str or PathLike
        The ``.3ds`` file.

    Returns
    -------
    Grid
        One ``(n_points, H, W)`` cube per channel, ready for a multi-channel
        solve with ``channel_axis=0``, the sweep ascending. Points that were
        not measured are NaN (see :attr:`Grid.measured`).

    Raises
    ------
    NanonisError
        Missing or corrupt file, a header that ends before ``:HEADER_END:``,
        declared sizes that do not fit together, or no measured point at all
        (one-line message naming the file).

    Warns
    -----
    PartialGridWarning
        When only some points were measured: ``"<path>: N of M points
        measured; the others are NaN"``.

    Notes
    -----
    Each point's record is ``# Parameters`` float32 values (fixed, then
    experiment parameters) followed by ``Points`` values per channel, all
    big-endian, written point by point as the grid is measured. A grid
    stopped early therefore ends after its last measured point (or inside
    it: that point is NaN too), and some Nanonis versions pad the rest with
    NaN; both read as a partial grid. The declared sizes are checked against
    the file's size before anything is read, and only the measured points'
    bytes are read. Rows are put top-down: when the per-pixel
    ``X (m)``/``Y (m)`` parameters are there they decide, otherwise the grid
    is taken as recorded bottom-up. A descending sweep is reversed so that
    the sweep axis ascends (napari axes need a positive step).
    """
    path = Path(path)
    head, after, size = _read_head(path, _3DS_END)
    header = _parse_3ds_header(path, head.decode("latin-1"))
    # The binary block starts after the end tag's line break.
    skip = 2 if after.startswith(b"\r\n") else 1 if after[:1] == b"\n" else 0
    data_start = len(head) + len(_3DS_END) + skip

    dim = header.get("Grid dim", "")
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", dim)
    if not m:
        raise NanonisError(path, f"bad or missing 'Grid dim' {dim!r}")
    nx, ny = int(m.group(1)), int(m.group(2))
    n_par = _int(path, header, "# Parameters (4 byte)")
    n_pts = _int(path, header, "Points")
    channels = _names(header, "Channels")
    if not channels or n_pts <= 0 or nx <= 0 or ny <= 0 or n_par < 0:
        raise NanonisError(path, "header declares no channels or no points")
    exp_size = header.get("Experiment size (bytes)")
    if exp_size is not None and _int(path, header, "Experiment size (bytes)") != (
        4 * n_pts * len(channels)
    ):
        raise NanonisError(path, "'Experiment size (bytes)' disagrees with Points x Channels")
    par_names = _names(header, "Fixed parameters") + _names(header, "Experiment parameters")
    if len(par_names) != n_par:  # keep going with generic names: only labels are lost
        par_names = [f"param {i}" for i in range(n_par)]

    rec = n_par + n_pts * len(channels)
    n_total = nx * ny
    # The whole grid is allocated (NaN where unmeasured), so a header that
    # declares an absurd grid is refused before any allocation.
    if n_total * rec > _MAX_GRID_VALUES:
        gb = n_total * rec * 4 / 1e9
        raise NanonisError(
            path,
            f"header declares a {nx}x{ny} grid of {rec} values per point ({gb:.1f} GB), "
            "more than this reader handles",
        )
    found = max(size - data_start, 0)
    n_full = min(found // (4 * rec), n_total)  # whole point records in the file
    if n_full == 0:
        raise NanonisError(
            path,
            f"no measured point: one point needs {4 * rec} bytes of data, found {found}",
        )
    arr = np.full((n_total, rec), np.nan, dtype=np.float32)
    done = arr[:n_full]
    try:
        with open(path, "rb") as f:
            f.seek(data_start)
            got = f.readinto(memoryview(done).cast("B")) or 0
    except OSError as exc:
        raise NanonisError(path, exc.strerror or str(exc)) from None
    if got < done.nbytes:  # the file shrank since its size was taken
        raise NanonisError(path, f"truncated while reading ({got} of {done.nbytes} bytes)")
    if np.little_endian:  # read as stored (big-endian); swap in place, no second copy
        done.byteswap(inplace=True)
    # A point is measured when its record is in the file and its spectra are
    # not all NaN (the padding some Nanonis versions write after an abort).
    measured = np.zeros(n_total, dtype=bool)
    measured[:n_full] = ~np.all(np.isnan(done[:, n_par:]), axis=1)
    n_meas = int(measured.sum())
    if n_meas == 0:
        raise NanonisError(path, f"no measured point: all {n_total} points are NaN")
    if n_meas < n_total:
        warnings.warn(
            PartialGridWarning(
                f"{path}: {n_meas} of {n_total} points measured; the others are NaN"
            ),
            stacklevel=2,
        )
    arr[~measured] = np.nan
    first = int(np.flatnonzero(measured)[0])

    sweep_signal = header.get("Sweep Signal", "")
    sweep = np.arange(n_pts, dtype=float)
    if "Sweep Start" in par_names and "Sweep End" in par_names:
        s0 = float(arr[first, par_names.index("Sweep Start")])
        s1 = float(arr[first, par_names.index("Sweep End")])
        if np.isfinite(s0) and np.isfinite(s1) and s0 != s1:
            sweep = np.linspace(s0, s1, n_pts)

    arr = arr.reshape(ny, nx, rec)
    measured = measured.reshape(ny, nx)
    params = arr[:, :, :n_par]
    spec = arr[:, :, n_par:].reshape(ny, nx, len(channels), n_pts)
    if _grid_is_bottom_up(params, par_names):
        params, spec, measured = params[::-1], spec[::-1], measured[::-1]
    if sweep[-1] < sweep[0]:
        sweep, spec = sweep[::-1].copy(), spec[..., ::-1]

    pixel_size = (1.0, 1.0)
    angle = 0.0
    gs = header.get("Grid settings", "").split(";")
    try:
        w, h = float(gs[2]) * 1e9, float(gs[3]) * 1e9
        angle = float(gs[4]) if len(gs) > 4 else 0.0
        if w > 0 and h > 0 and np.isfinite(w) and np.isfinite(h):
            pixel_size = (h / ny, w / nx)
    except (ValueError, IndexError):
        pass  # no geometry: pixels stay unit-sized

    return Grid(
        channels={
            c: np.ascontiguousarray(np.moveaxis(spec[:, :, i, :], -1, 0))
            for i, c in enumerate(channels)
        },
        sweep=sweep,
        sweep_signal=sweep_signal,
        parameters={p: np.ascontiguousarray(params[:, :, i]) for i, p in enumerate(par_names)},
        header=header,
        pixel_size=pixel_size,
        angle=angle,
        measured=np.ascontiguousarray(measured),
    )


def sweep_axis(values: Sequence[float]) -> tuple[float, float] | None:
    """``(start, step)`` when ``values`` are evenly spaced and ascending, else None.

    A uniform sweep maps onto a napari axis (``translate=start``,
    ``scale=step``); a non-uniform one keeps its values in metadata and the
    axis counts points.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or len(v) < 2 or not np.all(np.isfinite(v)):
        return None
    d = np.diff(v)
    step = (v[-1] - v[0]) / (len(v) - 1)
    if step <= 0 or np.max(np.abs(d - step)) > 1e-4 * step:
        return None
    return float(v[0]), float(step)


def _grid_is_bottom_up(params: np.ndarray, names: list[str]) -> bool:
    """Whether row 0 of the stored grid is its bottom edge.

    Uses the measured tip positions when present: going down the rows must be
    the column direction turned clockwise (a right-handed frame seen from
    above, whatever the grid angle). Nanonis records grids bottom-up, which is
    the fallback.
    """
    if "X (m)" not in names or "Y (m)" not in names or params.shape[0] < 2:
        return True
    ix, iy = names.index("X (m)"), names.index("Y (m)")
    p = params[:, :, [ix, iy]].astype(float)
    ok = np.all(np.isfinite(p), axis=-1) & np.any(p != 0, axis=-1)
    rows = np.flatnonzero(ok.all(axis=1))
    if len(rows) < 2 or p.shape[1] < 2:
        return True
    r0, r1 = rows[0], rows[-1]
    down = p[r1, 0] - p[r0, 0]
    right = p[r0, -1] - p[r0, 0]
    cross = right[0] * down[1] - right[1] * down[0]
    if cross == 0:
        return True
    return bool(cross > 0)


def sweep_record(values: Sequence[float], label: str, unit: str) -> dict[str, Any]:
    """The sweep axis as a bundle's ``record.json`` keeps it (JSON-ready).

    ``{"label", "unit", "values", "uniform"}``, plus ``start``/``step`` for a
    uniform sweep.
    """
    v = [float(x) for x in np.asarray(values, dtype=float).ravel()]
    ax = sweep_axis(v)
    rec: dict[str, Any] = {"label": label or "sweep", "unit": unit, "values": v}
    rec["uniform"] = ax is not None
    if ax is not None:
        rec["start"], rec["step"] = ax
    return rec
