"""Motif libraries: named, known motifs to locate and to compare new ones with, napari-free.

Layout (a folder, like a result bundle; plain TIFF and JSON, nothing pickled)::

    NAME.sasdlib/
        motifs.tif     (N, kh, kw) or (N, C, kh, kw) float32; motifs of
                       different sizes are zero-padded around their centre
                       to the largest (the padding is no part of the motif)
        library.json   format, version, and per motif: name, size, channels,
                       provenance (bundle, motif index, source, run, lambda, when)

A library is made from result bundles (all their motifs, or chosen ones, with
user-given names) and grows by :meth:`Library.add`. :func:`catalogue` compares
new motifs with it by the shift-invariant similarity *with sign* (a dip is not
the same defect as a bump), across small size differences.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from scipy import fft

from ._version import __version__
from .bundle import BundleError, load_bundle

__all__ = [
    "CATALOGUE_SAME",
    "Library",
    "LibraryError",
    "catalogue",
    "describe_match",
    "load_library",
    "load_motifs",
    "make_library",
    "signed_similarity",
]

FORMAT = "napari-sasd motif library"
FORMAT_VERSION = 1
SUFFIX = ".sasdlib"
#: A new motif at least this similar (shift-invariant, with sign) to a
#: library motif is catalogued as that motif. Measured: one synthetic motif
#: learnt on three scans (k = 12 and 14) 0.998-0.999 to the truth; two
#: different shapes of the synthetic set at most 0.81 (bump / dumbbell); a
#: motif and its negative 0-0.24.
CATALOGUE_SAME = 0.9


class LibraryError(ValueError):
    """A library could not be read or written; one-line message naming the path."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {' '.join(str(message).split())}")


@dataclass
class Library:
    """Named motifs with their provenance.

    Attributes
    ----------
    motifs : list of ndarray
        Each ``(kh, kw)`` or ``(C, kh, kw)``, unit norm, its own size.
    names : list of str
        One per motif, unique.
    provenance : list of dict
        One per motif (JSON-serialisable): where it was learnt.
    path : Path, optional
        The folder it was loaded from or saved to.
    """

    motifs: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.motifs)

    @property
    def channels(self) -> int | None:
        """Channels of the motifs (None for 2-D motifs, or an empty library)."""
        return None if not self.motifs or self.motifs[0].ndim == 2 else self.motifs[0].shape[0]

    def add(self, motif: np.ndarray, name: str, provenance: dict[str, Any] | None = None) -> None:
        """Add a motif (normalised to unit norm) under a new ``name``.

        Raises
        ------
        ValueError
            A name already used, an empty name, or a motif that does not fit.
        """
        name = str(name).strip()
        if not name:
            raise ValueError("a library motif needs a name")
        if name in self.names:
            raise ValueError(f"the library already has a motif named {name!r}")
        m = np.asarray(motif, np.float64)
        if m.ndim not in (2, 3) or min(m.shape[-2:]) < 3:
            raise ValueError(f"a motif is (kh, kw) or (C, kh, kw) of at least 3 px, got {m.shape}")
        if self.motifs and m.ndim != self.motifs[0].ndim:
            raise ValueError("a library holds either 2-D motifs or channel motifs, not both")
        if self.channels is not None and m.shape[0] != self.channels:
            raise ValueError(f"motif has {m.shape[0]} channels, the library {self.channels}")
        nrm = np.linalg.norm(m)
        if not np.isfinite(nrm) or nrm == 0:
            raise ValueError(f"motif {name!r} is all zeros or not finite")
        self.motifs.append(m / nrm)
        self.names.append(name)
        self.provenance.append(dict(provenance or {}))

    def stack(self, names: Sequence[str] | None = None) -> np.ndarray:
        """The motifs (all, or the named ones in that order) as one array for
        :func:`napari_sasd.locate`, zero-padded around their centres to the
        largest size: ``(N, kh, kw)`` or ``(N, C, kh, kw)``."""
        idx = list(range(len(self))) if names is None else [self.index(n) for n in names]
        if not idx:
            raise ValueError("no motif to stack: the library is empty")
        mots = [self.motifs[i] for i in idx]
        kh = max(m.shape[-2] for m in mots)
        kw = max(m.shape[-1] for m in mots)
        return np.stack([_pad_centred(m, (kh, kw)) for m in mots])

    def index(self, name: str) -> int:
        """Position of the motif called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(
                f"no motif named {name!r} in the library (it has: {', '.join(self.names)})"
            ) from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the library folder (``.sasdlib`` added when missing)."""
        out = Path(path)
        if out.suffix != SUFFIX:
            out = out.with_name(out.name + SUFFIX)
        if not self.motifs:
            raise LibraryError(out, "nothing to save: the library has no motif")
        try:
            out.mkdir(parents=True, exist_ok=True)
            stack = self.stack().astype(np.float32)
            tmp = out / "motifs.tif.part"
            tifffile.imwrite(tmp, stack)
            os.replace(tmp, out / "motifs.tif")
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "version": __version__,
                "motifs": [
                    {
                        "name": n,
                        "size": [int(v) for v in m.shape[-2:]],
                        "channels": None if m.ndim == 2 else int(m.shape[0]),
                        "provenance": p,
                    }
                    for n, m, p in zip(self.names, self.motifs, self.provenance, strict=True)
                ],
            }
            # The JSON last: a library whose record is there is complete.
            tmp = out / "library.json.part"
            tmp.write_text(json.dumps(meta, indent=2, default=_json_default), encoding="utf-8")
            os.replace(tmp, out / "library.json")
        except OSError as exc:
            raise LibraryError(out, exc.strerror or str(exc)) from None
        self.path = out
        return out


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def _pad_centred(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Zero-pad ``m`` to ``size`` keeping its centre index ``(k - 1) // 2``
    on the padded one's (the solver's centre convention)."""
    pads = []
    for k, K in zip(m.shape[-2:], size, strict=True):
        before = (K - 1) // 2 - (k - 1) // 2
        pads.append((before, K - k - before))
    return np.pad(m, [(0, 0)] * (m.ndim - 2) + pads)


def _crop_centred(m: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`_pad_centred`."""
    sl = []
    for K, k in zip(m.shape[-2:], size, strict=True):
        before = (K - 1) // 2 - (k - 1) // 2
        sl.append(slice(before, before + int(k)))
    return m[(..., *sl)]


