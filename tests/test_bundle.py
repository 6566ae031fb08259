"""Result bundle save/load round trip (no solver needed: result built from the truth)."""

import csv
import json

import numpy as np
import pytest

import napari_sasd
from napari_sasd.bundle import CSV_COLUMNS, BundleError, load_bundle, save_bundle
from napari_sasd.peaks import Defects, find_defects
from napari_sasd.result import SolveResult
from napari_sasd.synthetic import make_synthetic


def truth_result(n_channels=None, seed=1) -> SolveResult:
    """A SolveResult made from synthetic ground truth, as the solver would return it."""
    d = make_synthetic((64, 80), 8, 2, n_channels=n_channels, noise=0.01, seed=seed)
    acts = d.activations.astype(np.float32)
    rec = np.zeros_like(d.image)  # stands in for the reconstruction: not stored in bundles
    return SolveResult(
        kernels=d.kernels,
        activations=acts,
        bias=d.bias,
        lam=0.1,
        reconstruction=rec,
        objective=1.5,
        n_iter=42,
        converged=True,
        explained=np.array([0.6, 0.3]),
        params={"kernel_size": [8, 8], "n_motifs": 2, "lam": None, "seed": 7, "positive": True},
    )


def test_round_trip_identical(tmp_path):
    res = truth_result()
    defects = find_defects(res.activations)
    assert len(defects) > 3
    out = save_bundle(
        tmp_path / "run",
        res,
        defects=defects,
        source="Z (fwd)",
        source_path="/data/scan.sxm",
        region=(10, 20, 74, 100),
        scale=(0.5, 0.25),
        translate=(100.0, -3.0),
        colors=["#ff0000", "#00ff00"],
        threshold=0.2,
        extra={"flatten": "both"},
    )
    assert out == tmp_path / "run.sasd" and out.is_dir()
    assert sorted(p.name for p in out.iterdir()) == [
        "activations.tif",
        "defects.csv",
        "motifs.tif",
        "record.json",
    ]
    b = load_bundle(out)
    assert b.kernels.dtype == res.kernels.dtype
    np.testing.assert_array_equal(b.kernels, res.kernels)
    assert b.activations.dtype == np.float32
    np.testing.assert_array_equal(b.activations, res.activations)
    np.testing.assert_array_equal(b.defects.positions, defects.positions)
    np.testing.assert_array_equal(b.defects.motif, defects.motif)
    np.testing.assert_array_equal(b.defects.amplitude, defects.amplitude)
    r = b.record
    assert r["params"] == res.params
    assert r["lam"] == 0.1 and r["seed"] == 7
    assert r["region"] == [10, 20, 74, 100]
    assert r["source"] == "Z (fwd)" and r["source_path"] == "/data/scan.sxm"
    assert r["version"] == napari_sasd.__version__
    assert r["scale"] == [0.5, 0.25] and r["translate"] == [100.0, -3.0]
    assert r["explained"] == [0.6, 0.3] and r["bias"] == res.bias
    assert r["colors"] == ["#ff0000", "#00ff00"] and r["threshold"] == 0.2
    assert r["flatten"] == "both" and r["n_iter"] == 42 and r["converged"] is True
    # the record is plain JSON (no pickles anywhere)
    assert json.loads((out / "record.json").read_text()) == r
    back = b.to_result()
    assert back.lam == res.lam and back.params == res.params
    np.testing.assert_array_equal(back.explained, res.explained)


