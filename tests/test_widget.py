"""The dock widget with a real viewer and the real worker thread.

Runs wait on the widget's ``run_finished`` signal (emitted on the main thread
after the result layers are shown) with ``qtbot.waitSignal``, so the Qt event
loop keeps running while the solver works in its thread.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_sasd.detection import DEFAULT_SIGNIFICANCE
from napari_sasd.layers import META_KEY, motif_rgba
from napari_sasd.metrics import match_motifs
from napari_sasd.widget import _camera

K = 10


def _setup(widget, *, k=K, n=2, max_iter=0, region="whole"):
    widget._k.value = k
    widget._n.value = n
    widget._max_iter.value = max_iter
    widget._region.value = region


def _names(viewer):
    return [layer.name for layer in viewer.layers]


def test_sample_topograph_end_to_end(viewer_widget, run_and_wait):
    """Open through the manifest, load the sample, run: layers, colours, truth."""
    viewer, widget = viewer_widget
    viewer.open_sample("napari-sasd", "topograph")
    src = viewer.layers["synthetic topograph"]
    assert widget._image.value is src
    _setup(widget, k=12, n=2)
    assert run_and_wait(widget) == "done"

    truth = src.metadata["ground_truth"]["kernels"]
    sims, _ = match_motifs(widget.result.kernels, truth)
    assert sims.min() >= 0.97, sims

    names = _names(viewer)
    for n in (1, 2):
        assert f"synthetic topograph motif {n}" in names
        assert f"synthetic topograph activation {n}" in names
    assert "synthetic topograph defects" in names
    for n in range(2):
        act = viewer.layers[f"synthetic topograph activation {n + 1}"]
        assert act.data.shape == src.data.shape
        assert act.blending == "additive"
        # Colormap goes from black to the motif's palette colour.
        np.testing.assert_allclose(act.colormap.colors[-1], motif_rgba(n), atol=1e-6)
        meta = act.metadata[META_KEY]
        assert meta["role"] == "activation" and meta["motif"] == n
        assert meta["source"] == "synthetic topograph" and meta["region"] == [0, 0, 256, 256]
        mot = viewer.layers[f"synthetic topograph motif {n + 1}"]
        assert mot.data.shape == (12, 12)
        # Motifs sit right of the image, at its pixel size.
        assert mot.translate[1] > src.data.shape[1] - 0.5
    pts = viewer.layers["synthetic topograph defects"]
    assert set(pts.features.columns) >= {"motif", "amplitude"}
    np.testing.assert_allclose(pts.face_color, motif_rgba(pts.features["motif"].to_numpy()))
    counts = np.bincount(pts.features["motif"], minlength=2)
    assert all(c > 20 for c in counts)
    assert "copies" in widget.gallery.captions[0].text()
    assert "λ used" in widget._lam_used.value
    import json

    for layer in viewer.layers[1:]:
        json.dumps(layer.metadata[META_KEY])  # the bundle writer needs JSON


def test_significance_slider_updates_points_without_solving(
    viewer_widget, run_and_wait, small_image
):
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img")
    _setup(widget)
    # the default significance, the same as the command line's
    assert widget._threshold.value == pytest.approx(DEFAULT_SIGNIFICANCE)
    assert run_and_wait(widget) == "done"
    runner, result = widget.runner, widget.result
    analysis = widget.analysis.analysis
    pts = viewer.layers["img defects"]
    n0 = len(pts.data)
    assert n0 == len(analysis.defects)
    widget._threshold.value = 12.0
    assert 0 < len(pts.data) < n0
    assert len(pts.features) == len(pts.data) == len(pts.face_color)
    meta = pts.metadata[META_KEY]
    assert meta["significance"] == pytest.approx(12.0)
    # In image units: 12 times each motif's noise, as the command line records it.
    assert meta["threshold"] == pytest.approx((12.0 * analysis.copies.noise).tolist())
    # The same defects as a new detection at that significance (no new solve).
    want = analysis.redetect(12.0)
    np.testing.assert_allclose(
        np.sort(pts.data, axis=0), np.sort(want.positions, axis=0), atol=1e-9
    )
    widget._threshold.value = 1.0
    # Lower, at least as many (the solve's exact finish leaves few copies
    # under the default significance: every copy it keeps passes lambda).
    assert len(pts.data) >= n0 and len(pts.data) == len(analysis.redetect(1.0).positions)
    # No new solve: same runner, same result object.
    assert widget.runner is runner and widget.result is result


def test_cancel_stops_fast_and_leaves_viewer_unchanged(viewer_widget, qtbot, small_image):
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img")
    _setup(widget, max_iter=100_000)
    before = _names(viewer)
    assert widget.run()
    assert widget._run.text == "Cancel"
    # Wait for the live preview (the solver is really iterating).
    qtbot.waitUntil(lambda: len(widget.gallery.images) == 2, timeout=20_000)
    assert widget.progress.value() >= 0
    t0 = time.monotonic()
    with qtbot.waitSignal(widget.run_finished, timeout=5_000) as blocker:
        widget._run.native.click()  # the Run button is now Cancel
    assert time.monotonic() - t0 < 1.0
    assert blocker.args == ["cancelled"]
    assert _names(viewer) == before
    assert widget._run.text == "Run" and widget.result is None


def test_rerun_replaces_in_place_warm_starts_and_keeps(viewer_widget, run_and_wait, small_image):
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img")
    _setup(widget, max_iter=200)
    assert run_and_wait(widget) == "done"
    first = list(viewer.layers)
    assert "kernels" not in widget.runner.solve_kwargs

    # Change only lambda: same layers updated in place, the current motifs
    # re-located (issue 15): no new discovery, the motifs unchanged.
    motifs = widget.result.kernels.copy()
    n_before = len(viewer.layers["img defects"].data)
    widget._auto_lam.value = False
    widget._lam.value = widget.result.lam * 1.5
    assert run_and_wait(widget) == "done"
    assert list(viewer.layers) == first
    assert all(a is b for a, b in zip(viewer.layers, first, strict=True))
    assert widget.runner.solve_kwargs["kernels"].shape == (2, K, K)
    np.testing.assert_allclose(widget.result.kernels, motifs, atol=1e-6)
    assert widget.result.params["mode"] == "locate"
    assert len(viewer.layers["img defects"].data) < n_before  # a larger lambda: fewer copies
    assert viewer.layers["img activation 1"].metadata[META_KEY]["lam"] == pytest.approx(
        widget.result.lam
    )

    # Fewer motifs: a new search, the second motif's layers go away.
    widget._n.value = 1
    assert run_and_wait(widget) == "done"
    assert "kernels" not in widget.runner.solve_kwargs
    assert "img activation 2" not in _names(viewer)
    n_layers = len(viewer.layers)

    # Keep previous results: a new set is added, the old one stays (the
    # scar marks, if any, are one layer per source and region: reused).
    shared = sum(lay.metadata.get(META_KEY, {}).get("role") == "scars" for lay in viewer.layers)
    widget._keep.value = True
    assert run_and_wait(widget) == "done"
    assert len(viewer.layers) == 2 * n_layers - 1 - shared


def test_results_follow_a_rotated_source(viewer_widget, run_and_wait, small_image, tmp_path):
    # The user rotated the scan (say, to align the lattice) and drew the
    # rectangle in its frame: activation maps and defects must sit on it.
    viewer, widget = viewer_widget
    geo = {"scale": (0.5, 2.0), "translate": (10.0, -5.0), "rotate": 25.0}
    img = viewer.add_image(small_image.image, name="img", **geo)
    y0, x0, y1, x1 = 20, 30, 90, 110
    # Corners just inside the pixel edges: the rotation's rounding must not
    # move the region by a pixel.
    corners = np.array([[y0 - 0.4, x0 - 0.4], [y1 - 0.4, x1 - 0.4]])
    viewer.add_shapes([corners], shape_type="rectangle", name="roi", **geo)
    _setup(widget, max_iter=150, region="shapes")
    widget._shapes.value = viewer.layers["roi"]
    assert widget.region_for(img) == (y0, x0, y1, x1)
    assert run_and_wait(widget) == "done"
    act, pts = viewer.layers["img activation 1"], viewer.layers["img defects"]
    for i, j in [(0, 0), (5, 7), (60, 70)]:
        np.testing.assert_allclose(act.data_to_world((i, j)), img.data_to_world((y0 + i, x0 + j)))
    assert len(pts.data) > 0

    def on_source(points):
        for p in points.data[:5]:
            np.testing.assert_allclose(
                points.data_to_world(p), img.data_to_world(p + np.array([y0, x0]))
            )

    on_source(pts)
    # A new threshold rebuilds the points in place; they stay on the source.
    widget._threshold.value = 0.5 * widget._threshold.value
    on_source(pts)
    # The saved table's world coordinates are the source's too.
    out = widget._on_save(path=str(tmp_path / "rot.sasd"))
    with open(Path(out) / "defects.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(pts.data)
    for row in rows[:5]:
        world = img.data_to_world((float(row["row"]), float(row["col"])))
        np.testing.assert_allclose([float(row["y"]), float(row["x"])], world, atol=1e-6)


def test_shapes_rectangle_on_scaled_translated_image(viewer_widget, run_and_wait, small_image):
    viewer, widget = viewer_widget
    img = viewer.add_image(small_image.image, name="img", scale=(0.5, 2.0), translate=(10.0, -5.0))
    # Rectangle over data rows 20..80, cols 30..100 (edges on pixel edges), in world units.
    y0, x0, y1, x1 = 20, 30, 80, 100
    corners = np.array([[y0 - 0.5, x0 - 0.5], [y1 - 0.5, x1 - 0.5]])
    world = np.array([img.data_to_world(c) for c in corners])
    viewer.add_shapes([world], shape_type="rectangle", name="roi")
    _setup(widget, max_iter=150, region="shapes")
    widget._shapes.value = viewer.layers["roi"]
    assert widget.region_for(img) == (y0, x0, y1, x1)
    assert run_and_wait(widget) == "done"
    # The analysed pixels are exactly the rectangle's.
    np.testing.assert_array_equal(widget.context.image, small_image.image[y0:y1, x0:x1])
    act = viewer.layers["img activation 1"]
    assert act.data.shape == (y1 - y0, x1 - x0)
    # Activation pixel (0, 0) sits on source pixel (y0, x0) in world coordinates.
    np.testing.assert_allclose(act.data_to_world((0, 0)), img.data_to_world((y0, x0)))
    np.testing.assert_allclose(act.data_to_world((5, 7)), img.data_to_world((y0 + 5, x0 + 7)))
    pts = viewer.layers["img defects"]
    np.testing.assert_allclose(pts.scale, img.scale)
    assert act.metadata[META_KEY]["region"] == [y0, x0, y1, x1]


def test_event_loop_keeps_running_during_solve(viewer_widget, qtbot, small_image):
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img")
    # A budget that keeps the worker busy for about a second here, so the
    # timer has many ticks to miss if the main thread were blocked.
    _setup(widget, max_iter=1000)
    ticks = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    t0 = time.monotonic()
    done = []
    with qtbot.waitSignal(widget.run_finished, timeout=60_000):
        assert widget.run()
        # Mark the end of the solve (before the result layers are built).
        show = widget.runner.on_result
        widget.runner.on_result = lambda r: (done.append(time.monotonic()), show(r))
    timer.stop()
    elapsed = done[0] - t0
    assert elapsed > 0.5
    # The timer fired all along the solve: no gap longer than a quarter second.
    during = [t for t in ticks if t <= done[0]]
    gaps = np.diff([t0, *during, done[0]])
    assert len(during) > elapsed / 0.02 * 0.3
    assert gaps.max() < 0.25, gaps.max()


@pytest.fixture
def shown_errors(monkeypatch):
    """The messages the widget shows with napari's ``show_error``."""
    import napari.utils.notifications as notifications

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda msg: shown.append(msg))
    return shown


