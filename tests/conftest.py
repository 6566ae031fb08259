"""GUI test fixtures: isolated settings, the widget opened through the manifest."""

from __future__ import annotations

import numpy as np
import pytest


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
