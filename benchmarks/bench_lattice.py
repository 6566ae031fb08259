"""The lattice background term (issue 14): motifs with and without removing the lattice.

Synthetic: ``make_lattice_dopants`` (a triangular lattice as bright as the
dopants, two dopant kinds on lattice sites, 256^2, k=11, 2 motifs) and
``make_synthetic(..., lattice=0.3)`` (the generator's weak cosine lattice,
copies anywhere, k=12): dopant precision/recall of ``find_defects`` (default
threshold, pooled over motifs, 2 px) against the truth, and the largest
lattice energy of a motif (``lattice_energy``: the fraction of a motif
explained by the lattice's sinusoids; ~1 for a motif that learned the
lattice).

Measured: FeSe (``../shared/data/fese_stmpy``, k=15, 2 motifs, flattened):
per motif its lattice energy and copies (``find_defects(.., 0.5,
relative=True)``), and for the bright motif the fraction of its copies on
the brightest 5 % of the smoothed image (the check of
``tests/test_real_data.py``). Si(111)-7x7 (k=27, 2 motifs): what detection
says, and per motif the copies and how regular their spacing is (fraction of
copies whose nearest neighbour is within 8 % of the median distance: ~1 for
a motif on the 7x7 lattice). WSe2 (``../shared/data/wse2_mlstm``): what
detection says. Writes ``benchmarks/results/bench_lattice.txt`` and, with
matplotlib, ``benchmarks/lattice.png``.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_lattice.py            # ~2 min
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_lattice.py --seeds 0  # quicker
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage, spatial

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import git_commit, table

import napari_sasd
from napari_sasd.flatten import flatten
from napari_sasd.imageio import read_image
from napari_sasd.lattice import Lattice, find_lattice, fit_lattice, lattice_energy
from napari_sasd.metrics import precision_recall
from napari_sasd.synthetic import make_synthetic
from napari_sasd.synthetic_lattice import make_lattice_dopants

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
FESE = DATA / "fese_stmpy" / "FeSe_topography.sxm"
SI = DATA / "si7x7_spiepy" / "image_with_defects.dat"
WSE2 = DATA / "wse2_mlstm"


def remove(img: np.ndarray) -> tuple[np.ndarray, Lattice, float]:
    t = time.perf_counter()
    lat = find_lattice(img)
    fit = fit_lattice(img, lat)
    return img - fit, lat, time.perf_counter() - t


def synthetic_rows(seeds: list[int]) -> list[list]:
    rows = []
    cases = [
        ("lattice_dopants", lambda s: make_lattice_dopants(seed=s), 11),
        ("lattice_dopants strain 0.03", lambda s: make_lattice_dopants(strain=0.03, seed=s), 11),
        (
            "make_synthetic lattice=0.3",
            lambda s: make_synthetic((256, 256), 12, 2, noise=0.05, lattice=0.3, seed=s),
            12,
        ),
    ]
    for name, make, k in cases:
        for seed in seeds:
            d = make(seed)
            truth = np.concatenate(d.positions)
            rest, lat, t_lat = remove(d.image)
            for mode, img in (("kept", d.image), ("removed", rest)):
                res = napari_sasd.solve(img, k, 2)
                found = napari_sasd.find_defects(res.activations)
                p, r = precision_recall(found.positions, truth)
                energy = max(lattice_energy(a, lat) for a in res.kernels)
                rows.append([name, seed, mode, len(truth), len(found), p, r, energy,
                             t_lat if mode == "removed" else ""])  # fmt: skip
    return rows


def on_bright(img: np.ndarray, pos: np.ndarray) -> float:
    smooth = ndimage.gaussian_filter(img, 2)
    level = np.percentile(smooth, 95)
    if len(pos) == 0:
        return float("nan")
    return float(np.mean(smooth[tuple(np.round(pos).astype(int).T)] > level))


def regular(pos: np.ndarray) -> float:
    if len(pos) < 3:
        return float("nan")
    nn = spatial.cKDTree(pos).query(pos, k=2)[0][:, 1]
    return float(np.mean(np.abs(nn - np.median(nn)) < 0.08 * np.median(nn)))


def describe(lat: Lattice) -> str:
    if not lat.present:
        top = (
            f", strongest other peak {lat.others_significance.max():.0f}"
            if len(lat.others)
            else ""
        )
        return f"no lattice (threshold {lat.threshold:.1f}{top})"
    return (
        f"lattice, periods {np.round(lat.periods, 2).tolist()} px, {len(lat.peaks)} peaks, "
        f"significance {lat.significance.max():.0f} max (threshold {lat.threshold:.1f}), "
        f"{len(lat.others)} other peaks"
    )


def measured(figure: bool) -> tuple[list[str], list[list]]:
    lines, rows = [], []
    pics = {}
    images = []
    if FESE.exists():
        images.append(("FeSe", flatten(read_image(FESE).data), 15))
    if SI.exists():
        raw = SI.read_bytes()
        h, w = np.frombuffer(raw[:8], "<u4")
        images.append(("Si(111)-7x7", flatten(np.frombuffer(raw[8:], "<f8").reshape(h, w)), 27))
    if not images:
        lines.append("measured data not present (../shared/data): skipped")
    for name, img, k in images:
        img = img / np.std(img)
        rest, lat, t_lat = remove(img)
        lines.append(f"{name}: {describe(lat)}; find + fit {t_lat:.2f} s")
        for mode, x in (("kept", img), ("removed", rest)):
            res = napari_sasd.solve(x, k, 2)
            for m in range(2):
                d = napari_sasd.find_defects(res.activations[m : m + 1], 0.5, relative=True)
                bright = res.kernels[m].mean() > 0
                rows.append([name, mode, m, "bright" if bright else "dark", len(d),
                             lattice_energy(res.kernels[m], lat), on_bright(img, d.positions),
                             regular(d.positions)])  # fmt: skip
            pics[(name, mode)] = (x, res)
        pics[(name, "fit")] = img - rest
    if figure and pics:
        draw(pics, [n for n, _, _ in images])
    return lines, rows


def wse2_lines() -> list[str]:
    if not WSE2.exists():
        return ["WSe2 data not present: skipped"]
    out = []
    for f in sorted(WSE2.glob("*.jpg")):
        t = time.perf_counter()
        lat = find_lattice(flatten(read_image(f).data))
        out.append(f"{f.name}: {describe(lat)}; {time.perf_counter() - t:.1f} s")
    return out


def draw(pics: dict, names: list[str]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no figure")
        return
    fig, ax = plt.subplots(len(names), 7, figsize=(21, 3.2 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        img, _ = pics[(name, "kept")]
        rest, res = pics[(name, "removed")]
        _, raw = pics[(name, "kept")]
        panels = [(img, f"{name}"), (pics[(name, "fit")], "fitted lattice"), (rest, "remainder")]
        for j, (a, t) in enumerate(panels):
            ax[i, j].imshow(a, cmap="gray")
            ax[i, j].set_title(t)
        for m, c in zip(range(2), "rc", strict=True):
            p = napari_sasd.find_defects(res.activations[m : m + 1], 0.5, relative=True).positions
            ax[i, 2].plot(p[:, 1], p[:, 0], c + "o", mfc="none", ms=6)
        for m in range(2):
            ax[i, 3 + m].imshow(raw.kernels[m], cmap="gray")
            ax[i, 3 + m].set_title(f"motif {m}, lattice kept")
            ax[i, 5 + m].imshow(res.kernels[m], cmap="gray")
            ax[i, 5 + m].set_title(f"motif {m}, lattice removed")
    for a in ax.ravel():
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(HERE / "lattice.png", dpi=60)
    print(f"figure: {HERE / 'lattice.png'}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--no-figure", action="store_true")
    args = ap.parse_args(argv)

    out = [f"napari-sasd commit {git_commit()}", "", "## Synthetic lattice with dopants", ""]
    out.append(
        table(
            ["problem", "seed", "lattice", "dopants", "found", "precision", "recall",
             "max motif lattice energy", "find+fit s"],
            synthetic_rows(args.seeds),
        )
    )  # fmt: skip
    lines, rows = measured(not args.no_figure)
    out += ["", "## Measured scans (k=15 FeSe, k=27 Si; 2 motifs; flattened)", ""]
    out += [f"- {s}" for s in lines]
    out += [""]
    out.append(
        table(
            ["scan", "lattice", "motif", "sign", "copies", "lattice energy",
             "on brightest 5 %", "regular spacing"],
            rows,
        )
    )  # fmt: skip
    out += ["", "## WSe2 (1024^2 JPEG, labelled defects)", ""]
    out += [f"- {s}" for s in wse2_lines()]
    text = "\n".join(out) + "\n"
    print(text)
    dest = HERE / "results" / "bench_lattice.txt"
    dest.write_text(text)
    print(f"written: {dest}")


if __name__ == "__main__":
    main()
