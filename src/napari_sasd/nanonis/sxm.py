"""The Nanonis ``.sxm`` scan reader: :class:`SxmScan`, :func:`read_sxm` and the
parsing of the ``:KEY:`` text header it uses.

Orientation (all arrays returned here): row 0 is the *top* of the scan frame
and column 0 its left edge, i.e. the way napari and matplotlib's default
``origin='upper'`` draw them.  Nanonis stores each frame in the order it was
recorded: a 'down' scan starts at the top-left corner (rows already top-down),
an 'up' scan at the bottom-left (rows reversed here); backward frames are
recorded right-to-left (columns reversed here).  On the FeSe file (a 'down'
scan), after flattening, forward and mirrored backward frames correlate at 0.7
(Z) and 0.8 (dI/dV), against about 0 for the unmirrored pair.  The up/down
handling follows the Nanonis format notes (a 'down' file is stored top-down,
so it is left as is; we had no 'up' file to check against).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._common import NanonisError, _read_floats, _read_head

_SXM_END = b":SCANIT_END:"
_SXM_DATA_TAG = b"\x1a\x04"


@dataclass
class SxmScan:
    """A Nanonis ``.sxm`` scan.

    Attributes
    ----------
    images : dict of str to ndarray
        One ``(H, W)`` float32 image per channel and direction, keyed by a
        display name such as ``"Z (fwd)"`` or ``"Current (bwd)"``, in file
        order; oriented with row 0 at the top of the scan frame.
    units : dict of str to str
        Physical unit of each image (``"m"``, ``"A"``...), same keys.
    header : dict of str to str
        The raw text header, one entry per ``:KEY:`` (values stripped).
    pixel_size : (float, float)
        ``(dy, dx)`` in nm per pixel, from the scan range.
    scan_range : (float, float)
        ``(height, width)`` of the scan frame in nm.
    offset : (float, float)
        ``(y, x)`` of the frame centre in nm (piezo coordinates).
    angle : float
        Scan angle in degrees.
    direction : str
        ``"up"`` or ``"down"``.
    frames : list of str
        Every frame in the file, including those not read (see ``channels``).
    """

    images: dict[str, np.ndarray]
    units: dict[str, str]
    header: dict[str, str]
    pixel_size: tuple[float, float]
    scan_range: tuple[float, float]
    offset: tuple[float, float]
    angle: float
    direction: str
    frames: list[str] = field(default_factory=list)


def _parse_sxm_header(text: str) -> dict[str, str]:
    """``:KEY:`` lines followed by value lines, until the next key."""
    header: dict[str, str] = {}
    key = None
    lines: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        if len(s) > 1 and s.startswith(":") and s.endswith(":"):
            if key is not None:
                header[key] = "\n".join(lines).strip()
            key, lines = s[1:-1], []
        elif key is not None:
            lines.append(line.rstrip())
    if key is not None:
        header[key] = "\n".join(lines).strip()
    return header


def _floats(path: Path, header: dict[str, str], key: str, n: int) -> list[float]:
    try:
        vals = [float(v) for v in header[key].split()]
    except KeyError:
        raise NanonisError(path, f"header has no {key}") from None
    except ValueError:
        raise NanonisError(path, f"bad {key} value {header[key]!r}") from None
    if len(vals) < n:
        raise NanonisError(path, f"bad {key} value {header[key]!r}")
    return vals[:n]


def read_sxm(path: str | os.PathLike[str], channels: Iterable[str] | None = None) -> SxmScan:
    """Read a Nanonis ``.sxm`` scan.

    Parameters
    ----------
    path : str or PathLike
        The ``.sxm`` file.
    channels : iterable of str, optional
        Frame names (``"Z (fwd)"``...) to read; default all. The header is
        always read whole, the data only for these frames.

    Returns
    -------
    SxmScan
        Every channel and direction as an image oriented with row 0 at the top
        of the scan frame (see the module docstring), with the pixel size in nm.

    Raises
    ------
    NanonisError
        If the file is missing, corrupt, truncated or of an unsupported kind
        (e.g. not big-endian float32); the message is one line naming the file.
    """
    path = Path(path)
    head, after, size = _read_head(path, _SXM_END)
    header = _parse_sxm_header(head.decode("latin-1"))
    # The data starts right after \x1a\x04, which follows the end tag's line(s).
    j = after.find(_SXM_DATA_TAG)
    if j < 0:
        raise NanonisError(path, "no data block after :SCANIT_END:")
    data_start = len(head) + len(_SXM_END) + j + len(_SXM_DATA_TAG)

    scanit = header.get("SCANIT_TYPE", "FLOAT MSBFIRST").split()
    if scanit and scanit[0].upper() != "FLOAT":
        raise NanonisError(path, f"unsupported data type {' '.join(scanit)!r}")
    order = ">" if len(scanit) < 2 or scanit[1].upper() == "MSBFIRST" else "<"

    nx, ny = (int(v) for v in _floats(path, header, "SCAN_PIXELS", 2))
    rx, ry = _floats(path, header, "SCAN_RANGE", 2)
    try:
        ox, oy = _floats(path, header, "SCAN_OFFSET", 2)
    except NanonisError:
        ox = oy = 0.0
    try:
        angle = float(header.get("SCAN_ANGLE", "0").split()[0])
    except (ValueError, IndexError):
        angle = 0.0
    direction = header.get("SCAN_DIR", "up").strip().lower() or "up"
    if nx <= 0 or ny <= 0:
        raise NanonisError(path, f"bad SCAN_PIXELS {header['SCAN_PIXELS']!r}")

    # DATA_INFO is a tab-separated table: Channel Name Unit Direction Calibration Offset.
    rows = [r.split("\t") for r in header.get("DATA_INFO", "").splitlines()]
    rows = [[c.strip() for c in r if c.strip()] for r in rows]
    rows = [r for r in rows if r]
    if len(rows) < 2 or "Name" not in rows[0]:
        raise NanonisError(path, "header has no DATA_INFO channel table")
    cols = rows[0]
    frames: list[tuple[str, str, str]] = []  # (name, unit, 'fwd' | 'bwd')
    for r in rows[1:]:
        rec = dict(zip(cols, r, strict=False))
        name = rec.get("Name", "?").replace("_", " ")
        unit = rec.get("Unit", "")
        dirs = rec.get("Direction", "both").lower()
        if dirs in ("both", "forward"):
            frames.append((name, unit, "fwd"))
        if dirs in ("both", "backward"):
            frames.append((name, unit, "bwd"))

    # Declared size against the file's size before any data is read.
    frame_bytes = ny * nx * 4
    n_expected = len(frames) * frame_bytes
    found = size - data_start
    if found < n_expected:
        raise NanonisError(
            path,
            f"truncated: {len(frames)} frames of {ny}x{nx} need {n_expected} bytes of data, "
            f"found {found}",
        )
    wanted = None if channels is None else set(channels)
    images: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    for k, (name, unit, d) in enumerate(frames):
        key = f"{name} ({d})"
        if wanted is not None and key not in wanted:
            continue  # read only the frames asked for
        frame = _read_floats(path, data_start + k * frame_bytes, ny * nx, f"{order}f4")
        if frame.size < ny * nx:  # the file shrank since its size was taken
            raise NanonisError(path, f"truncated inside frame {key!r}")
        frame = frame.astype(np.float32).reshape(ny, nx)  # native byte order
        if direction == "up":
            frame = frame[::-1]  # first recorded line is the bottom one
        if d == "bwd":
            frame = frame[:, ::-1]  # recorded right to left
        images[key] = np.ascontiguousarray(frame)
        units[key] = unit
    frame_names = [f"{n} ({d})" for n, _, d in frames]
    return SxmScan(
        images=images,
        units=units,
        header=header,
        pixel_size=(ry * 1e9 / ny, rx * 1e9 / nx),
        scan_range=(ry * 1e9, rx * 1e9),
        offset=(oy * 1e9, ox * 1e9),
        angle=angle,
        direction=direction,
        frames=frame_names,
    )
