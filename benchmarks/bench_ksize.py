"""The suggested motif size (``-k auto``, the dock's *Suggest*) on real and synthetic scans.

- WSe2 (``../shared/data/wse2_mlstm``, human-labelled boxes): per scan the
  median box side, half of it (the k ``bench_real.py`` uses), the suggested
  k, its ratio to the box and the time of the suggestion (1024 x 1024); and
  as a stand-in for other scans of the kind, the suggestion on the scan
  binned 2 x 2 (times 2) and on each quarter;
- FeSe (Nanonis ``.sxm``) and Si(111)-7x7 (SPIEPy ``.dat``): the suggested k
  beside the size a person would pick (from the scan's README and by eye);
- the synthetic generator (``make_synthetic``, two motifs, 0.3 copies per
  motif area, noise 0.05) at several true k, clean, with partial scan-line
  streaks (1-3 lines, 20-80 px, 6x the noise, random sign), and with an
  atomic lattice (amplitude 0.3): the suggestions of 3 seeds.

With ``--analyse`` also runs the default analysis
(:func:`napari_sasd.pipeline.analyse`, ``-n 2``) on each WSe2 scan at
``k = ratio x box`` for each ``--ratios`` and at the suggested k, scored
against the boxes like ``bench_real.py`` (F1, one-to-one): which k works.
Real data are skipped when absent. Prints a table and writes
``results/bench_ksize.txt``.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_ksize.py               # ~1 min
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_ksize.py --analyse     # + ~10 min
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import napari_sasd
from napari_sasd.flatten import flatten
from napari_sasd.imageio import read_image
from napari_sasd.ksize import SIZE_PER_SIGMA, kernel_size_evidence
from napari_sasd.synthetic import make_synthetic, scan_streaks

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
WSE2 = DATA / "wse2_mlstm"
FESE = DATA / "fese_stmpy" / "FeSe_topography.sxm"
SI = DATA / "si7x7_spiepy" / "image_with_defects.dat"
SYNTH_K = (8, 12, 16, 20, 24)
SEEDS = (0, 1, 2)


def wse2() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(short name, grey image, boxes (x, y, w, h) in its pixels) per labelled scan."""
    from bench_real import load  # the same reading of the labels as bench_real

    return [
        (name.replace("WSe2-SL445_211119_-1.4V_", "").replace(".jpg", ""), img, boxes)
        for name, img, boxes in load()
    ]


def si7x7(path: Path) -> np.ndarray:
    # SPIEPy demo format: two little-endian uint32 (rows, cols), then float64.
    raw = path.read_bytes()
    rows, cols = np.frombuffer(raw[:8], "<u4")
    return np.frombuffer(raw[8:], "<f8").reshape(int(rows), int(cols))


