"""The files of a result bundle: careful reading and atomic replacement, napari-free.

A bundle may come from anywhere (a colleague, a spreadsheet that re-saved
``defects.csv``, a disk that filled up): each file is opened only when it is a
regular file inside the folder, parsed with its declared sizes checked first,
and checked against the others, so that a damaged or mixed bundle is refused
with a one-line :class:`BundleError` naming it instead of opening wrong.
Writing goes through a temporary folder renamed into place.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import re
import shutil
import stat
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from .peaks import Defects

#: The files of a bundle; nothing else is read from the folder.
FILES = ("motifs.tif", "activations.tif", "defects.csv", "record.json")
#: Files that may ride along (``save_bundle(extra_files=...)``, e.g. the quick
#: look): an existing bundle holding only these and :data:`FILES` is replaced
#: whole; one holding anything else is the user's folder and left alone.
EXTRA_FILES = ("quicklook.png", "spectra.csv", "spectra.png")
#: A record is a few kB; a larger record.json is not one (and is not read whole).
MAX_RECORD_BYTES = 16 * 2**20
CSV_COLUMNS = ("motif", "amplitude", "row", "col", "y", "x")


class BundleError(ValueError):
    """A bundle could not be read or written; one-line message naming the path."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {' '.join(str(message).split())}")


@contextlib.contextmanager
def quiet_tifffile():
    """Silence tifffile's log warnings: a corrupt file is reported once, as an error."""
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def check_replaceable(out: Path) -> None:
    # An existing bundle is replaced whole; a file, or a folder holding other
    # things than a bundle's files, is the user's: refuse rather than delete.
    if not (out.exists() or out.is_symlink()):
        return
    if out.is_symlink() or not out.is_dir():
        raise BundleError(out, "exists and is not a bundle folder; choose another name")
    try:
        other = sorted(set(os.listdir(out)) - set(FILES) - set(EXTRA_FILES))
    except OSError as exc:
        raise BundleError(out, exc.strerror or str(exc)) from None
    if other:
        raise BundleError(
            out,
            f"exists and holds files that are not part of a bundle ({', '.join(other[:3])}); "
            "not replaced: move them or choose another name",
        )