def test_csv_columns_and_world_coordinates(tmp_path):
    res = truth_result()
    defects = Defects(np.array([[1.0, 2.0], [30.5, 40.0]]), np.array([0, 1]), np.array([0.9, 1.1]))
    out = save_bundle(
        tmp_path / "b.sasd",
        res,
        defects=defects,
        region=(10, 20, 74, 100),
        scale=(0.5, 0.25),
        translate=(100.0, -3.0),
    )
    with open(out / "defects.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS == ("motif", "amplitude", "row", "col", "y", "x")
    vals = np.array(rows[1:], float)
    np.testing.assert_array_equal(vals[:, 0], [0, 1])
    np.testing.assert_array_equal(vals[:, 1], [0.9, 1.1])
    # row/col in source pixels (region offset added), y/x in world units
    np.testing.assert_array_equal(vals[:, 2:4], [[11.0, 22.0], [40.5, 60.0]])
    np.testing.assert_allclose(vals[:, 4:6], [[105.5, 2.5], [120.25, 12.0]])


def test_channel_stack_and_defaults(tmp_path):
    res = truth_result(n_channels=3)
    assert res.kernels.ndim == 4
    out = save_bundle(tmp_path / "cube", res)  # defects found with the default threshold
    b = load_bundle(out)
    np.testing.assert_array_equal(b.kernels, res.kernels)
    assert b.record["region"] == [0, 0, 64, 80]
    assert b.record["colors"][:2] == ["#ff4d4d", "#33c3ff"]  # the plugin's palette
    assert len(b.defects) == len(find_defects(res.activations))


def test_empty_defects(tmp_path):
    res = truth_result()
    none = Defects(np.zeros((0, 2)), np.zeros(0, int), np.zeros(0))
    b = load_bundle(save_bundle(tmp_path / "e", res, defects=none))
    assert len(b.defects) == 0 and b.defects.positions.shape == (0, 2)


def test_bad_region_rejected(tmp_path):
    with pytest.raises(ValueError, match="region"):
        save_bundle(tmp_path / "x", truth_result(), region=(0, 0, 10, 10))


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a napari-sasd bundle"):
        load_bundle(tmp_path / "missing.sasd")
    d = tmp_path / "empty.sasd"
    d.mkdir()
    with pytest.raises(BundleError, match=r"empty\.sasd: no record\.json"):
        load_bundle(d)
    (d / "record.json").write_text("{not json")
    with pytest.raises(BundleError) as e:
        load_bundle(d)
    assert "\n" not in str(e.value) and "empty.sasd" in str(e.value)


@pytest.mark.parametrize("name", ["motifs.tif", "activations.tif"])
def test_corrupt_tiff_in_bundle_is_a_one_line_error(tmp_path, caplog, name):
    path = save_bundle(tmp_path / "run", truth_result())
    (path / name).write_bytes(b"II*\x00garbage")  # tifffile reads this as an empty array
    with pytest.raises(BundleError) as e:
        load_bundle(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and name in msg and "\n" not in msg
    assert not [r for r in caplog.records if r.name == "tifffile"]


# --- issue 17: atomic writes, consistent and hardened reading ------------------------


def _other_result():
    """A run with other motifs (3 of 5 px) on other maps (32 x 48)."""
    rng = np.random.default_rng(3)
    acts = np.zeros((3, 32, 48), np.float32)
    acts[:, rng.integers(0, 32, 50), rng.integers(0, 48, 50)] = 1.0
    return SolveResult(
        kernels=rng.standard_normal((3, 5, 5)), activations=acts, bias=0.0, lam=0.2,
        reconstruction=np.zeros((32, 48)), objective=1.0, n_iter=3, converged=True,
        explained=np.ones(3), params={"seed": 1},
    )  # fmt: skip


def test_an_interrupted_rewrite_leaves_the_old_bundle_whole(tmp_path, monkeypatch):
    # Issue 17: Ctrl-C while a re-run overwrote a bundle left new motifs, a
    # truncated defects.csv and the old record, which opened without a word.
    path = save_bundle(tmp_path / "run", truth_result())
    before = {f: (path / f).read_bytes() for f in ("motifs.tif", "defects.csv", "record.json")}

    real = csv.writer

    class Interrupted:
        def __init__(self, f):
            self.w, self.n = real(f), 0

        def writerow(self, row):
            self.n += 1
            if self.n > 5:
                raise KeyboardInterrupt
            self.w.writerow(row)

    monkeypatch.setattr(csv, "writer", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_bundle(path, _other_result())
    monkeypatch.setattr(csv, "writer", real)
    assert {f: (path / f).read_bytes() for f in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sasd"]  # no temporary left
    assert load_bundle(path).kernels.shape == (2, 8, 8)

    # Completed, the new bundle replaces the old one whole.
    save_bundle(path, _other_result())
    b = load_bundle(path)
    assert b.kernels.shape == (3, 5, 5) and b.record["n_motifs"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sasd"]


def test_extra_files_arrive_with_the_bundle_and_are_replaced_with_it(tmp_path):
    def pictures(folder):
        assert folder.name != "run.sasd"  # written in the temporary folder
        (folder / "quicklook.png").write_bytes(b"png")

    path = save_bundle(tmp_path / "run", truth_result(), extra_files=pictures)
    assert (path / "quicklook.png").read_bytes() == b"png"
    path = save_bundle(tmp_path / "run", _other_result())  # replaced whole
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["motifs.tif", "activations.tif", "defects.csv", "record.json"]
    )


def test_a_target_that_is_not_a_bundle_is_not_replaced(tmp_path):
    notes = tmp_path / "keep.sasd"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match=r"keep\.sasd: exists and holds files .*notes\.txt"):
        save_bundle(notes, truth_result())
    assert (notes / "notes.txt").read_text() == "mine" and len(list(notes.iterdir())) == 1
    (tmp_path / "file.sasd").write_text("x")
    with pytest.raises(BundleError, match="is not a bundle folder"):
        save_bundle(tmp_path / "file", truth_result())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.sasd", "keep.sasd"]


def _mixed(tmp_path, name):
    # The files of one run with the record.json of another.
    a = save_bundle(tmp_path / "a", truth_result())
    b = save_bundle(tmp_path / "b", _other_result())
    (b / name).write_bytes((a / name).read_bytes())
    return b


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("record.json", "record.json says 2 motifs but motifs.tif holds 3"),
        ("defects.csv", r"line \d+: motif 2|outside the analysed region"),
        ("motifs.tif", "motifs.tif has 2 motifs but activations.tif 3 maps"),
    ],
)
def test_a_bundle_mixed_from_two_runs_is_refused_naming_it(tmp_path, name, match):
    path = _mixed(tmp_path, name)
    with pytest.raises(BundleError, match=match) as e:
        load_bundle(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_record_disagreeing_with_the_maps_is_refused(tmp_path):
    path = save_bundle(tmp_path / "r", truth_result())
    rec = json.loads((path / "record.json").read_text())
    for key, value, match in [
        ("kernel_size", [9, 9], r"motifs of \[9, 9\] but motifs.tif holds \[8, 8\]"),
        ("region", [0, 0, 64, 81], "region .* does not match the 64x80 activation maps"),
        ("colors", ["#ff0000"], "1 colours for 2 motifs"),
    ]:
        (path / "record.json").write_text(json.dumps({**rec, key: value}))
        with pytest.raises(BundleError, match=match):
            load_bundle(path)


def _edited(tmp_path, name, csv_text=None, **record):
    path = save_bundle(tmp_path / name, truth_result())
    if csv_text is not None:
        raw = csv_text if isinstance(csv_text, bytes) else csv_text.encode("utf-8")
        (path / "defects.csv").write_bytes(raw)
    if record:
        rec = json.loads((path / "record.json").read_text())
        (path / "record.json").write_text(json.dumps({**rec, **record}))
    return path


def test_a_spreadsheets_byte_order_mark_and_removed_rows_are_fine(tmp_path):
    path = save_bundle(tmp_path / "s", truth_result())
    lines = (path / "defects.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    # Saved back by a spreadsheet: a BOM, CRLF, and two false positives deleted.
    text = "\ufeff" + "".join(lines[:-2]).replace("\n", "\r\n")
    (path / "defects.csv").write_bytes(text.encode("utf-8"))
    b = load_bundle(path)
    assert len(b.defects) == len(lines) - 3
    rec = (path / "record.json").read_text(encoding="utf-8")
    (path / "record.json").write_bytes(("\ufeff" + rec).encode("utf-8"))
    assert load_bundle(path).record["n_motifs"] == 2


@pytest.mark.parametrize(
    ("csv_text", "match"),
    [
        ("motif,amplitude,row,col,y,x\n1000000000,1,5,5,5,5\n", "line 2: motif 1000000000 is not"),
        ("motif,amplitude,row,col,y,x\n-1,1,5,5,5,5\n", "line 2: motif -1 is not one"),
        ("motif,amplitude,row,col,y,x\n0,x,5,5,5,5\n", "line 2 malformed"),
        ("motif,amplitude,row,col,y,x\n0,1\n", "line 2 malformed"),
        ("motif,amplitude,row,col,y,x\n0,nan,5,5,5,5\n", "line 2: a value is not finite"),
        ("amplitude,row,col\n1,5,5\n", "no 'motif' column"),
        (bytes(range(256)) * 4, "defects.csv unreadable"),
    ],
)
def test_malformed_defects_are_refused_naming_the_bundle(tmp_path, csv_text, match):
    path = _edited(tmp_path, "d", csv_text)
    with pytest.raises(BundleError, match=match) as e:
        load_bundle(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "field",
    [
        {"region": "abc"},
        {"region": [0, 0, 64.5, 80]},
        {"scale": ["a", 1]},
        {"scale": [0, 1]},
        {"translate": [1, 2, 3, 4]},
        {"colors": ["notacolour", "#00ff00"]},
        {"colors": "#ff0000"},
        {"rotate": [[1, 0], [0]]},
        {"affine": "identity"},
        {"params": [1, 2]},
        {"params": {"seed": "x"}},
        {"lam": "big"},
        {"bias": {"a": 1}},
        {"explained": [0.5]},
        {"threshold": "auto"},
        {"n_iter": 1.5},
        {"seed": [1]},
        {"source": 3},
    ],
)
def test_malformed_record_fields_are_refused_naming_the_bundle(tmp_path, field):
    path = _edited(tmp_path, "r", **field)
    key = next(iter(field))
    with pytest.raises(BundleError, match=f"record.json: malformed '{key}'") as e:
        load_bundle(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_only_regular_files_inside_the_bundle_are_opened(tmp_path):
    import os
    import threading

    path = save_bundle(tmp_path / "f", truth_result())
    (path / "defects.csv").unlink()
    os.mkfifo(path / "defects.csv")  # reading it would block forever
    outcome = []

    def load():
        try:
            load_bundle(path)
        except BundleError as exc:
            outcome.append(str(exc))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(60)  # a hang guard, not a timing assertion
    assert outcome and "defects.csv is not a regular file" in outcome[0]

    (path / "defects.csv").unlink()
    secret = tmp_path / "elsewhere.csv"
    secret.write_text("motif,amplitude,row,col,y,x\n")
    (path / "defects.csv").symlink_to(secret)
    with pytest.raises(BundleError, match=r"defects\.csv links outside the bundle folder"):
        load_bundle(path)
    (path / "defects.csv").unlink()
    (path / "motifs.tif").rename(path / "kept.tif")
    (path / "motifs.tif").mkdir()
    with pytest.raises(BundleError, match=r"motifs\.tif is not a regular file"):
        load_bundle(path)


def test_a_tiff_declaring_more_data_than_it_holds_is_refused_before_reading(tmp_path):
    import tifffile

    path = save_bundle(tmp_path / "t", truth_result())
    # The header of activations.tif edited to promise 2 x 60000 x 60000 float32
    # (29 GB) in a file of a few kB: tifffile would allocate it before noticing.
    f = path / "activations.tif"
    data = bytearray(f.read_bytes())
    with tifffile.TiffFile(f) as tif:
        offsets = [tif.pages[0].tags[t].valueoffset for t in ("ImageWidth", "ImageLength")]
    for off in offsets:
        data[off : off + 4] = (60000).to_bytes(4, "little")
    assert len(data) < 10**6
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"activations.tif is corrupt: it declares \d+ bytes"):
        load_bundle(path)
