"""Edge cases of the public API found by a careful tester (issue 17): each
gives a correct result or a clear error before any work, never a silent
wrong answer or a raw numpy error."""

import numpy as np
import pytest

from napari_sasd import find_defects, solve
from napari_sasd.validation import prepare


def _maps():
    a = np.zeros((2, 32, 32), np.float32)
    a[0, 5, 5], a[1, 10, 10], a[1, 20, 20] = 1.0, 2.0, 0.7
    return a


@pytest.mark.parametrize("bad", [np.inf, np.nan, -np.inf])
@pytest.mark.parametrize("kw", [{}, {"threshold": 0.3, "relative": True}, {"threshold": 0.5}])
def test_find_defects_refuses_a_non_finite_map_naming_the_motif(bad, kw):
    # One +inf in one map made every relative/default threshold inf: no
    # defect for *any* motif, silently.
    a = _maps()
    a[1, 0, 0] = bad
    with pytest.raises(ValueError, match="motif 2 contains NaN or inf"):
        find_defects(a, **kw)


def test_find_defects_refuses_a_nan_threshold():
    with pytest.raises(ValueError, match="threshold must be a number"):
        find_defects(_maps(), float("nan"))
    with pytest.raises(ValueError, match="threshold must be a number"):
        find_defects(_maps(), [0.5, float("nan")], relative=True)
    # An infinite threshold is a (strict) threshold: nothing passes it.
    assert len(find_defects(_maps(), float("inf"))) == 0


def test_find_defects_of_no_motif_is_an_empty_table():
    d = find_defects(np.zeros((0, 16, 16), np.float32))
    assert len(d) == 0 and d.positions.shape == (0, 2)
    assert d.motif.dtype.kind == "i" and d.counts(0).shape == (0,)
    # And the ordinary case still finds the three peaks.
    d = find_defects(_maps(), 0.3, relative=True)
    assert sorted(d.motif.tolist()) == [0, 1, 1]


def test_init_kernels_with_an_all_zero_motif_is_refused_before_work():
    img = np.random.default_rng(0).random((48, 48))
    init = np.random.default_rng(1).standard_normal((2, 8, 8))
    init[1] = 0
    with pytest.raises(ValueError, match="init_kernels motif 2 is all zeros"):
        solve(img, 8, 2, init_kernels=init, max_iter=5)


@pytest.mark.parametrize("n", [37, 10**9])
def test_absurd_motif_counts_are_refused_before_work(n):
    # 10**9 motifs reached a raw MemoryError after the input checks.
    img = np.random.default_rng(0).random((48, 48))
    with pytest.raises(ValueError, match=f"n_motifs={n} is more than the 36 motifs"):
        solve(img, 8, n)


def test_motif_count_beyond_the_memory_is_refused(monkeypatch):
    import napari_sasd.validation as v

    monkeypatch.setattr(v, "_physical_memory", lambda: 2**30)
    img = np.zeros((2048, 2048), np.float32)
    img[::7, ::5] = 1
    with pytest.raises(ValueError, match=r"needs at least 2\.0 GiB .* 1\.0 GiB"):
        prepare(img, 3, 32, None, None, None, None)


@pytest.mark.parametrize("factor", [1e-300, 1e-200, 1e150, 1e300])
def test_values_near_the_float_range_ends_are_not_a_constant_image(factor):
    # The spread of such values underflowed/overflowed when squared and was
    # reported as "constant": now a clear message about the range.
    img = np.random.default_rng(0).random((48, 48)) * factor
    with pytest.raises(ValueError, match="multiply the image by a constant") as err:
        solve(img, 8, 1, max_iter=5)
    assert "constant over" not in str(err.value)


@pytest.mark.parametrize("factor", [1e-20, 1.0, 1e20])
def test_large_and_small_but_representable_values_solve_the_same(factor):
    # Within the range the result is the same, in the image's units.
    rng = np.random.default_rng(0)
    img = rng.random((48, 48))
    ref = solve(img, 8, 1, max_iter=20, seed=0)
    res = solve(img * factor, 8, 1, max_iter=20, seed=0)
    np.testing.assert_allclose(res.kernels, ref.kernels, atol=1e-5)
    np.testing.assert_allclose(res.activations / factor, ref.activations, rtol=1e-4, atol=1e-6)


def test_a_truly_constant_image_is_still_called_constant():
    for value in (0.0, 3.0, 1e300):
        with pytest.raises(ValueError, match="constant over its observed pixels"):
            solve(np.full((48, 48), value), 8, 1)
