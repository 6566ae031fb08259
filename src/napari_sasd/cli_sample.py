"""``napari-sasd sample`` and ``napari-sasd demo``: the bundled synthetic sample.

``sample`` writes it to a file; ``demo`` finds its motifs, in napari when
there is a display, else here against the sample's ground truth. Napari is
imported only for the demo's window.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

import numpy as np

from .cli_parser import PROG


def _cmd_sample(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .sample_data import cube_data, topograph_data

    path = Path(args.out)
    suffix = path.suffix.lower()
    if suffix not in (".tif", ".tiff", ".npy"):
        err.write(f"{path}: the sample is written as .tif, .tiff or .npy\n")
        return 2
    data = (topograph_data if args.name == "topograph" else cube_data)()
    img = np.asarray(data.image, np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            np.save(path, img, allow_pickle=False)
        else:
            import tifffile

            tifffile.imwrite(path, img, photometric="minisblack")
    except OSError as exc:
        err.write(f"{path}: {exc.strerror or exc}\n")
        return 1
    k = data.kernels.shape[-1]
    out.write(
        f"{path}: synthetic {args.name} {'x'.join(map(str, img.shape))}, "
        f"{data.kernels.shape[0]} motifs of {k} px; try: {PROG} solve {path} "
        f"-k {k} -n {data.kernels.shape[0]} --out results/\n"
    )
    return 0


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import os

    if not args.headless and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        try:
            import napari
        except ImportError:
            err.write(
                "napari is not installed (pip install 'napari-sasd[all]'); running headless\n"
            )
        else:
            viewer = napari.Viewer(title="napari-sasd demo")
            viewer.open_sample("napari-sasd", "topograph")
            _dock, widget = viewer.window.add_plugin_dock_widget(
                "napari-sasd", "Find motifs (SaS-BD)"
            )
            widget.run()
            napari.run()
            return 0
    import time

    from .bundle import save_bundle
    from .metrics import match_motifs
    from .peaks import find_defects
    from .sample_data import TOPOGRAPH, topograph_data
    from .solver import solve

    data = topograph_data()
    k, n = TOPOGRAPH["kernel_size"], TOPOGRAPH["n_motifs"]
    out.write(f"synthetic topograph {data.image.shape}, {n} defect kinds of {k} px\n")
    t0 = time.perf_counter()
    res = solve(data.image, k, n)
    dt = time.perf_counter() - t0
    sims, assign = match_motifs(res.kernels, data.kernels)
    defects = find_defects(res.activations)
    counts = defects.counts(n)
    for m, i in enumerate(assign):
        out.write(
            f"motif {i + 1}: {counts[i]} copies found ({len(data.positions[m])} true), "
            f"similarity to the true motif {sims[m]:.4f}\n"
        )
    path = save_bundle(Path(args.out) / "topograph.sasd", res, defects=defects)
    out.write(f"lambda {res.lam:.3g}, {res.n_iter} iterations, {dt:.2f} s; bundle: {path}\n")
    return 0
