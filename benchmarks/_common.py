"""Shared helpers of the benchmark scripts: problems, runners, scores, tables.

Problems (``problem``), by model: ``"stm"`` (the default) is
``make_synthetic(shape, k, n, copies_per_area=1.5, noise=noise, seed=seed)``,
STM-like shapes with positive amplitudes; ``"sparse"`` is the papers' model,
``make_sparse_model`` with random motifs and signed Bernoulli-Gaussian
activations at ``theta = 1.5 / (k^2 n)`` (solved with ``positive=False``);
``"smooth"`` the same with motifs smoothed by a Gaussian of 1.5 px and positive
amplitudes. Noise is relative to a copy's amplitude for ``"stm"``, to the
image's std for the others. Runs can go to a fresh subprocess each (``spawn``) so that the
peak resident memory (``ru_maxrss``) of one solve is measured on its own.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import resource
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_sasd import iter_solve, solve
from napari_sasd.metrics import match_motifs, precision_recall
from napari_sasd.peaks import find_defects
from napari_sasd.synthetic import make_sparse_model, make_synthetic

try:  # optional peer
    import sporco.fft
    from sporco.dictlrn import cbpdndl

    HAVE_SPORCO = True
except ImportError:  # pragma: no cover - depends on the environment
    cbpdndl = None
    HAVE_SPORCO = False

REPO = Path(__file__).resolve().parent.parent

SPORCO_MISSING = (
    "SPORCO is not installed: SPORCO columns are skipped "
    "(pip install sporco, or pip install -e .[bench])."
)


def git_commit() -> str:
    """Short hash of the checked-out commit (and '+dirty' if src/ has changes),
    or where napari_sasd was imported from if not from this checkout (e.g. a
    ``git archive`` of a commit on PYTHONPATH)."""
    import napari_sasd

    src = Path(napari_sasd.__file__).resolve().parent
    if not src.is_relative_to(REPO):
        return f"napari_sasd imported from {src}"
    try:
        h = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", "src"],
            capture_output=True, text=True, check=True, cwd=REPO,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip()
        return h + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


MODELS = ("stm", "sparse", "smooth")


def problem(
    size: int, n: int, k: int = 12, noise: float = 0.05, seed: int = 0, model: str = "stm"
):
    """The benchmark problem: a ``size x size`` synthetic image with ``n`` motifs."""
    if model == "stm":
        return make_synthetic((size, size), k, n, copies_per_area=1.5, noise=noise, seed=seed)
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {MODELS}")
    smooth = model == "smooth"
    return make_sparse_model(
        (size, size), k, n, theta=1.5 / (k * k * n), noise=noise, smooth=1.5 * smooth,
        positive=smooth, seed=seed,
    )  # fmt: skip


def signed(model: str) -> bool:
    """Whether the model's activations are signed (solved with ``positive=False``)."""
    return model == "sparse"


# ------------------------------------------------------------------ scores
def score(kernels: np.ndarray, acts: np.ndarray, data: Any, shift: Any = (0, 0)) -> dict[str, Any]:
    """Per-motif similarity (Hungarian matched) and pooled peak precision/recall.

    ``acts`` are ``(N, H, W)`` maps; peaks found in map n are moved by
    ``shift`` (one ``(dy, dx)`` or one per map, ``(N, 2)``; modulo the image
    size, for cyclic maps) before matching within 2 px.
    """
    sims, assign = match_motifs(kernels, data.kernels)
    # Signed activations (the papers' model): a copy is a peak of |x|.
    found = find_defects(np.abs(acts) if (acts < 0).any() else acts)
    H, W = acts.shape[-2:]
    pos = found.positions.copy()
    sh = np.broadcast_to(np.asarray(shift, int).reshape(-1, 2), (len(acts), 2))
    if sh.any():
        pos = (pos + sh[found.motif]) % np.array([H, W])
    hits = n_found = n_true = 0
    for m, truth in enumerate(data.positions):
        n_true += len(truth)
        if assign[m] < 0:
            continue
        mine = pos[found.motif == assign[m]]
        n_found += len(mine)
        if len(mine) and len(truth):
            p, _ = precision_recall(mine, truth, tol=2.0)
            hits += round(p * len(mine))
    # Peaks of unmatched found motifs count as false positives.
    n_found += int(np.sum(~np.isin(found.motif, assign)))
    prec = hits / n_found if n_found else 1.0
    rec = hits / n_true if n_true else 1.0
    return {"sims": [float(s) for s in sims], "prec": prec, "rec": rec}


