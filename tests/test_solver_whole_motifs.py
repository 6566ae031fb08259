"""Whole motifs, not shift-truncations (issue 13): the papers' model and smooth motifs.

On the sphere the local minima sit near signed shift-truncations of the true
motif (method.md): the motif moved by a pixel, a row cut off, the opposite row
empty; similarity about sqrt(11/12) = 0.957 at k = 12. These tests check that
solves end at the whole motif (>= 0.99) on the papers' own model (random
motifs, signed Bernoulli-Gaussian activations) and on smooth positive motifs.
"""

from __future__ import annotations

import numpy as np
import pytest

import napari_sasd
from napari_sasd import solver
from napari_sasd.metrics import match_motifs, shift_invariant_similarity
from napari_sasd.solver import shift_zero
from napari_sasd.synthetic import make_sparse_model, make_synthetic


def _truncated(kernel: np.ndarray, d: tuple[int, int]) -> np.ndarray:
    """The motif shifted by ``d`` with what leaves the k x k window cut off."""
    a = shift_zero(kernel, np.array(d))
    return a / np.linalg.norm(a)


def test_sparse_model_generator():
    d = make_sparse_model((96, 80), (8, 6), 2, theta=0.02, noise=0.1, seed=3)
    assert d.image.shape == (96, 80) and d.kernels.shape == (2, 8, 6)
    assert np.allclose(np.linalg.norm(d.kernels.reshape(2, -1), axis=1), 1)
    # Signed Gaussian amplitudes at Bernoulli(theta) places.
    x = d.activations[d.activations != 0]
    assert (x < 0).mean() > 0.3 and (x > 0).mean() > 0.3
    assert abs((d.activations != 0).mean() - 0.02) < 0.005
    assert d.noise > 0 and sum(len(p) for p in d.positions) == len(x)
    # The default density is the talk's 1.5 / p for one motif; random motifs
    # are not alike (no shared smooth shape).
    d1 = make_sparse_model((64, 64), 12, 2, seed=0)
    assert d1.theta == pytest.approx(1.5 / 144)
    assert shift_invariant_similarity(d1.kernels[0], d1.kernels[1]) < 0.8
    assert np.array_equal(make_sparse_model((64, 64), 12, seed=5).image,
                          make_sparse_model((64, 64), 12, seed=5).image)  # fmt: skip
    # Smooth motifs with positive amplitudes: neighbouring pixels alike.
    s = make_sparse_model((64, 64), 12, 1, smooth=1.5, positive=True, seed=1)
    a = s.kernels[0]
    assert np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1] > 0.7
    assert (s.activations >= 0).all() and (s.activations > 0).any()


def test_looks_cut_flags_shift_truncations_only():
    flagged_whole, flagged_cut = 0, 0
    for seed in range(40):
        k = (8, 12, 16)[seed % 3]
        a = make_sparse_model((32, 32), k, seed=seed).kernels[0]
        flagged_whole += solver._looks_cut(a[None])
        flagged_cut += solver._looks_cut(_truncated(a, (1, -1) if seed % 2 else (0, 1))[None])
        smooth = make_synthetic((32, 32), k, seed=seed).kernels[0]
        # A smooth motif fades out at both ends.
        flagged_whole += solver._looks_cut(smooth[None])
    assert flagged_whole == 0 and flagged_cut == 40


def test_recentring_keeps_a_random_motif_whole():
    # A random motif has no centre: its energy centroid is off the middle by
    # up to a pixel. The crop must keep the window holding all of it.
    hits = 0
    for seed in range(20):
        a = make_sparse_model((32, 32), 12, seed=seed).kernels[0]
        lifted = np.zeros((24, 24))
        lifted[6:18, 6:18] = a
        p0 = solver._centred_window(lifted**2, (12, 12))
        hits += tuple(p0) == (6, 6)
    assert hits == 20


