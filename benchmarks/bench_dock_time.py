"""How much longer a run takes in the dock than the same analysis in Python.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_dock_time.py

For the bundled topograph sample and, when ``../shared/data`` is there, a
labelled 1024^2 WSe2 scan: the analysis as ``napari_sasd.analyse`` runs it
(no viewer), then the dock's Run in a fresh viewer (the real worker thread,
progress, live preview, result layers) until ``run_finished``, and the same
with a ``napari.utils.progress`` bar open during the run, as the dock had
until this benchmark showed its cost (napari's activity indicator repaints
the main window while a progress bar exists). Wall times; the machine's load
average is printed. Writes ``benchmarks/results/bench_dock_time.txt``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if "NAPARI_SASD_CONFIG_DIR" not in os.environ:
    import tempfile

    # The dock's defaults, not the settings a user saved.
    os.environ["NAPARI_SASD_CONFIG_DIR"] = tempfile.mkdtemp(prefix="sasd-bench-")

import numpy as np

HERE = Path(__file__).resolve().parent
WSE2 = HERE.parents[1] / "shared" / "data" / "wse2_mlstm"
SCAN = "WSe2-SL445_211119_-1.4V_50x50_Z_073.jpg"


def _cases() -> list[tuple[str, np.ndarray, int, int]]:
    from napari_sasd.imageio import read_image
    from napari_sasd.sample_data import topograph_data

    topo = topograph_data()
    out = [("topograph sample", topo.image, int(topo.kernels.shape[-1]), len(topo.kernels))]
    if (WSE2 / SCAN).exists():
        out.append(("WSe2 073 (1024^2)", read_image(WSE2 / SCAN).data, 30, 2))
    return out


def _dock(img: np.ndarray, k: int, n: int, pbar: bool) -> tuple[float, int]:
    import napari
    from napari.utils import progress
    from qtpy.QtCore import QEventLoop

    viewer = napari.Viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-sasd", "Find motifs (SaS-BD)")
    viewer.add_image(img, name="scan")
    widget._k.value, widget._n.value = k, n
    loop = QEventLoop()
    widget.run_finished.connect(lambda *_: loop.quit())
    bar = progress(total=100, desc="a napari progress bar") if pbar else None
    t0 = time.perf_counter()
    if not widget.run():
        raise RuntimeError(widget._status.value)
    loop.exec()
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    count = len(widget.current_defects())
    viewer.close()
    return wall, count


def main() -> int:
    from napari_sasd import __version__
    from napari_sasd.pipeline import analyse

    lines = [
        f"bench_dock_time: napari-sasd {__version__}, {platform.platform()}, "
        f"{os.cpu_count()} cores, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}",
        "",
        "| image | k, n | analyse (no viewer) | dock Run | dock Run with a napari "
        "progress bar open | defects (analyse / dock) |",
        "|---|---|---|---|---|---|",
    ]
    for name, img, k, n in _cases():
        t0 = time.perf_counter()
        an = analyse(img, k, n)
        plain = time.perf_counter() - t0
        dock, count = _dock(img, k, n, pbar=False)
        dock_bar, _ = _dock(img, k, n, pbar=True)
        row = (
            f"| {name} | {k}, {n} | {plain:.1f} s | {dock:.1f} s | {dock_bar:.1f} s | "
            f"{len(an.defects)} / {count} |"
        )
        print(row, flush=True)
        lines.append(row)
    text = "\n".join(lines) + "\n"
    out = HERE / "results" / "bench_dock_time.txt"
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
