"""Recovery of the solver core against synthetic ground truth (method.md's yardsticks)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import signal

import napari_sasd
from napari_sasd import solver
from napari_sasd.convolution import ConvOperator, PeriodicConvOperator
from napari_sasd.metrics import match_motifs, precision_recall
from napari_sasd.peaks import find_defects
from napari_sasd.solver import shift_zero
from napari_sasd.synthetic import make_synthetic


def _recall_precision(res, data):
    sims, assign = match_motifs(res.kernels, data.kernels)
    defects = find_defects(res.activations)
    pr = [
        precision_recall(defects.positions[defects.motif == n], data.positions[m])
        for m, n in enumerate(assign)
    ]
    return sims, np.array(pr)


def test_one_motif_recovers_on_nine_of_ten_seeds():
    ok = []
    for seed in range(10):
        size = (128, 160, 192, 256)[seed % 4]
        k = (8, 10, 12, 15)[seed % 4]
        d = make_synthetic((size, size), k, 1, copies_per_area=1.5, noise=0.02, seed=seed)
        res = napari_sasd.solve(d.image, k, 1)
        ok.append(match_motifs(res.kernels, d.kernels)[0][0])
    assert sum(s >= 0.99 for s in ok) >= 9, np.round(ok, 4)


@pytest.mark.parametrize(("n_motifs", "size"), [(2, 160), (3, 192)])
def test_several_motifs_recover_after_matching(n_motifs, size):
    worst = []
    for seed in range(4):
        d = make_synthetic((size, size), 10, n_motifs, noise=0.02, seed=seed)
        res = napari_sasd.solve(d.image, 10, n_motifs)
        worst.append(match_motifs(res.kernels, d.kernels)[0].min())
    assert sum(s >= 0.97 for s in worst) >= 3, np.round(worst, 4)


def test_channel_cube_shares_activations():
    d = make_synthetic((128, 128), 10, 1, n_channels=3, noise=0.02, seed=1)
    cube = np.moveaxis(d.image, 0, -1)  # channels last, to exercise channel_axis
    res = napari_sasd.solve(cube, 10, 1, channel_axis=-1)
    assert res.kernels.shape == (1, 3, 10, 10)
    assert res.reconstruction.shape == cube.shape
    assert np.isclose(np.linalg.norm(res.kernels[0]), 1)
    assert match_motifs(res.kernels, d.kernels)[0][0] >= 0.98


def test_border_cut_motifs_and_nan_pixels():
    d = make_synthetic((128, 128), 12, 1, noise=0.02, nan_fraction=0.1, border=True, seed=3)
    assert np.isnan(d.image).mean() > 0.05
    res = napari_sasd.solve(d.image, 12, 1)
    assert match_motifs(res.kernels, d.kernels)[0][0] >= 0.97
    assert np.all(np.isfinite(res.activations))


def _drain(gen):
    """All progress snapshots of an ``iter_solve`` generator, and its result."""
    snaps = []
    while True:
        try:
            snaps.append(next(gen))
        except StopIteration as stop:
            return snaps, stop.value


def _spy(monkeypatch, name):
    """Count calls of a ``_Solver`` generator method (which path a solve took)."""
    calls = []
    orig = getattr(solver._Solver, name)

    def spy(self, *args, **kwargs):
        calls.append(self.y.shape)
        return (yield from orig(self, *args, **kwargs))

    monkeypatch.setattr(solver._Solver, name, spy)
    return calls


def test_several_motifs_on_a_large_image_learn_on_a_crop(monkeypatch):
    # 256^2 with k = 8: the discovery crop (128) is a quarter of the image, so
    # motifs are discovered and refined jointly on it; the copies outside it
    # must still be found on the whole image.
    calls = _spy(monkeypatch, "_joint_on_crop")
    worst, recall = [], []
    for seed in range(3):
        d = make_synthetic((256, 256), 8, 2, noise=0.02, seed=seed)
        res = napari_sasd.solve(d.image, 8, 2)
        sims, pr = _recall_precision(res, d)
        worst.append(sims.min())
        recall.append(min(r for _, r in pr))
    assert len(calls) == 3
    assert sum(s >= 0.99 for s in worst) >= 2, np.round(worst, 4)
    assert np.median(recall) >= 0.85, np.round(recall, 3)


@pytest.mark.parametrize("still_moving", [False, True])
def test_crop_refinement_continues_while_a_motif_moves(monkeypatch, still_moving):
    # The whole image's k x k stages can't move a motif, so the crop's joint
    # refinement gets another stage when re-centring still shifts a motif by
    # more than a pixel, and only then; stage numbers stay within n_stages.
    d = make_synthetic((256, 256), 8, 2, noise=0.02, seed=1)
    extra = _spy(monkeypatch, "_continuation")
    recentre = solver._Solver._recentre

    def recentre_reporting(self):
        recentre(self)
        if still_moving and self.y.shape[1:] == (128, 128) and self.p.n_motifs == 2:
            self.moved = 3  # as if the crop's joint stage had left a motif 3 px off

    monkeypatch.setattr(solver._Solver, "_recentre", recentre_reporting)
    snaps, res = _drain(napari_sasd.iter_solve(d.image, 8, 2))
    joint_on_crop = [shape for shape in extra if shape[1:] == (128, 128)]
    # Discovery's continuations run on 128 crops too, one per motif: 2 of
    # them; the crop's joint stage is one more, the extra stage another.
    assert len(joint_on_crop) == 2 + 1 + still_moving
    stages = [s.stage for s in snaps]
    assert stages == sorted(stages) and max(stages) < snaps[-1].n_stages
    assert match_motifs(res.kernels, d.kernels)[0].min() >= 0.99


def test_recentring_reports_how_far_it_moved_a_motif():
    d = make_synthetic((64, 64), 8, 1, noise=0.02, seed=2)
    s = solver._Solver(solver.prepare(d.image, 8, 1, None, None, None, None), True, 0, None,
                       1e-4, 0.7, None)  # fmt: skip
    K = s._lift()  # 16 x 16: a centred 8 x 8 window starts at (4, 4)
    g = np.exp(-((np.arange(8) - 3.5) ** 2) / 4)
    a = np.zeros((1, 1, *K), np.float32)
    a[0, 0, 5:13, 1:9] = np.outer(g, g)  # a symmetric blob, off by (1, -3)
    s._setup_op(K, a, np.zeros((1, 64 + K[0] - 1, 64 + K[1] - 1), np.float32))
    s._recentre()
    assert s.moved == 3
    assert np.abs(s.a[0, 0, 4:12, 4:12]).sum() > 0.999 * np.abs(s.a).sum()
    s._recentre()
    assert s.moved == 0


def test_one_motif_from_a_crop_with_missing_pixels():
    # 256^2, k = 8: learnt on a 128 crop, finished on the whole image; 10 % NaN
    # and motifs cut by the border must stay out of the fit in both.
    d = make_synthetic((256, 256), 8, 1, noise=0.02, nan_fraction=0.1, border=True, seed=13)
    res = napari_sasd.solve(d.image, 8, 1)
    sims, pr = _recall_precision(res, d)
    assert sims[0] >= 0.99
    assert pr[0][1] >= 0.85, pr
    assert np.all(np.isfinite(res.activations))


def test_activation_peaks_match_true_copies():
    d = make_synthetic((192, 192), 10, 1, noise=0.02, seed=5)
    res = napari_sasd.solve(d.image, 10, 1)
    sims, pr = _recall_precision(res, d)
    assert sims[0] >= 0.99
    precision, recall = pr[0]
    assert precision >= 0.9 and recall >= 0.9, pr


def test_same_convolution_convention_reproduces_reconstruction():
    d = make_synthetic((96, 112), (9, 11), 2, noise=0.02, seed=2)
    res = napari_sasd.solve(d.image, (9, 11), 2, max_iter=60)
    assert res.kernels.shape == (2, 9, 11)
    assert res.activations.shape == (2, 96, 112)
    model = sum(
        signal.convolve(x.astype(float), a, mode="same")
        for x, a in zip(res.activations, res.kernels, strict=True)
    )
    np.testing.assert_allclose(model + res.bias, res.reconstruction, atol=1e-3 * np.ptp(d.image))
    np.testing.assert_allclose(np.linalg.norm(res.kernels.reshape(2, -1), axis=1), 1, atol=1e-6)
    assert np.all(res.activations >= 0)
    # motifs ordered by how much of the image they explain
    assert np.all(np.diff(res.explained) <= 0)


def test_recentring_shift_keeps_the_model():
    # a'[p] = a[p - d] with x'[s] = x[s + d] must give the same image; the
    # opposite sign (a bug of two public implementations) would not.
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1, 15, 15))
    a[..., -3:, :] = a[..., :, :3] = 0  # what the shift pushes out must be zero
    x = (rng.random((1, 60, 60)) < 0.02) * 1.0
    x[..., :4, :] = x[..., -4:, :] = x[..., :, :4] = x[..., :, -4:] = 0
    d = np.array([2, -3])
    y0 = signal.convolve(x[0], a[0])
    y1 = signal.convolve(shift_zero(x, -d)[0], shift_zero(a, d)[0])
    np.testing.assert_allclose(y0, y1, atol=1e-12)
    y_wrong = signal.convolve(shift_zero(x, d)[0], shift_zero(a, d)[0])
    assert np.abs(y_wrong - y0).max() > 0.1


def test_scale_and_offset_invariance():
    d = make_synthetic((96, 96), 9, 1, noise=0.02, seed=4)
    r1 = napari_sasd.solve(d.image, 9, 1, max_iter=80)
    r2 = napari_sasd.solve(d.image * 1000 + 17, 9, 1, max_iter=80)
    assert np.isclose(r1.lam, r2.lam, rtol=1e-4)
    np.testing.assert_allclose(r1.kernels, r2.kernels, atol=2e-3)
    np.testing.assert_allclose(r2.activations, 1000 * r1.activations, atol=2e-3 * 1000)
    assert np.isclose(r2.bias, 1000 * r1.bias + 17, atol=1e-2 * 1000)


def test_deterministic_for_a_seed():
    d = make_synthetic((80, 80), 8, 2, noise=0.05, seed=6)
    r1 = napari_sasd.solve(d.image, 8, 2, seed=3, max_iter=40)
    r2 = napari_sasd.solve(d.image, 8, 2, seed=3, max_iter=40)
    np.testing.assert_array_equal(r1.kernels, r2.kernels)
    np.testing.assert_array_equal(r1.activations, r2.activations)


def test_integer_and_float64_inputs_and_signed_activations():
    d = make_synthetic((80, 80), 8, 1, noise=0.02, seed=7)
    img16 = np.round((d.image - d.image.min()) * 1000).astype(np.uint16)
    r = napari_sasd.solve(img16, 8, 1, max_iter=50)
    assert r.reconstruction.shape == (80, 80)
    r = napari_sasd.solve(d.image.astype(np.float64), 8, 1, positive=False, max_iter=50)
    flat = r.kernels.reshape(1, -1)
    assert flat[0, np.abs(flat[0]).argmax()] > 0  # sign convention


def test_iter_solve_yields_progress_and_returns_result():
    d = make_synthetic((64, 64), 8, 1, seed=8)
    snaps, res = _drain(napari_sasd.iter_solve(d.image, 8, 1, max_iter=30))
    assert isinstance(res, napari_sasd.SolveResult)
    assert [s.iteration for s in snaps] == list(range(1, len(snaps) + 1))
    assert snaps[-1].kernels.shape == (1, 8, 8)
    assert 0 < snaps[0].fraction <= snaps[-1].fraction <= 1
    # closing the generator cancels: no result, no error
    gen = napari_sasd.iter_solve(d.image, 8, 1)
    next(gen)
    gen.close()


def test_warm_start_uses_previous_motifs():
    d = make_synthetic((128, 128), 10, 1, noise=0.02, seed=9)
    r1 = napari_sasd.solve(d.image, 10, 1)
    r2 = napari_sasd.solve(d.image, 10, 1, lam=r1.lam * 0.7, init_kernels=r1.kernels)
    assert r2.n_iter < r1.n_iter
    assert match_motifs(r2.kernels, d.kernels)[0][0] >= 0.99


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"kernel_size": 200}, ValueError, "larger than the image"),
        ({"n_motifs": 0}, ValueError, "at least 1"),
        ({"lam": 0.0}, ValueError, "positive"),
        ({"lam": -1.0}, ValueError, "positive"),
        ({"kernel_size": 2.5}, TypeError, "whole numbers"),
        ({"mask": np.ones((10, 10), bool)}, ValueError, "mask has shape"),
        ({"mask": np.ones((64, 64))}, TypeError, "boolean"),
        ({"channel_axis": 0}, ValueError, "2-D"),
    ],
)
def test_bad_input_raises_before_work(kwargs, exc, match):
    img = make_synthetic((64, 64), 8, 1, seed=0).image
    args = {"kernel_size": 8, **kwargs}
    with pytest.raises(exc, match=match):
        napari_sasd.iter_solve(img, **args)  # raises at the call, not at next()


def test_bad_images_raise():
    with pytest.raises(ValueError, match="NaN"):
        napari_sasd.solve(np.full((64, 64), np.nan), 8)
    with pytest.raises(ValueError, match="RGB"):
        napari_sasd.solve(np.zeros((64, 64, 3)), 8)
    with pytest.raises(ValueError, match="channel_axis"):
        napari_sasd.solve(np.zeros((5, 64, 64)), 8)
    with pytest.raises(ValueError, match="channel_axis must be"):
        napari_sasd.solve(np.zeros((5, 64, 64)), 8, channel_axis=3)
    with pytest.raises(TypeError, match="real numeric"):
        napari_sasd.solve(np.zeros((64, 64), complex), 8)
    with pytest.raises(ValueError, match="constant"):
        napari_sasd.solve(np.ones((64, 64)), 8)


def test_core_does_not_import_qt_or_napari():
    import subprocess

    code = (
        "import sys, napari_sasd, napari_sasd.solver, napari_sasd.cli;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('napari','qtpy','PyQt5','PyQt6',"
        "'PySide2','PySide6','magicgui')]; print(bad); assert not bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_seed_changes_the_start_but_still_recovers():
    # A seed jitters which data windows the motifs start from (the jitter may
    # leave the choice as it was: seed 5 starts like 0 here, seed 7 does not).
    d = make_synthetic((128, 128), 10, 2, noise=0.02, seed=11)
    sims = []
    starts = []
    for seed in (0, 7):
        snaps, res = _drain(napari_sasd.iter_solve(d.image, 10, 2, seed=seed))
        starts.append(snaps[0].kernels)
        sims.append(match_motifs(res.kernels, d.kernels)[0].min())
    assert not np.allclose(starts[0], starts[1])  # the seed is used
    assert min(sims) >= 0.95, sims


def test_progress_previews_keep_found_motifs():
    d = make_synthetic((96, 96), 8, 2, noise=0.02, seed=12)
    gen = napari_sasd.iter_solve(d.image, 8, 2, max_iter=120)
    empty_after_both_found = 0
    seen_second = False
    while True:
        try:
            snap = next(gen)
        except StopIteration:
            break
        norms = np.linalg.norm(snap.kernels.reshape(2, -1), axis=1)
        seen_second |= bool(norms[1] > 0)
        if seen_second:
            empty_after_both_found += int(np.any(norms == 0))
    assert seen_second and empty_after_both_found == 0


@pytest.mark.parametrize("nan_fraction", [0.0, 0.01])
def test_discovery_crops_use_the_circular_model(monkeypatch, nan_fraction):
    # A crop without missing pixels is fitted with the circular operator (its
    # residuals stay spectra), and so are the whole image's settle and polish
    # (the polish on a padded grid, exact by filling the pad with the model);
    # the result is handed back on the windowed operator, which fits
    # everything when pixels are missing. The result recovers either way.
    ops = []
    setup = solver._Solver._setup_op

    def recording(self, K, a, x):
        setup(self, K, a, x)
        ops.append((self.y.shape[1:], type(self.op)))

    monkeypatch.setattr(solver._Solver, "_setup_op", recording)
    d = make_synthetic((256, 256), 8, 2, noise=0.02, nan_fraction=nan_fraction, seed=1)
    res = napari_sasd.solve(d.image, 8, 2)
    crop = {t for shape, t in ops if shape == (128, 128)}
    whole = [t for shape, t in ops if shape == (256, 256)]
    assert crop == ({ConvOperator} if nan_fraction else {PeriodicConvOperator})
    assert set(whole) == ({ConvOperator} if nan_fraction else {ConvOperator, PeriodicConvOperator})
    assert whole[-1] is ConvOperator
    # The polish runs on the image's circular grid past H + k - 1 (263 -> 270).
    padded = {t for shape, t in ops if shape == (270, 270)}
    assert padded == (set() if nan_fraction else {PeriodicConvOperator})
    assert match_motifs(res.kernels, d.kernels)[0].min() >= 0.99


def test_circular_step_matches_its_spatial_residual():
    # The circular step keeps residuals as spectra (Parseval, the background
    # as the DC term): its objective must be the one of the spatial residual
    # a (*) x + b - y wrapped on the image, with activations on its own grid.
    d = make_synthetic((96, 96), 8, 1, noise=0.02, seed=3)
    s = solver._Solver(solver.prepare(d.image, 8, 1, None, None, None, None), True, 0, None,
                       1e-4, 0.7, None)  # fmt: skip
    s.periodic = True
    s.b, s.support = np.full(1, 0.3), None
    s._lam_max(s._lift(), s._windows(s.y, 1, []))
    for _ in range(5):
        s._step(0.05)  # joint steps move the motif and the background
    s.fixed_motifs = True
    obj, _ = s._step(0.05)
    r = (s._model() - s.y).astype(np.float64)
    assert s.x.shape[1:] == s.y.shape[1:]
    assert obj == pytest.approx(0.5 * np.sum(r**2) + 0.05 * s.x.sum(), rel=1e-4)


def test_filled_circular_model_is_the_windowed_model():
    # With the pixels outside the image filled with the model, the circular
    # model on the padded grid has the windowed model's objective and
    # activation gradient (same indices): the polish on it is exact. An image
    # placed one pixel off, or a fill left at zero, breaks both.
    d = make_synthetic((60, 70), 8, 2, noise=0.02, seed=4)
    prob = solver.prepare(d.image, 8, 2, None, None, None, None)
    s = solver._Solver(prob, True, 0, None, 1e-4, 0.8, None)
    H, W = prob.y.shape[1:]
    rng = np.random.default_rng(0)
    x = (rng.random((2, H + 7, W + 7)) < 0.02).astype(np.float32) * rng.random((2, H + 7, W + 7))
    a = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    s.b, s.support = np.array([0.2]), np.ones((1, H + 7, W + 7), np.float32)
    s.stage0, s.n_stages, s.total = 0, 1, 100
    c = s._filled(0.05, a, x)
    c._refill()
    s._setup_op((8, 8), a, x)
    r = s._residual(s.A, s.X)
    g = s.op.grad_x(s.A, s.op.fft_residual(r))
    R = c._residual_spectrum(c.X)
    gc = c.op.grad_x(c.A, R)[:, : H + 7, : W + 7]
    fit = 0.5 * np.sum(r.astype(np.float64) ** 2)
    assert 0.5 * float(c.op.inner(R, R).sum()) == pytest.approx(fit, rel=1e-4)
    np.testing.assert_allclose(gc, g, atol=1e-4 * np.abs(g).max())


def _counting_sparse_steps():
    """``_Solver._sparse_x_step`` recording whether each call took the sparse step."""
    taken: list[bool] = []
    sparse_step = solver._Solver._sparse_x_step

    def counted(self, *args):
        out = sparse_step(self, *args)
        taken.append(out is not None)
        return out

    return taken, counted


@pytest.mark.parametrize(("fixed", "lam"), [(True, 0.2), (False, 0.2), (False, 0.0)])
def test_sparse_activation_step_is_the_dense_step(fixed, lam, monkeypatch):
    # The polish's activation step works on the pixels where activations can
    # be non-zero; it must take the dense step's iterates, momentum included,
    # with a support that excludes some of the starting activations, and hand
    # over to and from the dense step, which it falls back to when too many
    # pixels could be non-zero (one step with moving motifs here; every step
    # at lambda 0).
    # With the motifs moving, its first trial range comes from the last
    # motifs' bound, hence the looser tolerance.
    d = make_synthetic((60, 70), 8, 2, noise=0.02, seed=4)
    prob = solver.prepare(d.image, 8, 2, None, None, None, None)
    s = solver._Solver(prob, True, 0, None, 1e-4, 0.8, None)
    H, W = prob.y.shape[1:]
    G = (H + 7, W + 7)
    rng = np.random.default_rng(1)
    # A polish's start: the true copies with amplitude errors, some spurious
    # ones (some outside the support), motifs a little off.
    x = np.zeros((2, *G), np.float32)
    x[:, 4 : 4 + H, 4 : 4 + W] = d.activations / prob.scale
    x *= 1 + 0.3 * rng.standard_normal(x.shape).astype(np.float32)
    x[(rng.random(x.shape) < 0.003)] = 0.5
    np.maximum(x, 0, out=x)
    a = (d.kernels[:, None] + 0.03 * rng.standard_normal((2, 1, 8, 8))).astype(np.float32)
    a /= np.linalg.norm(a.reshape(2, -1), axis=1)[:, None, None, None]
    s.b = np.array([-prob.offset[0] / prob.scale])
    s.support = np.zeros((1, *G), np.float32)
    s.support[:, 4 : 4 + H, 4 : 4 + W] = 1
    s.stage0, s.n_stages, s.total = 0, 1, 100
    taken, counted = _counting_sparse_steps()

    monkeypatch.setattr(solver._Solver, "_sparse_x_step", counted)
    runs = []
    for sparse in (True, False):
        c = s._filled(lam, a, x.astype(np.float32))
        c.sparse_x, c.fixed_motifs = sparse, fixed
        c._refill()
        objs = [c._step(lam)[0] for _ in range(8)]
        runs.append((c.x.copy(), c.a.copy(), np.array(objs)))
    off = c.support[0] == 0  # outside the image's k x k support, and the pad
    assert len(taken) == 8 and (sum(taken) >= 5 if lam else not any(taken))
    (xs, as_, os_), (xd, ad, od) = runs
    tol = 1e-5 if fixed else 1e-3
    np.testing.assert_allclose(os_, od, rtol=tol)
    np.testing.assert_allclose(xs, xd, atol=tol * np.abs(xd).max())
    np.testing.assert_allclose(as_, ad, atol=tol)
    assert x[:, off[: G[0], : G[1]]].any() and not xs[:, off].any()


def test_circular_settle_hands_over_activations_that_fit_the_image():
    # With the true motifs, activations settled on the circular model and moved
    # to the windowed grid must reproduce the image inside its border band; an
    # index off by one pixel would leave most of it unexplained.
    d = make_synthetic((80, 96), 8, 2, noise=0.0, seed=5)
    prob = solver.prepare(d.image, 8, 2, None, None, None, None)
    s = solver._Solver(prob, True, 0, None, 1e-4, 0.8, None)
    H, W = prob.y.shape[1:]
    s.b = np.array([-prob.offset[0] / prob.scale])  # the true background, normalised
    s.stage0, s.n_stages, s.total = 0, 1, 100
    s.support = np.zeros((1, H + 7, W + 7), np.float32)
    s.support[:, 4 : 4 + H, 4 : 4 + W] = 1
    a = d.kernels[:, None].astype(np.float32)
    gen = s._settle_circular(0.01, 60, a)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            s._setup_op((8, 8), a, stop.value)
            break
    assert isinstance(s.op, ConvOperator) and not isinstance(s.op, PeriodicConvOperator)
    inner = (slice(None), slice(8, -8), slice(8, -8))
    r = (s._model() - s.y)[inner]
    assert np.sum(r**2) < 0.02 * np.sum((s.y - s.b[0])[inner] ** 2)


def test_circular_settle_sparse_step_is_the_dense_step(monkeypatch):
    # The settle (no support, activations from zero) takes the sparse
    # activation step; forced onto the dense one it must settle the same maps.
    d = make_synthetic((80, 96), 8, 2, noise=0.02, seed=5)
    prob = solver.prepare(d.image, 8, 2, None, None, None, None)
    a = d.kernels[:, None].astype(np.float32)
    taken, counted = _counting_sparse_steps()

    settled = []
    for step in (counted, lambda self, *args: None):
        monkeypatch.setattr(solver._Solver, "_sparse_x_step", step)
        s = solver._Solver(prob, True, 0, None, 1e-4, 0.8, None)
        s.b = np.array([-prob.offset[0] / prob.scale])
        s.stage0, s.n_stages, s.total = 0, 1, 100
        gen = s._settle_circular(0.05, 30, a)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                settled.append(stop.value)
                break
    assert sum(taken) >= 20
    np.testing.assert_allclose(settled[0], settled[1], atol=1e-5 * np.abs(settled[1]).max())
    assert np.count_nonzero(settled[1]) > 20


@pytest.mark.parametrize(
    ("shape", "n_motifs", "nan_fraction"),
    [
        ((20, 400), 1, 0.0),  # issue 17 item 4: a short side between k and 2k
        ((400, 20), 1, 0.0),
        ((13, 600), 1, 0.0),  # short side k + 1: the crop's circular grid
        ((16, 500), 1, 0.05),  # missing pixels: the windowed settle and polish
        ((30, 600), 2, 0.0),
        ((20, 800), 2, 0.05),
    ],
)
def test_narrow_strips_solve_and_recover(shape, n_motifs, nan_fraction):
    # A strip's discovery crop is narrower than the lifted motif (about 2k):
    # it used to crash on the circular crop model. Every stage of the path
    # (discovery, settle, polish, warm start) must run and recover the motif.
    d = make_synthetic(shape, 12, n_motifs, noise=0.02, nan_fraction=nan_fraction, seed=0)
    res = napari_sasd.solve(d.image, 12, n_motifs)
    assert res.reconstruction.shape == shape
    assert match_motifs(res.kernels, d.kernels)[0].min() >= 0.97
    warm = napari_sasd.solve(d.image, 12, n_motifs, init_kernels=res.kernels)
    assert match_motifs(warm.kernels, d.kernels)[0].min() >= 0.97


def test_narrow_strip_of_noise_solves():
    # The reproduction: no structure at all, only no crash.
    rng = np.random.default_rng(0)
    for shape in [(20, 400), (12, 300), (400, 23)]:
        res = napari_sasd.solve(rng.random(shape), 12, 1)
        assert res.kernels.shape == (1, 12, 12) and np.isfinite(res.kernels).all()
