"""Motif libraries: made from bundles, saved and loaded, and the catalogue."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import signal

import napari_sasd
from napari_sasd.bundle import save_bundle
from napari_sasd.library import (
    Library,
    LibraryError,
    catalogue,
    load_library,
    load_motifs,
    make_library,
    signed_similarity,
)
from napari_sasd.synthetic import make_motif, make_synthetic


def _scan(kernels, seed, shape=(192, 192), noise=0.05):
    """A scan of the given motifs at random places (make_synthetic's copies)."""
    d = make_synthetic(shape, kernels.shape[-1], len(kernels), noise=0.0, seed=seed)
    img = sum(
        signal.fftconvolve(x, k, mode="same") for x, k in zip(d.activations, kernels, strict=True)
    )
    d.image = img + noise * np.random.default_rng(seed).standard_normal(shape)
    d.kernels = kernels
    return d


@pytest.fixture(scope="module")
def two_scans(tmp_path_factory):
    """Two scans of the same two defect kinds, each solved and saved as a bundle
    (the second with a larger motif size)."""
    out = tmp_path_factory.mktemp("bundles")
    scans, bundles = [], []
    kinds = make_synthetic((64, 64), 12, 2, seed=0).kernels
    for seed, k in ((0, 12), (1, 14)):
        d = _scan(kinds, seed)
        res = napari_sasd.solve(d.image, k, 2)
        bundles.append(save_bundle(out / f"scan{seed}", res, source=f"scan{seed}"))
        scans.append((d, res))
    return scans, bundles


def test_library_from_chosen_motifs_round_trips(two_scans, tmp_path):
    (_, r0), _ = two_scans[0]
    b0, b1 = two_scans[1]
    lib = make_library([(b0, [1]), (b1, [0])], names=["Se vacancy", "adatom"])
    assert lib.names == ["Se vacancy", "adatom"]
    assert lib.provenance[0]["motif"] == 1 and lib.provenance[0]["source"] == "scan0"
    path = lib.save(tmp_path / "lib")
    assert path.name == "lib.sasdlib"
    meta = json.loads((path / "library.json").read_text())
    assert [m["size"] for m in meta["motifs"]] == [[12, 12], [14, 14]]
    back = load_library(path)
    assert back.names == lib.names
    for a, b in zip(back.motifs, lib.motifs, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-6)  # float32 on disk
    # Padded to one size around the centres, for locate: the same motifs.
    stack = back.stack()
    assert stack.shape == (2, 14, 14)
    assert signed_similarity(stack[0], r0.kernels[1]) > 0.999
    np.testing.assert_allclose(stack[0][1:13, 1:13], back.motifs[0], atol=1e-12)
    kern, names = load_motifs(path)
    assert names == ["Se vacancy", "adatom"] and kern.shape == (2, 14, 14)
    kern, names = load_motifs(b1)
    assert names == ["#1", "#2"] and kern.shape == (2, 14, 14)


def test_catalogue_names_known_motifs_and_flags_new_ones(two_scans):
    _, (_, r1) = two_scans[0]
    b0 = two_scans[1][0]
    lib = make_library([b0], names=["A", "B"])
    # The second scan's motifs (other positions, other size) are the same kinds.
    entries = catalogue(r1.kernels, lib)
    matched = {e["match"] for e in entries}
    assert matched == {"A", "B"}, entries
    assert all(e["similarity"] >= 0.98 for e in entries)
    assert entries[0]["text"].startswith("same as ")
    # A dip is not a bump: the sign counts.
    neg = catalogue(-r1.kernels, lib)
    assert all(e["match"] is None and e["text"] == "new" for e in neg), neg
    other = make_motif(12, "trimer", np.random.default_rng(3))
    assert catalogue(other[None], lib)[0]["text"] == "new"


def test_locate_with_a_library_finds_the_defects(two_scans, tmp_path):
    _, (d1, r1) = two_scans[0]
    lib = make_library([two_scans[1][0]], names=["A", "B"])
    kern, _ = load_motifs(lib.save(tmp_path / "l"))
    res = napari_sasd.locate(d1.image, kern)
    # Same defects as the second scan's own solve.
    from napari_sasd.peaks import find_defects

    mine, own = find_defects(res.activations), find_defects(r1.activations)
    assert abs(len(mine) - len(own)) <= 0.03 * len(own)


def test_bad_libraries_and_names(two_scans, tmp_path):
    b0 = two_scans[1][0]
    with pytest.raises(ValueError, match="2 names given for 1"):
        make_library([(b0, [0])], names=["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        make_library([b0], names=["a", "a"])
    with pytest.raises(ValueError, match="not 5"):
        make_library([(b0, [5])])
    with pytest.raises(LibraryError, match="not a napari-sasd motif library"):
        load_library(tmp_path)
    with pytest.raises(LibraryError, match="neither a motif library nor a result bundle"):
        load_motifs(tmp_path)
    lib = make_library([b0])
    path = lib.save(tmp_path / "x")
    (path / "motifs.tif").write_bytes(b"not a tiff")
    with pytest.raises(LibraryError, match=r"motifs\.tif"):
        load_library(path)
    with pytest.raises(ValueError, match="already has"):
        lib.add(lib.motifs[0], lib.names[0])
    with pytest.raises(ValueError, match="not both"):
        lib.add(np.ones((2, 5, 5)), "c")
    cube = Library()
    cube.add(np.ones((2, 5, 5)), "c")
    with pytest.raises(ValueError, match="3 channels, the library 2"):
        cube.add(np.ones((3, 5, 5)), "d")