def test_solver_error_is_shown_and_viewer_unchanged(
    viewer_widget, qtbot, small_image, monkeypatch, shown_errors
):
    import napari_sasd.pipeline

    def broken(image, *args, **kwargs):
        yield from ()
        raise RuntimeError("boom")

    shown = shown_errors
    # The dock's learn run goes through the analysis pipeline's solve.
    monkeypatch.setattr(napari_sasd.pipeline, "iter_solve", broken)
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img")
    before = _names(viewer)
    with qtbot.waitSignal(widget.run_finished, timeout=10_000) as blocker:
        assert widget.run()
    assert blocker.args == ["error"]
    assert shown and "boom" in shown[0]
    assert _names(viewer) == before
    assert widget._run.text == "Run"


def test_bad_input_refused_before_start(viewer_widget, small_image, monkeypatch):
    import napari.utils.notifications as notifications

    shown = []
    monkeypatch.setattr(notifications, "show_error", lambda msg: shown.append(msg))
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image[:8, :40], name="thin")
    _setup(widget, k=12)
    assert not widget.run()
    assert widget.runner is None
    assert "larger than the region" in shown[-1]
    viewer.add_image(np.zeros((16, 16, 3), np.uint8), name="photo", rgb=True)
    widget._image.value = viewer.layers["photo"]
    assert "RGB" in widget._info.value
    assert not widget.run()
    assert "RGB" in shown[-1]


