"""A defect bigger than the motif gives one point (issue 14, ``napari_sasd.rims``).

The scene: small dark defects (the motif), two of them closer than a motif
size apart, and one large bright defect ringed by a dark halo, whose rim the
dark motif fits at several places. The tests fail when the rim's copies stay
several points, when small defects next to each other are merged (as they
are when the motif's sign is ignored: the small dark defects are then cores),
and when the dock's slider path and the analysis disagree.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from napari_sasd.detection import copy_maps, detect_copies
from napari_sasd.dock_run import Candidates
from napari_sasd.metrics import box_scores
from napari_sasd.peaks import Defects
from napari_sasd.pipeline import analyse, user_defects
from napari_sasd.rims import find_rims, merge_rims

K = 15
SMALL = [(40.0, 40.0), (40.0, 55.0), (150.0, 60.0)]  # the first two 1.0 motif size apart
CORE = (110.0, 150.0)
RIM = [(110.0, 132.0), (92.0, 150.0), (123.0, 163.0)]  # on the dark halo, 18 px out


def _blob(shape, centre, sigma):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))


def _scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (200, 220)
    y = 0.05 * rng.standard_normal(shape)
    for c in SMALL:
        y -= _blob(shape, c, 3.0)
    # Large bright defect (core radius ~12 px, over 3 motif areas) in a dark halo.
    y += 2.0 * _blob(shape, CORE, 9.0) - 1.2 * _blob(shape, CORE, 18.0)
    g = np.arange(K) - K // 2
    motif = -np.exp(-(g[:, None] ** 2 + g[None] ** 2) / (2 * 3.0**2))
    motif /= np.linalg.norm(motif)
    return y, motif


def _defects(points, motif=0):
    p = np.asarray(points, float)
    return Defects(p, np.full(len(p), motif), np.linspace(2.0, 1.0, len(p)))


def test_rim_copies_become_one_point_at_the_core():
    y, motif = _scene()
    rims = find_rims(y, motif[None])
    out = merge_rims(_defects(SMALL + RIM), rims)
    assert len(out) == len(SMALL) + 1
    # The small defects stay where they are, the two close ones included.
    for c in SMALL:
        assert np.min(np.hypot(*(out.positions - c).T)) < 0.5
    # The rim's copies are one point at the large defect's centre.
    d = np.hypot(*(out.positions - CORE).T)
    assert d.min() < 2.0
    # It keeps the strongest rim copy's amplitude.
    assert out.amplitude[np.argmin(d)] == pytest.approx(_defects(SMALL + RIM).amplitude[3])


def test_a_lone_copy_on_a_rim_is_left_alone():
    y, motif = _scene()
    rims = find_rims(y, motif[None])
    lone = merge_rims(_defects(SMALL + RIM[:1]), rims)
    np.testing.assert_array_equal(lone.positions, np.asarray(SMALL + RIM[:1]))


def test_the_slider_and_the_analysis_merge_alike():
    y, motif = _scene()
    # Activations: a spike per copy (the rims' and the small defects'), of
    # the copy's least-squares amplitude (the matched filter: unit-norm motif).
    mf = signal.correlate(y, motif, mode="same")
    x = np.zeros((1, *y.shape))
    for r, c in SMALL + RIM:
        x[0, int(r), int(c)] = mf[int(r), int(c)]
    assert (x[0][x[0] != 0] > 0).all()
    recon = signal.fftconvolve(x[0], motif, mode="same")
    copies = copy_maps(x, motif[None], y - recon, None, y)
    assert copies.rims is not None
    flags = [[]]
    # Low: nothing fits the bright core here, so the rim copies sit in a
    # misfit that the local noise counts (the real scans' texture motif fits it).
    z = 1.0
    direct = user_defects(detect_copies(copies, z), copies.rims, flags)
    slider = Candidates.of(copies).select(z, flags)
    np.testing.assert_allclose(np.sort(slider.positions, 0), np.sort(direct.positions, 0))
    # And the merge happened: fewer points than copies detected.
    assert len(direct) < len(detect_copies(copies, z))


def test_large_bright_defects_of_a_labelled_scan_get_one_point_each(labelled_scan):
    img, boxes, labels = labelled_scan("WSe2-SL445_211119_-1.4V_100x100_Z_033.jpg")
    large = np.array([lab == "Large Bright Peak" for lab in labels])
    an = analyse(img, 20, 2)
    p = an.defects.positions
    counts = []
    for bx, by, bw, bh in boxes[large]:
        inside = (p[:, 1] >= bx - 2) & (p[:, 1] <= bx + bw + 2)
        inside &= (p[:, 0] >= by - 2) & (p[:, 0] <= by + bh + 2)
        counts.append(int(inside.sum()))
    # Each found; 3, 3 and 6 points on them without the merge, 1, 3 and 2 with it.
    assert min(counts) >= 1
    assert sum(counts) <= 6
    # No true point lost to the merge (F1 0.78 without it, 0.82 with it).
    assert box_scores(p, boxes)[2] >= 0.8
