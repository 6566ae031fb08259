import numpy as np

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
