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
