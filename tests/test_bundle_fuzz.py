"""A small fuzz test of the bundle reader: truncated and byte-flipped files.

Each damaged bundle is opened as napari would (reader, then the layers built):
every outcome must be layers or a one-line ``ValueError`` naming the bundle,
never another exception, a hang or an allocation bomb. The cases run in a
child process under an address-space limit (a damaged header that makes the
reader allocate gigabytes fails there) and a generous hang guard.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("napari")

_FUZZ = textwrap.dedent(
    """
    import json, random, resource, shutil, sys
    from pathlib import Path

    import numpy as np
    from napari.layers import Layer

    from napari_sasd.bundle import save_bundle
    from napari_sasd.peaks import find_defects
    from napari_sasd.reader import read_bundle_layers
    from napari_sasd.synthetic import make_synthetic
    from napari_sasd.result import SolveResult

    root = Path(sys.argv[1])
    d = make_synthetic((48, 64), 8, 2, noise=0.01, seed=2)
    res = SolveResult(
        kernels=d.kernels, activations=d.activations.astype(np.float32), bias=0.0, lam=0.1,
        reconstruction=np.zeros((48, 64)), objective=1.0, n_iter=3, converged=True,
        explained=np.array([0.6, 0.3]), params={"seed": 0},
    )
    good = save_bundle(root / "good", res, region=(4, 6, 52, 70), scale=(0.5, 0.5),
                       colors=["#ff0000", "#00ff00"], threshold=0.1)
    rng = random.Random(17)
    cases = []
    for name in ("motifs.tif", "activations.tif", "defects.csv", "record.json"):
        raw = (good / name).read_bytes()
        for i in range(8):  # truncations, from nothing to all but the last byte
            cases.append((name, f"cut{i}", raw[: len(raw) * i // 8]))
        for i in range(int(sys.argv[2])):  # one to four flipped bytes, headers first
            b = bytearray(raw)
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(min(len(b), 512) if rng.random() < 0.6 else len(b))
                b[pos] ^= 1 << rng.randrange(8)
            cases.append((name, f"flip{i}", bytes(b)))
    # What napari can have: the limit makes an allocation bomb fail here.
    limit = int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = []
    for n, (name, kind, data) in enumerate(cases):
        path = root / f"case{n}.sasd"
        shutil.copytree(good, path)
        (path / name).write_bytes(data)
        try:
            layers = [Layer.create(*t) for t in read_bundle_layers(path)]
            outcome = ("ok", len(layers))
        except ValueError as exc:
            outcome = ("error", str(exc))
        except BaseException as exc:
            outcome = ("raw", f"{type(exc).__name__}: {exc}")
        out.append([name, kind, str(path), *outcome])
        shutil.rmtree(path)
    print(json.dumps(out))
    """
)


def test_damaged_bundles_open_or_fail_with_one_line_naming_them(tmp_path):
    flips = 40
    r = subprocess.run(
        [sys.executable, "-c", _FUZZ, str(tmp_path), str(flips), str(3 * 2**30)],
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard (the cases take seconds), not a timing assertion
    )
    assert r.returncode == 0, r.stderr[-2000:]
    cases = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(cases) == 4 * (8 + flips)
    bad = [c for c in cases if c[3] == "raw"]
    bad += [c for c in cases if c[3] == "error" and (not c[4].startswith(c[2]) or "\n" in c[4])]
    assert not bad, bad[:5]
    # Truncated files are always refused; some flips are harmless (a digit of
    # a value), most are caught.
    kinds = {(c[0], c[1][:3], c[3]) for c in cases}
    for name in ("motifs.tif", "activations.tif", "record.json"):
        assert (name, "cut", "ok") not in kinds, name
    assert sum(c[3] == "error" for c in cases) > len(cases) // 3
