"""The dock's worker-side analysis (napari-free): the slider's filter of the
candidate copies gives what a new detection gives."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sasd.dock_run import iter_dock_analysis, iter_dock_locate
from napari_sasd.locate import iter_locate
from napari_sasd.synthetic import make_synthetic


def _run(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


@pytest.fixture(scope="module")
def dock():
    d = make_synthetic((128, 128), 10, 2, noise=0.1, seed=3)
    gen = iter_dock_analysis(d.image, kernel_size=10, n_motifs=2, max_iter=80, seed=0)
    return _run(gen)


def _same(a, b):
    ia = np.lexsort((a.positions[:, 1], a.positions[:, 0], a.motif))
    ib = np.lexsort((b.positions[:, 1], b.positions[:, 0], b.motif))
    np.testing.assert_array_equal(a.positions[ia], b.positions[ib])
    np.testing.assert_array_equal(a.motif[ia], b.motif[ib])
    np.testing.assert_allclose(a.amplitude[ia], b.amplitude[ib])


@pytest.mark.parametrize("z", [0.5, 2.0, 4.0, 7.5, 15.0])
def test_candidates_select_is_a_new_detection(dock, z):
    a = dock.analysis
    got = dock.candidates.select(z, a.flags)
    _same(got, a.redetect(z))
    assert 0 < len(dock.candidates.select(2.0)) and len(got) <= len(dock.candidates.defects)


def test_flagged_motifs_copies_left_out_unless_kept(dock):
    flags = [["scan lines"], []]
    kept = dock.candidates.select(4.0, flags, keep_artefacts=True)
    out = dock.candidates.select(4.0, flags)
    assert (kept.motif == 0).any() and not (out.motif == 0).any()
    assert len(out) == int((kept.motif == 1).sum())


def test_generators_do_no_work_until_started(monkeypatch):
    # The dock calls them on the main thread and iterates them in the worker:
    # the preparation (scars, lattice) must wait for the first next().
    import napari_sasd.dock_run as dr

    calls = []
    monkeypatch.setattr(dr, "iter_analyse", lambda *a, **k: calls.append(1) or iter(()))
    gen = iter_dock_analysis(np.zeros((32, 32)), kernel_size=5)
    assert calls == []
    with pytest.raises(Exception):  # noqa: B017 (the fake returns no analysis)
        next(gen)
    assert calls == [1]


def test_locate_run_detects_like_a_learn_run(dock):
    a = dock.analysis
    gen = iter_dock_locate(
        a.data, locate=iter_locate, kernels=a.result.kernels, lam=a.result.lam, significance=4.0
    )
    again = _run(gen)
    assert again.analysis.flags == a.flags
    # The same motifs located again at the same lambda: nearly the same copies.
    n0, n1 = len(a.defects), len(again.analysis.defects)
    assert abs(n1 - n0) <= max(2, 0.1 * n0), (n0, n1)
    _same(again.candidates.select(4.0, again.analysis.flags), again.analysis.redetect(4.0))


def test_analysis_stops_between_preparation_steps_and_checks_inputs_first(monkeypatch):
    # The dock's Cancel acts where the generator yields: the preparation
    # (flatten, scars, lattice: 0.3-1 s each on 1024^2) yields between steps.
    import napari_sasd.pipeline as pl
    from napari_sasd.synthetic import make_synthetic

    solves = []
    real = pl.iter_solve
    monkeypatch.setattr(pl, "iter_solve", lambda *a, **k: solves.append(1) or real(*a, **k))
    img = make_synthetic((96, 96), 8, 1, noise=0.05, seed=1, copies_per_area=0.3).image
    gen = pl.iter_analyse(img, 8, 1)
    assert solves == []  # nothing runs before the first next()
    steps = [next(gen), next(gen)]
    assert steps == [None, None] and solves == []
    gen.close()  # what a cancelled worker does
    assert solves == []
    # Bad input is refused when the generator is made, before any preparation.
    with pytest.raises(ValueError, match="kernel"):
        pl.iter_analyse(img, 200, 1)
    # Run to its end, it still gives the analysis.
    an = pl.analyse(img, 8, 1)
    assert len(an.defects) > 5 and solves == [1]


def test_the_worker_loop_cancels_between_preparation_steps():
    import threading

    from napari_sasd.worker import throttled

    cancel = threading.Event()
    done = []

    def work():
        yield None  # flattened
        done.append("scars")
        yield None  # scars marked
        done.append("lattice")
        yield None
        done.append("solve")
        return "result"

    loop = throttled(work(), cancel)
    # Preparation steps show nothing: the first thing out is the return value.
    with pytest.raises(StopIteration) as stop:
        next(loop)
    assert stop.value.value == "result" and done == ["scars", "lattice", "solve"]
    # Cancel pressed while the scars are marked: the lattice step never runs.
    done.clear()

    def cancelled_during_scars():
        yield None
        cancel.set()
        done.append("scars")
        yield None
        done.append("lattice")
        yield None
        return "result"

    with pytest.raises(StopIteration) as stop:
        next(throttled(cancelled_during_scars(), cancel))
    assert stop.value.value is None and done == ["scars"]
