"""The lattice background term: detection, fit, and what removing it does to the motifs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import napari_sasd
from napari_sasd.background import BackgroundTerm, remove_background
from napari_sasd.lattice import LatticeTerm, find_lattice, fit_lattice, lattice_energy
from napari_sasd.metrics import precision_recall
from napari_sasd.synthetic import make_synthetic
from napari_sasd.synthetic_lattice import make_lattice_dopants

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FESE = DATA / "fese_stmpy" / "FeSe_topography.sxm"


@pytest.fixture(scope="module")
def doped():
    return make_lattice_dopants(seed=0)


def _first_shell(basis: np.ndarray) -> np.ndarray:
    """The six shortest non-zero reciprocal vectors of a lattice."""
    v = np.array([m * basis[0] + n * basis[1] for m in (-1, 0, 1) for n in (-1, 0, 1)])
    v = v[np.linalg.norm(v, axis=1) > 0]
    r = np.linalg.norm(v, axis=1)
    return v[r <= r.min() * 1.01]


def test_finds_the_bragg_peaks_of_a_synthetic_lattice(doped):
    lat = find_lattice(doped.image)
    assert lat.present
    shell = _first_shell(doped.basis)
    assert len(shell) == 6  # triangular lattice
    H, W = lat.shape
    for b in lat.basis:  # each found basis vector is a true first-shell vector
        err = np.min(np.linalg.norm((shell - b) * [H, W], axis=1))
        assert err < 0.3, (b, shell)
    true_period = 1 / np.linalg.norm(doped.basis[0])
    np.testing.assert_allclose(lat.periods, true_period, rtol=0.01)
    assert np.all(lat.significance > lat.threshold)
    # Each listed peak is its integer combination of the basis.
    np.testing.assert_allclose(lat.peaks, lat.indices @ lat.basis, atol=1.5 / H)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_lattice_in_defects_on_noise(seed):
    d = make_synthetic((256, 256), 12, 2, noise=0.05, seed=seed)
    lat = find_lattice(d.image)
    assert not lat.present
    assert lat.peaks.shape == (0, 2)
    assert not fit_lattice(d.image, lat).any()


def test_no_lattice_from_stripes_alone():
    # One periodic direction (interference stripes) is not a lattice.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:200, :200]
    img = np.cos(2 * np.pi * (0.11 * xx + 0.05 * yy)) + 0.3 * rng.standard_normal((200, 200))
    lat = find_lattice(img)
    assert not lat.present
    assert len(lat.others) >= 1  # the stripe peak is reported, not fitted


def test_fit_recovers_the_lattice_and_leaves_the_dopants(doped):
    lat = find_lattice(doped.image)
    fit = fit_lattice(doped.image, lat)
    true = doped.lattice - doped.lattice.mean()
    assert np.linalg.norm(fit - true) / np.linalg.norm(true) < 0.06
    # What is left is the dopants (plus noise): their picture survives removal.
    dopants = doped.image - doped.lattice
    rest = doped.image - fit
    assert np.corrcoef(rest.ravel(), dopants.ravel())[0, 1] > 0.97


def test_removing_the_lattice_lets_the_motifs_find_the_dopants(doped):
    truth = np.concatenate(doped.positions)
    lat = find_lattice(doped.image)
    scores = {}
    for name, img in (
        ("raw", doped.image),
        ("removed", doped.image - fit_lattice(doped.image, lat)),
    ):
        res = napari_sasd.solve(img, 11, 2)
        found = napari_sasd.find_defects(res.activations)
        scores[name] = precision_recall(found.positions, truth)
        scores[name + "_energy"] = [lattice_energy(a, lat) for a in res.kernels]
    # Left in, the lattice wins a motif and every site becomes a "dopant".
    assert max(scores["raw_energy"]) > 0.8
    assert min(scores["raw"]) < 0.5
    # Removed, both motifs are dopants and nearly every dopant is found once.
    assert max(scores["removed_energy"]) < 0.3
    assert min(scores["removed"]) >= 0.9, scores


def test_envelope_follows_a_lattice_under_creep():
    # 10 % creep across the image moves the peaks by ~6 bins top to bottom: a
    # rigid (long-envelope) fit smears it (~0.45 error), the chosen one does not.
    d = make_lattice_dopants(strain=0.1, seed=0)
    lat = find_lattice(d.image)
    true = d.lattice - d.lattice.mean()
    err = np.linalg.norm(fit_lattice(d.image, lat) - true) / np.linalg.norm(true)
    rigid = np.linalg.norm(fit_lattice(d.image, lat, envelope=30.0) - true)
    assert err < 0.3 < rigid / np.linalg.norm(true)


def test_nan_pixels_and_mask(doped):
    img = doped.image.copy()
    rng = np.random.default_rng(1)
    img[rng.random(img.shape) < 0.03] = np.nan
    mask = np.ones(img.shape, bool)
    mask[:40, :60] = False  # e.g. an adsorbate the user excluded
    lat = find_lattice(img, mask)
    assert lat.present
    fit = fit_lattice(img, lat, mask)
    assert np.isfinite(fit).all()
    true = doped.lattice - doped.lattice.mean()
    ok = np.isfinite(img) & mask
    assert np.linalg.norm((fit - true)[ok]) / np.linalg.norm(true[ok]) < 0.08
    # The input is left alone.
    assert np.isnan(img).sum() > 0 and np.isfinite(doped.image).all()


def test_a_stack_shares_the_lattice_with_its_own_amplitudes(doped):
    cube = np.stack([doped.image, -0.5 * doped.image + 3.0])
    lat = find_lattice(cube)
    assert lat.present and lat.shape == doped.image.shape
    fit = fit_lattice(cube, lat)
    assert fit.shape == cube.shape
    true = doped.lattice - doped.lattice.mean()
    for c, s in enumerate((1.0, -0.5)):
        assert np.linalg.norm(fit[c] - s * true) / np.linalg.norm(s * true) < 0.06


def test_background_term_interface(doped):
    term = LatticeTerm()
    assert isinstance(term, BackgroundTerm)
    rest, fits = remove_background(doped.image, [term])
    assert term.lattice is not None and term.lattice.present
    np.testing.assert_allclose(rest, doped.image - fits["lattice"])
    plain = make_synthetic((128, 128), 10, 1, noise=0.05, seed=3).image
    rest, fits = remove_background(plain, [LatticeTerm()])
    assert not fits["lattice"].any()
    np.testing.assert_array_equal(rest, plain)


def test_bad_input_says_what_to_do(doped):
    with pytest.raises(ValueError, match="image"):
        find_lattice(np.zeros(100))
    with pytest.raises(ValueError, match="mask shape"):
        find_lattice(doped.image, np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="finite"):
        find_lattice(np.full((32, 32), np.nan))
    lat = find_lattice(doped.image)
    with pytest.raises(ValueError, match="run find_lattice on this image"):
        fit_lattice(doped.image[:100, :100], lat)


@pytest.mark.skipif(not FESE.exists(), reason="measured data not present (../shared/data)")
def test_fese_se_lattice_found_removed_and_no_motif_learns_it():
    from napari_sasd.flatten import flatten
    from napari_sasd.imageio import read_image

    img = flatten(read_image(FESE).data)
    lat = find_lattice(img)
    assert lat.present
    # The Se lattice: square, about 4.2 px per period on this 224 px, 20 nm scan.
    np.testing.assert_allclose(lat.periods, 4.25, atol=0.15)
    raw = napari_sasd.solve(img, 15, 2)
    assert max(lattice_energy(a, lat) for a in raw.kernels) > 0.5  # the complaint
    rest = img - fit_lattice(img, lat)
    res = napari_sasd.solve(rest, 15, 2)
    assert max(lattice_energy(a, lat) for a in res.kernels) < 0.3
    # The bright defect motif's copies sit on the bright defects.
    bright = int(np.argmax(res.kernels.reshape(2, -1).mean(1)))
    defects = napari_sasd.find_defects(res.activations[bright : bright + 1], 0.5, relative=True)
    assert 5 <= len(defects) <= 40
    smooth = ndimage.gaussian_filter(img, 2)
    level = np.percentile(smooth, 95)
    on_bright = smooth[tuple(np.round(defects.positions).astype(int).T)] > level
    assert on_bright.mean() >= 0.9