def test_layer_picker_follows_layers(viewer_widget, small_image):
    viewer, widget = viewer_widget
    assert widget._image.value is None
    a = viewer.add_image(small_image.image, name="a")
    assert widget._image.value is a
    a.name = "renamed"
    assert "renamed" in [c for c in widget._image.choices if c is not None] or any(
        getattr(c, "name", None) == "renamed" for c in widget._image.choices
    )
    viewer.add_labels(np.zeros((128, 128), int), name="mask")
    assert viewer.layers["mask"] in widget._mask.choices
    viewer.layers.remove(a)
    assert a not in widget._image.choices


def test_labels_mask_is_passed_to_solver(viewer_widget, small_image):
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img")
    lab = np.zeros((128, 128), int)
    lab[:, :20] = 1
    viewer.add_labels(lab, name="bad")
    widget._mask.value = viewer.layers["bad"]
    _, kwargs, _ = widget.prepare()
    assert kwargs["mask"].shape == (128, 128)
    assert not kwargs["mask"][:, :20].any() and kwargs["mask"][:, 20:].all()
    widget._mask_mode.value = "include"
    _, kwargs, _ = widget.prepare()
    assert kwargs["mask"][:, :20].all() and not kwargs["mask"][:, 20:].any()


def test_labels_mask_maps_through_rotation_and_takes_the_displayed_plane(
    viewer_widget, small_image
):
    viewer, widget = viewer_widget
    # The image turned by 90 degrees: its pixel (r, c) is at world (-c, r).
    viewer.add_image(small_image.image, name="img", rotate=90)
    # Labels painted in the world, not rotated: its pixel (i, j) is at world
    # (i - 127, j), so labels columns < 20 are the image's rows < 20.
    lab = np.zeros((2, 3, 128, 128), int)
    lab[0] = 1  # other planes: everything labelled
    lab[1, 2, :, :20] = 1
    viewer.add_labels(lab, name="bad", translate=(-127, 0))
    viewer.dims.current_step = (1, 2, *viewer.dims.current_step[2:])
    widget._image.value = viewer.layers["img"]
    widget._mask.value = viewer.layers["bad"]
    _, kwargs, _ = widget.prepare()
    mask = kwargs["mask"]
    assert mask.shape == (128, 128)
    assert not mask[:20].any() and mask[20:].all()