def suggest(img: np.ndarray) -> tuple[int, float, int, float]:
    """(k, blob scale, voters, seconds) for a flattened image."""
    t = time.perf_counter()
    ev = kernel_size_evidence(img)
    return ev.k, ev.sigma, len(ev.blobs), time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--analyse", action="store_true", help="score the analysis at each k")
    ap.add_argument("--ratios", default="0.5,0.75,1,1.25", help="k / median box for --analyse")
    args = ap.parse_args(argv)
    ratios = [float(v) for v in args.ratios.split(",")]
    lines = [
        f"bench_ksize: napari-sasd {napari_sasd.__version__}; k = {SIZE_PER_SIGMA:g} x the "
        "selected blob scale of the departure map",
        "",
    ]

    def out(text: str = "") -> None:
        lines.append(text)
        print(text, flush=True)

    f1s: dict[str, list[float]] = {}
    if (WSE2 / "labels.csv").exists():
        out("WSe2 (1024 x 1024 px; boxes: human labels)")
        out("")
        out("| scan | boxes | median box | half box | suggested k | k / box | scale | voters "
            "| time | 2 x k at half resolution | k of the four 512 x 512 quarters |")  # fmt: skip
        out("|---|---|---|---|---|---|---|---|---|---|---|")
        items = wse2()
        for name, img, boxes in items:
            box = float(np.median(boxes[:, 2:]))
            k, s, n, secs = suggest(flatten(img))
            # The same scan at another resolution or field of view should
            # give the same size in nm: checks that nothing is tuned to pixels.
            h, w = img.shape[0] // 2, img.shape[1] // 2
            half = suggest(flatten(img[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))))
            quarters = [
                suggest(flatten(img[a : a + h, b : b + w]))[0] for a in (0, h) for b in (0, w)
            ]
            out(f"| {name} | {len(boxes)} | {box:.0f} | {box / 2:.0f} | {k} | {k / box:.2f} "
                f"| {s:.1f} | {n} | {secs:.2f} s | {2 * half[0]} | {quarters} |")  # fmt: skip
        if args.analyse:
            from napari_sasd.metrics import box_scores
            from napari_sasd.pipeline import analyse

            out("")
            out("Default analysis (-n 2) at each k, F1 against the boxes (one-to-one)")
            out("")
            head = [f"k = {r:g} box" for r in ratios] + ["k = suggested"]
            out("| scan | " + " | ".join(head) + " |")
            out("|---|" + "---|" * len(head))
            for name, img, boxes in items:
                box = float(np.median(boxes[:, 2:]))
                ks = [max(3, round(r * box)) for r in ratios] + [suggest(flatten(img))[0]]
                cells = []
                for h, k in zip(head, ks, strict=True):
                    pts = analyse(img, k, 2).defects.positions
                    f = box_scores(pts, boxes)[2]
                    f1s.setdefault(h, []).append(f)
                    cells.append(f"{f:.2f} (k {k})")
                out(f"| {name} | " + " | ".join(cells) + " |")
            out("| median | " + " | ".join(f"{np.median(f1s[h]):.2f}" for h in head) + " |")
        out("")
    others = []
    if FESE.exists():
        note = "11-22 (defects ~1-2 nm); bench_lattice / examples use 15"
        others.append(("FeSe Z (fwd), 224 px / 20 nm", read_image(FESE).data, note))
    if SI.exists():
        note = "~11-15 for a missing adatom with its neighbours; 27 for the unit cell"
        others.append(("Si(111)-7x7, 256 px", si7x7(SI), note))
    if others:
        out("| scan | suggested k | scale | voters | time | a person would pick |")
        out("|---|---|---|---|---|---|")
        for name, img, note in others:
            k, s, n, secs = suggest(flatten(img))
            out(f"| {name} | {k} | {s:.1f} | {n} | {secs:.2f} s | {note} |")
        out("")
    out("Synthetic (256 x 256, 2 motifs, 0.3 copies per motif area, noise 0.05): "
        f"suggested k for seeds {', '.join(map(str, SEEDS))}; 'dense': the generator's "
        "default 1.5 copies per motif area (they overlap)")  # fmt: skip
    out("")
    out("| true k | clean | streaks | lattice 0.3 | dense | worst k / true k |")
    out("|---|---|---|---|---|---|")
    for k_true in SYNTH_K:
        cells, worst = [], 1.0
        for case in ("clean", "streaks", "lattice", "dense"):
            got = []
            for seed in SEEDS:
                d = make_synthetic(
                    (256, 256), k_true, 2, noise=0.05, seed=seed,
                    copies_per_area=1.5 if case == "dense" else 0.3,
                    lattice=0.3 if case == "lattice" else 0.0,
                )  # fmt: skip
                img = d.image
                if case == "streaks":
                    rng = np.random.default_rng(seed)
                    img = img + scan_streaks(img.shape, 30, 6 * d.noise, rng)[0]
                got.append(suggest(img)[0])
            if case != "dense":
                worst = max((worst, *(g / k_true for g in got)), key=lambda r: abs(r - 1))
            cells.append(", ".join(map(str, got)))
        out(f"| {k_true} | " + " | ".join(cells) + f" | {worst:.2f} (not dense) |")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "bench_ksize.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
