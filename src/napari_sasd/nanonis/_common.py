"""What the ``.sxm`` and ``.3ds`` readers share: the :class:`NanonisError` every
failure raises, :func:`split_unit` for ``"Bias (V)"``-style names, and the two
low-level reads (:func:`_read_head` for a bounded header read up to its end tag,
:func:`_read_floats` for a data block read straight into an array).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

# A header is a few kB; refuse to scan further than this for the end tag so a
# huge non-Nanonis file renamed .sxm fails fast instead of being read whole.
_MAX_HEADER = 1 << 20


class NanonisError(ValueError):
    """A Nanonis file could not be read: corrupt, truncated or unsupported.

    ``str(err)`` is a single line ``"<path>: <what is wrong>"``.
    """

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(message).split())
        super().__init__(f"{self.path}: {self.reason}")


def split_unit(name: str) -> tuple[str, str]:
    """Split ``"Bias (V)"`` into ``("Bias", "V")``; no unit gives ``""``."""
    m = re.fullmatch(r"\s*(.*?)\s*\(([^()]*)\)\s*", name)
    return (m.group(1), m.group(2)) if m else (name.strip(), "")


def _read_head(path: Path, end_tag: bytes) -> tuple[bytes, bytes, int]:
    """Return (header bytes before the end tag, up to 64 bytes after it, file size).

    Only the first :data:`_MAX_HEADER` bytes are read: the data block is read
    later, once the header's declared sizes have been checked against the
    file's size, so a huge file that is not a Nanonis file fails at once.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(_MAX_HEADER + 64)
    except OSError as exc:
        raise NanonisError(path, exc.strerror or str(exc)) from None
    i = raw.find(end_tag, 0, _MAX_HEADER)
    if i < 0:
        what = "empty file" if not raw else f"no {end_tag.decode()} tag"
        raise NanonisError(path, f"not a Nanonis file ({what})")
    j = i + len(end_tag)
    return raw[:i], raw[j : j + 64], size


def _read_floats(path: Path, offset: int, count: int, dtype: str) -> np.ndarray:
    """``count`` values of ``dtype`` from byte ``offset``; fewer if the file ends first.

    Reads straight into the returned array (no intermediate bytes copy), so the
    peak memory is the data asked for, whatever the file's size.
    """
    out = np.empty(count, dtype=dtype)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            got = f.readinto(memoryview(out).cast("B"))
    except OSError as exc:
        raise NanonisError(path, exc.strerror or str(exc)) from None
    return out[: (got or 0) // out.itemsize]
