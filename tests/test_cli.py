"""The napari-sasd command line, end to end on generated files."""

import io
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_sasd.bundle import load_bundle
from napari_sasd.cli import ProgressBar, main
from napari_sasd.detection import DEFAULT_SIGNIFICANCE
from napari_sasd.synthetic import make_synthetic

FAST = ["-k", "8", "-n", "2", "--max-iter", "30", "--progress", "never"]


def test_cli_imports_neither_qt_nor_napari():
    code = (
        "import sys, napari_sasd.cli, napari_sasd.bundle, napari_sasd.imageio;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui')];"
        "print(bad); sys.exit(bool(bad))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_sample_then_solve(tmp_path, capsys):
    topo = tmp_path / "topo.tif"
    assert main(["sample", "topograph", "--out", str(topo)]) == 0
    img = tifffile.imread(topo)
    assert img.shape == (256, 256)
    assert "napari-sasd solve" in capsys.readouterr().out  # tells what to do next

    out = tmp_path / "res"
    rc = main(["solve", str(topo), *FAST, "--roi", "10,20,106,116", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    line = cap.out.strip()
    assert line.startswith(f"{topo}: 2 motifs, defects ") and "lambda" in line
    assert line.endswith(f" s -> {out / 'topo.sasd'}")
    b = load_bundle(out / "topo.sasd")
    assert b.kernels.shape == (2, 8, 8) and b.activations.shape == (2, 96, 96)
    r = b.record
    assert r["region"] == [10, 20, 106, 116] and r["source_path"] == str(topo.resolve())
    assert r["params"]["max_iter"] == 30 and r["seed"] == 0 and r["flatten"] == "both"
    counts = "+".join(str(c) for c in np.bincount(b.defects.motif, minlength=2))
    assert f"defects {counts}," in line
    # The default threshold: a significance against each motif's noise (issue 14).
    assert r["threshold_per_motif"] is False and len(r["threshold"]) == 2
    assert r["significance"] == DEFAULT_SIGNIFICANCE and len(r["motif_flags"]) == 2
    z = DEFAULT_SIGNIFICANCE
    assert r["threshold"] == pytest.approx([z * v for v in r["noise_per_motif"]])
    assert (out / "topo.sasd" / "quicklook.png").stat().st_size > 1000  # issue 16
    assert not (out / "topo.sasd" / "spectra.csv").exists()  # a single image has none

    # Each motif against its own strongest copy: a threshold per motif, recorded.
    rc = main(["solve", str(topo), *FAST, "--roi", "10,20,106,116", "--threshold", "0.6",
               "--threshold-per-motif", "--out", str(tmp_path / "own")])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    b2 = load_bundle(tmp_path / "own" / "topo.sasd")
    tops = b2.activations.max(axis=(1, 2))
    assert b2.record["threshold_per_motif"] is True
    np.testing.assert_allclose(b2.record["threshold"], 0.6 * tops, rtol=1e-6)
    for n in range(2):
        amp = b2.defects.amplitude[b2.defects.motif == n]
        assert len(amp) >= 1 and amp.min() >= 0.6 * tops[n] - 1e-6


def test_sample_cube_npy_and_multichannel_solve(tmp_path, capsys):
    cube = tmp_path / "cube.npy"
    assert main(["sample", "cube", "--out", str(cube)]) == 0
    arr = np.load(cube)
    assert arr.ndim == 3 and arr.shape[1:] == (128, 128)
    rc = main(
        [
            "solve",
            str(cube),
            *FAST,
            "--roi",
            "0,0,64,64",
            "--flatten",
            "plane",
            "-o",
            str(tmp_path),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    b = load_bundle(tmp_path / "cube.sasd")
    assert b.kernels.shape == (2, arr.shape[0], 8, 8)
    assert b.record["scale"] == [1.0, 1.0, 1.0] and b.record["flatten"] == "plane"


def _write_small(folder, n=3):
    for i in range(n):
        d = make_synthetic((64, 64), 8, 2, noise=0.02, seed=i)
        np.save(folder / f"img{i}.npy", d.image.astype(np.float32))


@pytest.mark.parametrize("jobs", [1, 2])
def test_folder_with_a_corrupt_file(tmp_path, capsys, jobs):
    src = tmp_path / "in"
    src.mkdir()
    _write_small(src)
    (src / "broken.tif").write_bytes(b"II*\x00garbage")
    (src / "broken.sxm").write_bytes(b":NANONIS_VERSION:\n2\n:SCANIT_END:\n")
    (src / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "out"
    rc = main(["solve", str(src), *FAST, "--jobs", str(jobs), "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 1
    errs = cap.err.strip().splitlines()
    assert len(errs) == 2, cap.err
    assert any(e.startswith(f"{src / 'broken.tif'}: ") for e in errs)
    assert any(e.startswith(f"{src / 'broken.sxm'}: ") for e in errs)
    assert "Traceback" not in cap.err
    assert sorted(p.name for p in out.iterdir()) == ["img0.sasd", "img1.sasd", "img2.sasd"]
    assert len(cap.out.strip().splitlines()) == 3


def test_same_stem_inputs_get_distinct_bundles(tmp_path, capsys):
    d = make_synthetic((48, 48), 8, 1, seed=0).image
    np.save(tmp_path / "a.npy", d)
    tifffile.imwrite(tmp_path / "a.tif", d.astype(np.float32))
    rc = main(["solve", str(tmp_path), *FAST, "--out", str(tmp_path / "o")])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_npy.sasd", "a_tif.sasd"]


def test_missing_file_and_bad_roi_fail_others_run(tmp_path, capsys):
    _write_small(tmp_path, 1)
    rc = main(["solve", str(tmp_path / "nope.tif"), str(tmp_path / "img0.npy"), *FAST,
               "--out", str(tmp_path / "o")])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 1 and cap.err.startswith(f"{tmp_path / 'nope.tif'}: no such file")
    assert (tmp_path / "o" / "img0.sasd" / "record.json").exists()
    rc = main(["solve", str(tmp_path / "img0.npy"), *FAST, "--roi", "0,0,65,10",
               "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 1 and "outside the 64x64 image" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["solve", "x.tif", "--out", "o"],  # no --kernel-size
        ["solve", "x.tif", "-k", "3x", "--out", "o"],
        ["solve", "x.tif", "-k", "8", "--lam", "-1", "--out", "o"],
        ["solve", "x.tif", "-k", "8", "--roi", "5,5,1,1", "--out", "o"],
        ["solve", "x.tif", "-k", "8", "--threshold", "2", "--out", "o"],
        ["sample", "nothing", "--out", "x.tif"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_sample_bad_suffix_and_empty_folder(tmp_path, capsys):
    assert main(["sample", "topograph", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["solve", str(tmp_path), "-k", "8", "--out", str(tmp_path / "o")]) == 2
    assert "no supported files" in capsys.readouterr().err


def test_help_has_examples(capsys):
    assert main(["--help"]) == 0
    assert "examples:" in capsys.readouterr().out
    assert main(["solve", "--help"]) == 0
    text = capsys.readouterr().out
    for opt in ("--kernel-size", "--motifs", "--lam", "--channel", "--flatten", "--roi",
                "--jobs", "--threshold", "--out", "examples:", "Exit status"):  # fmt: skip
        assert opt in text


def test_python_dash_m(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "napari_sasd", "sample", "topograph", "--out", "t.npy"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "t.npy").shape == (256, 256)


def test_progress_bar_draws_on_one_line():
    s = io.StringIO()
    bar = ProgressBar("f.tif", s, width=10)
    bar.update(0.5, "stage 1/2", force=True)
    assert s.getvalue() == "\rf.tif [#####.....]  50% stage 1/2"
    bar.update(0.6)  # throttled: within 0.1 s of the last draw
    assert s.getvalue().count("\r") == 1
    bar.close()
    assert s.getvalue().endswith("\r") and "\n" not in s.getvalue()


def test_nanonis_inputs_and_channel_choice(tmp_path, capsys):
    from test_nanonis import write_3ds, write_sxm

    d = make_synthetic((48, 48), 8, 1, n_channels=3, noise=0.01, seed=2).image.astype("f4")
    write_sxm(tmp_path / "s.sxm", {"Z": (d[0], d[0]), "Current": (d[1], d[1])}, nx=48, ny=48)
    write_3ds(tmp_path / "g.3ds", {"Current (A)": d, "LI Demod 1 X (A)": d})
    out = tmp_path / "o"
    fast = ["-k", "8", "-n", "1", "--max-iter", "20", "--progress", "never", "--out", str(out)]
    assert main(["solve", str(tmp_path / "s.sxm"), str(tmp_path / "g.3ds"), *fast]) == 0
    s, g = load_bundle(out / "s.sasd").record, load_bundle(out / "g.sasd").record
    assert s["channel"] == "Z (fwd)" and s["flatten"] == "both" and s["units"] == "m"
    assert s["scale"] == pytest.approx([10 / 48, 20 / 48])  # nm/px: SCAN_RANGE is x, y
    assert g["channel"] == "LI Demod 1 X (A)"  # the lock-in channel by default
    assert load_bundle(out / "g.sasd").kernels.shape == (1, 3, 8, 8)
    capsys.readouterr()
    assert main(["solve", str(tmp_path / "s.sxm"), "--channel", "Current (bwd)", *fast]) == 0
    assert load_bundle(out / "s.sasd").record["channel"] == "Current (bwd)"
    assert main(["solve", str(tmp_path / "s.sxm"), "--channel", "nope", *fast]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{tmp_path / 's.sxm'}: no channel 'nope'; available: Z (fwd)")


def test_corrupt_tiff_says_so_without_a_log_line(tmp_path, caplog):
    from napari_sasd.imageio import ImageReadError, read_image

    p = tmp_path / "broken.tif"
    p.write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    assert str(e.value).startswith(f"{p}: cannot read") and "corrupt" in str(e.value)
    assert not [r for r in caplog.records if r.name == "tifffile"]


def test_a_solve_that_finds_nothing_gives_a_bundle_napari_opens(tmp_path, capsys):
    # Issue 17: 'defects 0+0' was written, but napari could not open the bundle.
    napari = pytest.importorskip("napari")
    from napari.layers import Layer

    from napari_sasd.reader import read_bundle_layers

    img = tmp_path / "t.tif"
    tifffile.imwrite(img, make_synthetic((64, 64), 8, 1, seed=0).image.astype(np.float32))
    rc = main(["solve", str(img), *FAST, "--lam", "1e6", "--out", str(tmp_path / "zero")])
    cap = capsys.readouterr()
    assert rc == 0 and "defects 0+0," in cap.out, cap.err
    layers = [Layer.create(*t) for t in read_bundle_layers(tmp_path / "zero" / "t.sasd")]
    pts = layers[-1]
    assert isinstance(pts, napari.layers.Points) and len(pts.data) == 0
    assert list(pts.features.columns) == ["motif", "amplitude"]


def test_partial_3ds_grid_solves_and_says_so(tmp_path, capsys):
    """A grid stopped early (the file ends inside a point's record) solves on
    its measured points; the summary says how many; the record keeps the
    bias axis (volts) and the measured count."""
    from test_nanonis import write_3ds

    d = make_synthetic((48, 48), 8, 1, n_channels=3, noise=0.01, seed=2).image.astype("f4")
    p = tmp_path / "g.3ds"
    write_3ds(p, {"LI Demod 1 X (A)": d}, sweep=(-0.2, 0.2))
    raw = p.read_bytes()
    head = raw.index(b":HEADER_END:") + len(b":HEADER_END:\r\n")
    rec = (5 + 3) * 4
    p.write_bytes(raw[: head + 30 * 48 * rec + 10])  # 30 of 48 rows, and 10 bytes more
    out = tmp_path / "o"
    fast = ["-k", "8", "-n", "1", "--max-iter", "20", "--progress", "never", "--out", str(out)]
    assert main(["solve", str(p), *fast]) == 0
    assert "(1440 of 2304 points measured; the others are NaN)" in capsys.readouterr().out
    b = load_bundle(out / "g.sasd")
    assert b.record["measured_points"] == [1440, 2304]
    sw = b.record["sweep"]
    assert (sw["label"], sw["unit"], sw["uniform"]) == ("Bias", "V", True)
    np.testing.assert_allclose(sw["values"], [-0.2, 0.0, 0.2], atol=1e-7)
    assert b.record["scale"][0] == pytest.approx(0.2, rel=1e-6)
    assert b.record["translate"][0] == pytest.approx(-0.2, rel=1e-6)
    assert np.isfinite(b.kernels).all() and np.isfinite(b.activations).all()
    # Defects are found only in the measured (bottom) 30 rows.
    assert len(b.defects.positions) and (b.defects.positions[:, 0] >= 18 - 8).all()
    # The quick look and, for a cube, the spectra against bias in volts.
    assert (out / "g.sasd" / "quicklook.png").stat().st_size > 1000
    head = (out / "g.sasd" / "spectra.csv").read_text().splitlines()[0]
    assert head.startswith("Bias (V),away,motif 1 at copies")
    # Opened in napari, the layers say volts and nm, as the grid's own layer.
    from napari_sasd.reader import read_bundle_layers

    units = [kw.get("units") for _, kw, _ in read_bundle_layers(out / "g.sasd")]
    assert units[0] == ("V", "nm", "nm") and units[-1] == ("nm", "nm")


def _running_in_group(pgid: int) -> list[int]:
    from pathlib import Path

    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                st = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(st[2]) == pgid and st[0] != "Z":
                out.append(int(d.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    ("jobs", "when", "presses"),
    [(2, "starting", 2), (2, "solving", 1), (2, "solving", 2), (1, "solving", 2)],
)
def test_ctrl_c_with_jobs_stops_every_process_in_one_line(tmp_path, jobs, when, presses):
    # Issue 17: Ctrl-C with --jobs 2 could hang, left the workers running,
    # and a second Ctrl-C printed the workers' tracebacks.
    import os
    import signal
    import time

    from napari_sasd.sample_data import topograph_data

    src = tmp_path / "in"
    src.mkdir()
    img = np.tile(topograph_data().image.astype(np.float32), (2, 2))
    for i in range(4):
        tifffile.imwrite(src / f"big{i}.tif", np.roll(img, 31 * i, axis=1))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_sasd", "solve", str(src), "-k", "12", "-n", "2",
           "--jobs", str(jobs), "--progress", "never", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    p = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        # "starting": as soon as the first worker exists (it is still
        # importing); "solving": both started, and a little more.
        want = 1 if jobs == 1 else 2 if when == "starting" else 3
        deadline = time.monotonic() + 60
        while len(_running_in_group(p.pid)) < want and time.monotonic() < deadline:
            time.sleep(0.02)
        if when == "solving":
            time.sleep(1.0 + 2.0 * (jobs == 1))  # the lone run imports first
        # As the terminal does: SIGINT to the whole process group.
        for _ in range(presses):
            os.killpg(p.pid, signal.SIGINT)
            time.sleep(0.1)
        _, err = p.communicate(timeout=120)  # a hang guard, not a timing assertion
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    assert err == "interrupted\n"
    for _ in range(100):  # the workers are gone (a zombie or two may linger briefly)
        if not _running_in_group(p.pid):
            break
        time.sleep(0.1)
    assert not _running_in_group(p.pid)
    # No half-written bundle, no temporary folder left behind.
    left = sorted(q.name for q in out.iterdir()) if out.exists() else []
    assert all(n.endswith(".sasd") and not n.startswith(".") for n in left), left
    for name in left:
        load_bundle(out / name)


def test_the_recorded_flatten_mode_given_back_reproduces_the_run(tmp_path, capsys):
    # A scan whose lines all share a shape (the scan-start band): the default
    # removes it, and records "both"; --flatten both must do the same.
    data = make_synthetic((96, 96), 8, 2, noise=0.05, seed=4)
    cols = np.arange(96)
    img = data.image + 0.6 * np.exp(-cols / 6.0)[None, :]
    path = tmp_path / "band.tif"
    tifffile.imwrite(path, img.astype(np.float32))
    runs = {}
    for name, extra in (("auto", []), ("both", ["--flatten", "both"])):
        out = tmp_path / name
        assert main(["solve", str(path), *FAST, *extra, "--out", str(out)]) == 0
        runs[name] = load_bundle(out / "band.sasd")
    capsys.readouterr()
    assert runs["auto"].record["flatten"] == runs["both"].record["flatten"] == "both"
    np.testing.assert_allclose(runs["both"].kernels, runs["auto"].kernels, atol=1e-6)
    np.testing.assert_array_equal(runs["both"].defects.positions, runs["auto"].defects.positions)
