"""Learn once, locate everywhere (issue 15): a survey of scans sharing two motif
kinds, locate vs solve at growing sizes, and a tiled large locate.

1. Survey: ``--scans`` synthetic 512^2 scans of the same two 12 px motifs
   (different copies, amplitudes 0.7-1.3, noise 0.03-0.08 per scan), saved as
   .npy. Learn on scan 0 (one solve), then locate on every scan with 1 and 2
   workers, in a process pool and on a dask.distributed LocalCluster (one
   task per file, as ``napari-sasd locate --dask N``); solve each of the first
   ``--solve-scans`` for comparison. Per-scan defect precision/recall against
   the truth; the located defects of the pool and the cluster runs compared
   (identical); a corrupt file in the folder, reported by name.
2. Locate alone vs solve at 512^2, 1024^2, 2048^2 (two motifs, k = 12): time,
   and the located defects against the solve's own (precision/recall).
3. A tiled locate of a ``--large`` ^2 image (memory-mapped .npy, the default
   tiles of 1024): time and peak memory (VmHWM of its own process), and its
   defects against an untiled locate of a 2048^2 crop (interior, same lambda).

Locate at 2048^2 in part 2 is itself tiled (4 tiles of 1024, the default).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_survey.py             # full: 200 scans
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_survey.py --scans 40 --solve-scans 10
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import hashlib
import io
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import _maxrss_mb, git_commit, table

import napari_sasd
from napari_sasd.metrics import match_motifs, precision_recall
from napari_sasd.peaks import Defects, find_defects
from napari_sasd.synthetic import make_synthetic

K = 12
KINDS = make_synthetic((64, 64), K, 2, seed=0).kernels  # the survey's two defect kinds


# ------------------------------------------------------------------ data
def render(shape: tuple[int, int], seed: int, noise: float) -> tuple[np.ndarray, list]:
    """A scan of ``KINDS`` at random places (make_synthetic's copies): image, truth."""
    d = make_synthetic(shape, K, 2, copies_per_area=1.5, noise=0.0, seed=seed)
    img = sum(
        signal.fftconvolve(x, k, mode="same") for x, k in zip(d.activations, KINDS, strict=True)
    )
    img = img + noise * np.random.default_rng(seed + 10**6).standard_normal(shape)
    return img.astype(np.float32), d.positions


def pooled_pr(found: Any, truth: list[np.ndarray], order: np.ndarray) -> tuple[float, float]:
    """Pooled precision/recall of defects whose motif ``order[m]`` is true motif ``m``."""
    hits = 0
    for m, t in enumerate(truth):
        mine = found.positions[found.motif == order[m]]
        if len(mine) and len(t):
            hits += round(precision_recall(mine, t)[0] * len(mine))
    return hits / max(1, len(found)), hits / max(1, sum(len(t) for t in truth))


def agreement(found: Any, ref: Any, n: int) -> tuple[float, float]:
    """Pooled precision/recall of ``found`` against ``ref`` defects, per motif within 2 px."""
    hits = 0
    for m in range(n):
        a, b = found.positions[found.motif == m], ref.positions[ref.motif == m]
        if len(a) and len(b):
            hits += round(precision_recall(a, b)[0] * len(a))
    return hits / max(1, len(found)), hits / max(1, len(ref))


# ------------------------------------------------------------ survey tasks
def _pack(name: str, found: Any, dt: float, order: Any = None) -> str:
    """A task's outcome as the runners carry it (a message string): the defects
    table, base64 .npz."""
    buf = io.BytesIO()
    extra = {} if order is None else {"order": np.asarray(order)}
    np.savez(buf, pos=found.positions, motif=found.motif, amp=found.amplitude, **extra)
    return f"{name}|{dt!r}|{base64.b64encode(buf.getvalue()).decode()}"


def _unpack(msg: str) -> tuple[str, Any, float, Any]:
    name, dt, b64 = msg.split("|")
    z = np.load(io.BytesIO(base64.b64decode(b64)))
    found = Defects(z["pos"], z["motif"], z["amp"])
    return name, found, float(dt), z["order"] if "order" in z else None


def locate_task(task: tuple[str, str, np.ndarray]) -> tuple[bool, str]:
    """One scan, as a worker runs it: read, locate, defects."""
    path, name, kernels = task
    t0 = time.perf_counter()
    res = napari_sasd.locate(np.load(path), kernels)
    found = find_defects(res.activations)
    return True, _pack(name, found, time.perf_counter() - t0)


def solve_task(task: tuple[str, str, Any]) -> tuple[bool, str]:
    """One scan solved from scratch, its motifs matched to the kinds."""
    path, name, _ = task
    t0 = time.perf_counter()
    res = napari_sasd.solve(np.load(path), K, 2)
    found = find_defects(res.activations)
    dt = time.perf_counter() - t0
    _, assign = match_motifs(res.kernels, KINDS)
    return True, _pack(name, found, dt, assign)


def scores(outcomes: list, folder: Path, order: np.ndarray | None) -> dict[str, Any]:
    """Per-scan precision/recall against the truth (after the timed run)."""
    prec, rec, per, digest = [], [], [], []
    for ok, msg in outcomes:
        if not ok:
            continue
        name, found, dt, own = _unpack(msg)
        truth = np.load(folder / f"{name}.truth.npz")
        p, r = pooled_pr(found, [truth["m0"], truth["m1"]], own if order is None else order)
        prec.append(p)
        rec.append(r)
        per.append(dt)
        digest.append(
            hashlib.sha1(
                found.positions.tobytes() + found.motif.tobytes() + found.amplitude.tobytes()
            ).hexdigest()
        )
    failed = [msg.split(":")[0].split("/")[-1] for ok, msg in outcomes if not ok]
    return {"prec": np.array(prec), "rec": np.array(rec), "per": np.array(per),
            "digest": digest, "failed": failed}  # fmt: skip


def run_pool(tasks: list, work: Any, jobs: int) -> list[tuple[bool, str]]:
    """The local runner of the command line: a spawned process pool (or here)."""
    if jobs == 1:
        return [_safe(work, t) for t in tasks]
    with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(_safe, [work] * len(tasks), tasks))


