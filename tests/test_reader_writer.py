"""npe2 reader and bundle writer, and napari's built-in writers for single layers.

Layers are built with ``napari.layers.Layer.create`` (no viewer, no display).
"""

import csv

import numpy as np
import pytest
from test_bundle import truth_result
from test_nanonis import FESE, needs_fese, write_3ds, write_sxm

from napari_sasd.bundle import load_bundle, save_bundle
from napari_sasd.peaks import find_defects
from napari_sasd.reader import get_reader
from napari_sasd.writer import write_bundle

napari = pytest.importorskip("napari")
from napari.layers import Layer  # noqa: E402


def _layers(tuples):
    return [Layer.create(d, m, t) for d, m, t in tuples]


def test_get_reader_claims_only_ours(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    assert get_reader(str(tmp_path / "a.tif")) is None
    assert get_reader(str(tmp_path / "folder")) is None
    assert get_reader([]) is None
    assert get_reader([str(tmp_path / "x.sxm"), str(tmp_path / "a.tif")]) is None
    assert callable(get_reader(str(tmp_path / "x.sxm")))
    assert callable(get_reader(str(tmp_path / "x.3ds")))


@needs_fese
def test_read_real_sxm_layers():
    tuples = get_reader(str(FESE))(str(FESE))
    assert [m["name"] for _, m, _ in tuples][:2] == ["Z (fwd)", "Z (bwd)"]
    assert len(tuples) == 8 and all(t == "image" for _, _, t in tuples)
    layers = _layers(tuples)
    z = layers[0]
    assert z.data.shape == (224, 224)
    np.testing.assert_allclose(z.scale, (20 / 224, 20 / 224))
    assert z.metadata["units"] == "m" and z.metadata["header"]["SCAN_DIR"] == "down"
    assert [ly.visible for ly in layers] == [True] + [False] * 7
    assert str(z.units[0]) in ("nanometer", "nm")


def test_read_generated_sxm_and_3ds(tmp_path):
    f = np.arange(24, dtype=np.float32).reshape(4, 6)
    write_sxm(tmp_path / "s.sxm", {"Z": (f, f), "Current": (f, f)}, direction="up")
    write_3ds(tmp_path / "g.3ds", {"LI Demod 1 X (A)": np.ones((9, 5, 7), np.float32)})
    tuples = get_reader([str(tmp_path / "s.sxm"), str(tmp_path / "g.3ds")])(
        [str(tmp_path / "s.sxm"), str(tmp_path / "g.3ds")]
    )
    names = [m["name"] for _, m, _ in tuples]
    assert names == ["Z (fwd)", "Z (bwd)", "Current (fwd)", "Current (bwd)", "LI Demod 1 X (A)"]
    np.testing.assert_array_equal(tuples[0][0], f)
    cube = _layers(tuples)[-1]
    assert cube.data.shape == (9, 5, 7) and cube.metadata["sweep_signal"] == "Bias (V)"
    # The bias axis is physical: volts, from -0.1 V in steps of 0.2/8 V.
    np.testing.assert_allclose(cube.scale, (0.2 / 8, 20 / 5, 30 / 7), rtol=1e-6)
    np.testing.assert_allclose(cube.translate[0], -0.1, rtol=1e-6)
    assert str(cube.units[0]) == "volt" and cube.axis_labels[0] == "Bias"
    assert cube.metadata["sweep_unit"] == "V" and cube.metadata["sweep_uniform"]
    assert cube.metadata["measured_points"] == [35, 35]


def test_sweep_layer_geometry_non_uniform_and_unknown_unit():
    from napari_sasd.reader import sweep_layer_geometry

    g = sweep_layer_geometry([0.0, 0.1, 0.3, 0.7], "Bias", "V")
    assert (g["scale"], g["translate"], g["unit"], g["uniform"]) == (1.0, 0.0, "pixel", False)
    assert g["label"] == "Bias (index)"
    g = sweep_layer_geometry([0.0, 1.0, 2.0], "Signal", "a.u.")
    assert g["unit"] == "pixel" and g["label"] == "Signal (a.u.)" and g["scale"] == 1.0


def test_corrupt_file_gives_one_line_error(tmp_path):
    p = tmp_path / "bad.sxm"
    p.write_bytes(b":NANONIS_VERSION:\n2\n")
    reader = get_reader(str(p))
    with pytest.raises(ValueError) as e:
        reader(str(p))
    assert str(e.value).startswith(f"{p}: ") and "\n" not in str(e.value)


def _saved_bundle(tmp_path, **kw):
    res = truth_result()
    defects = find_defects(res.activations)
    path = save_bundle(
        tmp_path / "run",
        res,
        defects=defects,
        source="Z (fwd)",
        source_path="/data/scan.sxm",
        region=(10, 20, 74, 100),
        scale=(0.5, 0.25),
        translate=(100.0, -3.0),
        threshold=0.2,
        **kw,
    )
    return res, defects, path


def test_bundle_reads_as_the_widgets_layers(tmp_path):
    from napari_sasd.layers import result_layer_data

    res, defects, path = _saved_bundle(tmp_path)
    tuples = get_reader(str(path))(str(path))
    expect = result_layer_data(
        res, defects, source="Z (fwd)", region=(10, 20, 74, 100), scale=(0.5, 0.25),
        translate=(100.0, -3.0),
    )  # fmt: skip
    assert [(m["name"], t) for _, m, t in tuples] == [(m["name"], t) for _, m, t in expect]
    layers = _layers(tuples)
    acts = [ly for ly in layers if ly.metadata["napari_sasd"]["role"] == "activation"]
    assert len(acts) == 2 and all(ly.blending == "additive" for ly in acts)
    assert acts[0].colormap.colors[-1].tolist() != acts[1].colormap.colors[-1].tolist()
    for ly in acts:
        np.testing.assert_allclose(ly.scale, (0.5, 0.25))
        np.testing.assert_allclose(ly.translate, (100 + 0.5 * 10, -3 + 0.25 * 20))
    pts = layers[-1]
    assert pts.name == "Z (fwd) defects" and len(pts.data) == len(defects)
    np.testing.assert_array_equal(pts.features["motif"], defects.motif)
    np.testing.assert_array_equal(pts.features["amplitude"], defects.amplitude)
    np.testing.assert_array_equal(pts.data, defects.positions)
    meta = pts.metadata["napari_sasd"]
    assert meta["params"] == res.params and meta["region"] == [10, 20, 74, 100]


def test_custom_colours_come_back(tmp_path):
    _, _, path = _saved_bundle(tmp_path, colors=["#ff0000", "#0000ff"])
    layers = _layers(get_reader(str(path))(str(path)))
    acts = [ly for ly in layers if ly.metadata["napari_sasd"]["role"] == "activation"]
    np.testing.assert_allclose(acts[0].colormap.colors[-1], [1, 0, 0, 1])
    np.testing.assert_allclose(acts[1].colormap.colors[-1], [0, 0, 1, 1])
    m = layers[-1].features["motif"].to_numpy()
    np.testing.assert_allclose(layers[-1].face_color[m == 1], [[0, 0, 1, 1]] * (m == 1).sum())


def test_write_bundle_from_layers_round_trip(tmp_path):
    _, _, path = _saved_bundle(tmp_path, colors=["#ff0000", "#0000ff"])
    layers = _layers(get_reader(str(path))(str(path)))
    # what napari hands an npe2 writer: the layers' data tuples
    written = write_bundle(str(tmp_path / "again"), [ly.as_layer_data_tuple() for ly in layers])
    assert written == [str(tmp_path / "again.sasd")]
    a, b = load_bundle(path), load_bundle(written[0])
    np.testing.assert_allclose(b.kernels, a.kernels, rtol=1e-6)  # layers hold float32
    np.testing.assert_array_equal(b.activations, a.activations)
    np.testing.assert_array_equal(b.defects.positions, a.defects.positions)
    np.testing.assert_array_equal(b.defects.motif, a.defects.motif)
    np.testing.assert_array_equal(b.defects.amplitude, a.defects.amplitude)
    for k in ("params", "lam", "seed", "region", "source", "source_path", "scale", "translate",
              "bias", "explained", "colors", "threshold", "version"):  # fmt: skip
        assert b.record[k] == a.record[k], k
    assert (tmp_path / "again.sasd" / "defects.csv").read_text() == (
        path / "defects.csv"
    ).read_text()
    # Every bundle holds a quick look, this one too (issue 16).
    assert (tmp_path / "again.sasd" / "quicklook.png").stat().st_size > 1000


def test_write_bundle_from_widget_layers_without_record_geometry(tmp_path):
    """Layers straight from the widget carry no source scale: derived from geometry."""
    from napari_sasd.layers import result_layer_data

    res = truth_result()
    defects = find_defects(res.activations)
    tuples = result_layer_data(
        res, defects, source="img", region=(4, 6, 68, 86), scale=(2.0, 3.0), translate=(1.0, 1.0)
    )
    out = write_bundle(
        str(tmp_path / "w.sasd"), [ly.as_layer_data_tuple() for ly in _layers(tuples)]
    )
    b = load_bundle(out[0])
    assert b.record["scale"] == [2.0, 3.0] and b.record["translate"] == [1.0, 1.0]
    assert b.record["region"] == [4, 6, 68, 86] and b.record["source"] == "img"
    with open(tmp_path / "w.sasd" / "defects.csv", newline="") as f:
        row = next(csv.DictReader(f))
    r, c = float(row["row"]), float(row["col"])
    assert float(row["y"]) == pytest.approx(1 + 2 * r) and float(row["x"]) == pytest.approx(
        1 + 3 * c
    )


def test_write_bundle_of_a_cube_keeps_the_channel_axis_geometry(tmp_path):
    """A spectroscopy cube's channel axis scale and translate survive a save
    from layers and a reopen (the motif layers carry them)."""
    from napari_sasd.layers import result_layer_data

    res = truth_result(n_channels=3)
    assert res.kernels.ndim == 4
    tuples = result_layer_data(
        res, find_defects(res.activations), source="cube", region=(4, 6, 68, 86),
        scale=(0.5, 2.0, 3.0), translate=(7.0, 1.0, 1.0),
    )  # fmt: skip
    data = [ly.as_layer_data_tuple() for ly in _layers(tuples)]
    out = write_bundle(str(tmp_path / "c.sasd"), data)
    b = load_bundle(out[0])
    assert b.record["scale"] == [0.5, 2.0, 3.0] and b.record["translate"] == [7.0, 1.0, 1.0]
    motif = _layers(get_reader(out[0])(out[0]))[0]
    np.testing.assert_allclose(motif.scale, (0.5, 2.0, 3.0))


def test_bundle_of_a_rotated_source_keeps_its_placement(tmp_path):
    """Layers of a rotated, sheared source -> bundle -> CSV world coordinates
    and reopened layers that still sit on the source's pixels."""
    from napari.layers import Image

    from napari_sasd.layers import plane_transform, result_layer_data

    src = Image(
        np.zeros((80, 100)), scale=(2.0, 3.0), translate=(1.0, 1.0), rotate=30, shear=[0.1],
        affine=np.array([[1.0, 0.0, 4.0], [0.0, 1.1, -2.0], [0.0, 0.0, 1.0]]),
    )  # fmt: skip
    res = truth_result()
    region = (4, 6, 68, 86)
    tuples = result_layer_data(
        res, find_defects(res.activations), source="img", region=region, scale=src.scale,
        translate=src.translate, plane=plane_transform(src),
    )  # fmt: skip
    data = [ly.as_layer_data_tuple() for ly in _layers(tuples)]
    out = write_bundle(str(tmp_path / "r.sasd"), data)[0]
    with open(tmp_path / "r.sasd" / "defects.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows[:5]:
        world = src.data_to_world((float(row["row"]), float(row["col"])))
        np.testing.assert_allclose([float(row["y"]), float(row["x"])], world, atol=1e-6)
    act = next(ly for ly in _layers(get_reader(out)(out)) if ly.name == "img activation 1")
    np.testing.assert_allclose(act.data_to_world((3, 5)), src.data_to_world((4 + 3, 6 + 5)))


def test_write_bundle_refuses_other_layers(tmp_path):
    with pytest.raises(ValueError, match="select the result layers") as e:
        write_bundle(str(tmp_path / "x"), [(np.zeros((4, 4)), {"name": "img"}, "image")])
    assert "\n" not in str(e.value)


def test_napari_builtin_writers_cover_single_layers(tmp_path):
    """napari's own writers save a motif stack as TIFF and the defects as CSV with
    'motif' and 'amplitude' columns: no extra writer needed for those."""
    import tifffile
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    res = truth_result()
    d = find_defects(res.activations)
    pts = Layer.create(d.positions, {"features": {"motif": d.motif, "amplitude": d.amplitude}},
                       "points")  # fmt: skip
    assert pts.save(str(tmp_path / "p.csv"), plugin="napari") == [str(tmp_path / "p.csv")]
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"motif", "amplitude"} <= set(rows[0])
    np.testing.assert_array_equal([int(float(r["motif"])) for r in rows], d.motif)
    img = Layer.create(np.asarray(res.kernels, np.float32), {"name": "motifs"}, "image")
    img.save(str(tmp_path / "k.tif"), plugin="napari")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "k.tif"), res.kernels.astype("f4"))


