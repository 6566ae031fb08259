"""How long the napari event loop stalls while a finished run's results appear.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_gui_gap.py [--repeats 3]

For each bundled sample (the synthetic topograph and the 4-energy cube), the
dock solves it ``--repeats`` times in a real viewer (the real worker thread)
while a 10 ms QTimer ticks. From the moment the worker's result reaches the
main thread until 0.5 s after ``run_finished`` (the plots paint), it reports
the largest gap between two ticks, in wall time and in main-thread CPU time
(the work that held the loop; wall time adds other processes' share of the
cores), and the time until ``run_finished``. Two ways of showing the results:
``steps`` (what the dock does: one layer or plot per event-loop turn) and
``at once`` (every layer added in one go, as before issue 16).
Writes ``benchmarks/results/bench_gui_gap.txt``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The dock's defaults, not the settings a user saved (a saved max_iter of 40
# once turned the topograph's 342 defects into 22 here).
if "NAPARI_SASD_CONFIG_DIR" not in os.environ:
    import tempfile

    os.environ["NAPARI_SASD_CONFIG_DIR"] = tempfile.mkdtemp(prefix="sasd-bench-")


def _run_once(viewer, widget, qtbot_wait, mode: str):
    from qtpy.QtCore import QEventLoop, QTimer

    import napari_sasd._qt.result_display as wmod  # where the dock shows results
    from napari_sasd.layers import apply_layer_data, iter_apply_layer_data

    def at_once(viewer, tuples, replace=()):
        return apply_layer_data(viewer, tuples, replace)
        yield  # a generator that does everything in its first step

    wmod.iter_apply_layer_data = at_once if mode == "at once" else iter_apply_layer_data
    ticks: list[tuple[float, float]] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append((time.monotonic(), time.thread_time())))
    arrived: list[tuple[float, float]] = []
    finished: list[float] = []
    loop = QEventLoop()

    def done(*_):
        finished.append(time.monotonic())
        loop.quit()

    widget.run_finished.connect(done)
    timer.start()
    assert widget.run(), widget._status.value
    show = widget.runner.on_result
    widget.runner.on_result = lambda r: (
        arrived.append((time.monotonic(), time.thread_time())),
        show(r),
    )
    loop.exec()
    qtbot_wait(500)
    timer.stop()
    widget.run_finished.disconnect(done)
    wmod.iter_apply_layer_data = iter_apply_layer_data
    t0 = arrived[0]
    during = np.array([t0, *[t for t in ticks if t[0] > t0[0]]])
    wall, cpu = np.diff(during, axis=0).max(axis=0)
    return float(wall), float(cpu), finished[0] - t0[0], len(widget.current_defects())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import napari
    from _common import git_commit
    from qtpy.QtCore import QEventLoop, QTimer

    def wait(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    rows = []
    for sample, stack in (("topograph", None), ("cube", "cube")):
        for mode in ("at once", "steps"):
            viewer = napari.Viewer()
            _, widget = viewer.window.add_plugin_dock_widget("napari-sasd", "Find motifs (SaS-BD)")
            viewer.open_sample("napari-sasd", sample)
            widget._k.value, widget._n.value = 12, 2
            if stack:
                widget._stack.value = stack
            widget._keep.value = False
            res = [_run_once(viewer, widget, wait, mode) for _ in range(args.repeats)]
            viewer.close()
            wall, cpu, shown, n = (np.array(c) for c in zip(*res, strict=True))
            rows.append((sample, mode, wall.max(), np.median(wall), cpu.max(), shown.max(), n[0]))

    head = (
        f"bench_gui_gap at {git_commit()}, {platform.platform()}, "
        f"{os.cpu_count()} cores, repeats {args.repeats}, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
        "largest event-loop gap (s) from the result's arrival to 0.5 s after run_finished\n\n"
        f"{'sample':<10} {'showing':<8} {'wall max':>9} {'wall med':>9} {'cpu max':>8} "
        f"{'to finished':>12} {'defects':>8}\n"
    )
    lines = [
        f"{s:<10} {m:<8} {w:>9.3f} {wm:>9.3f} {c:>8.3f} {sh:>12.2f} {n:>8d}"
        for s, m, w, wm, c, sh, n in rows
    ]
    text = head + "\n".join(lines) + "\n"
    print(text, end="")
    out = Path(__file__).resolve().parent / "results" / "bench_gui_gap.txt"
    out.write_text(text)


if __name__ == "__main__":
    main()