def test_cube_and_slice_modes(viewer_widget, run_and_wait):
    viewer, widget = viewer_widget
    viewer.open_sample("napari-sasd", "cube")
    cube = viewer.layers["synthetic cube"]
    assert not widget._stack.native.isHidden()
    _setup(widget, k=12, max_iter=60)
    widget._stack.value = "slice"
    img, kwargs, _ = widget.prepare()
    assert img.ndim == 2 and kwargs["channel_axis"] is None
    widget._stack.value = "cube"
    assert run_and_wait(widget) == "done"
    assert widget.runner.solve_kwargs["channel_axis"] == 0
    mot = viewer.layers["synthetic cube motif 1"]
    assert mot.data.shape == (4, 12, 12)
    assert viewer.layers["synthetic cube activation 1"].data.shape == cube.data.shape[1:]


def test_parameters_remembered(make_napari_viewer, small_image):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-sasd", "Find motifs (SaS-BD)")
    viewer.add_image(small_image.image[:8, :8], name="tiny")
    widget._k.value = 7
    widget._n.value = 3
    widget._flatten.value = True
    widget.run()  # refused (region too small) but the parameters are saved
    from napari_sasd.widget import SasdWidget

    again = SasdWidget(viewer)
    assert (again._k.value, again._n.value, again._flatten.value) == (7, 3, True)
    # A display preference is remembered as soon as it is set.
    assert again._keep_artefacts.value is False
    again._keep_artefacts.value = True
    assert SasdWidget(viewer)._keep_artefacts.value is True


