"""How close one solver iteration is to the cost of its FFTs, and how the solve scales.

Part 1 (FFT bound). For each configuration, one joint-stage iteration
(``_Solver._step`` on the lifted support, whole image) is run once with
``scipy.fft`` inside ``napari_sasd.convolution`` replaced by a recorder, which
lists every transform the iteration makes (function, input shape, dtype,
length/axis arguments). Exactly those calls are then timed alone on arrays of
the same shapes and dtypes (float32 / complex64): their sum is the FFT bound
of an iteration. It is compared with the measured time of ``_step`` (median
over repeated steps after a warm-up).

Part 2 (scaling). One motif, k = 12, a fixed iteration budget
(``max_iter``), images from 256^2 to 2048^2: wall time and peak resident memory
of the solve, each in its own process; ``time / (P log2 P)`` (P pixels) stays
about constant for n log n growth.

    python benchmarks/bench_fft_bound.py               # both parts
    python benchmarks/bench_fft_bound.py --profile     # + cProfile of _step (512^2, 2 motifs)
    python benchmarks/bench_fft_bound.py --no-scaling --configs 256:1:12
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import git_commit, in_subprocess, problem, run_sasd, table

from napari_sasd import convolution
from napari_sasd.solver import _Solver
from napari_sasd.validation import prepare

FFT_NAMES = {"rfft2", "irfft2", "rfft", "irfft", "fft", "ifft", "fft2", "ifft2", "rfftn", "irfftn"}


class _Recorder:
    """Stands in for ``scipy.fft`` and logs the transforms made through it."""

    def __init__(self, mod: Any) -> None:
        self._mod = mod
        self.calls: list[tuple[str, tuple[int, ...], np.dtype, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        f = getattr(self._mod, name)
        if name not in FFT_NAMES:
            return f

        def wrapped(x: np.ndarray, *args: Any, **kw: Any) -> Any:
            self.calls.append((name, x.shape, x.dtype, {**_posargs(name, args), **kw}))
            return f(x, *args, **kw)

        return wrapped


def _posargs(name: str, args: tuple) -> dict[str, Any]:
    keys = ("s", "axes") if name.endswith("2") or name.endswith("n") else ("n", "axis")
    return dict(zip(keys, args, strict=False))


def make_solver(size: int, n: int, k: int, seed: int = 0) -> tuple[_Solver, float]:
    """A solver on the joint-stage operator (lifted support, whole image)."""
    data = problem(size, n, k, 0.05, seed)
    prob = prepare(data.image, k, n, None, None, None, None)
    s = _Solver(prob, True, seed, None, 1e-4, 0.8, -1)
    s.b = np.zeros(prob.n_channels)
    s.support = None
    wins = s._windows(s.y, n, [])
    lam = 0.1 * s._lam_max(s._lift(), wins)
    return s, lam


def record_step(s: _Solver, lam: float) -> list:
    rec = _Recorder(convolution.fft)
    convolution.fft = rec
    try:
        s._step(lam)
    finally:
        convolution.fft = rec._mod
    return rec.calls


def time_call(name: str, shape: tuple, dtype: np.dtype, kw: dict, reps: int) -> float:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    if np.dtype(dtype).kind == "c":
        x = (x + 1j * rng.standard_normal(shape).astype(np.float32)).astype(dtype)
    f = getattr(convolution.fft, name)
    f(x, **kw)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(x, **kw)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def fft_bound(configs: list[tuple[int, int, int]], reps: int) -> None:
    rows = []
    for size, n, k in configs:
        s, lam = make_solver(size, n, k)
        for _ in range(3):  # warm-up, activations leave zero
            s._step(lam)
        calls = record_step(s, lam)
        t_fft = 0.0
        kinds = []
        for name, shape, dtype, kw in calls:
            t = time_call(name, shape, dtype, kw, reps)
            t_fft += t
            extra = {a: v for a, v in kw.items() if a != "workers"}
            kinds.append(f"{name}{list(shape)}{'' if not extra else extra}: {1e3 * t:.2f} ms")
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            s._step(lam)
            ts.append(time.perf_counter() - t0)
        t_it = float(np.median(ts))
        print(f"{size}^2 n={n} k={k} L={s.op.L}, {len(calls)} transforms per iteration:")
        for line in kinds:
            print("   ", line)
        rows.append(
            [
                f"{size}^2",
                n,
                k,
                f"{s.op.L[0]}x{s.op.L[1]}",
                len(calls),
                1e3 * t_fft,
                1e3 * t_it,
                t_it / t_fft,
            ]
        )
    print()
    print(
        table(
            [
                "image",
                "motifs",
                "k",
                "FFT size L",
                "transforms",
                "FFT bound (ms)",
                "measured iteration (ms)",
                "ratio",
            ],
            rows,
        )
    )


def profile_step(size: int, n: int, k: int, steps: int) -> None:
    s, lam = make_solver(size, n, k)
    for _ in range(3):
        s._step(lam)
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(steps):
        s._step(lam)
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(14)
    print(f"cProfile of {steps} x _Solver._step at {size}^2, {n} motif(s), k={k} (tottime):")
    print("\n".join(buf.getvalue().splitlines()[:40]))


def scaling(sizes: list[int], max_iter: int, seed: int) -> None:
    rows = []
    base = None
    for size in sizes:
        r = in_subprocess(
            run_sasd, size=size, n=1, k=12, noise=0.05, seed=seed, max_iter=max_iter, peaks=False
        )
        P = size * size
        norm = r["time"] / (P * np.log2(P))
        base = norm if base is None else base
        rows.append(
            [
                f"{size}^2",
                r["n_iter"],
                r["time"],
                1e3 * r["time"] / r["n_iter"],
                norm / base,
                r["rss_mb"],
                r["drss_mb"],
                min(r["sims"]),
            ]
        )
        print(f"  {size}^2: {r['time']:.2f} s, {r['n_iter']} iterations", flush=True)
    print()
    print(
        table(
            [
                "image",
                "iterations",
                "time (s)",
                "ms / iteration",
                "time/(P log P), rel.",
                "peak RSS (MB)",
                "solve RSS delta (MB)",
                "min sim",
            ],
            rows,
        )
    )
    print(
        "\nFor sizes above 256^2 the solver first learns the motif on a 256^2 crop, then "
        "refines on the whole image (a fixed share of max_iter)."
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--configs", nargs="+", default=["256:1:12", "512:1:12", "512:2:12", "1024:3:20"],
        help="SIZE:MOTIFS:K",
    )  # fmt: skip
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--max-iter", type=int, default=80)
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    print(f"napari-sasd commit {git_commit()}")
    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs]
    fft_bound(configs, args.reps)
    if args.profile:
        print()
        profile_step(512, 2, 12, 20)
    if not args.no_scaling:
        print()
        scaling(args.sizes, args.max_iter, 0)


if __name__ == "__main__":
    main()