def move_into_place(tmp: Path, out: Path) -> None:
    # rename() is atomic within a file system, but cannot replace a non-empty
    # folder: the old bundle steps aside first and is deleted only once the
    # new one is in place (restored if that fails).
    if not out.exists():
        os.rename(tmp, out)
        return
    check_replaceable(out)
    old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def member(p: Path, name: str) -> Path | None:
    """``p / name`` if it exists; refused unless a regular file inside ``p``
    (a FIFO would block the reader, a link could point anywhere)."""
    f = p / name
    try:
        st = os.stat(f)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(p, f"{name} unreadable: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(p, f"{name} is not a regular file")
    if f.resolve().parent != p.resolve():
        raise BundleError(p, f"{name} links outside the bundle folder")
    return f


def read_tiff(p: Path, name: str) -> np.ndarray:
    f = member(p, name)
    if f is None:
        raise BundleError(p, f"no {name}")
    size = f.stat().st_size
    try:
        with quiet_tifffile(), tifffile.TiffFile(f) as tif:
            if not tif.series:
                raise BundleError(p, f"{name} holds no image")
            series = tif.series[0]
            # A damaged header can declare more data than the file holds:
            # refuse before allocating it (bundles are written uncompressed).
            compressed = any(getattr(pg, "compression", 1) != 1 for pg in series.pages[:1])
            limit = size * (1000 if compressed else 1) + 65536
            if series.nbytes > limit:
                raise BundleError(
                    p,
                    f"{name} is corrupt: it declares {series.nbytes} bytes of data "
                    f"in a file of {size}",
                )
            return series.asarray()
    except BundleError:
        raise
    except Exception as exc:
        # tifffile parses untrusted bytes: a damaged file raises about
        # anything (RuntimeError, AssertionError, ZeroDivisionError... found
        # by tests/test_bundle_fuzz.py), all of them "cannot read".
        msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise BundleError(p, f"cannot read {name}: {type(exc).__name__}: {msg}") from None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_real(v: Any) -> bool:
    # A float, NaN and inf included (e.g. an unknown explained fraction).
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(v: Any, n: int | None = None) -> bool:
    return isinstance(v, list) and (n is None or len(v) == n) and all(_is_number(x) for x in v)


def _matrix(v: Any, n: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(_numbers(r, n) for r in v)


_HEX = re.compile(r"#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?")


def check_record(
    p: Path, rec: dict[str, Any], kernels: np.ndarray, activations: np.ndarray
) -> None:
    """Refuse record fields of the wrong type, and a record that does not
    describe these motifs and maps (a bundle mixed from two runs)."""
    n, (h, w) = len(kernels), activations.shape[-2:]
    if _is_int(rec.get("n_motifs")) and rec["n_motifs"] != n:
        # First: a mixed bundle's other fields disagree too, this says why.
        raise BundleError(
            p, f"record.json says {rec['n_motifs']} motifs but motifs.tif holds {n}: "
            "the bundle mixes two runs or was not written completely",
        )  # fmt: skip
    nd = 3 if kernels.ndim == 4 else 2
    shear_ok = rec.get("shear") is None or _matrix(rec["shear"], 2) or _numbers(rec["shear"], 1)
    checks = {
        "n_motifs": rec.get("n_motifs") is None or _is_int(rec["n_motifs"]),
        "kernel_size": rec.get("kernel_size") is None
        or (_numbers(rec["kernel_size"], 2) and all(map(_is_int, rec["kernel_size"]))),
        "region": rec.get("region") is None
        or (_numbers(rec["region"], 4) and all(map(_is_int, rec["region"]))),
        "scale": rec.get("scale") is None
        or (_numbers(rec["scale"]) and len(rec["scale"]) in (2, nd) and 0 not in rec["scale"]),
        "translate": rec.get("translate") is None
        or (_numbers(rec["translate"]) and len(rec["translate"]) in (2, nd)),
        "rotate": rec.get("rotate") is None or _matrix(rec["rotate"], 2),
        "shear": shear_ok,
        "affine": rec.get("affine") is None or _matrix(rec["affine"], 3),
        "colors": rec.get("colors") is None
        or (
            isinstance(rec["colors"], list)
            and all(isinstance(c, str) and _HEX.fullmatch(c) for c in rec["colors"])
        ),
        "params": rec.get("params") is None or isinstance(rec["params"], dict),
        "lam": rec.get("lam") is None or _is_number(rec["lam"]),
        "objective": rec.get("objective") is None or _is_real(rec["objective"]),
        "n_iter": rec.get("n_iter") is None or _is_int(rec["n_iter"]),
        "seed": rec.get("seed") is None or _is_int(rec["seed"]),
        "bias": rec.get("bias") is None or _is_number(rec["bias"]) or _numbers(rec["bias"]),
        "explained": rec.get("explained") is None
        or (
            isinstance(rec["explained"], list)
            and len(rec["explained"]) == n
            and all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in rec["explained"]
            )
        ),
        "threshold": rec.get("threshold") is None
        or _is_number(rec["threshold"])
        or _numbers(rec["threshold"], n),
        "source": rec.get("source") is None or isinstance(rec["source"], str),
        "source_path": rec.get("source_path") is None or isinstance(rec["source_path"], str),
        "run_id": rec.get("run_id") is None or isinstance(rec["run_id"], str),
    }
    params = rec.get("params") or {}
    checks["params"] = checks["params"] and (params.get("seed") is None or _is_int(params["seed"]))
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise BundleError(p, f"record.json: malformed {bad[0]!r}: {str(rec[bad[0]])[:80]}")
    # Every file must describe the same run.
    ks = list(kernels.shape[-2:])
    if rec.get("kernel_size") is not None and rec["kernel_size"] != ks:
        raise BundleError(
            p, f"record.json says motifs of {rec['kernel_size']} but motifs.tif holds {ks}: "
            "the bundle mixes two runs or was not written completely",
        )  # fmt: skip
    region = rec.get("region")
    if region is not None and [region[2] - region[0], region[3] - region[1]] != [h, w]:
        raise BundleError(
            p, f"record.json's region {region} does not match the {h}x{w} activation maps",
        )  # fmt: skip
    if rec.get("colors") is not None and len(rec["colors"]) not in (0, n):
        raise BundleError(p, f"record.json has {len(rec['colors'])} colours for {n} motifs")


def read_defects(p: Path, region: Sequence[int], n_motifs: int) -> Defects:
    f = member(p, "defects.csv")
    if f is None:
        return Defects(np.zeros((0, 2)), np.zeros(0, int), np.zeros(0))
    # Peaks are pixels of the analysed region; a little slack for positions
    # refined or edited by hand. Outside it, the table is another run's.
    y0, x0, y1, x1 = (float(v) for v in region)
    motif: list[int] = []
    vals: list[tuple[float, float, float]] = []
    try:
        # utf-8-sig: a table saved by a spreadsheet starts with a byte-order mark.
        with open(f, newline="", encoding="utf-8-sig") as fh:
            rows = csv.reader(fh)
            header = next(rows, None)
            if header is None:  # an empty file: no defect
                header = list(CSV_COLUMNS)
            cols = [c.strip() for c in header]
            missing = [c for c in ("motif", "amplitude", "row", "col") if c not in cols]
            if missing:
                raise BundleError(p, f"defects.csv has no {missing[0]!r} column")
            im, ia, ir, ic = (cols.index(c) for c in ("motif", "amplitude", "row", "col"))
            for line, r in enumerate(rows, start=2):
                if not r:
                    continue
                try:
                    m = int(r[im])
                    v = (float(r[ia]), float(r[ir]), float(r[ic]))
                except (IndexError, ValueError) as exc:
                    raise BundleError(p, f"defects.csv line {line} malformed: {exc}") from None
                # Checked here: a motif id of 10**9 would allocate gigabytes
                # in the per-motif counts.
                if not 0 <= m < n_motifs:
                    raise BundleError(
                        p, f"defects.csv line {line}: motif {m} is not one of the bundle's "
                        f"{n_motifs} motifs (0 to {n_motifs - 1})",
                    )  # fmt: skip
                if not all(map(math.isfinite, v)):
                    raise BundleError(p, f"defects.csv line {line}: a value is not finite")
                if not (y0 - 1 <= v[1] <= y1 and x0 - 1 <= v[2] <= x1):
                    raise BundleError(
                        p, f"defects.csv line {line}: (row, col) ({v[1]:g}, {v[2]:g}) is outside "
                        f"the analysed region {list(region)}: the table is another run's",
                    )  # fmt: skip
                motif.append(m)
                vals.append(v)
    except BundleError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BundleError(p, f"defects.csv unreadable: {exc}") from None
    arr = np.asarray(vals, float).reshape(-1, 3)
    pos = arr[:, 1:] - np.asarray(region[:2], float)
    return Defects(pos, np.asarray(motif, int), arr[:, 0])
