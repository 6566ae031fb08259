"""How close one solver iteration is to the cost of its FFTs, and how the solve scales.

Part 1 (FFT bound). For each configuration, one default solve is run and
every joint iteration on the whole image (``_Solver._step`` with motifs
updated, of the top-level solver -- the lifted joint stage where there is one
-- or of the circular solver of the k x k polish, whose pad refill every few
iterations is counted with the step that follows it) is timed, with ``scipy.fft``
inside ``napari_sasd.convolution`` replaced by a recorder that lists each
transform the iteration makes (function, input shape, dtype, length/axis and
workers arguments) and the ``ConvOperator`` methods counted (``fft_x`` calls
are the backtracking trials of the activation step, which vary per
iteration). Every distinct transform is then timed alone on arrays of the same
shape and dtype (float32 / complex64); the sum over an iteration's transforms
is its FFT bound. This is done in ``--rounds`` rounds (a solve, then its
transforms' timings), and each iteration's time and each transform's time is
the minimum over the rounds, so that drift of the machine's speed between a
solve and the timing of its transforms cancels. Reported: transforms and trials
per iteration, mean FFT bound, mean and median measured iteration, and total
time / total bound.

Per iteration the windowed ``_step`` makes: activation step -- the image of
the extrapolated point (irfft2), the spectrum of its residual (rfft2), the
gradient (irfft2), and per backtracking trial the spectrum of the new
activations (rfft2) and the image for their residual (irfft2); motif step --
the residual's spectrum (rfft2), the partial ``grad_kernel`` (ifft over rows,
irfft of the kept rows) and the partial ``fft_kernel`` of the direction (rfft
of the k rows, fft over rows); the line search works on the spectra
(Parseval), no transform: 8 + 2 x trials (the transforms of activations,
gradients and kernels are batched over the N motifs). The circular step keeps
the residual a spectrum: the gradient (irfft2), one rfft2 per trial and the
two partial kernel transforms, 5 + trials, plus the refill's irfft2 and rfft2
every ``FILL_EVERY`` iterations.

Part 2 (scaling). One motif, k = 12, a fixed iteration budget
(``max_iter``), images from 256^2 to 2048^2: wall time and peak resident memory
of the solve, each in its own process; ``time / (P log2 P)`` (P pixels) stays
about constant for n log n growth.

    python benchmarks/bench_fft_bound.py               # both parts
    python benchmarks/bench_fft_bound.py --profile     # + cProfile of the 512^2 / 2-motif steps
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


def _signature(name: str, shape: tuple, dtype: np.dtype, kw: dict) -> tuple:
    return (name, tuple(shape), np.dtype(dtype).str, tuple(sorted(kw.items())))


OP_METHODS = ("fft_x", "fft_kernel", "image", "fft_residual", "grad_x", "grad_kernel")


def joint_steps(
    size: int, n: int, k: int, seed: int = 0, profiler: cProfile.Profile | None = None
) -> dict[str, Any]:
    """Run one default solve and instrument its joint-stage iterations.

    Every call of ``_Solver._step`` with motif updates on the whole image (the
    top-level solver's joint refinement on the lifted support, and the polish
    on the k x k one, on the circular solver whose pad is filled; not
    discovery, the activations-only settle or the debias) is timed, and the
    transforms it makes are recorded through ``scipy.fft`` inside
    ``convolution.py``, together with how often each ``ConvOperator`` method
    was called (``fft_x`` calls = backtracking trials). A pad refill is
    counted with the step after it.
    """
    data = problem(size, n, k, 0.05, seed)
    prob = prepare(data.image, k, n, None, None, None, None)
    top = _Solver(prob, True, seed, None, 1e-4, 0.7 if n == 1 else 0.8, None)
    rec = _Recorder(convolution.fft)
    counts: dict[str, int] = dict.fromkeys(OP_METHODS, 0)
    active = [False]
    orig_step = _Solver._step
    orig_ops = {m: getattr(convolution.ConvOperator, m) for m in OP_METHODS}

    def counted(name: str, f: Any) -> Any:
        def g(*a: Any, **kw: Any) -> Any:
            if active[0]:
                counts[name] += 1
            return f(*a, **kw)

        return g

    times: list[float] = []
    calls: list = []
    L: list[tuple[int, int] | None] = [None]
    orig_refill = _Solver._refill
    # A refill made before a joint step: its time and transforms go with it.
    refill: dict[str, Any] = {"t": 0.0, "calls": []}

    def whole_joint(self: _Solver) -> bool:
        return (self is top or self.window is not None) and not self.fixed_motifs

    def timed(f: Any, self: _Solver, *args: Any) -> tuple[Any, float, list]:
        rec.calls = []
        active[0] = True
        convolution.fft = rec
        if profiler is not None:
            profiler.enable()
        t0 = time.perf_counter()
        try:
            out = f(self, *args)
        finally:
            dt = time.perf_counter() - t0
            if profiler is not None:
                profiler.disable()
            convolution.fft = rec._mod
            active[0] = False
        return out, dt, rec.calls

    def step(self: _Solver, lam: float) -> tuple[float, float]:
        if not whole_joint(self):
            return orig_step(self, lam)
        L[0] = self.op.L
        out, dt, c = timed(orig_step, self, lam)
        times.append(dt + refill["t"])
        calls.append(refill["calls"] + c)
        refill["t"], refill["calls"] = 0.0, []
        return out

    def refill_(self: _Solver) -> None:
        if not whole_joint(self):
            return orig_refill(self)
        _, dt, c = timed(orig_refill, self)
        refill["t"], refill["calls"] = dt, c

    _Solver._step = step
    _Solver._refill = refill_
    for m, f in orig_ops.items():
        setattr(convolution.ConvOperator, m, counted(m, f))
    try:
        gen = top.run({})
        while True:
            try:
                next(gen)
            except StopIteration:
                break
    finally:
        _Solver._step = orig_step
        _Solver._refill = orig_refill
        for m, f in orig_ops.items():
            setattr(convolution.ConvOperator, m, f)
    return {"times": times, "calls": calls, "counts": counts, "L": L[0]}


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


def fft_bound(
    configs: list[tuple[int, int, int]], reps: int, rounds: int, profile: str | None
) -> None:
    rows = []
    for size, n, k in configs:
        # Rounds of (solve, then time its transforms), minima on both sides:
        # this machine's speed drifts by tens of percent over minutes, and a
        # bound timed minutes away from the iterations it is compared with
        # drifted with it. The solve is deterministic, so its iterations line
        # up from round to round.
        sig_t: dict[tuple, float] = {}
        runs = []
        for _ in range(rounds):
            j = joint_steps(size, n, k)
            runs.append(j["times"])
            distinct = {_signature(*c): c for it_calls in j["calls"] for c in it_calls}
            for sig, c in distinct.items():
                sig_t[sig] = min(time_call(*c, reps), sig_t.get(sig, np.inf))
        if len({len(t) for t in runs}) != 1:
            raise RuntimeError(f"{size}^2: the rounds made different numbers of iterations")
        j["times"] = list(np.min(runs, axis=0))
        # The profile is a further solve: cProfile's overhead stays out of the timing.
        pr = cProfile.Profile() if profile == f"{size}:{n}:{k}" else None
        if pr is not None:
            joint_steps(size, n, k, profiler=pr)
        n_it = len(j["times"])
        sig_n: dict[tuple, int] = {}
        t_fft = []
        for it_calls in j["calls"]:
            t = 0.0
            for name, shape, dtype, kw in it_calls:
                sig = _signature(name, shape, dtype, kw)
                sig_n[sig] = sig_n.get(sig, 0) + 1
                t += sig_t[sig]
            t_fft.append(t)
        per_it = {m: c / n_it for m, c in j["counts"].items()}
        n_tr = sum(len(c) for c in j["calls"]) / n_it
        print(
            f"{size}^2 n={n} k={k} L={j['L']}: {n_it} joint-stage iterations, "
            f"{n_tr:.2f} transforms per iteration; ConvOperator calls per iteration: "
            + ", ".join(f"{m} {v:.2f}" for m, v in per_it.items())
        )
        for sig, c in sorted(sig_n.items(), key=lambda kv: -kv[1] * sig_t[kv[0]]):
            name, shape, _, kw = sig
            extra = {a: v for a, v in kw if a != "workers"}
            print(
                f"    {name}{list(shape)}{extra or ''} workers={dict(kw).get('workers')}: "
                f"{c / n_it:.2f} per iteration x {1e3 * sig_t[sig]:.2f} ms"
            )
        t_it = np.asarray(j["times"])
        t_b = np.asarray(t_fft)
        rows.append(
            [
                f"{size}^2",
                n,
                k,
                f"{j['L'][0]}x{j['L'][1]}",
                n_it,
                per_it["fft_x"],
                n_tr,
                1e3 * float(t_b.mean()),
                1e3 * float(t_it.mean()),
                1e3 * float(np.median(t_it)),
                float(t_it.sum() / t_b.sum()),
            ]
        )
        if pr is not None:
            buf = io.StringIO()
            pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(16)
            print(f"cProfile of the {n_it} joint-stage _Solver._step calls (tottime):")
            print("\n".join(buf.getvalue().splitlines()[:44]))
    print()
    print(
        table(
            [
                "image",
                "motifs",
                "k",
                "FFT size L",
                "joint iterations",
                "backtracking trials / it.",
                "transforms / it.",
                "FFT bound (ms / it.)",
                "measured (ms / it., mean)",
                "measured (median)",
                "ratio (mean / bound)",
            ],
            rows,
        )
    )
    print(
        "\nFFT bound: the transforms each iteration made, each timed alone on arrays "
        "of the same shape, dtype and arguments (incl. workers), summed. Ratio: total "
        "time of the joint-stage steps over their total FFT bound. Both are minima over "
        "the rounds (per iteration, per transform)."
    )


def scaling(sizes: list[int], max_iter: int, seed: int) -> None:
    rows = []
    base = None
    for size in sizes:
        r = in_subprocess(run_sasd, size=size, n=1, k=12, noise=0.05, seed=seed, max_iter=max_iter)
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
                r["prec"],
                r["rec"],
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
                "precision",
                "recall",
            ],
            rows,
        )
    )
    print(
        "\nAt every size the solver first learns the motif on a crop of 10 k = 128 px "
        "(discovery, a fixed cost), then settles and polishes on the whole image."
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--configs", nargs="+", default=["256:1:12", "512:1:12", "512:2:12", "1024:3:20"],
        help="SIZE:MOTIFS:K",
    )  # fmt: skip
    ap.add_argument("--reps", type=int, default=15, help="timings of each transform per round")
    ap.add_argument("--rounds", type=int, default=3, help="solves per configuration (minima)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--max-iter", type=int, default=80)
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-bound", action="store_true", help="only the scaling part")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    print(f"napari-sasd commit {git_commit()}")
    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs]
    if not args.no_bound:
        fft_bound(configs, args.reps, args.rounds, "512:2:12" if args.profile else None)
    if not args.no_scaling:
        print()
        scaling(args.sizes, args.max_iter, 0)


if __name__ == "__main__":
    main()