@pytest.mark.parametrize("k", [8, 12, 16])
def test_sparse_model_one_motif_recovers_whole(k):
    # (a) The papers' model at the talk's density 1.5 / k^2, 256^2 (the
    # discovery crop then a k x k finish), clean and noisy (0.1 of the image
    # std) on alternate seeds: >= 0.99 on at least 95 % of the solves.
    # Before the fix, 15-19 of 30 seeds per k.
    sims = []
    for seed in range(10):
        d = make_sparse_model((256, 256), k, 1, noise=0.1 * (seed % 2), seed=100 + seed)
        res = napari_sasd.solve(d.image, k, 1, positive=False)
        sims.append(match_motifs(res.kernels, d.kernels)[0][0])
    assert sum(s >= 0.99 for s in sims) >= 10, np.round(sims, 4)


@pytest.mark.parametrize(
    ("kind", "n_motifs"),
    [("signed", 2), ("signed", 3), ("smooth", 2), ("smooth", 3), ("stm", 2)],
)
def test_several_motifs_recover_whole(kind, n_motifs):
    # (b) Several motifs: the papers' model (signed), smooth random motifs
    # with positive amplitudes (energy up to their border: 0-2 of 10 seeds
    # whole before the fix), and the STM-like shapes; 160^2 (small for CI
    # time; 256^2 and 512^2 are measured in benchmarks/), clean and noisy
    # (0.1 of the image std) on alternate seeds: every motif >= 0.99 in at
    # least 90 % of the seeds.
    worst = []
    for seed in range(10):
        noise = 0.1 * (seed % 2)
        if kind == "stm":
            d = make_synthetic((160, 160), 10, n_motifs, seed=200 + seed)
            rng = np.random.default_rng(seed)
            image = d.image + noise * d.image.std() * rng.standard_normal(d.image.shape)
        else:
            d = make_sparse_model(
                (160, 160), 10, n_motifs, theta=1.5 / (100 * n_motifs), noise=noise,
                smooth=1.5 if kind == "smooth" else 0.0, positive=kind == "smooth",
                seed=200 + seed,
            )  # fmt: skip
            image = d.image
        res = napari_sasd.solve(image, 10, n_motifs, positive=kind != "signed")
        worst.append(match_motifs(res.kernels, d.kernels)[0].min())
    assert sum(s >= 0.99 for s in worst) >= 9, np.round(worst, 4)


@pytest.mark.parametrize("shift", [(1, 0), (0, -1), (-1, 1)])
def test_warm_start_from_a_shift_truncation_ends_whole(shift):
    # (c) init_kernels: the true motif moved by a pixel and cut. On the k x k
    # support alone that is a stationary point (it used to stay at 0.91-0.96).
    for seed in range(2):
        d = make_sparse_model((256, 256), 12, 1, seed=300 + seed)
        init = _truncated(d.kernels[0], shift)[None]
        assert match_motifs(init, d.kernels)[0][0] < 0.98
        res = napari_sasd.solve(d.image, 12, 1, positive=False, init_kernels=init)
        assert match_motifs(res.kernels, d.kernels)[0][0] >= 0.99


def test_a_cut_motif_from_discovery_is_made_whole(monkeypatch):
    # The final check: whatever stage left a motif cut by its border (here a
    # discovery made to return shift-truncations), the solve refines it on
    # the lifted support and ends at the whole motif.
    d = make_sparse_model((256, 256), 12, 2, theta=1.5 / 288, seed=7)
    cut = [_truncated(d.kernels[0], (1, 0))[None], _truncated(d.kernels[1], (0, -1))[None]]

    def discover(self, lam, early, final):
        yield from ()
        return [c.copy() for c in cut]

    monkeypatch.setattr(solver._Solver, "_discover", discover)
    snaps = []
    gen = napari_sasd.iter_solve(d.image, 12, 2, positive=False)
    while True:
        try:
            snaps.append(next(gen))
        except StopIteration as stop:
            res = stop.value
            break
    assert match_motifs(res.kernels, d.kernels)[0].min() >= 0.99
    stages = [s.stage for s in snaps]
    assert stages == sorted(stages) and max(stages) < snaps[-1].n_stages
    assert snaps[-1].iteration <= snaps[-1].total
