"""Read any input the command line accepts into an array, napari-free.

TIFF through tifffile, ``.npy`` through numpy (``allow_pickle=False``), PNG and
JPEG through scikit-image, Nanonis ``.sxm``/``.3ds`` through
:mod:`napari_sasd.nanonis`. Every failure is an :class:`ImageReadError` (or a
:class:`~napari_sasd.nanonis.NanonisError`), both ``ValueError`` with a
one-line message that starts with the file's path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .nanonis import NanonisError, read_3ds, read_sxm, split_unit

__all__ = [
    "SUPPORTED",
    "ImageReadError",
    "LoadedImage",
    "NanonisError",
    "expand_inputs",
    "is_supported",
    "read_image",
]

#: File suffixes the command line reads (lower case).
SUPPORTED = (".tif", ".tiff", ".npy", ".png", ".jpg", ".jpeg", ".sxm", ".3ds")


class ImageReadError(ValueError):
    """An input could not be read; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {' '.join(str(message).split())}")


@dataclass
class LoadedImage:
    """An image ready to solve.

    Attributes
    ----------
    data : ndarray
        float ``(H, W)``, or ``(C, H, W)`` for a channel stack.
    channel_axis : int or None
        0 for a stack, else None.
    name : str
        What was read: the channel name for Nanonis files, else the file stem.
    scale, translate : tuple of float
        ``(dy, dx)`` pixel size and origin of the image plane in world units
        (nm for Nanonis files, pixels otherwise).
    units : str
        Unit of the values (``"m"``, ``"A"``...), empty when unknown.
    metadata : dict
        Extra information (Nanonis header, channel list...), JSON-serialisable.
    """

    data: np.ndarray
    channel_axis: int | None
    name: str
    scale: tuple[float, float] = (1.0, 1.0)
    translate: tuple[float, float] = (0.0, 0.0)
    units: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def is_supported(path: str | os.PathLike[str]) -> bool:
    """Whether the suffix of ``path`` is one :func:`read_image` reads."""
    return Path(path).suffix.lower() in SUPPORTED


def expand_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files to process: files as given, folders replaced by their supported files.

    Folders are not searched recursively; their files are sorted by name.
    Missing paths are kept, so that reading them reports the error.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and p.suffix.lower() != ".sasd":
            out.extend(sorted(f for f in p.iterdir() if f.is_file() and is_supported(f)))
        else:
            out.append(p)
    return out


def _pick(path: Path, names: list[str], wanted: str | None, default: str) -> str:
    if wanted is None:
        return default
    norm = {n.lower(): n for n in names}
    w = wanted.strip().lower()
    for cand in (w, f"{w} (fwd)", w.replace(" fwd", " (fwd)").replace(" bwd", " (bwd)")):
        if cand in norm:
            return norm[cand]
    # a bare name without its unit, e.g. 'Bias' for 'Bias (V)'
    for n in names:
        if split_unit(n)[0].lower() == w:
            return n
    raise ImageReadError(path, f"no channel {wanted!r}; available: {', '.join(names)}")


def read_image(path: str | os.PathLike[str], channel: str | None = None) -> LoadedImage:
    """Read one input file.

    Parameters
    ----------
    path : str or PathLike
        TIFF, ``.npy``, PNG/JPEG, Nanonis ``.sxm`` or ``.3ds``.
    channel : str, optional
        For ``.sxm``: which channel, e.g. ``"Z"`` (forward), ``"Z (bwd)"``,
        ``"LIY 1 omega"``; default ``"Z (fwd)"``. For ``.3ds``: which grid
        channel becomes the cube; default the first lock-in (dI/dV) channel,
        else the first channel. Ignored for other formats.

    Returns
    -------
    LoadedImage
        2-D images as ``(H, W)``; 3-D TIFF/npy as a ``(C, H, W)`` stack; RGB
        pictures converted to grey.

    Raises
    ------
    ImageReadError, NanonisError
        One-line message naming the file.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.exists():
        raise ImageReadError(p, "no such file")
    if suffix not in SUPPORTED:
        raise ImageReadError(p, f"unsupported file type {suffix!r} (supported: {SUPPORTED})")
    if suffix == ".sxm":
        names = read_sxm(p, channels=()).frames  # header only: pick, then read one frame
        default = "Z (fwd)" if "Z (fwd)" in names else names[0]
        name = _pick(p, names, channel, default)
        scan = read_sxm(p, channels=[name])
        return LoadedImage(
            data=scan.images[name].astype(np.float64),
            channel_axis=None,
            name=name,
            scale=scan.pixel_size,
            units=scan.units[name],
            metadata={
                "header": scan.header,
                "channels": names,
                "scan_angle": scan.angle,
                "scan_direction": scan.direction,
                "space_units": "nm",
            },
        )
    if suffix == ".3ds":
        grid = read_3ds(p)
        names = list(grid.channels)
        lockin = [n for n in names if n.upper().startswith(("LI", "LIY", "LIX")) or "dI" in n]
        name = _pick(p, names, channel, lockin[0] if lockin else names[0])
        data_shape = grid.channels[name].shape
        return LoadedImage(
            data=grid.channels[name].astype(np.float64),
            channel_axis=0,
            name=name,
            scale=grid.pixel_size,
            units=split_unit(name)[1],
            metadata={
                "header": grid.header,
                "channels": names,
                "sweep_signal": grid.sweep_signal,
                "sweep": grid.sweep.tolist(),
                "sweep_label": grid.sweep_label,
                "sweep_unit": grid.sweep_unit,
                "measured_points": [grid.n_measured, int(np.prod(data_shape[-2:]))],
                "space_units": "nm",
            },
        )
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            from .bundle import quiet_tifffile

            with quiet_tifffile():
                arr = tifffile.imread(p)
        elif suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            from skimage import io as skio

            arr = skio.imread(p)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        # tifffile/numpy/pillow each phrase corruption differently; keep one line.
        raise ImageReadError(p, f"cannot read: {exc}") from None
    except Exception as exc:  # e.g. PIL.UnidentifiedImageError, tifffile.TiffFileError
        raise ImageReadError(p, f"cannot read: {type(exc).__name__}: {exc}") from None
    arr = np.asarray(arr)
    if arr.size == 0:  # tifffile returns an empty array for some corrupt files
        raise ImageReadError(p, "cannot read: no image data (corrupt or truncated file?)")
    if arr.dtype.kind not in "biuf":
        raise ImageReadError(p, f"unsupported data type {arr.dtype}")
    arr = np.squeeze(arr)
    if arr.ndim == 3 and suffix in (".png", ".jpg", ".jpeg") and arr.shape[-1] in (3, 4):
        from skimage.color import rgb2gray

        arr = rgb2gray(arr[..., :3])
    if arr.ndim not in (2, 3) or min(arr.shape[-2:]) < 2:
        raise ImageReadError(p, f"need a 2-D image or a (C, H, W) stack, got shape {arr.shape}")
    return LoadedImage(
        data=arr.astype(np.float64),
        channel_axis=0 if arr.ndim == 3 else None,
        name=p.stem,
    )
