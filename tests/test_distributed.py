"""Batches on dask.distributed (--scheduler / --dask) against the process pool,
on a real LocalCluster of two worker processes; and the locate/library commands."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sasd.bundle import load_bundle
from napari_sasd.cli import main
from napari_sasd.synthetic import make_synthetic

FAST = ["-k", "8", "-n", "2", "--max-iter", "30", "--progress", "never"]


def _folder(tmp_path):
    """Three small scans of the same two motif kinds, and a corrupt file."""
    src = tmp_path / "in"
    src.mkdir()
    kinds = make_synthetic((64, 64), 8, 2, seed=0).kernels
    from scipy import signal

    for i in range(3):
        d = make_synthetic((96, 96), 8, 2, noise=0.0, seed=10 + i)
        img = sum(
            signal.fftconvolve(x, k, mode="same")
            for x, k in zip(d.activations, kinds, strict=True)
        )
        img = img + 0.05 * np.random.default_rng(i).standard_normal(img.shape)
        tifffile.imwrite(src / f"img{i}.tif", img.astype(np.float32))
    (src / "broken.tif").write_bytes(b"II*\x00garbage")
    return src


def _bundle_bytes(folder):
    return {
        (b.name, f.name): f.read_bytes() for b in sorted(folder.iterdir()) for f in b.iterdir()
    }


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    # Worker processes (not threads): what --dask starts, and what a remote
    # cluster is.
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as lc:
        yield lc.scheduler_address


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out.strip().splitlines(), cap.err.strip().splitlines()


def test_solve_and_locate_on_a_cluster_match_the_process_pool(tmp_path, capsys, cluster):
    src = _folder(tmp_path)
    pool, dist = tmp_path / "pool", tmp_path / "dist"
    rc, out, err = _run(["solve", str(src), *FAST, "--jobs", "2", "--out", str(pool)], capsys)
    assert rc == 1 and len(out) == 3 and len(err) == 1, err
    rc2, out2, err2 = _run(["solve", str(src), *FAST, "--scheduler", cluster, "--out",
                            str(dist)], capsys)  # fmt: skip
    assert rc2 == 1 and len(out2) == 3, err2
    # The corrupt file is reported by name, the others are done.
    assert len(err2) == 1 and err2[0].startswith(f"{src / 'broken.tif'}: "), err2
    assert "Traceback" not in "\n".join(err2)
    # Byte-identical bundles (no field of the record holds a time).
    a, b = _bundle_bytes(pool), _bundle_bytes(dist)
    assert a.keys() == b.keys() and len(a) >= 12
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]

    # Learn once, locate everywhere: the first scan's motifs in all of them.
    motifs = pool / "img0.sasd"
    argv = ["locate", "--motifs", str(motifs), str(src), "--progress", "never"]
    rc, out, err = _run([*argv, "--jobs", "2", "--out", str(tmp_path / "lp")], capsys)
    assert rc == 1 and len(out) == 3 and err[0].startswith(f"{src / 'broken.tif'}: ")
    argv = ["locate", "--motifs", str(motifs), str(src), "--progress", "never"]
    rc, out, err = _run([*argv, "--scheduler", cluster, "--out", str(tmp_path / "ld")], capsys)
    assert rc == 1 and len(out) == 3 and err[0].startswith(f"{src / 'broken.tif'}: ")
    a, b = _bundle_bytes(tmp_path / "lp"), _bundle_bytes(tmp_path / "ld")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    rec = load_bundle(tmp_path / "ld" / "img2.sasd").record
    assert rec["command"] == "napari-sasd locate" and rec["motif_names"] == ["#1", "#2"]
    np.testing.assert_allclose(
        load_bundle(tmp_path / "ld" / "img2.sasd").kernels, load_bundle(motifs).kernels, atol=1e-6
    )


def test_dask_option_starts_a_local_cluster(tmp_path, capsys):
    pytest.importorskip("distributed")
    src = _folder(tmp_path)
    (src / "img1.tif").unlink()
    (src / "img2.tif").unlink()
    rc, out, err = _run(["solve", str(src), *FAST, "--dask", "2", "--progress", "always",
                         "--out", str(tmp_path / "o")], capsys)  # fmt: skip
    assert rc == 1 and len(out) == 1 and out[0].startswith(f"{src / 'img0.tif'}: 2 motifs")
    assert any(f"{src / 'broken.tif'}: " in e for e in err)
    assert any("files [" in e for e in err)  # the bar over files


def test_without_dask_the_cluster_options_say_how_to_get_it(tmp_path, capsys, monkeypatch):
    import sys

    for mod in ("dask", "dask.distributed", "distributed"):
        monkeypatch.setitem(sys.modules, mod, None)  # import fails, as when not installed
    src = _folder(tmp_path)
    rc, out, err = _run(["solve", str(src), *FAST, "--dask", "2", "--out", str(tmp_path / "o")],
                        capsys)  # fmt: skip
    assert rc == 2 and not out and "pip install 'napari-sasd[dask]'" in err[-1]


def test_library_commands_and_the_catalogue(tmp_path, capsys):
    src = _folder(tmp_path)
    rc, out, err = _run(["solve", str(src / "img0.tif"), *FAST, "--out", str(tmp_path / "a")],
                        capsys)  # fmt: skip
    assert rc == 0, err
    lib = tmp_path / "kinds.sasdlib"
    rc, out, err = _run(["library", "make", str(lib), f"{tmp_path / 'a' / 'img0.sasd'}:2,1",
                         "--name", "Se vacancy", "--name", "adatom"], capsys)  # fmt: skip
    assert rc == 0 and out[0].endswith("2 motifs: Se vacancy, adatom"), err
    rc, out, err = _run(["library", "make", str(lib), str(tmp_path / "a" / "img0.sasd")], capsys)
    assert rc == 2 and "library add" in err[0]
    rc, out, err = _run(["library", "show", str(lib)], capsys)
    assert rc == 0 and "'Se vacancy': 8x8 from" in out[1]
    # A new scan's motifs are catalogued against the library, in the record too.
    rc, out, err = _run(["solve", str(src / "img1.tif"), *FAST, "--library", str(lib),
                         "--out", str(tmp_path / "b")], capsys)  # fmt: skip
    assert rc == 0, err
    assert "same as 'Se vacancy'" in out[0] and "same as 'adatom'" in out[0], out
    rec = load_bundle(tmp_path / "b" / "img1.sasd").record
    assert {e["match"] for e in rec["catalogue"]} == {"Se vacancy", "adatom"}
    # Bad libraries are usage errors, before any work.
    rc, out, err = _run(["locate", "--motifs", str(tmp_path), str(src), "--out",
                         str(tmp_path / "c")], capsys)  # fmt: skip
    assert rc == 2 and "neither a motif library nor a result bundle" in "\n".join(err)
    assert not (tmp_path / "c").exists()


def test_the_process_pool_draws_a_bar_over_files(tmp_path, capsys):
    # --jobs N without dask: one bar over the files (as on a cluster),
    # erased and redrawn under each file's line; none with --progress never.
    src = _folder(tmp_path)
    argv = ["solve", str(src), *FAST, "--jobs", "2", "--out", str(tmp_path / "o")]
    rc, out, err = _run([*argv, "--progress", "always"], capsys)
    text = "\n".join(err)
    assert rc == 1 and len(out) == 3, err
    assert "files [" in text and "0/4 files" in text and "3/4 files" in text
    assert any(f"{src / 'broken.tif'}: " in e for e in err)
    motifs = tmp_path / "o" / "img0.sasd"
    loc = ["locate", "--motifs", str(motifs), str(src), "--jobs", "2"]
    rc, out, err = _run([*loc, "--progress", "always", "--out", str(tmp_path / "l")], capsys)
    assert rc == 1 and len(out) == 3 and "3/4 files" in "\n".join(err), err
    rc, out, err = _run([*loc, "--progress", "never", "--out", str(tmp_path / "m")], capsys)
    assert rc == 1 and "files [" not in "\n".join(err)
