"""Phase transition of motif recovery on the papers' model, over theta and k.

For each cell (theta, k), seeds of ``make_sparse_model((S, S), k, 1,
theta=theta, noise=noise, seed)`` -- one motif drawn uniformly from the sphere,
signed Bernoulli(theta)-Gaussian activations -- are solved by napari-sasd with
its defaults and ``positive=False``; success is a shift-invariant similarity
>= 0.99 (the project's criterion; the papers use 0.95). The talk's regime for
a motif of ``p = k^2`` entries, ``1/p <~ theta <~ p^(-3/4)`` (up to log
factors), is drawn as a band and marked in the table. Saves
``benchmarks/phase_transition.png`` and ``benchmarks/results/phase_transition.txt``.

    python benchmarks/phase_transition.py --quick      # 96^2, 2 seeds: a minute
    python benchmarks/phase_transition.py               # 128^2, 6 seeds: a few minutes
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, git_commit, table

from napari_sasd import solve
from napari_sasd.metrics import shift_invariant_similarity
from napari_sasd.synthetic import make_sparse_model

HERE = Path(__file__).resolve().parent
SUCCESS = 0.99


def in_band(theta: float, k: int) -> bool:
    """Whether ``theta`` lies in the talk's band ``[1/p, p^(-3/4)]``, ``p = k^2``."""
    p = k * k
    return 1 / p <= theta <= p**-0.75


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="96^2, 2 seeds")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 8, 11, 14, 17, 20])
    ap.add_argument(
        "--thetas", type=float, nargs="+",
        default=[0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256],
    )  # fmt: skip
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--max-iter", type=int, default=None, help="default: the solver's")
    ap.add_argument("--noise", type=float, default=0.0, help="relative to the image's std")
    ap.add_argument("--no-save", action="store_true", help="don't write the results file")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.seeds = 96, 2
    out = Report("phase_transition")
    out(
        f"napari-sasd commit {git_commit()}; papers' model, {args.size}^2, {args.seeds} "
        f"seeds/cell, max_iter={args.max_iter}, noise={args.noise}, positive=False"
    )
    rate = np.zeros((len(args.thetas), len(args.ks)))
    med = np.zeros_like(rate)
    t0 = time.perf_counter()
    for i, theta in enumerate(args.thetas):
        for j, k in enumerate(args.ks):
            sims = []
            for s in range(args.seeds):
                d = make_sparse_model(
                    (args.size, args.size), k, 1, theta=theta, noise=args.noise, seed=s
                )
                r = solve(d.image, k, 1, seed=s, max_iter=args.max_iter, positive=False)
                sims.append(shift_invariant_similarity(r.kernels[0], d.kernels[0]))
            rate[i, j] = np.mean(np.array(sims) >= SUCCESS)
            med[i, j] = np.median(sims)
            out(
                f"  theta={theta:g} k={k}: success {rate[i, j]:.2f}, "
                f"sims {np.round(sims, 3).tolist()} ({time.perf_counter() - t0:.0f} s)"
            )
    out()
    out(
        f"Success rate (similarity >= {SUCCESS}); rows theta, columns k; "
        "* : inside the talk's band 1/k^2 <= theta <= k^(-3/2)"
    )
    rows = [
        [f"{th:g}"]
        + [f"{rate[i, j]:.2f}{'*' if in_band(th, k) else ''}" for j, k in enumerate(args.ks)]
        for i, th in enumerate(args.thetas)
    ]
    out(table(["theta \\ k", *map(str, args.ks)], rows))
    band = [rate[i, j] for i, th in enumerate(args.thetas) for j, k in enumerate(args.ks)
            if in_band(th, k)]  # fmt: skip
    out(f"\nInside the band: {np.mean(band):.3f} of the solves succeed ({len(band)} cells).")
    out("\nMedian similarity:")
    rows = [
        [f"{th:g}"] + [float(med[i, j]) for j in range(len(args.ks))]
        for i, th in enumerate(args.thetas)
    ]
    out(table(["theta \\ k", *map(str, args.ks)], rows))
    plot(args, rate)
    if not args.no_save:
        out.save(sys.argv[1:] if argv is None else argv)


def plot(args: argparse.Namespace, rate: np.ndarray) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib).")
        return
    ks, th = np.array(args.ks), np.array(args.thetas)
    fig, ax = plt.subplots(figsize=(6.2, 4.8))
    im = ax.imshow(rate, origin="lower", cmap="gray", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_yticks(range(len(th)), [f"{t:g}" for t in th])
    # The band's edges in cell coordinates (log-theta rows, interpolated).
    kk = np.linspace(ks[0], ks[-1], 200)
    xi = np.interp(kk, ks, np.arange(len(ks)))

    def row(theta: np.ndarray) -> np.ndarray:
        return np.interp(np.log(theta), np.log(th), np.arange(len(th)), left=np.nan, right=np.nan)

    lo, hi = row(1 / kk**2), row(kk**-1.5)
    ax.fill_between(xi, lo, hi, color="tab:red", alpha=0.18, lw=0)
    ax.plot(xi, lo, "r--", lw=1.5, label=r"$\theta = 1/p$")
    ax.plot(xi, hi, "r-", lw=2, label=r"$\theta = p^{-3/4}$ (talk's band between)")
    ax.set_xlabel(r"kernel size k ($p = k^2$ entries)")
    ax.set_ylabel(r"sparsity $\theta$ (copies per pixel)")
    ax.set_title(
        f"papers' model: success rate (sim >= {SUCCESS}), {args.size}^2, {args.seeds} seeds",
        fontsize=10,
    )
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    fig.colorbar(im, ax=ax, label="success rate")
    fig.tight_layout()
    out = HERE / "phase_transition.png"
    fig.savefig(out, dpi=120)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
