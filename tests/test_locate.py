"""Locating known motifs (napari_sasd.locate) against solves and ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, signal

import napari_sasd
from napari_sasd.metrics import precision_recall
from napari_sasd.peaks import find_defects
from napari_sasd.synthetic import make_synthetic
from napari_sasd.validation import prepare


def _agreement(found, ref, n_motifs):
    """Pooled precision and recall of ``found`` defects against ``ref``, copies
    of the same motif matched within 2 px."""
    hits = 0
    for n in range(n_motifs):
        a = found.positions[found.motif == n]
        b = ref.positions[ref.motif == n]
        if len(a) and len(b):
            hits += round(precision_recall(a, b)[0] * len(a))
    return hits / max(1, len(found)), hits / max(1, len(ref))


def _truth_agreement(res, data):
    """Pooled precision and recall of a result's defects against the truth
    (motifs given in the truth's order)."""
    found = find_defects(res.activations)
    hits = 0
    for n, truth in enumerate(data.positions):
        mine = found.positions[found.motif == n]
        if len(mine) and len(truth):
            hits += round(precision_recall(mine, truth)[0] * len(mine))
    return hits / max(1, len(found)), hits / sum(len(t) for t in data.positions)


def test_a_solves_own_motifs_reproduce_its_defects():
    d = make_synthetic((256, 256), 12, 2, copies_per_area=0.7, noise=0.05, seed=0)
    res = napari_sasd.solve(d.image, 12, 2)
    loc = napari_sasd.locate(d.image, res.kernels)
    # lam=None picks the solve's own lambda on the same image.
    assert np.isclose(loc.lam, res.lam, rtol=1e-6)
    np.testing.assert_allclose(loc.kernels, res.kernels, atol=1e-6)
    prec, rec = _agreement(find_defects(loc.activations), find_defects(res.activations), 2)
    assert prec >= 0.98 and rec >= 0.98, (prec, rec)
    # The background is at least as close to the truth as the solve's.
    assert abs(loc.bias - d.bias) <= abs(res.bias - d.bias) + 1e-3 * np.std(d.image)
    assert loc.params["mode"] == "locate"


def test_a_solves_exact_finish_agrees_with_locate_on_a_dense_scene():
    # The solve's last stage brings its activations to the lasso optimum with
    # its motifs fixed (locate.exact_finish): a locate with those motifs then
    # finds the same defects both ways, and the solve the weak copies its
    # whole-image stages left under the threshold (without it here: locate's
    # precision against the solve 0.974, the solve's recall 0.928).
    d = make_synthetic((256, 256), 12, 2, copies_per_area=1.5, noise=0.05, seed=1)
    res = napari_sasd.solve(d.image, 12, 2)
    loc = napari_sasd.locate(d.image, res.kernels)
    prec, rec = _agreement(find_defects(loc.activations), find_defects(res.activations), 2)
    assert prec >= 0.98 and rec >= 0.98, (prec, rec)
    order = np.argmax(np.abs(res.kernels.reshape(2, -1) @ d.kernels.reshape(2, -1).T), axis=0)
    res.activations = res.activations[order]
    prec_t, rec_t = _truth_agreement(res, d)
    assert prec_t >= 0.97 and rec_t >= 0.94, (prec_t, rec_t)


def test_located_defects_are_true_copies():
    # What locate finds beyond a solve are copies the solve missed: its
    # defects are at least as true, and at least as many of the truth.
    d = make_synthetic((256, 256), 12, 2, copies_per_area=1.5, noise=0.05, seed=1)
    res = napari_sasd.solve(d.image, 12, 2)
    loc = napari_sasd.locate(d.image, d.kernels, res.lam)
    prec, rec = _truth_agreement(loc, d)
    order = np.argmax(np.abs(res.kernels.reshape(2, -1) @ d.kernels.reshape(2, -1).T), axis=0)
    res.activations = res.activations[order]
    prec_s, rec_s = _truth_agreement(res, d)
    assert prec >= 0.97 and rec >= rec_s - 0.005, (prec, rec, prec_s, rec_s)


def test_reaches_the_lasso_optimum():
    # Against a general-purpose bound-constrained solver on the same
    # objective, in the normalised units of the solver (a small problem).
    d = make_synthetic((48, 56), 7, 1, copies_per_area=1.0, noise=0.1, seed=3)
    lam = 0.5
    prog = []
    gen = napari_sasd.iter_locate(d.image, d.kernels, lam)
    while True:
        try:
            prog.append(next(gen))
        except StopIteration as stop:
            res = stop.value
            break
    lasso = [p.objective for p in prog if p.stage == 0][-1]
    p = prepare(d.image, 7, 1, lam, None, None, None)
    y, a = p.y[0].astype(np.float64), d.kernels[0] / np.linalg.norm(d.kernels[0])
    H, W = y.shape

    def f(v):
        x, b = v[:-1].reshape(H, W), v[-1]
        r = signal.fftconvolve(x, a, mode="same") + b - y
        g = signal.fftconvolve(r, a[::-1, ::-1], mode="same")
        return 0.5 * np.sum(r**2) + lam * x.sum(), np.append(g.ravel() + lam, r.sum())

    v0 = np.zeros(H * W + 1)
    bounds = [(0, None)] * (H * W) + [(None, None)]
    ref = optimize.minimize(f, v0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 5000, "ftol": 1e-13, "gtol": 1e-9})  # fmt: skip
    assert lasso <= ref.fun * (1 + 1e-4), (lasso, ref.fun)
    assert res.activations.shape == (1, H, W)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("many_cut", [False, True])
