"""Yardsticks of ``method.md``: shift-invariant motif similarity and peak matching;
a robust spread."""

from __future__ import annotations

import numpy as np
from scipy import fft, optimize, sparse, spatial


def shift_invariant_similarity(a: np.ndarray, a0: np.ndarray) -> float:
    """``max_tau |<a, s_tau[a0]>| / (||a|| ||a0||)`` over all 2-D shifts.

    Parameters
    ----------
    a, a0 : ndarray
        Motifs ``(kh, kw)`` or ``(C, kh, kw)`` (channels are summed in the
        inner product and share the shift). Sizes may differ.

    Returns
    -------
    float
        In [0, 1]; 1 is exact recovery up to shift and sign.
    """
    a = np.asarray(a, float)
    a0 = np.asarray(a0, float)
    if a.ndim == 2:
        a, a0 = a[None], a0[None]
    if a.shape[0] != a0.shape[0]:
        raise ValueError(f"channel counts differ: {a.shape} vs {a0.shape}")
    na, n0 = np.linalg.norm(a), np.linalg.norm(a0)
    if na == 0 or n0 == 0:
        return 0.0
    # Full 2-D cross-correlation, summed over channels, by FFT.
    s = (a.shape[1] + a0.shape[1] - 1, a.shape[2] + a0.shape[2] - 1)
    corr = fft.irfft2(fft.rfft2(a, s) * np.conj(fft.rfft2(a0, s)), s).sum(0)
    return float(np.abs(corr).max() / (na * n0))


def similarity_matrix(kernels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pairwise shift-invariant similarity, ``(len(kernels), len(truth))``."""
    return np.array([[shift_invariant_similarity(a, b) for b in truth] for a in kernels])


def match_motifs(kernels: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best one-to-one matching of found motifs to true ones (Hungarian).

    Parameters
    ----------
    kernels : ndarray
        Found motifs ``(N, ...)``.
    truth : ndarray
        True motifs ``(M, ...)``.

    Returns
    -------
    sims : ndarray
        ``(M,)`` similarity of each true motif to its match (0 if unmatched).
    assignment : ndarray
        ``(M,)`` index of the found motif matched to each true one (-1 if none).
    """
    S = similarity_matrix(kernels, truth)
    rows, cols = optimize.linear_sum_assignment(-S)
    sims = np.zeros(len(truth))
    assign = -np.ones(len(truth), int)
    sims[cols] = S[rows, cols]
    assign[cols] = rows
    return sims, assign


def precision_recall(
    found: np.ndarray, truth: np.ndarray, tol: float = 2.0
) -> tuple[float, float]:
    """Precision and recall of found positions against true ones, one-to-one within ``tol``.

    Parameters
    ----------
    found, truth : ndarray
        ``(M, 2)`` positions (row, col).
    tol : float
        Largest distance (pixels) at which a found point matches a true one.

    Returns
    -------
    precision, recall : float
    """
    found = np.asarray(found, float).reshape(-1, 2)
    truth = np.asarray(truth, float).reshape(-1, 2)
    if len(found) == 0 or len(truth) == 0:
        return (1.0 if len(found) == 0 else 0.0), (1.0 if len(truth) == 0 else 0.0)
    # Only pairs within tol can match: a sparse candidate graph (k-d tree),
    # solved exactly per connected component, instead of a dense
    # found x truth matrix (tens of GB for a 2048^2 image's defects).
    pairs = spatial.cKDTree(found).sparse_distance_matrix(
        spatial.cKDTree(truth), tol, output_type="coo_matrix"
    )
    nf = len(found)
    graph = sparse.coo_matrix(
        (np.ones(pairs.nnz), (pairs.row, nf + pairs.col)), shape=(nf + len(truth),) * 2
    )
    _, label = sparse.csgraph.connected_components(graph, directed=False)
    hits = 0
    dist = pairs.tocsr()
    for comp in np.unique(label[pairs.row]):
        rows = np.flatnonzero(label[:nf] == comp)
        cols = np.flatnonzero(label[nf:] == comp)
        sub = dist[rows][:, cols].toarray()
        near = sub > 0
        # sparse_distance_matrix drops exact zeros: a zero distance is a hit too.
        exact = np.isclose(spatial.distance.cdist(found[rows], truth[cols]), 0)
        ok = near | exact
        cost = np.where(ok, sub, 1e6)
        r, c = optimize.linear_sum_assignment(cost)
        hits += int(np.sum(ok[r, c]))
    return hits / len(found), hits / len(truth)


def box_scores(
    points: np.ndarray, boxes: np.ndarray, grow: float = 2.0
) -> tuple[float, float, float]:
    """Precision, recall and F1 of points against labelled boxes, one-to-one.

    A point matches a box when it lies inside the box grown by ``grow`` pixels
    on each side; each box claims at most one point and each point at most one
    box (a maximum matching). This is how the human-labelled scans are scored
    (``../shared/data/wse2_mlstm``, ``benchmarks/bench_real.py``).

    Parameters
    ----------
    points : ndarray
        ``(M, 2)`` (row, col) positions.
    boxes : ndarray
        ``(B, 4)`` boxes as ``(x, y, width, height)``, ``x, y`` the top-left
        corner (column, row), in the points' pixel frame.
    grow : float
        Tolerance added to each side of a box, in pixels.

    Returns
    -------
    precision, recall, f1 : float
        Precision is 1 with no point, recall 1 with no box.
    """
    pts = np.asarray(points, float).reshape(-1, 2)
    bx = np.asarray(boxes, float).reshape(-1, 4)
    if len(pts) == 0 or len(bx) == 0:
        p = 1.0 if len(pts) == 0 else 0.0
        r = 1.0 if len(bx) == 0 else 0.0
        return p, r, _f1(p, r)
    r, c = pts[:, 0][:, None], pts[:, 1][:, None]
    x0, y0 = bx[:, 0] - grow, bx[:, 1] - grow
    x1, y1 = bx[:, 0] + bx[:, 2] + grow, bx[:, 1] + bx[:, 3] + grow
    inside = (c >= x0) & (c <= x1) & (r >= y0) & (r <= y1)
    # A maximum bipartite matching on the "inside" graph (Hopcroft-Karp).
    match = sparse.csgraph.maximum_bipartite_matching(
        sparse.csr_matrix(inside.astype(np.int8)), perm_type="column"
    )
    hits = int((match >= 0).sum())
    p, rcl = hits / len(pts), hits / len(bx)
    return p, rcl, _f1(p, rcl)


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def robust_std(v: np.ndarray) -> float:
    """Standard deviation from the median absolute deviation (1.4826 MAD) of
    the finite values of ``v``: the noise level, blind to the few large
    values (defects) a sample holds. 0 for no finite value."""
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    return 1.4826 * float(np.median(np.abs(v - np.median(v))))
