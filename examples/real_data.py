"""Run napari-sasd on the measured STM images in ``../shared/data`` and save a figure.

    python examples/real_data.py [--data ../shared/data] [--out real-data.png]

The images are not part of this project (see ``../shared/data/README.md`` for
their licences); this script only reads them. It needs matplotlib.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import napari_sasd
from napari_sasd.flatten import flatten
from napari_sasd.nanonis import read_sxm


def _si7x7(path: Path) -> np.ndarray:
    # SPIEPy demo format: two little-endian uint32 (rows, cols), then float64.
    raw = path.read_bytes()
    rows, cols = np.frombuffer(raw[:8], "<u4")
    return np.frombuffer(raw[8:], "<f8").reshape(int(rows), int(cols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("real-data.png"))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [
        ("FeSe Z (fwd)", read_sxm(args.data / "fese_stmpy/FeSe_topography.sxm").images["Z (fwd)"],
         15, 2),
        ("Si(111)-7x7", _si7x7(args.data / "si7x7_spiepy/image_with_defects.dat"), 27, 2),
    ]  # fmt: skip
    fig, axes = plt.subplots(len(cases), 4, figsize=(16, 4 * len(cases)))
    for row, (name, raw, k, n) in zip(axes, cases, strict=True):
        img = flatten(raw)
        t0 = time.perf_counter()
        res = napari_sasd.solve(img, k, n)
        dt = time.perf_counter() - t0
        defects = napari_sasd.find_defects(res.activations, threshold=0.5, relative=True)
        counts = defects.counts(n)
        print(f"{name}: k={k}, {n} motifs, lambda {res.lam:.3g}, {dt:.1f} s, copies {counts}, "
              f"explained {np.round(res.explained, 3)}")  # fmt: skip
        row[0].imshow(img, cmap="gray")
        for m, colour in zip(range(n), "rc", strict=False):
            p = defects.positions[defects.motif == m]
            row[0].scatter(p[:, 1], p[:, 0], s=14, facecolors="none", edgecolors=colour)
        row[0].set_title(f"{name}, flattened")
        row[1].imshow(res.activations.max(0), cmap="magma")
        row[1].set_title("activations (max over motifs)")
        for m in range(n):
            row[2 + m].imshow(res.kernels[m], cmap="gray")
            row[2 + m].set_title(f"motif {m + 1}: {counts[m]} copies (> half the max)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