def _safe(work: Any, task: Any) -> tuple[bool, str]:
    try:
        return work(task)
    except Exception as exc:
        return False, f"{task[0]}: {exc}"


def survey(args: argparse.Namespace, folder: Path) -> None:
    from napari_sasd.distributed import run_distributed

    print(f"\n## Survey: {args.scans} scans of 512^2, two motif kinds (k = {K})", flush=True)
    t0 = time.perf_counter()
    paths = []
    for i in range(args.scans):
        noise = 0.03 + 0.05 * np.random.default_rng(i).random()
        img, truth = render((512, 512), 1000 + i, noise)
        p = folder / f"scan{i:03d}.npy"
        np.save(p, img)
        np.savez(folder / f"scan{i:03d}.truth.npz", m0=truth[0], m1=truth[1])
        paths.append(p)
    (folder / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    paths.append(folder / "broken.npy")
    print(f"  made the scans in {time.perf_counter() - t0:.0f} s", flush=True)

    t0 = time.perf_counter()
    learnt = napari_sasd.solve(np.load(paths[0]), K, 2)
    t_learn = time.perf_counter() - t0
    sims, _ = match_motifs(learnt.kernels, KINDS)
    print(f"  learnt on scan 0: {t_learn:.2f} s, similarity to the kinds {np.round(sims, 4)}")
    tasks = [(str(p), p.stem, learnt.kernels) for p in paths]

    # The learnt motifs' order against the kinds, for the truth's labels.
    order = np.argmax(np.abs(KINDS.reshape(2, -1) @ learnt.kernels.reshape(2, -1).T), axis=1)
    rows, digests = [], {}
    runs = [("process pool", 1), ("process pool", 2), ("LocalCluster", 1), ("LocalCluster", 2)]
    for how, n in runs:
        t0 = time.perf_counter()
        if how == "process pool":
            out = run_pool(tasks, locate_task, n)
        else:
            out = run_distributed(tasks, locate_task, n_workers=n, label=lambda t: t[0])
        total = time.perf_counter() - t0
        sc = scores(out, folder, order)
        digests[(how, n)] = sc["digest"]
        rows.append([f"locate, {how}", n, len(sc["per"]), total, total / len(sc["per"]),
                     float(np.median(sc["per"])), float(sc["prec"].min()),
                     float(sc["rec"].min()), float(np.median(sc["rec"])),
                     "; ".join(sc["failed"]) or "-"])  # fmt: skip
        print(f"  {rows[-1]}", flush=True)
    same = all(digests[r] == digests[runs[0]] for r in runs)

    m = min(args.solve_scans, args.scans)
    t0 = time.perf_counter()
    out = run_pool(tasks[:m], solve_task, 2)
    total = time.perf_counter() - t0
    sc = scores(out, folder, None)
    rows.append([f"solve each ({m} scans), process pool", 2, len(sc["per"]), total,
                 total / len(sc["per"]), float(np.median(sc["per"])), float(sc["prec"].min()),
                 float(sc["rec"].min()), float(np.median(sc["rec"])), "-"])  # fmt: skip
    print()
    head = ["run", "workers", "scans", "total (s)", "per scan (s)", "median task (s)",
            "min precision", "min recall", "median recall", "failed (reported)"]  # fmt: skip
    print(table(head, rows))
    print(f"\nlearning on scan 0: {t_learn:.2f} s. Located defects identical in all four runs "
          f"(positions, motifs, amplitudes): {'yes' if same else 'NO'}. "
          f"Every scan's recall >= 0.9: "
          f"{'yes' if all(r[7] >= 0.9 for r in rows[:4]) else 'NO'}. Total and per scan: "
          f"wall time of the run (reading, locating, peaks; worker start-up included), "
          f"scored against the truth afterwards.")  # fmt: skip


# ------------------------------------------------------- locate vs solve
def locate_vs_solve(args: argparse.Namespace) -> None:
    print("\n## Locate alone vs solve (two motifs, k = 12)", flush=True)
    rows = []
    for size in args.sizes:
        seeds = args.seeds if size <= 512 else args.seeds[:1]
        for seed in seeds:
            img, truth = render((size, size), seed, 0.05)
            # Interleaved, the fastest of each kept (timeit's rule, for both
            # alike: the runs are deterministic, only their time varies with
            # the machine's load). One solve above 1024^2.
            ts_all, tl = [], []
            for r in range(args.repeats):
                if r == 0 or size <= 1024:
                    t0 = time.perf_counter()
                    res = napari_sasd.solve(img, K, 2)
                    ts_all.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                loc = napari_sasd.locate(img, res.kernels)
                tl.append(time.perf_counter() - t0)
            ts, t_loc = min(ts_all), min(tl)
            fs, fl = find_defects(res.activations), find_defects(loc.activations)
            p_own, r_own = agreement(fl, fs, 2)
            _, assign = match_motifs(res.kernels, KINDS)
            ps, rs = pooled_pr(fs, truth, assign)
            pl, rl = pooled_pr(fl, truth, assign)
            rows.append([f"{size}^2", seed, ts, t_loc, t_loc / ts, p_own, r_own,
                         f"{ps:.3f}/{rs:.3f}", f"{pl:.3f}/{rl:.3f}"])  # fmt: skip
            print(f"  {rows[-1]}", flush=True)
    print()
    print(table(["image", "seed", "solve (s)", "locate (s)", "locate / solve",
                 "precision vs solve's", "recall vs solve's", "solve P/R vs truth",
                 "locate P/R vs truth"], rows))  # fmt: skip


# ------------------------------------------------------------- tiled large
def make_large(path: Path, side: int) -> None:
    """A ``side``^2 float32 .npy of ``KINDS`` copies, rendered block by block."""
    rng = np.random.default_rng(7)
    theta = 1.5 / (K * K * 2)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(side, side))
    block = 2048
    pad = K
    n = rng.binomial(side * side, theta, size=2)
    pos = [rng.integers(0, side, size=(int(c), 2)) for c in n]
    amp = [rng.uniform(0.7, 1.3, size=int(c)) for c in n]
    for r0 in range(0, side, block):
        for c0 in range(0, side, block):
            h, w = min(block, side - r0), min(block, side - c0)
            img = np.zeros((h + 2 * pad, w + 2 * pad))
            for m in range(2):
                p = pos[m]
                sel = (p[:, 0] >= r0 - pad) & (p[:, 0] < r0 + h + pad)
                sel &= (p[:, 1] >= c0 - pad) & (p[:, 1] < c0 + w + pad)
                x = np.zeros_like(img)
                x[p[sel, 0] - r0 + pad, p[sel, 1] - c0 + pad] = amp[m][sel]
                img += signal.fftconvolve(x, KINDS[m], mode="same")
            img = img[pad:-pad, pad:-pad] + 0.05 * rng.standard_normal((h, w))
            mm[r0 : r0 + h, c0 : c0 + w] = img
    mm.flush()
    del mm