def test_save_bundle_button(viewer_widget, run_and_wait, small_image, tmp_path):
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img", scale=(0.5, 0.5))
    _setup(widget, max_iter=100)
    assert not widget._save.enabled
    assert run_and_wait(widget) == "done"
    assert widget._save.enabled
    out = widget._on_save(path=str(tmp_path / "scan"))
    assert out is not None
    from napari_sasd.bundle import load_bundle

    b = load_bundle(out)
    np.testing.assert_allclose(b.kernels, widget.result.kernels, atol=1e-6)
    assert len(b.defects) == len(viewer.layers["img defects"].data)


def test_field_of_view_region(viewer_widget, small_image):
    viewer, widget = viewer_widget
    img = viewer.add_image(small_image.image, name="img", scale=(2.0, 2.0), translate=(4.0, 0.0))
    _setup(widget, region="view")
    h, w = widget._canvas_size()
    # napari's own (private) canvas size, (height, width): the dock widget
    # makes the canvas far from square, so a swap would show.
    assert (h, w) == tuple(viewer.window._qt_viewer.canvas.size) and h != w
    cam = _camera(viewer)
    cam.center = img.data_to_world((64, 64))
    cam.zoom = max(h, w) / 2 / 40.0  # the longer side shows 80 world units = 40 px
    y0, x0, y1, x1 = widget.region_for(img)
    # Centred on pixel (64, 64), the canvas's shape in image pixels (scale 2).
    assert abs((y0 + y1) / 2 - 64) <= 1 and abs((x0 + x1) / 2 - 64) <= 1
    assert abs((y1 - y0) - h / cam.zoom / 2) <= 2 and abs((x1 - x0) - w / cam.zoom / 2) <= 2
    viewer.reset_view()
    assert widget.region_for(img) == (0, 0, 128, 128)


def test_stm_scans_turn_flattening_on(viewer_widget, small_image):
    viewer, widget = viewer_widget
    widget._flatten.value = False
    viewer.add_image(small_image.image, name="plain")
    widget._image.value = viewer.layers["plain"]
    assert widget._flatten.value is False
    meta = {"scan_direction": "down", "source_path": "scan.sxm", "header": {}}
    viewer.add_image(small_image.image, name="Z (fwd)", metadata=meta)
    widget._image.value = viewer.layers["Z (fwd)"]
    assert widget._flatten.value is True
    assert "flattening on" in widget._info.value


def test_info_line_describes_plain_images_and_stacks(viewer_widget, small_image):
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="plain")
    assert widget._info.value == "128 × 128 image"
    viewer.add_image(np.zeros((3, 32, 40)), name="stack")
    widget._image.value = viewer.layers["stack"]
    assert widget._info.value == "stack of 3 × 32 × 40"


def test_unticking_flatten_for_a_scan_sticks_when_layers_change(viewer_widget, small_image):
    viewer, widget = viewer_widget
    meta = {"scan_direction": "down", "source_path": "scan.sxm", "header": {}}
    viewer.add_image(small_image.image, name="Z (fwd)", metadata=meta)
    assert widget._flatten.value is True
    widget._flatten.value = False  # the user knows better
    viewer.add_shapes(name="roi")  # any layer event refreshes the pickers
    viewer.layers["roi"].name = "roi 2"
    assert widget._image.value is viewer.layers["Z (fwd)"]
    assert widget._flatten.value is False


@pytest.mark.parametrize(
    "saved",
    [
        '{"stack_mode": "energies", "kernel_size": 15}',  # a choice an older version had
        '{"kernel_size": 200, "n_motifs": 3}',  # out of the spin box's range
        '{"kernel_size": true, "lam": 50, "seed": -1, "n_motifs": 3}',
        '{"region_mode": "polygon", "max_iter": "many", "positive": 1}',
        "{not json",
    ],
)
def test_widget_opens_with_old_or_corrupt_settings(make_napari_viewer, saved):
    import os
    from pathlib import Path

    from napari_sasd.settings import DEFAULTS, load_settings
    from napari_sasd.widget import SasdWidget

    cfg = Path(os.environ["NAPARI_SASD_CONFIG_DIR"])
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "widget.json").write_text(saved)
    s = load_settings()
    widget = SasdWidget(make_napari_viewer())
    # Valid entries are still used, the others fall back to the defaults.
    assert widget._values() == s
    assert s["stack_mode"] == "cube" and s["region_mode"] == "whole"
    assert s["kernel_size"] in (DEFAULTS["kernel_size"], 15)
    assert s["positive"] is True and s["lam"] == DEFAULTS["lam"] and s["seed"] == 0
    if "n_motifs" in saved:
        assert s["n_motifs"] == 3