def load_library(path: str | os.PathLike[str]) -> Library:
    """Load a library folder written by :meth:`Library.save`.

    Raises
    ------
    LibraryError
        Missing, malformed or inconsistent files (one-line message naming the library).
    """
    p = Path(path)
    if p.name == "library.json":
        p = p.parent
    if not (p / "library.json").is_file():
        raise LibraryError(p, "no library.json: not a napari-sasd motif library")
    try:
        meta = json.loads((p / "library.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, RecursionError) as exc:
        raise LibraryError(p, f"library.json unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LibraryError(p, "library.json is not a napari-sasd motif library")
    entries = meta.get("motifs")
    if not isinstance(entries, list) or not entries:
        raise LibraryError(p, "library.json lists no motifs")
    try:
        stack = np.asarray(tifffile.imread(p / "motifs.tif"), np.float64)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise LibraryError(p, f"cannot read motifs.tif: {exc}") from None
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim not in (3, 4) or len(stack) != len(entries):
        raise LibraryError(
            p, f"motifs.tif holds shape {stack.shape}, library.json lists {len(entries)} motifs"
        )
    if not np.isfinite(stack).all():
        raise LibraryError(p, "motifs.tif holds NaN or inf: the file is damaged")
    lib = Library(path=p)
    for m, e in zip(stack, entries, strict=True):
        try:
            size = [int(v) for v in e["size"]]
            if len(size) != 2 or size[0] > m.shape[-2] or size[1] > m.shape[-1] or min(size) < 3:
                raise ValueError(f"size {size} does not fit motifs.tif's {m.shape[-2:]}")
            lib.add(_crop_centred(m, size), e["name"], e.get("provenance") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise LibraryError(p, f"library.json entry {e!r:.80}: {exc}") from None
    return lib


def make_library(
    sources: Sequence[str | os.PathLike[str] | tuple[str | os.PathLike[str], Sequence[int]]],
    names: Sequence[str] | None = None,
    library: Library | None = None,
) -> Library:
    """A library from result bundles (or added to ``library``).

    Parameters
    ----------
    sources : sequence
        Bundle folders (all their motifs), or ``(bundle, [motif indices])``
        pairs for chosen motifs (0-based, as in the bundle).
    names : sequence of str, optional
        One name per motif taken, in order ("Se vacancy"); default
        ``"<bundle name> #<index + 1>"``.
    library : Library, optional
        Add to this library instead of a new one.

    Raises
    ------
    BundleError
        A bundle that cannot be read.
    ValueError
        Names that do not match the motifs taken, repeated names, a motif
        index out of range; before anything is added.
    """
    taken: list[tuple[np.ndarray, str, dict[str, Any]]] = []
    for src in sources:
        path, idx = (src, None) if isinstance(src, str | os.PathLike) else src
        b = load_bundle(path)
        sel = range(b.n_motifs) if idx is None else [int(i) for i in idx]
        for i in sel:
            if not 0 <= i < b.n_motifs:
                raise ValueError(f"{b.path}: has motifs 0..{b.n_motifs - 1}, not {i}")
            rec = b.record
            prov = {
                "bundle": os.fspath(Path(b.path).resolve()),
                "motif": i,
                "source": rec.get("source"),
                "source_path": rec.get("source_path"),
                "run_id": rec.get("run_id"),
                "lam": rec.get("lam"),
                "version": rec.get("version"),
                "added": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            }
            taken.append((b.kernels[i], f"{Path(b.path).stem} #{i + 1}", prov))
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(taken):
            raise ValueError(f"{len(names)} names given for {len(taken)} motifs taken")
        taken = [(m, n, p) for (m, _, p), n in zip(taken, names, strict=True)]
    lib = Library() if library is None else library
    all_names = lib.names + [n for _, n, _ in taken]
    dup = sorted({n for n in all_names if all_names.count(n) > 1})
    if dup:
        raise ValueError(f"motif names must be unique; repeated: {', '.join(dup)}")
    for m, n, p in taken:
        lib.add(m, n, p)
    return lib


def load_motifs(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """Motifs to locate, from a library or a result bundle: ``(stack, names)``
    (a bundle's motifs are named ``"#1"``, ``"#2"``, ...).

    Raises
    ------
    LibraryError
        Neither a library nor a bundle could be read there.
    """
    p = Path(path)
    base = p.parent if p.name in ("library.json", "record.json") else p
    if (base / "library.json").is_file():
        lib = load_library(base)
        return lib.stack(), list(lib.names)
    try:
        b = load_bundle(base)
    except BundleError as exc:
        raise LibraryError(p, f"neither a motif library nor a result bundle ({exc})") from None
    return b.kernels.astype(np.float64), [f"#{i + 1}" for i in range(b.n_motifs)]


def signed_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """``max_tau <a, s_tau[b]> / (||a|| ||b||)`` over all 2-D shifts, sign kept.

    :func:`napari_sasd.metrics.shift_invariant_similarity` takes the largest
    *magnitude*, which makes a motif and its negative the same; a catalogue
    must tell a bump from a dip. Sizes may differ (the correlation is the
    full one of the two); channels (``(C, kh, kw)``) share the shift.
    """
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    if a.ndim == 2:
        a, b = a[None], b[None] if b.ndim == 2 else b
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"channel counts differ: {a.shape} vs {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    s = (a.shape[1] + b.shape[1] - 1, a.shape[2] + b.shape[2] - 1)
    corr = fft.irfft2(fft.rfft2(a, s) * np.conj(fft.rfft2(b, s)), s).sum(0)
    return float(max(corr.max(), 0.0) / (na * nb))


def catalogue(
    kernels: np.ndarray, library: Library, same: float = CATALOGUE_SAME
) -> list[dict[str, Any]]:
    """Compare each motif with the library: its best match and whether it is the same.

    Parameters
    ----------
    kernels : ndarray
        ``(N, kh, kw)`` or ``(N, C, kh, kw)``, e.g. ``SolveResult.kernels``.
    library : Library
    same : float
        Smallest signed similarity counted as the same motif.

    Returns
    -------
    list of dict
        One per motif, JSON-serialisable: ``motif`` (index), ``match`` (the
        library name, or None: new), ``best`` (closest name, even when not
        the same), ``similarity`` (to it), ``text`` (``"same as 'Se vacancy'
        (0.96)"`` or ``"new"``).
    """
    out = []
    ks = np.asarray(kernels, float)
    for i, k in enumerate(ks):
        sims = [
            signed_similarity(k, m) if np.ndim(m) == np.ndim(k) else 0.0 for m in library.motifs
        ]
        j = int(np.argmax(sims)) if sims else -1
        best = library.names[j] if j >= 0 else None
        sim = float(sims[j]) if j >= 0 else 0.0
        match = best if j >= 0 and sim >= same else None
        entry = {"motif": i, "match": match, "best": best, "similarity": round(sim, 4)}
        entry["text"] = describe_match(entry)
        out.append(entry)
    return out


def describe_match(entry: dict[str, Any]) -> str:
    """``"same as 'NAME' (0.96)"`` or ``"new"`` for a :func:`catalogue` entry."""
    if entry.get("match") is None:
        return "new"
    return f"same as {entry['match']!r} ({entry['similarity']:.2f})"
