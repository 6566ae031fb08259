"""The public entry points: :func:`solve` and :func:`iter_solve`."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from .._version import __version__
from ..result import SolveProgress, SolveResult, run_to_end
from ..validation import prepare
from .driver import _Solver


def solve(
    image: np.ndarray,
    kernel_size: int | tuple[int, int] = 15,
    n_motifs: int = 1,
    lam: float | None = None,
    *,
    channel_axis: int | None = None,
    positive: bool = True,
    mask: np.ndarray | None = None,
    seed: int = 0,
    max_iter: int | None = None,
    init_kernels: np.ndarray | None = None,
    tol: float = 1e-4,
    shrink: float | None = None,
    workers: int | None = None,
) -> SolveResult:
    """Find ``n_motifs`` short motifs and their sparse activation maps in an image.

    Parameters
    ----------
    image : array_like
        2-D image, or 3-D stack with ``channel_axis`` (a spectroscopy cube:
        one kernel per channel, one activation map per motif shared by all
        channels). Integer or float; NaN pixels are left out of the fit.
    kernel_size : int or (int, int)
        Motif size ``k`` or ``(kh, kw)`` in pixels: a bit larger than a defect.
    n_motifs : int
        Number of distinct motifs to find.
    lam : float, optional
        Sparsity weight on the normalised image (median 0, std 1). Larger
        gives fewer, stronger copies. None picks
        ``max(0.1 * lam_max, 2.5 * noise)``, with ``lam_max`` the largest
        correlation of the data with the initial motif and ``noise`` a robust
        estimate of the noise std (:func:`noise_sigma`).
    channel_axis : int, optional
        Axis of a 3-D ``image`` holding channels.
    positive : bool
        Non-negative activations (a copy's sign lives in its motif).
    mask : ndarray of bool, optional
        ``(H, W)`` True where a pixel is observed; False pixels are ignored.
    seed : int
        0 (default) starts from the most energetic, most distinct data
        windows; another seed jitters that choice, for a different start when
        a result looks wrong. Results are deterministic for a given seed.
    max_iter : int, optional
        Iteration budget over all stages, split among them in the default
        proportions; default: about 110-190 for one motif, 380-650 for two or
        three (stages stop early when they converge; most iterations run on
        the discovery crop, a whole-image one costs 5-11 FFTs of the image).
    init_kernels : ndarray, optional
        Warm start: motifs of a previous result, ``(n_motifs, kh, kw)`` (or
        ``(n_motifs, C, kh, kw)``). Skips the data initialisation and most of
        the continuation, so a re-run after changing lambda is fast. A motif
        that looks shifted and cut by its border (one outermost row or column
        empty, the opposite one heavy) is first refined on a lifted support.
    tol : float
        Relative change of activations and motifs at which a stage stops.
    shrink : float
        Factor by which lambda decreases per continuation stage; default 0.7
        for one motif, 0.8 (gentler, measured more reliable) for several.
    workers : int, optional
        Threads for ``scipy.fft`` (-1: all cores); default: one thread for
        transforms below 800^2 pixels (faster there), all cores above.

    Returns
    -------
    SolveResult

    Raises
    ------
    TypeError, ValueError
        On bad input, before any work starts.
    """
    return run_to_end(
        iter_solve(
            image, kernel_size, n_motifs, lam, channel_axis=channel_axis, positive=positive,
            mask=mask, seed=seed, max_iter=max_iter, init_kernels=init_kernels, tol=tol,
            shrink=shrink, workers=workers,
        )
    )  # fmt: skip


def iter_solve(
    image: np.ndarray,
    kernel_size: int | tuple[int, int] = 15,
    n_motifs: int = 1,
    lam: float | None = None,
    *,
    channel_axis: int | None = None,
    positive: bool = True,
    mask: np.ndarray | None = None,
    seed: int = 0,
    max_iter: int | None = None,
    init_kernels: np.ndarray | None = None,
    tol: float = 1e-4,
    shrink: float | None = None,
    workers: int | None = None,
) -> Generator[SolveProgress, None, SolveResult]:
    """Like :func:`solve`, as a generator of progress snapshots.

    Inputs are checked when this is called (not at the first ``next``). The
    generator yields a :class:`SolveProgress` after every iteration and
    returns the :class:`SolveResult` (``StopIteration.value``; ``result =
    yield from iter_solve(...)``). Closing it cancels the run.

    Parameters and exceptions are those of :func:`solve`.
    """
    prob = prepare(image, kernel_size, n_motifs, lam, channel_axis, mask, init_kernels)
    if shrink is None:
        shrink = 0.7 if prob.n_motifs == 1 else 0.8
    if not 0 < shrink < 1:
        raise ValueError(f"shrink must be between 0 and 1, got {shrink}")
    if max_iter is not None and (isinstance(max_iter, bool) or int(max_iter) < 1):
        raise ValueError(f"max_iter must be a positive int, got {max_iter}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    params: dict[str, Any] = {
        "kernel_size": list(prob.kernel_size),
        "n_motifs": prob.n_motifs,
        "lam": prob.lam,
        "channel_axis": prob.channel_axis,
        "positive": bool(positive),
        "seed": int(seed),
        "max_iter": None if max_iter is None else int(max_iter),
        "tol": float(tol),
        "shrink": float(shrink),
        "warm_start": init_kernels is not None,
        "masked_pixels": 0 if prob.omega is None else int((prob.omega == 0).sum()),
        "version": __version__,
    }
    return _Solver(prob, positive, seed, max_iter, tol, shrink, workers).run(params)