def test_lambda_box_keeps_small_values(viewer_widget):
    _viewer, widget = viewer_widget
    widget._lam.value = 0.0034  # e.g. the automatic lambda of the last run
    assert widget._lam.value == pytest.approx(0.0034)
    widget._lam.native.setValue(0.0)  # typed or spun down by the user
    assert widget._lam.value > 0  # the solver refuses lambda = 0


def test_failed_run_clears_the_unfinished_preview(viewer_widget, qtbot, small_image, monkeypatch):
    import napari.utils.notifications as notifications

    import napari_sasd.pipeline
    from napari_sasd.result import SolveProgress

    def broken(image, *args, **kwargs):
        k = np.ones((2, 1, K, K))
        yield SolveProgress(0, 1, 1, 10, 1.0, 0.1, k[:, 0])
        time.sleep(1.0)  # the preview is shown meanwhile
        raise ValueError("diverged")

    monkeypatch.setattr(napari_sasd.pipeline, "iter_solve", broken)
    monkeypatch.setattr(notifications, "show_error", lambda msg: None)
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img")
    _setup(widget)
    with qtbot.waitSignal(widget.run_finished, timeout=10_000) as blocker:
        assert widget.run()
        qtbot.waitUntil(lambda: len(widget.gallery.images) == 2, timeout=5_000)
    assert blocker.args == ["error"]
    # No result: the gallery must not show the failed run's motifs as if found.
    assert widget.gallery.images == [] and widget.progress.value() == 0
    assert "diverged" in widget._status.value


def test_source_removed_during_run_adds_no_layers(viewer_widget, qtbot, small_image):
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img")
    viewer.add_image(small_image.image, name="other")
    _setup(widget, max_iter=60)
    widget._image.value = viewer.layers["img"]
    with qtbot.waitSignal(widget.run_finished, timeout=60_000):
        assert widget.run()
        viewer.layers.remove("img")
    assert _names(viewer) == ["other"]


def test_rerun_after_renaming_source_replaces_and_spares_opened_results(
    viewer_widget, run_and_wait, small_image
):
    viewer, widget = viewer_widget
    img = viewer.add_image(small_image.image, name="img")
    _setup(widget, max_iter=40)
    widget._image.value = img
    # A result layer of an earlier session (e.g. opened from a bundle), same source name.
    opened = viewer.add_image(
        np.zeros((4, 4)),
        name="old motif",
        metadata={META_KEY: {"source": "img", "role": "motifs"}},
    )
    assert run_and_wait(widget) == "done"
    assert opened in viewer.layers  # not replaced by the first run
    n_layers = len(viewer.layers)
    img.name = "renamed"
    widget._image.value = img
    assert run_and_wait(widget) == "done"
    assert len(viewer.layers) == n_layers  # the first run's layers were replaced
    assert opened in viewer.layers


def test_results_napari_refuses_leave_viewer_unchanged(
    viewer_widget, run_and_wait, small_image, monkeypatch, shown_errors
):
    # A real solve whose result layers napari rejects (a bad option on the
    # last one): an error for the user, no half-added layers, no result kept.
    import napari_sasd._qt.result_display as widget_mod  # where the dock builds layers

    orig = widget_mod.result_layer_data

    def bad(*args, **kwargs):
        tuples = orig(*args, **kwargs)
        data, kw, kind = tuples[-1]
        return [*tuples[:-1], (data, {**kw, "not_an_option": 1}, kind)]

    shown = shown_errors
    monkeypatch.setattr(widget_mod, "result_layer_data", bad)
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img")
    before = _names(viewer)
    _setup(widget, n=1, max_iter=40)
    run_and_wait(widget)
    assert shown and "not_an_option" in shown[0]
    assert _names(viewer) == before
    assert widget.result is None
    assert "Failed" in widget._status.value


