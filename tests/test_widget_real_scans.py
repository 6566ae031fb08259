"""Real scans in the dock (issue 14): scars as an editable Labels layer, the
significance slider, artefact flags in the gallery, the suggested motif size.

A real viewer and the real worker thread; runs wait on ``run_finished``.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sasd.detection import DEFAULT_SIGNIFICANCE
from napari_sasd.layers import META_KEY
from napari_sasd.spans import FAINT_MARGIN

K = 10


@pytest.fixture(scope="module")
def streaky():
    """A 160^2 synthetic scan (one kind of 10 px defect) with 8 partial
    scan-line streaks (tip noise) added; ``truth`` marks the streaks."""
    from napari_sasd.synthetic import make_synthetic

    d = make_synthetic((160, 160), K, 1, noise=0.05, seed=2)
    img = d.image.astype(np.float64).copy()
    rng = np.random.default_rng(0)
    truth = np.zeros(img.shape, bool)
    amp = 3 * img.std()
    for r in rng.choice(np.arange(5, 155), 8, replace=False):
        c0, length = int(rng.integers(0, 90)), int(rng.integers(30, 70))
        img[r, c0 : c0 + length] += amp * rng.choice([-1, 1])
        truth[r, c0 : c0 + length] = True
    return img, truth


def _setup(widget, *, n=2, max_iter=150, scars=True, lattice=False):
    widget._k.value, widget._n.value, widget._max_iter.value = K, n, max_iter
    widget._scars.value, widget._lattice.value = scars, lattice


@pytest.fixture
def solver_masks(monkeypatch):
    """The ``mask`` each solve of the analysis received (None: all observed)."""
    import napari_sasd.pipeline as pipeline

    seen: list = []
    real = pipeline.iter_solve

    def spy(image, *args, **kwargs):
        m = kwargs.get("mask")
        seen.append(None if m is None else np.array(m, bool))
        return real(image, *args, **kwargs)

    monkeypatch.setattr(pipeline, "iter_solve", spy)
    return seen


def _observed(mask, shape):
    return np.ones(shape, bool) if mask is None else mask


def test_scars_appear_as_labels_and_an_edited_layer_is_used_as_given(
    viewer_widget, run_and_wait, streaky, solver_masks
):
    img, truth = streaky
    viewer, widget = viewer_widget
    viewer.add_image(img, name="scan")
    _setup(widget)
    assert run_and_wait(widget) == "done", widget._status.value

    lab = viewer.layers["scan scars"]
    assert type(lab).__name__ == "Labels" and lab.metadata[META_KEY]["role"] == "scars"
    assert lab.data.shape == img.shape
    marked = lab.data > 0
    # The streaks are covered; little else is marked.
    assert (marked & truth).sum() >= 0.8 * truth.sum()
    assert (marked & ~truth).sum() <= 0.01 * truth.size
    # The solver left exactly the marked pixels out.
    np.testing.assert_array_equal(_observed(solver_masks[-1], img.shape), ~marked)
    assert "Scars:" in widget._status.value

    # The user erases the marks of the upper half and paints a block of their own.
    edited = np.array(lab.data)
    edited[:80] = 0
    edited[120:130, 10:30] = 2
    lab.data = edited
    assert run_and_wait(widget) == "done", widget._status.value
    # A new search on the edited marks, taken as they are (not marked again).
    assert "kernels" not in widget.runner.solve_kwargs
    assert widget.runner.solve_kwargs["scars"] == "off"
    np.testing.assert_array_equal(_observed(solver_masks[-1], img.shape), edited == 0)
    # The layer is the same, as the user left it.
    assert viewer.layers["scan scars"] is lab
    np.testing.assert_array_equal(lab.data, edited)
    assert "your marks" in widget._status.value

    # Erased altogether: nothing is left out any more.
    lab.data = np.zeros_like(edited)
    assert run_and_wait(widget) == "done"
    assert _observed(solver_masks[-1], img.shape).all()


def test_significance_slider_changes_points_without_a_new_solve(
    viewer_widget, run_and_wait, streaky, solver_masks
):
    img, _ = streaky
    viewer, widget = viewer_widget
    viewer.add_image(img, name="scan")
    _setup(widget)
    assert run_and_wait(widget) == "done"
    solves = len(solver_masks)
    pts = viewer.layers["scan defects"]
    counts = []
    for z in (2.0, 4.0, 8.0, 16.0):
        widget._threshold.value = z
        counts.append(len(pts.data))
        want = widget.analysis.analysis.redetect(z)
        assert len(pts.data) == len(want)
        assert widget.histogram.threshold_positions()[0] == pytest.approx(z)
        # The faint tier's lower edge follows it (tall copies count down to there).
        lower = widget.histogram.faint_positions()
        assert len(lower) == len(widget.histogram.lines) > 0
        assert lower == pytest.approx([z - FAINT_MARGIN] * len(lower))
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1], counts
    assert len(solver_masks) == solves  # no new solve


def test_a_streak_motif_is_flagged_in_the_gallery_and_its_copies_not_counted(
    viewer_widget, run_and_wait, streaky
):
    img, _ = streaky
    viewer, widget = viewer_widget
    viewer.add_image(img, name="scan")
    # Scars left in the fit: with two motifs, one learns the streaks.
    _setup(widget, scars=False)
    assert run_and_wait(widget) == "done"
    flags = widget.analysis.analysis.flags
    flagged = [i for i, f in enumerate(flags) if f]
    assert len(flagged) == 1, flags
    m = flagged[0]
    text = widget.gallery.captions[m].text()
    assert "looks like" in text and "looks like" not in widget.gallery.captions[1 - m].text()
    assert "not counted" in text and "looks like" in widget.gallery.captions[m].toolTip()
    # The flagged motif's caption in the warning colour, the defect's not.
    assert "color" in widget.gallery.captions[m].styleSheet()
    assert "color" not in widget.gallery.captions[1 - m].styleSheet()
    assert "look" in widget._status.value and "artefact" in widget._status.value
    pts = viewer.layers["scan defects"]
    motifs = pts.features["motif"].to_numpy()
    assert not (motifs == m).any()
    # Counted too on request, without a new solve.
    widget._keep_artefacts.value = True
    assert (pts.features["motif"].to_numpy() == m).any()
    n_m = int((pts.features["motif"].to_numpy() == m).sum())
    text = widget.gallery.captions[m].text()
    assert f"{n_m} copies" in text and "not counted" not in text


def test_suggest_sets_a_size_near_the_true_one(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    viewer.open_sample("napari-sasd", "topograph")  # 12 px motifs
    widget._k.value = 31
    with qtbot.waitSignal(widget.size_suggested, timeout=60_000) as blocker:
        assert widget.suggest_size()
        assert not widget.parameters.suggest.enabled  # busy in the background
    k = blocker.args[0]
    assert widget._k.value == k and 9 <= k <= 17, k
    qtbot.waitUntil(lambda: widget.parameters.suggest.enabled, timeout=5_000)
    assert f"{k} px" in widget._status.value


def test_lattice_is_removed_and_shown_hidden(viewer_widget, run_and_wait):
    from napari_sasd.synthetic_lattice import make_lattice_dopants

    d = make_lattice_dopants((160, 160), kernel_size=11, kinds=("bump",), seed=1)
    viewer, widget = viewer_widget
    viewer.add_image(d.image, name="lat")
    _setup(widget, n=1, lattice=True, scars=False)
    widget._k.value = 11
    assert run_and_wait(widget) == "done", widget._status.value
    lat = viewer.layers["lat lattice"]
    assert not lat.visible and lat.data.shape == d.image.shape
    periods = widget.analysis.analysis.settings["lattice_periods_px"]
    assert "Lattice removed: periods" in widget._status.value
    assert f"{periods[0]:.2f}" in widget._status.value
    # The generator's lattice (constant 5 px, hexagonal: rows 5 sqrt(3)/2 px
    # apart) is found, and the removed lattice is the image's periodic part:
    # most of its variance.
    assert all(abs(p - 2.5 * np.sqrt(3)) < 0.2 for p in periods), periods
    flat = widget.analysis.analysis.data
    assert flat.var() < 0.5 * (flat + lat.data).var()


def test_dock_bundle_records_what_the_command_line_records(
    viewer_widget, run_and_wait, streaky, tmp_path
):
    import tifffile

    from napari_sasd.bundle import load_bundle
    from napari_sasd.cli import main

    img, _ = streaky
    tif = tmp_path / "scan.tif"
    tifffile.imwrite(tif, img.astype(np.float32))
    assert main(["solve", str(tif), "-k", str(K), "-n", "2", "--max-iter", "60",
                 "--progress", "never", "--out", str(tmp_path / "cli")]) == 0  # fmt: skip
    cli = load_bundle(tmp_path / "cli" / "scan.sasd").record

    viewer, widget = viewer_widget
    viewer.add_image(img, name="scan")
    _setup(widget, max_iter=60)
    widget._flatten.value = True  # as the command line does by default
    assert run_and_wait(widget) == "done"
    widget._threshold.value = 6.0  # the record follows the slider
    out = widget._on_save(path=str(tmp_path / "dock"))
    b = load_bundle(out)
    dock = b.record
    # Every entry of the analysis's record is in both, with the same meaning.
    from napari_sasd.pipeline import analysis_record

    keys = set(analysis_record(widget.analysis.analysis)) | {"threshold", "flatten"}
    assert keys <= set(cli) and keys <= set(dock), (keys - set(cli), keys - set(dock))
    assert dock["flatten"] == cli["flatten"] == "both"
    assert dock["line_shape_removed"] is cli["line_shape_removed"] is True
    assert dock["significance"] == 6.0 and cli["significance"] == DEFAULT_SIGNIFICANCE
    noise = widget.analysis.analysis.copies.noise
    assert dock["noise_per_motif"] == pytest.approx(noise.tolist())
    assert dock["threshold"] == pytest.approx((6.0 * noise).tolist())
    assert dock["motif_flags"] == widget.analysis.analysis.flags
    assert dock["scars"] == "auto" and "scar_fraction" in dock
    assert len(b.defects) == len(viewer.layers["scan defects"].data)


def test_changing_only_lambda_relocates_on_the_prepared_data_with_the_scars(
    viewer_widget, run_and_wait, streaky
):
    img, _ = streaky
    viewer, widget = viewer_widget
    viewer.add_image(img, name="scan")
    _setup(widget)
    assert run_and_wait(widget) == "done"
    marks = viewer.layers["scan scars"].data > 0
    assert marks.any()
    prepared = widget.analysis.analysis.data
    widget._auto_lam.value = False
    widget._lam.value = widget.result.lam * 1.5
    assert run_and_wait(widget) == "done"
    kw = widget.runner.solve_kwargs
    # The scars layer the first run made is the same marks: a re-locate, no new search,
    # on the data the first run prepared, with the marks left out.
    assert "kernels" in kw and widget.result.params["mode"] == "locate"
    assert widget.runner.image is prepared
    np.testing.assert_array_equal(kw["mask"], ~marks)
    assert widget.analysis.analysis.scars is not None


def test_a_picture_with_scan_lines_gets_flattening_and_a_synthetic_one_does_not(viewer_widget):
    from napari_sasd.synthetic import make_synthetic

    viewer, widget = viewer_widget
    data = make_synthetic((128, 128), 10, 1, noise=0.05, seed=2, copies_per_area=0.3)
    assert not widget._flatten.value  # the default
    viewer.add_image(data.image, name="clean")
    assert widget._image.value.name == "clean" and not widget._flatten.value
    # The same picture with the line-to-line offsets of an unflattened scan
    # (as exported to a JPEG: nothing in the file says it is a scan).
    offsets = np.random.default_rng(0).normal(0, 3 * data.image.std(), (128, 1))
    viewer.add_image(data.image + offsets, name="exported scan")
    widget._image.value = viewer.layers["exported scan"]
    assert widget._flatten.value and widget._scars.value
    assert "scan lines: flattening on" in widget._info.value
