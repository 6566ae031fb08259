"""Nanonis .sxm/.3ds parsing: the real FeSe scan (skipped when absent) and
small files generated here (a .3ds grid, 'up'/'down' .sxm, corrupt files)."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_sasd.nanonis import NanonisError, read_3ds, read_sxm

FESE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "fese_stmpy" / "FeSe_topography.sxm"
)
needs_fese = pytest.mark.skipif(not FESE.exists(), reason="shared FeSe data not present")


# ---------------------------------------------------------------- generators
def write_sxm(path, frames: dict, direction="down", nx=6, ny=4, both=True, rng=(2e-8, 1e-8)):
    """Write a minimal .sxm. ``frames`` maps channel -> (fwd, bwd) images *as
    they should be displayed* (row 0 at the top); they are stored in recording
    order (bottom-up for 'up', backward frames right-to-left)."""
    rows = ["\tChannel\tName\tUnit\tDirection\tCalibration\tOffset"]
    blobs = []
    for i, (name, (fwd, bwd)) in enumerate(frames.items()):
        rows.append(f"\t{i}\t{name}\tm\t{'both' if both else 'forward'}\t1.0E+0\t0.0E+0")
        for k, img in enumerate((fwd, bwd) if both else (fwd,)):
            stored = img[::-1] if direction == "up" else img
            stored = stored[:, ::-1] if k == 1 else stored
            blobs.append(np.asarray(stored, ">f4").tobytes())
    header = (
        ":NANONIS_VERSION:\n2\n:SCANIT_TYPE:\n              FLOAT            MSBFIRST\n"
        f":SCAN_PIXELS:\n       {nx}       {ny}\n:SCAN_RANGE:\n  {rng[0]:E} {rng[1]:E}\n"
        ":SCAN_OFFSET:\n 0.0E+0 0.0E+0\n:SCAN_ANGLE:\n 0.0E+0\n"
        f":SCAN_DIR:\n{direction}\n:DATA_INFO:\n" + "\n".join(rows) + "\n\n:SCANIT_END:\n\n\n"
    )
    Path(path).write_bytes(header.encode("latin-1") + b"\x1a\x04" + b"".join(blobs))


def write_3ds(path, cube: dict, sweep=(-0.1, 0.1), size_nm=(30.0, 20.0), bottom_up=True):
    """Write a valid .3ds grid. ``cube`` maps channel -> (points, ny, nx) data
    as displayed (row 0 at the top); stored bottom-up (Nanonis' order) with
    per-pixel X/Y tip positions that say so."""
    names = list(cube)
    n_pts, ny, nx = next(iter(cube.values())).shape
    fixed = ["Sweep Start", "Sweep End"]
    exp = ["X (m)", "Y (m)", "Z (m)"]
    w, h = size_nm
    header = "\r\n".join(
        [
            f'Grid dim="{nx} x {ny}"',
            f"Grid settings=0.0E+0;0.0E+0;{w * 1e-9:E};{h * 1e-9:E};0.0E+0",
            'Sweep Signal="Bias (V)"',
            f'Fixed parameters="{";".join(fixed)}"',
            f'Experiment parameters="{";".join(exp)}"',
            f"# Parameters (4 byte)={len(fixed) + len(exp)}",
            f"Experiment size (bytes)={4 * n_pts * len(names)}",
            f"Points={n_pts}",
            f'Channels="{";".join(names)}"',
            "Delay before measuring (s)=0E+0",
            'Experiment="Grid Spectroscopy"',
            ":HEADER_END:",
            "",
        ]
    )
    recs = []
    order = range(ny - 1, -1, -1) if bottom_up else range(ny)  # display rows, in storage order
    for r in order:
        for c in range(nx):
            x = (c + 0.5) * w / nx * 1e-9
            y = (ny - r - 0.5) * h / ny * 1e-9  # row 0 is the top: largest y
            vals = [sweep[0], sweep[1], x, y, 1e-9]
            for nme in names:
                vals.extend(cube[nme][:, r, c])
            recs.append(np.asarray(vals, ">f4"))
    Path(path).write_bytes(header.encode("latin-1") + np.concatenate(recs).astype(">f4").tobytes())


# ------------------------------------------------------------------ real file
@needs_fese
def test_fese_sxm_shape_scale_channels():
    s = read_sxm(FESE)
    assert list(s.images) == [
        "Z (fwd)",
        "Z (bwd)",
        "Current (fwd)",
        "Current (bwd)",
        "LIY 1 omega (fwd)",
        "LIY 1 omega (bwd)",
        "LIY n omega (fwd)",
        "LIY n omega (bwd)",
    ]
    for img in s.images.values():
        assert img.shape == (224, 224) and img.dtype == np.float32
        assert np.isfinite(img).all()
    assert s.units["Z (fwd)"] == "m" and s.units["Current (bwd)"] == "A"
    np.testing.assert_allclose(s.pixel_size, (20 / 224, 20 / 224))
    assert s.scan_range == pytest.approx((20.0, 20.0))
    assert s.angle == 45.0 and s.direction == "down"
    assert s.header["SCAN_PIXELS"].split() == ["224", "224"]
    assert "Z-CONTROLLER" in s.header


def _corr(a, b):
    from napari_sasd.flatten import flatten

    a, b = flatten(a), flatten(b)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@needs_fese
def test_fese_orientation():
    """A 'down' scan is stored top-down: forward frames come back as stored;
    backward frames are un-mirrored so they match the forward ones."""
    s = read_sxm(FESE)
    raw = np.frombuffer(FESE.read_bytes()[-8 * 224 * 224 * 4 :], ">f4").reshape(8, 224, 224)
    np.testing.assert_array_equal(s.images["Z (fwd)"], raw[0])  # no vertical flip for 'down'
    np.testing.assert_array_equal(s.images["Z (bwd)"], raw[1][:, ::-1])
    for ch in ("Z", "LIY 1 omega"):
        f, b = s.images[f"{ch} (fwd)"], s.images[f"{ch} (bwd)"]
        assert _corr(f, b) > 0.45  # matches once mirrored back...
        assert abs(_corr(f, b[:, ::-1])) < 0.25  # ...and not as stored


@needs_fese
def test_fese_agrees_with_nanonispy2_up_to_orientation():
    nr = pytest.importorskip("nanonispy2.read")
    scan = nr.Scan(str(FESE))
    s = read_sxm(FESE)
    np.testing.assert_array_equal(s.images["Z (fwd)"], scan.signals["Z"]["forward"])
    np.testing.assert_array_equal(s.images["Z (bwd)"], scan.signals["Z"]["backward"][:, ::-1])


# ------------------------------------------------------------ generated .sxm
@pytest.mark.parametrize("direction", ["up", "down"])
def test_sxm_orientation_generated(tmp_path, direction):
    ny, nx = 4, 6
    f = np.arange(ny * nx, dtype=np.float32).reshape(ny, nx)  # distinct, asymmetric
    frames = {"Z": (f, f + 100), "Current": (-f, -f - 100)}
    p = tmp_path / "s.sxm"
    write_sxm(p, frames, direction=direction, nx=nx, ny=ny)
    s = read_sxm(p)
    np.testing.assert_array_equal(s.images["Z (fwd)"], f)
    np.testing.assert_array_equal(s.images["Z (bwd)"], f + 100)
    np.testing.assert_array_equal(s.images["Current (bwd)"], -f - 100)
    assert s.pixel_size == pytest.approx((10 / ny, 20 / nx))


def test_sxm_forward_only_channels(tmp_path):
    f = np.ones((4, 6), np.float32)
    p = tmp_path / "fwd.sxm"
    write_sxm(p, {"Z": (f, None)}, both=False)
    assert list(read_sxm(p).images) == ["Z (fwd)"]


# --------------------------------------------------------- corrupt .sxm files
def _one_line(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    assert isinstance(err.value, ValueError)
    return msg


def test_truncated_sxm(tmp_path):
    p = tmp_path / "t.sxm"
    write_sxm(p, {"Z": (np.zeros((4, 6)), np.zeros((4, 6)))})
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(NanonisError) as e:
        read_sxm(p)
    assert "truncated" in _one_line(e, p)


@pytest.mark.parametrize(
    "content, what",
    [
        (b"", "empty file"),
        (b"\x00\x01 binary junk" * 100, "not a Nanonis file"),
        (b":NANONIS_VERSION:\n2\n:SCANIT_END:\n", "no data block"),
        (b":SCAN_PIXELS:\nfoo bar\n:SCANIT_END:\n\n\x1a\x04", "SCAN_PIXELS"),
    ],
)
def test_corrupt_sxm(tmp_path, content, what):
    p = tmp_path / "bad.sxm"
    p.write_bytes(content)
    with pytest.raises(NanonisError) as e:
        read_sxm(p)
    assert what in _one_line(e, p)


def test_missing_file(tmp_path):
    with pytest.raises(NanonisError) as e:
        read_sxm(tmp_path / "nope.sxm")
    _one_line(e, tmp_path / "nope.sxm")


# ------------------------------------------------------------------ .3ds grid
@pytest.mark.parametrize("bottom_up", [True, False])
def test_3ds_round_trip(tmp_path, bottom_up):
    rng = np.random.default_rng(0)
    cube = {
        "Current (A)": rng.normal(size=(11, 5, 7)).astype(np.float32),
        "LI Demod 1 X (A)": rng.normal(size=(11, 5, 7)).astype(np.float32),
    }
    p = tmp_path / "g.3ds"
    write_3ds(p, cube, bottom_up=bottom_up)
    g = read_3ds(p)
    assert list(g.channels) == list(cube)
    for k, v in cube.items():
        assert g.channels[k].shape == (11, 5, 7)  # energy x y x x
        np.testing.assert_array_equal(g.channels[k], v)
    np.testing.assert_allclose(g.sweep, np.linspace(-0.1, 0.1, 11), atol=1e-7)
    assert g.sweep_signal == "Bias (V)"
    assert g.pixel_size == pytest.approx((20 / 5, 30 / 7))
    assert set(g.parameters) == {"Sweep Start", "Sweep End", "X (m)", "Y (m)", "Z (m)"}
    assert g.parameters["Y (m)"][0, 0] > g.parameters["Y (m)"][-1, 0]  # row 0 on top


def _grid_file(tmp_path, ny=4, nx=5, n_pts=6, name="g.3ds"):
    rng = np.random.default_rng(1)
    cube = {
        "Current (A)": rng.normal(size=(n_pts, ny, nx)).astype(np.float32),
        "LIX 1 omega (A)": rng.normal(size=(n_pts, ny, nx)).astype(np.float32),
    }
    p = tmp_path / name
    write_3ds(p, cube)
    good = p.read_bytes()
    head = good.index(b":HEADER_END:") + len(b":HEADER_END:\r\n")
    rec = (5 + 2 * n_pts) * 4  # 5 parameters + 2 channels x n_pts, float32
    return SimpleNamespace(p=p, cube=cube, good=good, head=head, rec=rec)


@pytest.mark.parametrize("n_points, extra", [(1, 0), (7, 0), (7, 13), (12, 4), (19, 45)])
def test_3ds_partial_grid(tmp_path, n_points, extra):
    """A grid stopped early: the file ends after ``n_points`` whole records
    (plus ``extra`` bytes of the next one). Those points come back, in their
    places (Nanonis records bottom-up), NaN elsewhere, with a warning."""
    ny, nx = 4, 5
    f = _grid_file(tmp_path, ny, nx)
    p, cube, good, head, rec = f.p, f.cube, f.good, f.head, f.rec
    p.write_bytes(good[: head + n_points * rec + extra])
    with pytest.warns(UserWarning, match=f"{n_points} of {ny * nx} points measured") as w:
        g = read_3ds(p)
    assert str(p) in str(w[0].message)
    stored = np.zeros(ny * nx, bool)
    stored[:n_points] = True  # storage order: bottom row first, left to right
    expect = stored.reshape(ny, nx)[::-1]
    np.testing.assert_array_equal(g.measured, expect)
    assert g.n_measured == n_points
    for k, v in cube.items():
        got = g.channels[k]
        assert got.shape == v.shape
        np.testing.assert_array_equal(got[:, expect], v[:, expect])
        assert np.isnan(got[:, ~expect]).all()
    assert np.isnan(g.parameters["X (m)"][~expect]).all()
    np.testing.assert_allclose(g.sweep, np.linspace(-0.1, 0.1, 6), atol=1e-7)


def test_3ds_nan_padded_grid(tmp_path):
    """Some Nanonis versions write the unmeasured points as NaN records."""
    f = _grid_file(tmp_path)
    p, good, head = f.p, f.good, f.head
    arr = np.frombuffer(good[head:], ">f4").copy().reshape(20, -1)
    arr[9:, 5:] = np.nan
    p.write_bytes(good[:head] + arr.tobytes())
    with pytest.warns(UserWarning, match="9 of 20 points measured"):
        g = read_3ds(p)
    assert g.n_measured == 9


def test_3ds_complete_grid_no_warning(tmp_path, recwarn):
    f = _grid_file(tmp_path)
    p, good = f.p, f.good
    g = read_3ds(p)
    assert g.measured.all() and g.n_measured == 20
    assert not [w for w in recwarn if "measured" in str(w.message)]
    p.write_bytes(good + b"\0" * 7)  # trailing bytes past the grid are ignored
    assert read_3ds(p).n_measured == 20


def test_3ds_descending_sweep_is_reversed(tmp_path):
    cube = {"I (A)": np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)}
    p = tmp_path / "d.3ds"
    write_3ds(p, cube, sweep=(0.3, -0.3))
    g = read_3ds(p)
    np.testing.assert_allclose(g.sweep, np.linspace(-0.3, 0.3, 4), atol=1e-7)
    np.testing.assert_array_equal(g.channels["I (A)"], cube["I (A)"][::-1])
    assert (g.sweep_label, g.sweep_unit) == ("Bias", "V")


def test_sweep_axis():
    from napari_sasd.nanonis import sweep_axis

    assert sweep_axis(np.linspace(-0.1, 0.1, 11)) == pytest.approx((-0.1, 0.02))
    assert sweep_axis([0.0, 0.1, 0.3]) is None  # non-uniform
    assert sweep_axis([0.2, 0.1, 0.0]) is None  # descending
    assert sweep_axis([1.0]) is None


def test_3ds_cut_at_several_places(tmp_path):
    """Cuts inside the header, right after it, inside the first record: clear
    one-line errors; anywhere later: a partial grid."""
    f = _grid_file(tmp_path)
    p, good, head, rec = f.p, f.good, f.head, f.rec
    tag = good.index(b":HEADER_END:")
    for cut, what in [
        (0, "empty file"),
        (40, "not a Nanonis file"),
        (tag + 5, "not a Nanonis file"),
        (head, "no measured point"),
        (head + rec - 1, "no measured point"),
    ]:
        p.write_bytes(good[:cut])
        with pytest.raises(NanonisError) as e:
            read_3ds(p)
        assert what in _one_line(e, p), cut
    for cut in (head + rec, head + 3 * rec + 2, len(good) - 1):
        p.write_bytes(good[:cut])
        with pytest.warns(UserWarning, match="points measured"):
            assert 0 < read_3ds(p).n_measured < 20


def test_3ds_bad_header(tmp_path):
    f = _grid_file(tmp_path)
    p, good = f.p, f.good
    p.write_bytes(good.replace(b'Grid dim="5 x 4"', b'Grid dim="three"'))
    with pytest.raises(NanonisError) as e:
        read_3ds(p)
    assert "Grid dim" in _one_line(e, p)
    p.write_bytes(b"nothing here")
    with pytest.raises(NanonisError) as e:
        read_3ds(p)
    assert "not a Nanonis file" in _one_line(e, p)
    # An absurd declared grid is refused before anything is allocated.
    p.write_bytes(good.replace(b'Grid dim="5 x 4"', b'Grid dim="99999 x 99999"'))
    with pytest.raises(NanonisError) as e:
        read_3ds(p)
    assert "more than this reader handles" in _one_line(e, p)


# ----------------------------------------- huge files, fuzzing (issue 17)
def _peak_mib(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


@pytest.mark.parametrize("suffix", [".sxm", ".3ds"])
def test_huge_file_of_zeros_is_not_read(tmp_path, suffix):
    """A 3 GB file of zeros (sparse here) fails on its header, reading ~1 MB."""
    p = tmp_path / f"zeros{suffix}"
    with open(p, "wb") as f:
        f.truncate(3 << 30)
    reader = read_sxm if suffix == ".sxm" else read_3ds

    def go():
        with pytest.raises(NanonisError) as e:
            reader(p)
        assert "not a Nanonis file" in _one_line(e, p)

    assert _peak_mib(go) < 16


def test_sxm_header_declaring_more_than_the_file(tmp_path):
    """Declared sizes are checked against the file size before reading data."""
    p = tmp_path / "big.sxm"
    write_sxm(p, {"Z": (np.zeros((4, 6)), np.zeros((4, 6)))})
    raw = p.read_bytes().replace(b"       6       4", b"   60000   60000")
    p.write_bytes(raw)

    def go():
        with pytest.raises(NanonisError) as e:
            read_sxm(p)
        assert "truncated" in _one_line(e, p)

    assert _peak_mib(go) < 16


def test_sxm_reads_only_the_frames_asked_for(tmp_path):
    f = np.arange(24, dtype=np.float32).reshape(4, 6)
    p = tmp_path / "s.sxm"
    write_sxm(p, {"Z": (f, f + 1), "Current": (f + 2, f + 3)})
    s = read_sxm(p, channels=["Current (bwd)"])
    assert list(s.images) == ["Current (bwd)"]
    np.testing.assert_array_equal(s.images["Current (bwd)"], f + 3)
    assert s.frames == ["Z (fwd)", "Z (bwd)", "Current (fwd)", "Current (bwd)"]


def _fuzz(p: Path, good: bytes, reader, rng, n_cuts=25, n_flips=60):
    """Truncations and byte flips of ``good``: every outcome is a result or a
    one-line NanonisError naming the file, with bounded memory."""
    import warnings

    head_end = good.find(b":SCANIT_END:") if p.suffix == ".sxm" else good.find(b":HEADER_END:")
    cuts = sorted(set(rng.integers(0, len(good), n_cuts).tolist()) | {0, 1, head_end})
    variants = [good[:c] for c in cuts]
    for _ in range(n_flips):
        b = bytearray(good)
        # half the flips in the header, where they change what gets parsed
        hi = head_end + 20 if rng.random() < 0.5 else len(good)
        for i in rng.integers(0, hi, rng.integers(1, 4)):
            b[i] = int(rng.integers(0, 256))
        variants.append(bytes(b))
    outcomes = {"ok": 0, "error": 0}
    peak = 0.0
    for v in variants:
        p.write_bytes(v)

        def go():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    reader(p)
                    outcomes["ok"] += 1
                except NanonisError as e:
                    msg = str(e)
                    assert "\n" not in msg and msg.startswith(f"{p}: "), msg
                    outcomes["error"] += 1

        peak = max(peak, _peak_mib(go))
    # Each variant at most a few times the file (the data, NaN padding, copies).
    assert peak < 16 + 6 * len(good) / 2**20, peak
    return outcomes


@needs_fese
def test_fuzz_real_sxm(tmp_path):
    out = _fuzz(tmp_path / "f.sxm", FESE.read_bytes(), read_sxm, np.random.default_rng(7))
    assert out["ok"] and out["error"]  # both kinds of outcome were exercised


def test_fuzz_generated_3ds(tmp_path):
    f = _grid_file(tmp_path, ny=8, nx=9, n_pts=16, name="f.3ds")
    p, good = f.p, f.good
    out = _fuzz(p, good, read_3ds, np.random.default_rng(8))
    assert out["ok"] and out["error"]
