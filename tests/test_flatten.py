"""Tests of the plane and scan-line flattening."""

import numpy as np
import pytest

from napari_sasd.flatten import flatten


def _scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    yy, xx = np.mgrid[:h, :w]
    flat = np.zeros((h, w))
    # sparse tall defects: a mean-based line fit would be pulled by them
    flat[rng.integers(0, h, 30), rng.integers(0, w, 30)] = 5.0
    tilt = 0.03 * yy - 0.05 * xx + 7.0
    offsets = rng.normal(0, 2.0, h)[:, None]
    return flat, tilt, offsets


def test_plane_and_lines_recover_flat_image():
    flat, tilt, offsets = _scene()
    out = flatten(flat + tilt + offsets)
    # up to a constant per row (the median of the flat image, 0 here)
    np.testing.assert_allclose(out, flat, atol=1e-9)


def test_plane_only_removes_tilt_exactly():
    flat, tilt, _ = _scene()
    out = flatten(flat + tilt, plane=True, lines=False, mask=flat == 0)
    np.testing.assert_allclose(out, flat, atol=1e-9)


def test_no_op_and_input_untouched():
    flat, tilt, _ = _scene()
    img = flat + tilt
    before = img.copy()
    out = flatten(img, plane=False, lines=False)
    np.testing.assert_array_equal(out, before)
    np.testing.assert_array_equal(img, before)
    assert out is not img


def test_nan_aware():
    flat, tilt, offsets = _scene()
    img = flat + tilt + offsets
    img[3, :10] = np.nan
    img[10:, 50:] = np.nan  # an interrupted scan corner
    out = flatten(img)
    assert np.isnan(out[3, :10]).all() and np.isnan(out[10:, 50:]).all()
    ok = np.isfinite(out)
    np.testing.assert_allclose(out[ok], flat[ok], atol=1e-9)


def test_mask_excludes_a_big_island():
    flat, tilt, _ = _scene()
    img = flat + tilt
    img[:20, :20] += 50.0  # an island a plane fit must ignore
    mask = np.ones(img.shape, bool)
    mask[:20, :20] = False
    out = flatten(img, lines=False, mask=mask)
    np.testing.assert_allclose(out[mask], flat[mask], atol=1e-9)


def test_plane_fit_is_robust_to_defects():
    flat, tilt, _ = _scene()
    out = flatten(flat + tilt, lines=False)  # no mask: outliers rejected by the fit
    np.testing.assert_allclose(out, flat, atol=1e-9)
    # a plain least-squares plane would be pulled by the 5.0 defects
    yy, xx = np.mgrid[: flat.shape[0], : flat.shape[1]]
    a = np.column_stack([yy.ravel(), xx.ravel(), np.ones(flat.size)])
    coef, *_ = np.linalg.lstsq(a, (flat + tilt).ravel(), rcond=None)
    assert np.abs((flat + tilt).ravel() - a @ coef - flat.ravel()).max() > 1e-3


def test_stack_is_flattened_per_plane():
    flat, tilt, offsets = _scene()
    cube = np.stack([flat + tilt, flat - 2 * tilt + offsets])
    out = flatten(cube)
    assert out.shape == cube.shape
    np.testing.assert_allclose(out, np.stack([flat, flat]), atol=1e-9)


def test_bad_input():
    with pytest.raises(ValueError, match="image"):
        flatten(np.zeros(5))
    with pytest.raises(ValueError, match="mask"):
        flatten(np.zeros((4, 4)), mask=np.ones((3, 4), bool))


def test_columns_remove_the_scan_start_band_and_keep_defects_and_lattice():
    rng = np.random.default_rng(0)
    h, w = 200, 240
    yy, xx = np.mgrid[:h, :w]
    # Every line starts low and settles over ~25 px (the tip after a turnaround),
    # with its own offset; a fine lattice (5 px stripes) and two defects on top.
    band = -3.0 * np.exp(-xx / 8.0)
    lattice = 0.3 * np.cos(2 * np.pi * xx / 5.0)
    defects = -2.0 * (np.hypot(yy - 60, xx - 100) < 6) - 2.0 * (np.hypot(yy - 150, xx - 170) < 6)
    offsets = rng.normal(0, 1, (h, 1))
    z = band + lattice + defects + offsets + rng.normal(0, 0.05, (h, w))
    kept = flatten(z)
    out = flatten(z, columns=True)
    # Without the term the band stays; with it, it goes (to the noise level).
    assert np.abs(np.median(kept[:, :4], axis=0)).max() > 1.0
    assert np.abs(np.median(out[:, :4], axis=0)).max() < 0.2
    # The lattice's stripes are not taken for the line shape, the defects stay.
    assert np.corrcoef(out[100, 40:200], lattice[100, 40:200])[0, 1] > 0.95
    assert out[60, 100] - np.median(out[60]) == pytest.approx(-2.0, abs=0.3)
    # Off by default: the old behaviour for callers that do not ask.
    assert np.array_equal(flatten(z), flatten(z, columns=False))


def test_shows_scan_lines_tells_an_unflattened_scan_from_a_picture():
    from napari_sasd.flatten import shows_scan_lines
    from napari_sasd.synthetic import make_synthetic

    img = make_synthetic((128, 128), 10, 1, noise=0.05, seed=2, copies_per_area=0.3).image
    rng = np.random.default_rng(0)
    tilt = 0.01 * np.arange(128)[None, :]  # a plane is not scan lines
    assert not shows_scan_lines(img + tilt)
    offsets = rng.normal(0, 3 * img.std(), (128, 1))  # one level per scan line
    assert shows_scan_lines(img + offsets + tilt)
    # Columns offsets (the slow axis along the rows) are not scan lines either.
    assert not shows_scan_lines(img + offsets.T)
    # Once the lines are flattened there is nothing left to tell.
    assert not shows_scan_lines(flatten(img + offsets))
