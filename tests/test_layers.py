"""Result -> layer data, metadata and in-place replacement (no Qt needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_sasd import __version__
from napari_sasd.layers import (
    META_KEY,
    PALETTE,
    apply_layer_data,
    motif_color,
    motif_rgba,
    plane_transform,
    region_geometry,
    result_layer_data,
    result_layers,
)
from napari_sasd.peaks import find_defects
from napari_sasd.result import SolveResult


def _result(n=2, h=40, w=50, k=7, channels=None, seed=0):
    rng = np.random.default_rng(seed)
    kshape = (n, k, k) if channels is None else (n, channels, k, k)
    kern = rng.standard_normal(kshape)
    kern /= np.linalg.norm(kern.reshape(n, -1), axis=1).reshape((n,) + (1,) * (kern.ndim - 1))
    acts = np.zeros((n, h, w), np.float32)
    for i in range(n):
        acts[i, rng.integers(0, h, 6), rng.integers(0, w, 6)] = rng.uniform(0.5, 1.5, 6)
    rshape = (h, w) if channels is None else (channels, h, w)
    return SolveResult(
        kernels=kern,
        activations=acts,
        bias=0.0,
        lam=0.3,
        reconstruction=np.zeros(rshape),
        objective=1.0,
        n_iter=10,
        converged=True,
        explained=np.full(n, 0.5),
        params={"kernel_size": [k, k], "n_motifs": n, "seed": 4, "lam": None},
    )


def _tuples(result, **kw):
    d = find_defects(result.activations, 0.1, relative=True)
    args = {"source": "img", "region": (10, 20, 50, 70), "scale": (0.5, 2.0)}
    args["translate"] = (1.0, -3.0)
    args.update(kw)
    return result_layer_data(result, d, **args), d


def test_palette_and_colours():
    assert motif_color(0) == PALETTE[0] and motif_color(len(PALETTE)) == PALETTE[0]
    assert motif_rgba(np.array([0, 1])).shape == (2, 4)


def test_region_geometry_adds_offset_in_world_units():
    s, t = region_geometry((3.0, 0.5, 2.0), (7.0, 1.0, -3.0), (10, 20, 50, 70))
    np.testing.assert_allclose(s, [0.5, 2.0])
    np.testing.assert_allclose(t, [1.0 + 5.0, -3.0 + 40.0])


def test_layer_tuples_roles_geometry_and_metadata():
    res = _result()
    tuples, d = _tuples(res, source_path="/data/scan.sxm", threshold=0.1)
    roles = [kw["metadata"][META_KEY]["role"] for _, kw, _ in tuples]
    assert roles == ["motifs", "motifs", "activation", "activation", "defects"]
    names = [kw["name"] for _, kw, _ in tuples]
    assert names[2] == "img activation 1" and names[-1] == "img defects"
    for data, kw, _kind in tuples:
        meta = kw["metadata"][META_KEY]
        json.dumps(meta)
        for key in ("params", "lam", "region", "source", "source_path", "role", "color"):
            assert key in meta
        assert meta["version"] == __version__ and meta["seed"] == 4
        assert meta["region"] == [10, 20, 50, 70] and meta["source_path"] == "/data/scan.sxm"
        if meta["role"] == "activation":
            assert kw["blending"] == "additive" and data.shape == (40, 50)
            np.testing.assert_allclose(kw["translate"], [6.0, 37.0])
            assert meta["color"] == motif_color(meta["motif"])
    # Motifs right of the region (x1 = 70 px, at 2 world units per px), stacked down.
    m0, m1 = tuples[0][1], tuples[1][1]
    assert m0["translate"][1] > -3.0 + 2.0 * 70
    assert m1["translate"][0] > m0["translate"][0]
    pts, kw, kind = tuples[-1]
    assert kind == "points" and len(pts) == len(d)
    np.testing.assert_array_equal(kw["features"]["motif"], d.motif)
    assert kw["face_color"].shape == (len(d), 4)
    assert kw["metadata"][META_KEY]["counts"] == d.counts(2).tolist()


def test_results_of_a_rotated_sheared_source_line_up_with_it_in_the_world():
    # Every result pixel must land where napari draws the source pixel it
    # came from, through the source's rotation, shear and affine as well.
    from napari.layers import Image, Layer

    src = Image(
        np.zeros((60, 80)), scale=(0.5, 2.0), translate=(1.0, -3.0), rotate=30, shear=[0.2],
        affine=np.array([[1.0, 0.1, 5.0], [0.0, 1.2, -3.0], [0.0, 0.0, 1.0]]),
    )  # fmt: skip
    plane = plane_transform(src)
    assert set(plane) == {"rotate", "shear", "affine"}
    tuples, d = _tuples(_result(k=7), plane=plane, region=(10, 20, 50, 70))
    layers = [Layer.create(*t) for t in tuples]
    act, pts = layers[2], layers[-1]
    for i, j in [(0, 0), (5, 7), (39, 49)]:
        np.testing.assert_allclose(act.data_to_world((i, j)), src.data_to_world((10 + i, 20 + j)))
    assert len(d) > 0
    for p in d.positions:
        np.testing.assert_allclose(pts.data_to_world(p), src.data_to_world(p + np.array([10, 20])))
    # Motif n right of the region: its pixel (0, 0) at source pixel
    # (y0 + n (k + gap), x1 + gap), gap = 3 px.
    for n in (0, 1):
        np.testing.assert_allclose(
            layers[n].data_to_world((0, 0)), src.data_to_world((10 + n * 10, 73))
        )
    # An unrotated source gives nothing to carry over.
    assert plane_transform(Image(np.zeros((5, 5)), scale=(2, 2))) == {}


def test_reconstruction_and_residual_for_a_cube():
    res = _result(channels=3)
    analysed = np.ones((3, 40, 50))
    tuples, _ = _tuples(
        res,
        scale=(9.0, 0.5, 2.0),
        translate=(4.0, 1.0, -3.0),
        analysed=analysed,
        with_reconstruction=True,
    )
    by_role = {kw["metadata"][META_KEY]["role"]: (d, kw) for d, kw, _ in tuples}
    rec, kw = by_role["reconstruction"]
    assert rec.shape == (3, 40, 50)
    np.testing.assert_allclose(kw["scale"], [9.0, 0.5, 2.0])
    np.testing.assert_allclose(kw["translate"], [4.0, 6.0, 37.0])
    np.testing.assert_allclose(by_role["residual"][0], 1.0)
    assert tuples[0][0].shape == (3, 7, 7)  # motif keeps its channel axis


def test_apply_replaces_in_place_and_removes_stale():
    viewer = ViewerModel()
    viewer.add_image(np.zeros((80, 80)), name="img")
    tuples, _ = _tuples(_result(n=2), run_id="a")
    first = apply_layer_data(viewer, tuples)
    assert len(viewer.layers) == 6
    first[2].name = "my activation"  # a user rename survives the update

    tuples2, _ = _tuples(_result(n=2, seed=1), run_id="b")
    second = apply_layer_data(viewer, tuples2, result_layers(viewer, "img", "a"))
    assert all(a is b for a, b in zip(first, second, strict=True))
    assert second[2].name == "my activation"
    assert second[2].metadata[META_KEY]["run_id"] == "b"
    np.testing.assert_array_equal(second[2].data, tuples2[2][0])

    tuples3, _ = _tuples(_result(n=1, seed=2), run_id="c")
    apply_layer_data(viewer, tuples3, result_layers(viewer, "img", "b"))
    assert len(viewer.layers) == 4  # image + motif + activation + defects
    assert len(result_layers(viewer, "img")) == 3

    # Keeping: nothing is replaced, a second set is added.
    apply_layer_data(viewer, _tuples(_result(n=1), run_id="d")[0])
    assert len(result_layers(viewer, "img")) == 6
    assert len(result_layers(viewer, "img", "d")) == 3


def test_apply_that_fails_leaves_the_viewer_as_it_was():
    viewer = ViewerModel()
    viewer.add_image(np.zeros((80, 80)), name="img")
    first = apply_layer_data(viewer, _tuples(_result(n=2), run_id="a")[0])
    before = [(lay.name, lay) for lay in viewer.layers]
    old_data = [np.array(lay.data, copy=True) for lay in first]

    tuples, _ = _tuples(_result(n=3, seed=1), run_id="b")
    data, kwargs, kind = tuples[-1]  # the defects, built after the images
    tuples[-1] = (data, {**kwargs, "not_an_option": 1}, kind)
    with pytest.raises(TypeError):
        apply_layer_data(viewer, tuples, result_layers(viewer, "img", "a"))
    assert [(lay.name, lay) for lay in viewer.layers] == before
    for lay, d in zip(first, old_data, strict=True):
        np.testing.assert_array_equal(lay.data, d)
    assert all(lay.metadata[META_KEY]["run_id"] == "a" for lay in first)


def test_metadata_role_is_checked():
    from napari_sasd.layers import result_metadata

    with pytest.raises(ValueError, match="role"):
        result_metadata("bogus", _result(), region=(0, 0, 1, 1), source="x")


def test_defects_metadata_records_both_thresholds():
    res = _result()
    tuples = result_layer_data(
        res,
        find_defects(res.activations, 0.3, relative=True),
        source="img",
        region=(0, 0, 40, 50),
        threshold=0.3 * float(res.activations.max()),
        threshold_relative=0.3,
    )
    meta = next(kw["metadata"]["napari_sasd"] for _, kw, t in tuples if t == "points")
    assert meta["threshold_relative"] == 0.3
    assert meta["threshold"] == pytest.approx(0.3 * float(res.activations.max()))


def _no_defects():
    from napari_sasd.peaks import Defects

    return Defects(np.zeros((0, 2)), np.zeros(0, int), np.zeros(0))


def test_zero_defects_make_an_empty_points_layer_with_its_columns():
    # A result with no copy (a large lambda) is a result: an empty points
    # layer whose features still have the motif and amplitude columns.
    viewer = ViewerModel()
    viewer.add_image(np.zeros((80, 80)), name="img")
    res = _result(n=2)
    tuples = result_layer_data(res, _no_defects(), source="img", region=(0, 0, 40, 50))
    shown = apply_layer_data(viewer, tuples)
    pts = shown[-1]
    assert pts.name == "img defects" and len(pts.data) == 0
    assert list(pts.features.columns) == ["motif", "amplitude"]
    assert pts.metadata[META_KEY]["counts"] == [0, 0]

    # A re-run that finds copies updates the same layer, and back to none.
    tuples2, d = _tuples(res, run_id="b", region=(0, 0, 40, 50))
    again = apply_layer_data(viewer, tuples2, result_layers(viewer, "img"))
    assert again[-1] is pts and len(pts.data) == len(d) > 0
    np.testing.assert_allclose(pts.face_color, motif_rgba(pts.features["motif"].to_numpy()))
    tuples3 = result_layer_data(res, _no_defects(), source="img", region=(0, 0, 40, 50))
    last = apply_layer_data(viewer, tuples3, result_layers(viewer, "img"))
    assert last[-1] is pts and len(pts.data) == 0 and len(pts.features) == 0
    assert list(pts.features.columns) == ["motif", "amplitude"]
