"""Locating known motifs in a large image tile by tile, with bounded memory.

Each core tile is located (:class:`napari_sasd.locate._Locator`) on the tile
extended by ``overlap`` pixels on every side, and only the copies centred in
its core are kept: a copy near the core's edge sees every copy it overlaps,
and those see theirs, so the result matches the untiled fit up to the
solver's tolerance (tested). Lambda and the normalisation are the whole
image's: the lasso is equivariant under a change of the image's scale, so
each tile is normalised on its own and given lambda in image units; its
background is fitted per tile (a slowly varying background is then followed
tile by tile).

A plain loop over tiles rather than ``dask.array.map_overlap``: the tiles'
outputs go straight into the result's preallocated maps (one tile's working
memory at a time), the input is read one slab at a time from anything that
slices (a ``numpy.memmap``, a memory-mapped TIFF, zarr, dask), and dask stays
an optional dependency. Parallelism belongs to the batch runner, one task per
file (:mod:`napari_sasd.distributed`).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import numpy as np

from .locate import _Locator, locate_params
from .result import SolveProgress, SolveResult
from .validation import prepare

__all__ = ["iter_locate_tiled", "spatial_shape", "tile_grid"]

#: Pixels up to which the image's offset (median) and scale come from every
#: pixel, as an untiled run's; larger images use a regular subsample of this
#: many pixels for the median (the scale then sums every pixel, tile by tile).
EXACT_STATS_PIXELS = 2**24
#: lam=None on a tiled image: chosen as solve would on the central window of
#: this side (solve's choice is a maximum correlation and a noise level).
AUTO_LAM_WINDOW = 2048


def spatial_shape(image: Any, channel_axis: int | None) -> tuple[int, int]:
    """``(H, W)`` of a 2-D image or of a 3-D stack with ``channel_axis``."""
    shape = tuple(np.shape(image))
    if len(shape) == 3 and channel_axis is not None:
        ax = int(channel_axis) % 3
        shape = tuple(v for i, v in enumerate(shape) if i != ax)
    if len(shape) != 2:
        raise ValueError(
            f"image must be 2-D, or 3-D with a channel_axis; got shape {np.shape(image)}"
        )
    return int(shape[0]), int(shape[1])


def tile_grid(H: int, W: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Core tiles ``(r0, r1, c0, c1)`` covering ``(H, W)``, of near-equal sides <= ``tile``."""
    nr, nc = math.ceil(H / tile), math.ceil(W / tile)
    rs = np.linspace(0, H, nr + 1).round().astype(int)
    cs = np.linspace(0, W, nc + 1).round().astype(int)
    return [
        (int(rs[i]), int(rs[i + 1]), int(cs[j]), int(cs[j + 1]))
        for i in range(nr)
        for j in range(nc)
    ]


