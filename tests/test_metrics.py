import numpy as np
import pytest

from napari_sasd.metrics import match_motifs, precision_recall, shift_invariant_similarity
from napari_sasd.synthetic import make_motif


def test_similarity_is_shift_and_sign_invariant_and_can_fail():
    a = make_motif(12, "dumbbell")
    shifted = np.roll(np.pad(a, 3), (2, -1), axis=(0, 1))
    assert np.isclose(shift_invariant_similarity(-shifted, a), 1)
    b = make_motif(12, "ring")
    assert shift_invariant_similarity(a, b) < 0.9


def test_hungarian_matching_and_precision_recall():
    truth = np.stack([make_motif(10, s) for s in ("bump", "ring", "trimer")])
    sims, assign = match_motifs(truth[[2, 0, 1]], truth)
    np.testing.assert_allclose(sims, 1)
    np.testing.assert_array_equal(assign, [1, 2, 0])
    p, r = precision_recall(np.array([[0, 0], [10, 10.5], [50, 50]]), np.array([[1, 1], [10, 10]]))
    assert np.isclose(p, 2 / 3) and np.isclose(r, 1.0)


def test_precision_recall_matches_dense_assignment_on_random_points():
    from scipy import optimize, spatial

    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 100, (300, 2))
    found = np.concatenate(
        [truth[:250] + rng.normal(0, 1.2, (250, 2)), rng.uniform(0, 100, (40, 2))]
    )
    d = spatial.distance.cdist(found, truth)
    r, c = optimize.linear_sum_assignment(np.where(d <= 2, d, 1e6))
    hits = int(np.sum(d[r, c] <= 2))
    p, rec = precision_recall(found, truth, tol=2)
    assert np.isclose(p, hits / len(found)) and np.isclose(rec, hits / len(truth))
    # exact coincidences count
    assert precision_recall(truth[:5], truth[:5]) == (1.0, 1.0)


def test_threshold_per_motif_finds_a_faint_kind_beside_a_bright_one():
    from napari_sasd.peaks import find_defects, motif_thresholds

    acts = np.zeros((2, 40, 40), np.float32)
    bright = [(5, 5), (5, 30), (30, 5)]
    faint = [(20, 20), (30, 30), (12, 25)]
    for p in bright:
        acts[(0, *p)] = 1.0
    for p in faint:
        acts[(1, *p)] = 0.1
    acts[1, 35, 10] = 0.01  # a speck in the faint map, under a tenth of its copies
    common = find_defects(acts, 0.5, relative=True)
    assert common.counts(2).tolist() == [3, 0]  # the faint kind is lost
    own = find_defects(acts, 0.5, relative=True, per_motif=True)
    assert own.counts(2).tolist() == [3, 3]
    assert sorted(map(tuple, own.positions[own.motif == 1].astype(int))) == sorted(faint)
    np.testing.assert_allclose(
        motif_thresholds(acts, 0.5, relative=True, per_motif=True), [0.5, 0.05]
    )
    # One absolute threshold per motif, and a clear error for a wrong count.
    assert find_defects(acts, [0.5, 0.05]).counts(2).tolist() == [3, 3]
    with pytest.raises(ValueError, match="one per motif"):
        find_defects(acts, [0.5, 0.05, 0.1])