def test_working_set_gram_matrix_is_the_exact_windowed_model(channels, many_cut, monkeypatch):
    # The Gram matrix is looked up from the motifs' cross-correlations for
    # whole copies and summed over taps for copies cut by the border or the
    # mask (or, when many are cut, from the design's sparse product): against
    # D^T D with D the copies placed and cut explicitly.
    import importlib

    loc = importlib.import_module("napari_sasd.locate")
    if many_cut:
        monkeypatch.setattr("napari_sasd.locate_pool.CUT_TAPS_MAX", 0)
    rng = np.random.default_rng(0)
    H, W, kh, kw, N = 30, 34, 5, 6, 2
    image = rng.standard_normal((channels, H, W) if channels > 1 else (H, W))
    mask = np.ones((H, W), bool)
    mask[12:15, 20:23] = False
    kern = rng.standard_normal((N, channels, kh, kw) if channels > 1 else (N, kh, kw))
    kern = loc._as_kernels(kern, image.ndim, 0 if channels > 1 else None)
    prob = prepare(image, (kh, kw), N, 1.0, 0 if channels > 1 else None, mask, kern)
    pool = loc._Pool(loc._Locator(prob, True, 0, None, 1e-4, 0.8, None), kern.astype(np.float32))
    # Copies at the corners and edges, by the mask and inside, in two rounds.
    cols = np.stack([rng.integers(0, N, 60), rng.integers(0, H, 60), rng.integers(0, W, 60)])
    cols[1:, :4] = [[0, 0, H - 1, H - 1], [0, W - 1, 0, W - 1]]
    cols = np.unique(cols, axis=1)
    pool.add(cols[:, : cols.shape[1] // 2])
    pool.add(cols[:, cols.shape[1] // 2 :])
    k32 = kern.astype(np.float32).astype(np.float64).reshape(N, channels, kh, kw)
    omega = np.ones((channels, H, W)) if prob.omega is None else prob.omega
    D = np.zeros((pool.size, channels, H, W))
    ch, cw = (kh - 1) // 2, (kw - 1) // 2
    padded = np.zeros((channels, H + 2 * kh, W + 2 * kw))
    for i, (m, r, c) in enumerate(pool.cols.T):
        padded[:] = 0
        padded[:, kh + r - ch : kh + r - ch + kh, kw + c - cw : kw + c - cw + kw] = k32[m]
        D[i] = padded[:, kh : kh + H, kw : kw + W] * omega
    D = D.reshape(pool.size, -1)
    np.testing.assert_allclose(pool.G.toarray(), D @ D.T, atol=1e-12)
    np.testing.assert_allclose(pool.c, D @ prob.y.reshape(-1), atol=1e-9)
    np.testing.assert_allclose(pool.s, D.reshape(pool.size, channels, -1).sum(2).T, atol=1e-12)
    pool.x = rng.uniform(0, 1, pool.size)
    r = pool.residual(np.zeros(channels))
    want = (prob.y.reshape(-1) - pool.x @ D).reshape(channels, H, W) * omega
    np.testing.assert_allclose(r, want, atol=1e-5)


def test_same_convolution_convention_and_given_order():
    d = make_synthetic((96, 112), (9, 11), 2, noise=0.02, seed=2)
    given = d.kernels[::-1]
    res = napari_sasd.locate(d.image, given)
    np.testing.assert_allclose(res.kernels, given / np.linalg.norm(given[0]), atol=1e-6)
    model = sum(
        signal.convolve(x.astype(float), a, mode="same")
        for x, a in zip(res.activations, res.kernels, strict=True)
    )
    np.testing.assert_allclose(model + res.bias, res.reconstruction, atol=1e-3 * np.ptp(d.image))
    # The maps follow the given order: the first map holds the truth's second motif.
    prec, rec = precision_recall(find_defects(res.activations[:1]).positions, d.positions[1])
    assert prec >= 0.9 and rec >= 0.9, (prec, rec)


def test_missing_pixels_and_channels():
    d = make_synthetic((128, 128), 10, 1, nan_fraction=0.05, noise=0.02, seed=4)
    res = napari_sasd.locate(d.image, d.kernels)
    assert res.params["masked_pixels"] > 0
    assert min(_truth_agreement(res, d)) >= 0.9
    mask = np.ones((128, 128), bool)
    mask[:, :40] = False
    res = napari_sasd.locate(np.nan_to_num(d.image), d.kernels, mask=mask)
    found = find_defects(res.activations).positions
    assert found[:, 1].min() >= 40 - 10 // 2 - 1  # nothing located where nothing is seen
    # The reconstruction is the whole model, the copies' reach into the
    # missing pixels included.
    model = sum(
        signal.convolve(x.astype(float), a, mode="same")
        for x, a in zip(res.activations, res.kernels, strict=True)
    )
    np.testing.assert_allclose(res.reconstruction, model + res.bias, atol=1e-4 * np.ptp(model))

    c = make_synthetic((96, 96), 9, 1, n_channels=3, noise=0.02, seed=5)
    cube = np.moveaxis(c.image, 0, -1)
    res = napari_sasd.locate(cube, c.kernels, channel_axis=-1)
    assert res.kernels.shape == (1, 3, 9, 9) and res.reconstruction.shape == cube.shape
    assert min(_truth_agreement(res, c)) >= 0.9


def test_nothing_to_locate_is_an_empty_result():
    d = make_synthetic((96, 96), 9, 2, noise=0.05, seed=6)
    noise = np.random.default_rng(0).standard_normal((96, 96))
    res = napari_sasd.locate(noise, d.kernels, 1000.0)
    assert not res.activations.any() and res.activations.shape == (2, 96, 96)
    assert np.isfinite(res.objective) and np.isfinite(res.bias)
    np.testing.assert_allclose(res.reconstruction, res.bias, atol=1e-6)


def test_signed_activations():
    d = make_synthetic((96, 96), 9, 1, noise=0.02, seed=6)
    img = d.image.copy()
    img[:, 48:] = 2 * np.median(img) - img[:, 48:]  # copies on the right are dips
    res = napari_sasd.locate(img, d.kernels, positive=False)
    neg = find_defects(-res.activations).positions
    pos = find_defects(res.activations).positions
    assert len(neg) and np.all(neg[:, 1] >= 48 - 9) and np.all(pos[:, 1] < 48 + 9)


@pytest.mark.parametrize(
    ("kernels", "exc", "match"),
    [
        (np.zeros((1, 9, 9)), ValueError, "all zeros"),
        (np.full((1, 9, 9), np.nan), ValueError, "NaN"),
        (np.ones((1, 1, 9, 9)), ValueError, r"\(N, kh, kw\)"),
        (np.ones((1, 200, 9)), ValueError, "larger than the image"),
        (np.array([["a"]]), TypeError, "numeric"),
    ],
)
def test_bad_input_raises_before_work(kernels, exc, match):
    img = np.random.default_rng(0).random((64, 64))
    with pytest.raises(exc, match=match):
        napari_sasd.iter_locate(img, kernels)


def _tiled_vs_untiled(image, kernels, lam, tile=256):
    whole = napari_sasd.locate(image, kernels, lam, tile=None)
    tiled = napari_sasd.locate(image, kernels, lam, tile=tile)
    thr = 0.25 * np.percentile(whole.activations[whole.activations > 0], 99.9)
    prec, rec = _agreement(
        find_defects(tiled.activations, thr), find_defects(whole.activations, thr), len(kernels)
    )
    return whole, tiled, prec, rec


def test_tiled_locate_equals_the_untiled_one(tmp_path):
    d = make_synthetic((600, 520), 12, 2, copies_per_area=1.5, noise=0.05, seed=3)
    whole, tiled, prec, rec = _tiled_vs_untiled(d.image, d.kernels, None)
    assert tiled.params["tiles"]["n_tiles"] == 9 and tiled.params["tiles"]["overlap"] == 24
    assert np.isclose(tiled.lam, whole.lam, rtol=1e-6)
    assert prec >= 0.995 and rec >= 0.995, (prec, rec)
    # The model: where the lasso has ties (a copy's amplitude shared by two
    # pixels, measured the same way between two tolerances of one untiled
    # run), a few copies differ; over the image the fits are the same.
    rms = np.sqrt(np.mean((tiled.reconstruction - whole.reconstruction) ** 2))
    assert rms < 0.1 * d.noise, rms
    assert abs(tiled.bias - whole.bias) < 0.02 * d.noise
    np.testing.assert_allclose(tiled.explained, whole.explained, atol=0.02)
    # The tiles read from a memory-mapped file give the same result.
    np.save(tmp_path / "img.npy", d.image)
    mm = np.load(tmp_path / "img.npy", mmap_mode="r")
    again = napari_sasd.locate(mm, d.kernels, None, tile=256)
    np.testing.assert_array_equal(again.activations, tiled.activations)


def test_tiled_locate_with_a_mask_and_a_blank_tile():
    d = make_synthetic((600, 300), 10, 1, noise=0.05, seed=8)
    img = d.image.copy()
    # The first tile (200 x 150), with its overlap, sees nothing.
    img[:240, :190] = np.nan
    _, tiled, prec, rec = _tiled_vs_untiled(img, d.kernels, 3.0, tile=200)
    assert prec >= 0.99 and rec >= 0.99, (prec, rec)
    assert not tiled.activations[:, :230, :180].any()
    assert np.isnan(tiled.reconstruction[:200, :150]).all()
    assert np.isfinite(tiled.reconstruction[200:, 150:]).all()


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"tile": 20}, "at least 4 motif sizes"), ({"tile": 128, "overlap": 5}, "overlap")],
)
def test_tiling_bad_input(kw, match):
    img = np.random.default_rng(0).random((300, 300))
    with pytest.raises(ValueError, match=match):
        napari_sasd.iter_locate(img, np.ones((1, 9, 9)), **kw)
