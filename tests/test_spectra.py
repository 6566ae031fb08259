"""Motif spectra, Fourier magnitudes and the quick-look pictures (napari-free)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_sasd.peaks import Defects, find_defects
from napari_sasd.sample_data import CUBE_ENERGIES_MV, cube_data
from napari_sasd.spectra import (
    data_fourier_magnitude,
    fourier_magnitudes,
    motif_spectra,
    write_spectra_csv,
)


def _corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def cube():
    d = cube_data()
    defects = find_defects(d.activations, 0.5)  # the true copies (amplitudes 0.7..1.3)
    return d, defects


def test_spectra_of_the_true_motifs_follow_the_generator(cube):
    """At-copies minus away is the motif's centre value per energy times the
    mean amplitude (plus neighbours' overlap): it follows the generator."""
    d, defects = cube
    s = motif_spectra(d.kernels, defects, d.image, CUBE_ENERGIES_MV, label="Bias", unit="mV")
    assert s.axis_title == "Bias (mV)" and s.nearest(150.0) == 2
    c = (12 - 1) // 2
    for m in range(2):
        truth = d.kernels[m, :, c, c]
        np.testing.assert_allclose(s.centre[m], truth)
        np.testing.assert_allclose(s.norm[m], np.linalg.norm(d.kernels[m], axis=(-2, -1)))
        assert _corr(s.at_copies[m] - s.away, truth) > 0.95
        assert s.n_copies[m] == (defects.motif == m).sum()
    np.testing.assert_allclose(s.away, d.bias, atol=0.02)  # noise 0.05, many pixels


def test_at_copies_and_away_exactly():
    """Copies' centre pixels are averaged; 'away' skips each copy's footprint."""
    data = np.zeros((2, 20, 20))
    data[:, 5, 5] = [1.0, 2.0]
    data[:, 14, 14] = [3.0, 6.0]
    data[:, 5, 6] = 100.0  # inside motif 0's 3x3 footprint: not 'away'
    data[:, 0, 19] = np.nan  # a dropped pixel: left out
    data[:, 18, 1] = 40.0  # far from both copies: in 'away'
    d = Defects(np.array([[5.0, 5.0], [14.2, 13.8]]), np.array([0, 0]), np.ones(2))
    k = np.zeros((2, 2, 3, 3))
    s = motif_spectra(k, d, data)
    np.testing.assert_allclose(s.at_copies[0], [2.0, 4.0])
    assert np.isnan(s.at_copies[1]).all() and list(s.n_copies) == [2, 0]
    n_far = 400 - 2 * 9 - 1
    np.testing.assert_allclose(s.away, [40.0 / n_far] * 2)
    np.testing.assert_array_equal(s.energies, [0.0, 1.0])


def test_bad_shapes_are_refused():
    d = Defects(np.zeros((0, 2)), np.zeros(0, int), np.zeros(0))
    with pytest.raises(ValueError, match="same C"):
        motif_spectra(np.zeros((1, 3, 4, 4)), d, np.zeros((2, 9, 9)))
    with pytest.raises(ValueError, match="2 energies for 3 channels"):
        motif_spectra(np.zeros((1, 3, 4, 4)), d, np.zeros((3, 9, 9)), [0, 1])


def test_fourier_magnitudes():
    k = np.zeros((1, 2, 5, 5))
    k[0, 0, 2, 2] = 1.0  # a point: flat magnitude
    k[0, 1] = 1.0 / 5  # a box: peak at zero frequency, its sum
    f = fourier_magnitudes(k, size=32)
    assert f.shape == (1, 2, 32, 32)
    np.testing.assert_allclose(f[0, 0], 1.0)
    assert f[0, 1, 16, 16] == pytest.approx(5.0) and f[0, 1].argmax() == 16 * 32 + 16
    # The data's magnitude, block-averaged onto the same grid: a plane wave
    # of period 8 px shows at +-1/8 cycle per pixel, i.e. 4 bins off centre.
    xx = np.mgrid[0:128, 0:128][1]
    cube = np.stack([np.cos(2 * np.pi * xx / 8), np.ones((128, 128))])
    cube[0, 3, 3] = np.nan
    g = data_fourier_magnitude(cube, size=32)
    assert g.shape == (2, 32, 32)
    row = g[0, 16]
    assert set(np.argsort(row)[-2:]) == {12, 20}
    assert np.allclose(g[1], 0.0)  # a constant channel: nothing once de-meaned


def test_spectra_csv(tmp_path, cube):
    d, defects = cube
    s = motif_spectra(d.kernels, defects, d.image, CUBE_ENERGIES_MV, label="Bias", unit="mV")
    p = write_spectra_csv(tmp_path / "s.csv", s)
    rows = list(csv.reader(p.open()))
    assert rows[0] == [
        "Bias (mV)", "away",
        "motif 1 at copies", "motif 1 centre", "motif 1 norm",
        "motif 2 at copies", "motif 2 centre", "motif 2 norm",
    ]  # fmt: skip
    vals = np.array(rows[1:], float)
    np.testing.assert_array_equal(vals[:, 0], CUBE_ENERGIES_MV)
    np.testing.assert_array_equal(vals[:, 2], s.at_copies[0])
    np.testing.assert_array_equal(vals[:, 7], s.norm[1])


def _png_rgb(path):
    from matplotlib.image import imread

    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    return img[..., :3]


def test_quicklook_png_shows_defects_in_motif_colours(tmp_path, cube):
    """The picture holds the motif colours (defect markers, gallery frames)."""
    from napari_sasd.quicklook import save_quicklook

    d, defects = cube
    s = motif_spectra(d.kernels, defects, d.image, CUBE_ENERGIES_MV, label="Bias", unit="mV")
    p = save_quicklook(
        tmp_path / "q.png", d.image, defects, d.kernels, spectra=s, colors=["#ff0000", "#00ff00"]
    )
    img = _png_rgb(p)
    red = (img[..., 0] > 0.9) & (img[..., 1] < 0.2) & (img[..., 2] < 0.2)
    green = (img[..., 1] > 0.9) & (img[..., 0] < 0.2) & (img[..., 2] < 0.2)
    assert red.sum() > 500 and green.sum() > 500


def test_bundle_pictures_hook(tmp_path, cube):
    """save_bundle writes the pictures; a drawing failure warns, the bundle stays."""
    from napari_sasd import solve
    from napari_sasd.bundle import load_bundle, save_bundle
    from napari_sasd.quicklook import bundle_pictures

    d, _ = cube
    r = solve(d.image[:, :48, :48], 12, 2, channel_axis=0, seed=0, max_iter=20)
    defects = find_defects(r.activations)
    s = motif_spectra(r.kernels, defects, d.image[:, :48, :48], CUBE_ENERGIES_MV)
    hook = bundle_pictures(d.image[:, :48, :48], defects, r.kernels, spectra=s, title="t")
    out = save_bundle(tmp_path / "b", r, defects=defects, extra_files=hook)
    for name in ("quicklook.png", "spectra.csv", "spectra.png"):
        assert (out / name).stat().st_size > 500
    load_bundle(out)  # extra files do not disturb the reader

    broken = bundle_pictures(np.zeros((2, 3, 3, 3)), defects, r.kernels)  # 4-D image
    with pytest.warns(UserWarning, match="quick look not written"):
        out = save_bundle(tmp_path / "c", r, defects=defects, extra_files=broken)
    assert load_bundle(out).n_motifs == 2