# ---------------------------------------------------------------- runners
def _maxrss_mb() -> float:
    """Peak resident memory of this process (MB): ``VmHWM`` where /proc has it.

    ``ru_maxrss`` survives fork and exec on Linux, so a spawned child starts
    from its parent's peak (a benchmark parent that solved large images
    itself made every child report >= its 448 MB); ``VmHWM`` belongs to the
    process's own address space."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_sasd(
    size: int,
    n: int,
    k: int,
    noise: float,
    seed: int,
    max_iter: int | None = None,
    peaks: bool = True,
    model: str = "stm",
) -> dict[str, Any]:
    """One napari-sasd solve with default settings; time, scores, memory.

    ``peaks=False`` skips precision/recall (it once needed a dense found x
    true distance matrix, 13 GB at 2048^2; ``metrics.precision_recall`` now
    uses a k-d tree, so every size is scored by default)."""
    data = problem(size, n, k, noise, seed, model)
    rss0 = _maxrss_mb()
    c0 = time.process_time()
    t0 = time.perf_counter()
    res = solve(data.image, k, n, seed=seed, max_iter=max_iter, positive=not signed(model))
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if peaks:
        out = score(res.kernels, res.activations, data)
    else:
        out = {"sims": [float(v) for v in match_motifs(res.kernels, data.kernels)[0]]}
        out.update(prec=float("nan"), rec=float("nan"))
    out.update(
        time=dt,
        cpu=cpu,
        n_iter=res.n_iter,
        rss_mb=_maxrss_mb(),
        drss_mb=_maxrss_mb() - rss0,
        solver="sasd",
    )
    return out


def sporco_offsets(D: np.ndarray) -> dict[str, np.ndarray]:
    """Plausible shifts ``(N, 2)`` from SPORCO's map convention (filter's origin
    at its top-left corner, cyclic) to the centred one: none, ``(k-1)//2``,
    ``k//2``, and each learned filter's energy centroid (a filter may be
    learned off-centre in its support)."""
    N, k = D.shape[0], D.shape[-1]
    e = D**2
    idx = np.arange(k)
    cy = (e.sum(2) * idx).sum(1) / e.sum((1, 2))
    cx = (e.sum(1) * idx).sum(1) / e.sum((1, 2))
    return {
        "0": np.zeros((N, 2), int),
        "(k-1)//2": np.full((N, 2), (k - 1) // 2),
        "k//2": np.full((N, 2), k // 2),
        "centroid": np.round(np.stack([cy, cx], 1)).astype(int),
    }


def sporco_learn(
    data: Any,
    k: int,
    n: int,
    lmbda: float,
    iters: int = 200,
    seed: int = 0,
    callback: Callable[[Any], None] | None = None,
    positive: bool = True,
) -> Any:
    """SPORCO ``ConvBPDNDictLearn`` on the mean-subtracted, unit-std image.

    Options as documented for this task: ``n`` filters of ``k x k``,
    ``NonNegCoef`` (off when ``positive`` is False: signed models), ``ZeroMean``
    off, ``iters`` iterations, random Gaussian initial filters, ADMM sparse
    coding and the ADMM consensus dictionary update
    (``dmethod='cns'``) with the penalties of SPORCO's own example
    ``cbpdndl_cns_gry`` (``rho = 50 lambda + 0.5``, CCMOD ``rho = 10``). With the
    default PGM dictionary update the filters stalled at similarity ~0.49 from
    the first iteration on (256^2, seed 0); the consensus update kept improving.
    Its convolution is cyclic over the image (its design; napari-sasd's is linear).
    """
    # One FFT thread, as napari-sasd uses below 800^2: SPORCO's default
    # (pyFFTW with a thread per core) took 41 s instead of 2.6 s for a 256^2
    # one-motif run on this 2-core machine shared with other jobs.
    sporco.fft.pyfftw_threads = 1
    s = data.image - data.image.mean()
    s = (s / s.std()).astype(np.float32)
    D0 = np.random.default_rng(seed).standard_normal((k, k, n)).astype(np.float32)
    opts: dict[str, Any] = {
        "Verbose": False,
        "MaxMainIter": int(iters),
        "CBPDN": {"NonNegCoef": bool(positive), "rho": 50.0 * lmbda + 0.5},
        "CCMOD": {"ZeroMean": False, "rho": 10.0},
    }
    if callback is not None:
        opts["Callback"] = lambda obj: bool(callback(obj))
    opt = cbpdndl.ConvBPDNDictLearn.Options(opts, dmethod="cns")
    learner = cbpdndl.ConvBPDNDictLearn(D0, s, lmbda, opt, dmethod="cns", dimK=0)
    learner.solve()
    return learner


def sporco_result(learner: Any, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Filters ``(n, k, k)`` and coefficient maps ``(n, H, W)`` of a learner."""
    D = np.asarray(learner.getdict()).reshape(k, k, n)
    X = np.asarray(learner.getcoef())
    X = X.reshape(X.shape[0], X.shape[1], n)
    return np.moveaxis(D, -1, 0).astype(np.float64), np.moveaxis(X, -1, 0)


def run_sporco(
    size: int,
    n: int,
    k: int,
    noise: float,
    seed: int,
    lmbda: float,
    iters: int = 200,
    model: str = "stm",
) -> dict[str, Any]:
    """One SPORCO dictionary learning; time, scores (best of the plausible map
    offsets, reported), memory."""
    data = problem(size, n, k, noise, seed, model)
    rss0 = _maxrss_mb()
    c0 = time.process_time()
    t0 = time.perf_counter()
    learner = sporco_learn(data, k, n, lmbda, iters, seed, positive=not signed(model))
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    D, X = sporco_result(learner, k, n)
    best: dict[str, Any] | None = None
    recalls = {}
    for name, off in sporco_offsets(D).items():
        sc = score(D, X, data, off)
        recalls[name] = sc["rec"]
        if best is None or sc["rec"] > best["rec"]:
            best = {**sc, "offset": name}
    assert best is not None
    best.update(
        time=dt,
        cpu=cpu,
        n_iter=iters,
        rss_mb=_maxrss_mb(),
        drss_mb=_maxrss_mb() - rss0,
        solver="sporco",
        lmbda=lmbda,
        recall_by_offset=recalls,
    )
    return best


def in_subprocess(func: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """Run ``func(**kwargs)`` in a fresh spawned process (own peak memory)."""
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(func, **kwargs).result()


def sasd_trace(
    size: int, n: int, k: int, noise: float, seed: int
) -> tuple[list[float], list[float]]:
    """napari-sasd's time-to-quality: (elapsed s, min similarity) per snapshot."""
    data = problem(size, n, k, noise, seed)
    ts, kerns = [], []
    t0 = time.perf_counter()
    gen = iter_solve(data.image, k, n, seed=seed)
    while True:
        try:
            prog = next(gen)
        except StopIteration:
            break
        ts.append(time.perf_counter() - t0)
        kerns.append(prog.kernels)
    sims = [float(min(match_motifs(kk, data.kernels)[0])) for kk in kerns]
    return ts, sims


def sporco_trace(
    size: int, n: int, k: int, noise: float, seed: int, lmbda: float, iters: int = 200
) -> tuple[list[float], list[float]]:
    """SPORCO's time-to-quality from its per-iteration callback (the time spent
    in the callback, copying the dictionary, is not counted)."""
    data = problem(size, n, k, noise, seed)
    ts: list[float] = []
    dicts: list[np.ndarray] = []
    spent = [0.0]
    t0 = time.perf_counter()

    def cb(obj: Any) -> None:
        c0 = time.perf_counter()
        ts.append(c0 - t0 - spent[0])
        dicts.append(np.array(obj.getdict()).reshape(k, k, n).copy())
        spent[0] += time.perf_counter() - c0

    sporco_learn(data, k, n, lmbda, iters, seed, callback=cb)
    sims = [float(min(match_motifs(np.moveaxis(d, -1, 0), data.kernels)[0])) for d in dicts]
    return ts, sims


# ----------------------------------------------------------------- tables
class Report:
    """Prints a benchmark's lines and keeps them for its one results file,
    ``benchmarks/results/<name>.txt``, overwritten by :meth:`save`."""

    def __init__(self, name: str) -> None:
        self.path = REPO / "benchmarks" / "results" / f"{name}.txt"
        self.lines: list[str] = []

    def __call__(self, *parts: Any) -> None:
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.lines.append(line)

    def save(self, argv: Sequence[str]) -> None:
        import shlex

        cmd = "python benchmarks/" + self.path.stem + ".py " + shlex.join(argv)
        self.path.parent.mkdir(exist_ok=True)
        self.path.write_text(f"$ {cmd.strip()}\n" + "\n".join(self.lines) + "\n")
        print(f"saved {self.path}")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