class _Slabs:
    """Reads windows of the image (and mask) with the channel axis where it was."""

    def __init__(self, image: Any, mask: Any, channel_axis: int | None) -> None:
        self.image = image
        self.mask = mask
        self.ax = None if channel_axis is None else int(channel_axis) % 3

    def _index(self, r0: int, r1: int, c0: int, c1: int) -> tuple[slice, ...]:
        sl = [slice(r0, r1), slice(c0, c1)]
        if self.ax is not None:
            sl.insert(self.ax, slice(None))
        return tuple(sl)

    def image_at(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return np.asarray(self.image[self._index(r0, r1, c0, c1)])

    def mask_at(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray | None:
        if self.mask is None:
            return None
        m = self.mask
        if np.ndim(m) == 2:
            return np.asarray(m[r0:r1, c0:c1])
        return np.asarray(m[self._index(r0, r1, c0, c1)])

    def stack_at(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """Window as ``(C, h, w)`` float64 with its observed pixels."""
        win = self.image_at(r0, r1, c0, c1).astype(np.float64)
        stack = win[None] if self.ax is None else np.moveaxis(win, self.ax, 0)
        obs = np.isfinite(stack)
        m = self.mask_at(r0, r1, c0, c1)
        if m is not None:
            obs &= (
                m[None]
                if m.ndim == 2
                else (m[None] if self.ax is None else np.moveaxis(m, self.ax, 0))
            )
        return stack, obs


def _image_stats(slabs: _Slabs, H: int, W: int, tile: int) -> tuple[np.ndarray, float]:
    """Offset (median per channel) and scale of the whole image, as
    :func:`napari_sasd.validation.prepare` computes them (exactly up to
    ``EXACT_STATS_PIXELS``; the median from a regular subsample above)."""
    if H * W <= EXACT_STATS_PIXELS:
        stack, obs = slabs.stack_at(0, H, 0, W)
        offset = np.array([np.median(stack[c][obs[c]]) for c in range(len(stack))])
        cent = np.where(obs, stack - offset[:, None, None], 0.0)
        n = int(obs.sum())
        return offset, float(np.sqrt(np.sum(cent**2) / max(n, 1)))
    step = math.ceil(math.sqrt(H * W / EXACT_STATS_PIXELS))
    samples: list[list[np.ndarray]] = []
    for r0, r1, c0, c1 in tile_grid(H, W, tile):
        # Rows and columns on the global stride, whatever the tile.
        rr0, cc0 = -(-r0 // step) * step, -(-c0 // step) * step
        stack, obs = slabs.stack_at(r0, r1, c0, c1)
        sub, ok = (
            stack[:, rr0 - r0 :: step, cc0 - c0 :: step],
            obs[:, rr0 - r0 :: step, cc0 - c0 :: step],
        )
        if not samples:
            samples = [[] for _ in range(len(stack))]
        for c in range(len(stack)):
            samples[c].append(sub[c][ok[c]])
    offset = np.array([np.median(np.concatenate(s)) if s else 0.0 for s in samples])
    total, n = 0.0, 0
    for r0, r1, c0, c1 in tile_grid(H, W, tile):
        stack, obs = slabs.stack_at(r0, r1, c0, c1)
        total += float(np.sum(np.where(obs, stack - offset[:, None, None], 0.0) ** 2))
        n += int(obs.sum())
    return offset, float(np.sqrt(total / max(n, 1)))


def iter_locate_tiled(
    image: Any,
    kern: np.ndarray,
    lam: float | None,
    *,
    mask: Any,
    channel_axis: int | None,
    positive: bool,
    max_iter: int | None,
    tol: float,
    workers: int | None,
    tile: int,
    overlap: int | None,
) -> Generator[SolveProgress, None, SolveResult]:
    """:func:`napari_sasd.iter_locate` of an image larger than ``tile``:
    checks, then the tiles one by one (a progress snapshot per working-set
    round, ``stage`` the tile). ``kern`` are checked, unit-norm motifs."""
    H, W = spatial_shape(image, channel_axis)
    kh, kw = kern.shape[-2:]
    ndim = len(np.shape(image))
    C = 1 if channel_axis is None else np.shape(image)[int(channel_axis) % 3]
    if ndim == 3 and kern.shape[1] != C:
        raise ValueError(f"kernels have {kern.shape[1]} channels but the image has {C}")
    if isinstance(tile, bool) or int(tile) < 4 * max(kh, kw):
        raise ValueError(f"tile must be at least 4 motif sizes ({4 * max(kh, kw)}), got {tile}")
    ov = 2 * max(kh, kw) if overlap is None else int(overlap)
    if ov < max(kh, kw):
        raise ValueError(f"overlap must be at least the motif size ({max(kh, kw)}), got {ov}")
    if mask is not None:
        mshape = tuple(np.shape(mask))
        if mshape != (H, W) and mshape != tuple(np.shape(image)):
            raise ValueError(
                f"mask has shape {mshape}; it must match the image's spatial shape {(H, W)}"
            )
        if np.asarray(mask[:1, :1] if len(mshape) == 2 else mask[:1, :1, :1]).dtype != bool:
            raise TypeError("mask must be boolean (True = observed pixel)")
    if lam is not None and (isinstance(lam, bool) or not lam > 0 or not np.isfinite(lam)):
        raise ValueError(f"lam must be positive and finite, or None for automatic; got {lam}")
    slabs = _Slabs(image, mask, channel_axis)
    return _run(slabs, kern, lam, H, W, C, positive, max_iter, tol, workers, int(tile), ov)


def _run(
    slabs: _Slabs,
    kern: np.ndarray,
    lam: float | None,
    H: int,
    W: int,
    C: int,
    positive: bool,
    max_iter: int | None,
    tol: float,
    workers: int | None,
    tile: int,
    ov: int,
) -> Generator[SolveProgress, None, SolveResult]:
    N = len(kern)
    kh, kw = kern.shape[-2:]
    _offset, scale = _image_stats(slabs, H, W, tile)
    if not scale > 0:
        raise ValueError("the image is constant over its observed pixels: there is nothing to fit")
    if lam is None:
        # As solve picks it, on the central window (a maximum correlation and
        # a noise level: local statistics), then in image units.
        side = min(AUTO_LAM_WINDOW, H), min(AUTO_LAM_WINDOW, W)
        r0, c0 = (H - side[0]) // 2, (W - side[1]) // 2
        win = slabs.image_at(r0, r0 + side[0], c0, c0 + side[1])
        m = slabs.mask_at(r0, r0 + side[0], c0, c0 + side[1])
        prob = prepare(win, (kh, kw), N, None, slabs.ax, m, kern)
        lam_img = _Locator(prob, positive, 0, max_iter, tol, 0.8, workers).auto_lam() * prob.scale
    else:
        lam_img = float(lam) * scale
    tiles = tile_grid(H, W, tile)
    acts = np.zeros((N, H, W), np.float32)
    recon = np.zeros((C, H, W), np.float32)
    bias_sum = np.zeros(C)
    explained = np.zeros(N)
    energy = 0.0
    n_iter, converged, obj = 0, True, 0.0
    for t, (r0, r1, c0, c1) in enumerate(tiles):
        e0, e1 = max(0, r0 - ov), min(H, r1 + ov)
        f0, f1 = max(0, c0 - ov), min(W, c1 + ov)
        core = (slice(r0 - e0, r1 - e0), slice(c0 - f0, c1 - f0))
        try:
            prob = prepare(
                slabs.image_at(e0, e1, f0, f1), (kh, kw), N, None, slabs.ax,
                slabs.mask_at(e0, e1, f0, f1), kern,
            )  # fmt: skip
        except ValueError:
            # A tile with (almost) nothing observed, or constant: no copies.
            recon[:, r0:r1, c0:c1] = np.nan
            continue
        prob.lam = lam_img / prob.scale
        loc = _Locator(prob, positive, 0, max_iter, tol, 0.8, workers)
        gen = loc.locate(locate_params(prob, positive, max_iter, tol))
        while True:
            try:
                prog = next(gen)
            except StopIteration as stop:
                res = stop.value
                break
            yield SolveProgress(
                t, len(tiles), n_iter + prog.iteration, len(tiles) * prog.total,
                prog.objective, prog.lam, prog.kernels,
            )  # fmt: skip
        n_iter += res.n_iter
        converged &= res.converged
        obj += res.objective * prob.scale**2
        acts[:, r0:r1, c0:c1] = res.activations[:, core[0], core[1]]
        rec = (
            res.reconstruction
            if slabs.ax is None
            else np.moveaxis(res.reconstruction, slabs.ax, 0)
        )
        recon[:, r0:r1, c0:c1] = rec.reshape(C, *rec.shape[-2:])[:, core[0], core[1]]
        area = (r1 - r0) * (c1 - c0)
        bias_sum += np.atleast_1d(res.bias) * area
        # The tile's explained energy, weighted by its (de-meaned) energy.
        e = float(np.sum(prob.y[:, core[0], core[1]].astype(np.float64) ** 2)) * prob.scale**2
        explained += res.explained * e
        energy += e
    bias = bias_sum / (H * W)
    params = locate_params(prob, positive, max_iter, tol)
    # The last tile's record, with the whole image's lambda and the tiling.
    params.pop("masked_pixels")
    params.update(
        lam=lam,
        lam_used=lam_img / scale,
        tiles={"tile": tile, "overlap": ov, "n_tiles": len(tiles)},
    )
    out_recon = recon[0] if slabs.ax is None else np.moveaxis(recon, 0, slabs.ax)
    return SolveResult(
        kernels=(kern[:, 0] if slabs.ax is None else kern).astype(np.float64),
        activations=acts,
        bias=float(bias[0]) if slabs.ax is None else bias,
        lam=lam_img / scale,
        reconstruction=out_recon,
        objective=obj / scale**2,
        n_iter=n_iter,
        converged=bool(converged),
        explained=explained / max(energy, 1e-300),
        params=params,
    )