def test_write_bundle_refuses_layers_of_two_runs(tmp_path):
    """With 'Keep previous results' two runs share a source: never mix them in one bundle."""
    from napari_sasd.layers import result_layer_data

    tuples = []
    for run_id, seed in (("first", 1), ("second", 2)):
        res = truth_result(seed=seed)
        tuples += result_layer_data(
            res, find_defects(res.activations), source="img", region=(0, 0, 64, 80), run_id=run_id
        )
    layers = [ly.as_layer_data_tuple() for ly in _layers(tuples)]
    with pytest.raises(ValueError, match="2 different runs") as e:
        write_bundle(str(tmp_path / "mixed"), layers)
    assert "\n" not in str(e.value) and not (tmp_path / "mixed.sasd").exists()
    # One run's layers alone are fine.
    assert write_bundle(str(tmp_path / "one"), layers[: len(layers) // 2])


@pytest.mark.parametrize("csv_text", [None, "", "motif,amplitude,row,col,y,x\n"])
def test_bundle_without_defects_opens_as_an_empty_points_layer(tmp_path, csv_text):
    # No copy found (e.g. a large lambda), or a defects.csv emptied or cut to
    # its header by hand: still a result, shown as an empty points layer.
    from napari_sasd.peaks import Defects

    res = truth_result()
    none = Defects(np.zeros((0, 2)), np.zeros(0, int), np.zeros(0))
    path = save_bundle(tmp_path / "zero", res, defects=none)
    if csv_text is not None:
        (path / "defects.csv").write_text(csv_text, encoding="utf-8")
    layers = _layers(get_reader(str(path))(str(path)))
    pts = layers[-1]
    assert pts.metadata["napari_sasd"]["role"] == "defects" and len(pts.data) == 0
    assert list(pts.features.columns) == ["motif", "amplitude"]
    # And written back from those layers: a bundle with no defects again.
    out = write_bundle(str(tmp_path / "again"), [ly.as_layer_data_tuple() for ly in layers])
    assert len(load_bundle(out[0]).defects) == 0
