"""Make ``docs/screenshot.png``: the synthetic cube solved in the dock, spectra shown.

    xvfb-run -a -s "-screen 0 1600x1000x24" python examples/screenshot.py [--out PATH]

Opens napari with the plugin's dock, loads the sample cube, runs the search as
a user would (Run, then wait for the results) and saves the whole window.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import napari
from qtpy.QtCore import QEventLoop, QTimer


def main() -> None:
    # The dock's defaults, not the settings a user saved.
    os.environ.setdefault("NAPARI_SASD_CONFIG_DIR", tempfile.mkdtemp(prefix="sasd-shot-"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/screenshot.png")
    args = ap.parse_args()

    viewer = napari.Viewer()
    viewer.window._qt_window.resize(1500, 1000)
    _, widget = viewer.window.add_plugin_dock_widget("napari-sasd", "Find motifs (SaS-BD)")
    viewer.open_sample("napari-sasd", "cube")
    widget._k.value, widget._n.value = 12, 2
    widget._stack.value = "cube"
    loop = QEventLoop()
    widget.run_finished.connect(lambda *_: loop.quit())
    assert widget.run(), widget._status.value
    loop.exec()
    viewer.dims.set_current_step(0, 3)  # the +400 mV slice: both kinds show
    viewer.layers.selection.active = viewer.layers["synthetic cube"]
    viewer.reset_view()
    QTimer.singleShot(800, loop.quit)  # let the plots and the canvas paint
    loop.exec()
    from skimage.io import imsave

    imsave(args.out, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print(f"{args.out}: {widget._status.value}")
    viewer.close()


if __name__ == "__main__":
    main()
