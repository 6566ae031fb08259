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
