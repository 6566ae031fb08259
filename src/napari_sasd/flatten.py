"""Background flattening of scanned-probe images, napari-free.

STM topographs carry a sample tilt (a plane) and a height offset per scan
line (tip changes, drift, feedback). Both swamp the motifs, so they are
removed before solving. Gwyddion/pySPM do the same ("plane level" and "align
rows, median"); this is the few lines of numpy it takes, NaN-aware and with a
mask, without pulling in an SPM package.

A third, optional term is the line shape every scan line shares: the tip
settles after each turnaround, so the first tens of pixels of every line
sit lower or higher (a dark or bright band along the scan's start edge), and
the fast scanner's non-linearity bends every line alike. Line offsets cannot
remove it; a motif learns it, and copies line up along the band. It is the
column profile of a two-way (row + column) median model, as in Tukey's
median polish.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

__all__ = ["COLUMN_SMOOTH", "SCAN_LINE_RATIO", "flatten", "shows_scan_lines"]

#: Width (pixels) of the running median that smooths the shared line shape
#: (``columns=True``): it keeps a turnaround band or a bow (monotone over tens
#: of pixels, which a running median passes unchanged) and leaves out any
#: periodic stripes shorter than this -- an atomic lattice's columns, a few
#: pixels per period on the scans seen -- which belong to the lattice term.
COLUMN_SMOOTH = 21


#: How many times more the median level must jump from line to line than from
#: column to column for an image to show scan lines (:func:`shows_scan_lines`).
#: The labelled WSe2 pictures (JPEG exports of STM scans): 6.6-13.4; the
#: synthetic topograph sample: 0.36.
SCAN_LINE_RATIO = 3.0


def shows_scan_lines(image: ArrayLike, ratio: float = SCAN_LINE_RATIO) -> bool:
    """Whether a picture carries the line-to-line offsets of a scanned probe.

    After a plane fit, the typical jump of the median level from one row
    (scan line) to the next is compared with the jump from one column to the
    next; a scan's lines jump ``ratio`` times more. A picture exported from
    an STM program keeps them when it was not flattened, though nothing in
    the file says it is a scan.

    Parameters
    ----------
    image : array_like
        ``(H, W)``; NaN pixels are ignored.
    ratio : float
        The line-to-column ratio from which it counts as a scan.

    Returns
    -------
    bool
    """
    z = np.asarray(image, np.float64)
    if z.ndim != 2 or min(z.shape) < 8 or not np.isfinite(z).any():
        return False
    z = flatten(z, plane=True, lines=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        rows, cols = np.nanmedian(z, axis=1), np.nanmedian(z, axis=0)

    def jump(v: np.ndarray) -> float:
        d = np.diff(v[np.isfinite(v)])
        return float(np.median(np.abs(d))) if d.size else 0.0

    return jump(rows) > ratio * max(jump(cols), 1e-300)


def flatten(
    image: ArrayLike,
    plane: bool = True,
    lines: bool = True,
    mask: ArrayLike | None = None,
    columns: bool = False,
) -> np.ndarray:
    """Remove a least-squares plane, per-scan-line offsets and, optionally,
    the line shape all scan lines share.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` image, or a stack ``(..., H, W)`` flattened plane by plane
        (e.g. a ``(C, H, W)`` spectroscopy cube). NaN pixels (an interrupted
        scan) are ignored by the fits and stay NaN.
    plane : bool
        Subtract the least-squares plane ``a*row + b*col + c``, refitted
        without pixels more than 3 robust sigmas away (defects, adsorbates).
    lines : bool
        Subtract from each row (scan line) its median, which is robust to the
        few defects a line crosses, unlike its mean.
    mask : array_like of bool, optional
        ``(H, W)``: True where pixels are background, used for the fits (False
        excludes e.g. large adsorbates or a step). The correction is still
        applied to every pixel. A row with no background pixel keeps its
        offset.
    columns : bool
        Also subtract the line shape every scan line shares: the median of
        each column over the lines, smoothed along the line by a running
        median (:data:`COLUMN_SMOOTH` px), then the line offsets again. The
        scan-start band of STM scans goes; defects (a few lines each) do not
        move a column's median. Off by default; the analysis
        (:func:`napari_sasd.pipeline.analyse`) turns it on.

    Returns
    -------
    ndarray
        float64 array of the input's shape.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:4, :5]
    >>> z = 0.1 * yy + 0.2 * xx + 3.0
    >>> bool(np.allclose(flatten(z), 0))
    True
    """
    img = np.array(image, dtype=np.float64)  # a copy: the caller's array is untouched
    if img.ndim < 2:
        raise ValueError(f"flatten needs an image (H, W) or a stack (..., H, W), got {img.shape}")
    h, w = img.shape[-2:]
    if mask is None:
        use = np.ones((h, w), bool)
    else:
        use = np.asarray(mask, dtype=bool)
        if use.shape != (h, w):
            raise ValueError(f"mask shape {use.shape} does not match the image's {(h, w)}")
    stack = img.reshape(-1, h, w)
    for frame in stack:  # views into img: corrected in place
        _flatten_2d(frame, plane, lines, use)
        if columns:
            _remove_line_shape(frame, use & np.isfinite(frame))
    return img


def _remove_line_shape(z: np.ndarray, ok: np.ndarray) -> None:
    cols = ok.any(axis=0)
    if cols.sum() < 3:
        return
    prof = np.zeros(z.shape[1])
    for j in np.flatnonzero(cols):
        prof[j] = np.median(z[ok[:, j], j])
    # Unobserved columns take the next observed column's value (the last
    # one's past the end), so the running median does not see zeros there.
    idx = np.flatnonzero(cols)
    prof = prof[idx[np.clip(np.searchsorted(idx, np.arange(z.shape[1])), 0, len(idx) - 1)]]
    size = min(COLUMN_SMOOTH, 2 * (z.shape[1] // 2) - 1)
    prof = ndimage.median_filter(prof, size=max(size, 1), mode="nearest")
    z -= prof[None, :]
    _row_medians(z, ok)


def _row_medians(z: np.ndarray, ok: np.ndarray) -> None:
    for row, m in zip(z, ok, strict=True):
        if m.any():
            row -= np.median(row[m])


def _flatten_2d(z: np.ndarray, plane: bool, lines: bool, use: np.ndarray) -> None:
    ok = use & np.isfinite(z)
    xx = np.broadcast_to(np.arange(z.shape[1], dtype=float), z.shape)
    if plane and lines:
        # Per-line offsets absorb the plane's row slope and constant: only the
        # slope along the lines is left, fitted jointly with the offsets
        # (pooled within-line regression) so lines cut short by NaN or the mask
        # do not bias it.
        keep = ok.copy()
        b = 0.0
        for _ in range(5):
            n = keep.sum(axis=1)
            rows = n >= 2
            if not rows.any():
                break
            xm = np.where(rows, (xx * keep).sum(1) / np.maximum(n, 1), 0.0)[:, None]
            zm = np.where(rows, np.where(keep, z, 0).sum(1) / np.maximum(n, 1), 0.0)[:, None]
            sel = keep & rows[:, None]
            dx = (xx - xm)[sel]
            b = float((dx * (z - zm)[sel]).sum() / max((dx * dx).sum(), 1e-300))
            keep_new = _inliers(z - b * xx, ok, keep)
            if keep_new is None or np.array_equal(keep_new, keep):
                break
            keep = keep_new
        z -= b * (xx - (z.shape[1] - 1) / 2)
    elif plane and ok.sum() >= 3:
        rr, cc = np.nonzero(ok)
        # Centred coordinates keep the normal equations well conditioned.
        r0, c0 = (z.shape[0] - 1) / 2, (z.shape[1] - 1) / 2
        a = np.column_stack([rr - r0, cc - c0, np.ones(rr.size)])
        bvec = z[ok]
        keep1 = np.ones(bvec.size, bool)
        for _ in range(5):
            # Refit without the outliers (defects, adsorbates): > 3 robust sigmas.
            coef, *_ = np.linalg.lstsq(a[keep1], bvec[keep1], rcond=None)
            dev = np.abs(bvec - a @ coef)
            sigma = 1.4826 * np.median(dev[keep1])
            new = dev <= 3 * sigma if sigma > 0 else keep1
            if new.sum() < 3 or np.array_equal(new, keep1):
                break
            keep1 = new
        yy = np.arange(z.shape[0], dtype=float)[:, None]
        z -= coef[0] * (yy - r0) + coef[1] * (xx - c0) + coef[2]
    if lines:
        _row_medians(z, ok)


def _inliers(res: np.ndarray, ok: np.ndarray, keep: np.ndarray) -> np.ndarray | None:
    """Pixels of ``ok`` within 3 robust sigmas of their line's median residual."""
    r = res.copy()
    _row_medians(r, keep)
    dev = np.abs(r)
    sigma = 1.4826 * np.median(dev[keep]) if keep.any() else 0.0
    if sigma <= 0:
        return None
    new = ok & (dev <= 3 * sigma)
    return new if new.sum() >= 3 else None