def test_rerun_that_finds_nothing_replaces_the_results(
    viewer_widget, run_and_wait, small_image, shown_errors, tmp_path
):
    # A re-run that finds no copy (plain noise, a large lambda): its empty
    # results replace the previous run's, rather than failing and leaving
    # those on screen.
    viewer, widget = viewer_widget
    img = viewer.add_image(small_image.image, name="img")
    _setup(widget, max_iter=40)
    assert run_and_wait(widget) == "done"
    pts = viewer.layers["img defects"]
    assert len(pts.data) > 0
    # The threshold in image units is this run's (there was no earlier one).
    meta = pts.metadata[META_KEY]
    noise = widget.analysis.analysis.copies.noise
    assert meta["threshold"] == pytest.approx((meta["significance"] * noise).tolist())
    first_run = meta["run_id"]
    names = _names(viewer)

    img.data = np.random.default_rng(0).standard_normal(img.data.shape)
    widget._threshold.value = 20.0  # no noise peak stands out that far
    widget._auto_lam.value = False
    widget._lam.value = widget._lam.max
    assert run_and_wait(widget) == "done"
    assert not shown_errors, shown_errors
    assert _names(viewer) == names
    assert viewer.layers["img defects"] is pts and len(pts.data) == 0
    assert list(pts.features.columns) == ["motif", "amplitude"]
    meta = pts.metadata[META_KEY]
    assert meta["run_id"] != first_run and meta["counts"] == [0, 0]
    assert widget.result.lam == pytest.approx(widget._lam.max)
    # The maps are this run's (a new search: the pixels changed).
    np.testing.assert_array_equal(
        viewer.layers["img activation 1"].data, widget.result.activations[0].astype(np.float32)
    )
    # Moving the threshold over an empty result keeps the empty layer working.
    widget._threshold.value = 19.0
    assert len(pts.data) == 0
    # Saved, it opens again as an empty points layer.
    out = widget._on_save(path=str(tmp_path / "none.sasd"))
    assert out is not None and not shown_errors, shown_errors
    opened = viewer.open(out, plugin="napari-sasd")
    empty = next(layer for layer in opened if layer.metadata[META_KEY]["role"] == "defects")
    assert len(empty.data) == 0 and list(empty.features.columns) == ["motif", "amplitude"]


def test_cancelled_rerun_leaves_the_previous_results_as_they_were(
    viewer_widget, run_and_wait, qtbot, small_image
):
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img")
    _setup(widget, max_iter=40)
    assert run_and_wait(widget) == "done"
    before = [(layer, np.array(layer.data, copy=True)) for layer in viewer.layers]
    metas = [dict(layer.metadata.get(META_KEY) or {}) for layer in viewer.layers]
    result = widget.result
    widget._max_iter.value = 100_000
    widget._seed.value = 1  # a new search, not a quick re-locate of the motifs
    assert widget.run()
    qtbot.waitUntil(lambda: widget.runner.last_progress is not None, timeout=20_000)
    with qtbot.waitSignal(widget.run_finished, timeout=5_000) as blocker:
        widget.cancel()
    assert blocker.args == ["cancelled"]
    assert [layer for layer in viewer.layers] == [lay for lay, _ in before]
    for (layer, data), meta in zip(before, metas, strict=True):
        np.testing.assert_array_equal(layer.data, data)
        assert dict(layer.metadata.get(META_KEY) or {}) == meta
    assert widget.result is result


def test_a_plot_that_fails_while_showing_ends_the_run_with_an_error(
    viewer_widget, run_and_wait, small_image, monkeypatch, shown_errors
):
    # Results appear over several event-loop turns; a step that raises must
    # end the run (an error for the user), not leave the dock waiting on it.
    viewer, widget = viewer_widget
    viewer.add_image(small_image.image, name="img")
    _setup(widget, n=1, max_iter=40)

    def broken(*args, **kwargs):
        raise RuntimeError("the histogram broke")

    monkeypatch.setattr(widget.plots, "show_significance", broken)
    assert run_and_wait(widget) == "error"
    assert shown_errors and "the histogram broke" in shown_errors[0]
    assert widget._steps is None and widget._run.text == "Run"
    monkeypatch.undo()
    assert run_and_wait(widget) == "done"  # the dock still works
