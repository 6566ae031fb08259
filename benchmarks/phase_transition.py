"""Phase transition of motif recovery over sparsity theta and kernel size k.

For each cell (theta, k), a few seeds of ``make_synthetic((S, S), k, 1,
theta=theta, noise=noise, seed)`` are solved by napari-sasd with a modest
iteration budget; success is a shift-invariant similarity >= 0.95 (the papers'
criterion). The theory's regime, theta below about ``1 / sqrt(k^2) = 1 / k``,
is drawn as a line. Saves ``benchmarks/phase_transition.png``.

    python benchmarks/phase_transition.py --quick      # 96^2, 2 seeds: a few minutes
    python benchmarks/phase_transition.py --size 128 --seeds 4 --max-iter 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import git_commit, table

from napari_sasd import solve
from napari_sasd.metrics import shift_invariant_similarity
from napari_sasd.synthetic import make_synthetic

HERE = Path(__file__).resolve().parent
SUCCESS = 0.95


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="96^2, 2 seeds, max_iter 100")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 8, 11, 14, 17])
    ap.add_argument(
        "--thetas", type=float, nargs="+", default=[0.003, 0.006, 0.012, 0.025, 0.05, 0.1, 0.2]
    )
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.0)
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.seeds, args.max_iter = 96, 2, 100
    print(
        f"napari-sasd commit {git_commit()}; {args.size}^2, {args.seeds} seeds/cell, "
        f"max_iter={args.max_iter}, noise={args.noise}"
    )
    rate = np.zeros((len(args.thetas), len(args.ks)))
    med = np.zeros_like(rate)
    t0 = time.perf_counter()
    for i, theta in enumerate(args.thetas):
        for j, k in enumerate(args.ks):
            sims = []
            for s in range(args.seeds):
                d = make_synthetic(
                    (args.size, args.size), k, 1, theta=theta, noise=args.noise, seed=s
                )
                r = solve(d.image, k, 1, seed=s, max_iter=args.max_iter)
                sims.append(shift_invariant_similarity(r.kernels[0], d.kernels[0]))
            rate[i, j] = np.mean(np.array(sims) >= SUCCESS)
            med[i, j] = np.median(sims)
            print(
                f"  theta={theta:g} k={k}: success {rate[i, j]:.2f}, "
                f"sims {np.round(sims, 3).tolist()} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    print()
    print(f"Success rate (similarity >= {SUCCESS}); rows theta, columns k; * : theta < 1/k")
    rows = [
        [f"{th:g}"]
        + [f"{rate[i, j]:.2f}{'*' if th < 1 / k else ''}" for j, k in enumerate(args.ks)]
        for i, th in enumerate(args.thetas)
    ]
    print(table(["theta \\ k", *map(str, args.ks)], rows))
    print("\nMedian similarity:")
    rows = [
        [f"{th:g}"] + [float(med[i, j]) for j in range(len(args.ks))]
        for i, th in enumerate(args.thetas)
    ]
    print(table(["theta \\ k", *map(str, args.ks)], rows))
    plot(args, rate)


def plot(args: argparse.Namespace, rate: np.ndarray) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib).")
        return
    ks, th = np.array(args.ks), np.array(args.thetas)
    fig, ax = plt.subplots(figsize=(6, 4.6))
    im = ax.imshow(rate, origin="lower", cmap="gray", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_yticks(range(len(th)), [f"{t:g}" for t in th])
    # theta = 1/k in cell coordinates (log-theta rows, interpolated).
    kk = np.linspace(ks[0], ks[-1], 200)
    xi = np.interp(kk, ks, np.arange(len(ks)))
    yi = np.interp(np.log(1 / kk), np.log(th), np.arange(len(th)), left=np.nan, right=np.nan)
    ax.plot(xi, yi, "r-", lw=2, label=r"$\theta = 1/\sqrt{k^2} = 1/k$")
    ax.set_xlabel("kernel size k")
    ax.set_ylabel(r"sparsity $\theta$ (copies per pixel)")
    ax.set_title(
        f"napari-sasd success rate (sim >= {SUCCESS}), {args.size}^2, {args.seeds} seeds",
        fontsize=10,
    )
    ax.legend(loc="upper right", fontsize=8)
    fig.colorbar(im, ax=ax, label="success rate")
    fig.tight_layout()
    out = HERE / "phase_transition.png"
    fig.savefig(out, dpi=120)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
