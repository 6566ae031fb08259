"""The solver on measured STM scans (../shared/data; skipped when absent).

No ground truth exists for these; the checks are what a microscopist sees:
the FeSe defect motif's strongest copies sit on the bright defects, and the
Si(111)-7x7 corner-hole motif's copies form the 7x7 lattice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage, spatial

import napari_sasd
from napari_sasd.flatten import flatten

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FESE = DATA / "fese_stmpy" / "FeSe_topography.sxm"
SI = DATA / "si7x7_spiepy" / "image_with_defects.dat"


@pytest.mark.skipif(not FESE.exists(), reason="measured data not present (../shared/data)")
def test_fese_defect_motif_finds_bright_defects():
    from napari_sasd.nanonis import read_sxm

    img = flatten(read_sxm(FESE).images["Z (fwd)"])
    res = napari_sasd.solve(img, 15, 2)
    # The defect motif is the bright one; the other models the Se lattice.
    bright = int(np.argmax(res.kernels.reshape(2, -1).mean(1)))
    defects = napari_sasd.find_defects(res.activations[bright : bright + 1], 0.5, relative=True)
    assert 5 <= len(defects) <= 40
    smooth = ndimage.gaussian_filter(img, 2)
    level = np.percentile(smooth, 95)
    on_bright = smooth[tuple(np.round(defects.positions).astype(int).T)] > level
    assert on_bright.mean() >= 0.9, on_bright


@pytest.mark.skipif(not SI.exists(), reason="measured data not present (../shared/data)")
def test_si7x7_corner_holes_form_the_lattice():
    raw = SI.read_bytes()
    rows, cols = np.frombuffer(raw[:8], "<u4")
    img = flatten(np.frombuffer(raw[8:], "<f8").reshape(int(rows), int(cols)))
    res = napari_sasd.solve(img, 27, 2)
    counts = [len(napari_sasd.find_defects(res.activations[m : m + 1], 0.5, relative=True))
              for m in range(2)]  # fmt: skip
    hole = int(np.argmax(counts))
    assert res.kernels[hole][13, 13] < 0  # a hole: dark at its centre
    pos = napari_sasd.find_defects(res.activations[hole : hole + 1], 0.5, relative=True).positions
    assert len(pos) >= 20
    nn = spatial.cKDTree(pos).query(pos, k=2)[0][:, 1]
    period = np.median(nn)
    # One lattice spacing between neighbouring corner holes, for nearly all.
    assert np.mean(np.abs(nn - period) < 0.08 * period) >= 0.8, np.round(nn, 1)


@pytest.mark.skipif(not FESE.exists(), reason="measured data not present (../shared/data)")
def test_fese_analysis_removes_the_lattice_and_finds_the_bright_defects():
    """Issue 14: with the defaults, no motif is the Se lattice and the
    defects found are the bright ones a microscopist sees."""
    from napari_sasd.flags import _secondary_peak
    from napari_sasd.nanonis import read_sxm

    raw = read_sxm(FESE).images["Z (fwd)"]
    an = napari_sasd.analyse(raw, 15, 2)
    assert an.settings["lattice_found"]
    for a in an.result.kernels:
        # A Se-lattice motif repeats inside its window (period 4.2 px).
        assert _secondary_peak(a) < 0.3
    assert 5 <= len(an.defects) <= 60
    img = flatten(raw)
    smooth = ndimage.gaussian_filter(img, 2)
    level = np.percentile(smooth, 95)
    near = ndimage.maximum_filter(smooth, size=5)
    on_bright = near[tuple(np.round(an.defects.positions).astype(int).T)] > level
    assert on_bright.mean() >= 0.6, on_bright
