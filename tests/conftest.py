"""Test fixtures: isolated settings, the widget opened through the manifest,
the labelled real scans (skipped when ``../shared/data`` is absent)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

WSE2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "wse2_mlstm"


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    # Never read or write the user's real napari-sasd settings.
    monkeypatch.setenv("NAPARI_SASD_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture
def viewer_widget(make_napari_viewer):
    """A viewer and the plugin's dock widget, opened as a user would (Plugins menu)."""
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-sasd", "Find motifs (SaS-BD)")
    yield viewer, widget
    if widget.runner is not None and widget.runner.running:
        widget.cancel()


@pytest.fixture
def run_and_wait(qtbot):
    """Start a run and wait, with the event loop running, for ``run_finished``.

    The real worker thread does the work; the signal is emitted on the main
    thread once the result layers are shown (or the run was cancelled/failed).
    """

    def run(widget, timeout=90_000) -> str:
        with qtbot.waitSignal(widget.run_finished, timeout=timeout) as blocker:
            assert widget.run(), widget._status.value
        return blocker.args[0]

    return run


@pytest.fixture
def small_image():
    """A 128 x 128 image with two kinds of 10 px defects (fast to solve)."""
    from napari_sasd.synthetic import make_synthetic

    data = make_synthetic((128, 128), 10, 2, noise=0.05, seed=1)
    data.image = data.image.astype(np.float64)
    return data


@pytest.fixture
def labelled_scan():
    """Loader of a labelled WSe2 scan by file name: ``(image, boxes, labels)``,
    boxes ``(x, y, width, height)`` in the image's pixels; skips when the
    measured data is not there (a fresh checkout has no ``../shared``)."""
    from napari_sasd.imageio import read_image

    def load(name: str):
        if not (WSE2 / name).exists():
            pytest.skip("labelled WSe2 scans not present (../shared/data)")
        with open(WSE2 / "labels.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["filename"] == name]
        boxes = np.array([[float(r[v]) for v in ("x", "y", "width", "height")] for r in rows])
        return read_image(WSE2 / name).data, boxes, [r["label"] for r in rows]

    return load