def tiled_child(path: str, kernels: np.ndarray, crop: tuple[int, int, int]) -> dict[str, Any]:
    """In a fresh process: the tiled locate of the memory-mapped image."""
    from napari_sasd.tiling import _image_stats, _Slabs

    rss0 = _maxrss_mb()
    mm = np.load(path, mmap_mode="r")
    t0 = time.perf_counter()
    res = napari_sasd.locate(mm, kernels)  # tiles of the default size
    dt = time.perf_counter() - t0
    _, scale = _image_stats(_Slabs(mm, None, None), *mm.shape, res.params["tiles"]["tile"])
    r0, c0, s = crop
    return {
        "time": dt,
        "rss_mb": _maxrss_mb(),
        "rss0_mb": rss0,
        "lam_img": res.lam * scale,
        "acts": np.array(res.activations[:, r0 : r0 + s, c0 : c0 + s]),
        "n_tiles": res.params["tiles"]["n_tiles"],
        "defects": len(find_defects(res.activations)),
    }


def tiled(args: argparse.Namespace, folder: Path) -> None:
    from napari_sasd.validation import prepare

    side = args.large
    print(
        f"\n## Tiled locate of a {side}^2 image (default tiles, memory-mapped input)", flush=True
    )
    path = folder / f"large{side}.npy"
    t0 = time.perf_counter()
    make_large(path, side)
    print(f"  made it in {time.perf_counter() - t0:.0f} s", flush=True)
    crop = (side // 2 - 1000, side // 2 - 1100, 2048)  # across tile borders
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        out = ex.submit(tiled_child, str(path), KINDS, crop).result()
    r0, c0, s = crop
    img = np.array(np.load(path, mmap_mode="r")[r0 : r0 + s, c0 : c0 + s])
    lam = out["lam_img"] / prepare(img, K, 2, None, None, None, None).scale
    t0 = time.perf_counter()
    whole = napari_sasd.locate(img, KINDS, lam, tile=None)
    t_crop = time.perf_counter() - t0
    m = 2 * K  # the crop's own border cuts copies the tiled run sees whole
    thr = 0.25 * np.percentile(whole.activations[whole.activations > 0], 99.9)
    fa = find_defects(out["acts"][:, m:-m, m:-m], thr)
    fb = find_defects(whole.activations[:, m:-m, m:-m], thr)
    prec, rec = agreement(fa, fb, 2)
    rows = [[f"{side}^2", out["n_tiles"], out["time"], out["rss_mb"], out["rss0_mb"],
             out["defects"], f"{prec:.4f}/{rec:.4f}", t_crop]]  # fmt: skip
    print(table(["image", "tiles", "time (s)", "peak RSS (MB)", "RSS before (MB)", "defects",
                 "P/R vs untiled 2048^2 crop", "untiled crop (s)"], rows))  # fmt: skip
    print(f"peak memory under 2 GB: {'yes' if out['rss_mb'] < 2048 else 'NO'}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=200)
    ap.add_argument("--solve-scans", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--repeats", type=int, default=5, help="timings of solve and locate (fastest kept)"
    )
    ap.add_argument("--large", type=int, default=8192)
    ap.add_argument("--skip", nargs="*", default=[], choices=("survey", "sizes", "tiled"))
    args = ap.parse_args(argv)
    print(f"napari-sasd commit {git_commit()}, OPENBLAS_NUM_THREADS=1 expected")
    with tempfile.TemporaryDirectory(prefix="bench_survey_") as tmp:
        if "sizes" not in args.skip:
            locate_vs_solve(args)
        if "survey" not in args.skip:
            survey(args, Path(tmp))
        if "tiled" not in args.skip:
            tiled(args, Path(tmp))


if __name__ == "__main__":
    main()
