"""The dock's known motifs (issue 15): learn on one scan, locate in the others;
motifs from a library or a bundle. A real viewer and the real worker thread."""

from __future__ import annotations

import numpy as np
from scipy import signal

from napari_sasd.bundle import save_bundle
from napari_sasd.layers import META_KEY
from napari_sasd.synthetic import make_synthetic

K = 10


def _scan(kinds, seed, shape=(128, 128)):
    d = make_synthetic(shape, K, len(kinds), noise=0.0, seed=seed)
    img = sum(
        signal.fftconvolve(x, k, mode="same") for x, k in zip(d.activations, kinds, strict=True)
    )
    return img + 0.05 * np.random.default_rng(seed).standard_normal(shape)


def test_learn_once_then_locate_in_every_other_image(viewer_widget, run_and_wait, qtbot):
    viewer, widget = viewer_widget
    kinds = make_synthetic((64, 64), K, 2, seed=1).kernels
    viewer.add_image(_scan(kinds, 1), name="a")
    viewer.add_image(_scan(kinds, 2), name="b")
    viewer.add_image(_scan(kinds, 3), name="c")
    widget._image.value = viewer.layers["a"]
    widget._k.value, widget._n.value = K, 2
    assert not widget.motifs.locate_all.enabled
    assert run_and_wait(widget) == "done"
    learnt = widget.result.kernels.copy()
    assert widget.motifs.locate_all.enabled
    with qtbot.waitSignal(widget.all_located, timeout=120_000) as blocker:
        widget.motifs.locate_all.clicked.emit(True)
    assert blocker.args == [2]
    for name in ("b", "c"):
        pts = viewer.layers[f"{name} defects"]
        meta = pts.metadata[META_KEY]
        assert meta["params"]["mode"] == "locate" and len(pts.data) > 50
    # The last image located holds the learnt motifs, unchanged.
    np.testing.assert_allclose(widget.result.kernels, learnt, atol=1e-6)
    assert widget._image.value is viewer.layers["c"]


def test_motifs_from_a_bundle(viewer_widget, run_and_wait, tmp_path):
    viewer, widget = viewer_widget
    kinds = make_synthetic((64, 64), K, 2, seed=1).kernels
    viewer.add_image(_scan(kinds, 4), name="scan")
    import napari_sasd

    res = napari_sasd.solve(_scan(kinds, 5), K, 2)
    bundle = save_bundle(tmp_path / "learnt", res)
    widget.motifs.source.value = "from a library or bundle"
    assert not widget.motifs.path.native.isHidden()
    widget.motifs.path.value = str(tmp_path / "missing.sasd")
    assert not widget.run()
    assert "neither a motif library nor a result bundle" in widget._status.value
    widget.motifs.path.value = str(bundle)
    widget._k.value = 5  # ignored: the motifs' own size
    assert run_and_wait(widget) == "done"
    assert widget.result.params["mode"] == "locate"
    np.testing.assert_allclose(widget.result.kernels, res.kernels, atol=1e-6)
    assert len(viewer.layers["scan defects"].data) > 50


def test_learnt_motifs_are_catalogued_against_the_chosen_library(
    viewer_widget, run_and_wait, tmp_path
):
    from napari_sasd.bundle import load_bundle
    from napari_sasd.library import make_library

    viewer, widget = viewer_widget
    kinds = make_synthetic((64, 64), K, 2, seed=1).kernels
    import napari_sasd

    bundle = save_bundle(tmp_path / "first", napari_sasd.solve(_scan(kinds, 6), K, 2))
    lib = make_library([(bundle, [0])], names=["Se vacancy"]).save(tmp_path / "kinds")
    viewer.add_image(_scan(kinds, 7), name="scan")
    widget._k.value, widget._n.value = K, 2
    widget.motifs.path.value = str(lib)  # chosen, but the motifs are learnt
    assert run_and_wait(widget) == "done"
    texts = [e["text"] for e in widget.catalogue()]
    assert sorted(t.split(" (")[0] for t in texts) == ["new", "same as 'Se vacancy'"], texts
    captions = " ".join(c.text() for c in widget.gallery.captions)
    assert "same as 'Se vacancy'" in captions and "new" in captions
    out = widget._on_save(path=str(tmp_path / "scan.sasd"))
    assert load_bundle(out).record["catalogue"] == widget.catalogue()
    # The user adds the new one: it is known from then on, in the library on disk.
    from napari_sasd.library import load_library

    assert widget.motifs.add_new.enabled
    widget.motifs.add_new.clicked.emit(True)
    assert load_library(lib).names[0] == "Se vacancy" and len(load_library(lib)) == 2
    assert all(e["match"] is not None for e in widget.catalogue())
    assert not widget.motifs.add_new.enabled and "Added to kinds.sasdlib" in widget._status.value


def test_locate_in_all_images_takes_every_slice_of_a_stack(viewer_widget, run_and_wait, qtbot):
    # A 3-D stack of scans (3-D stack: Current slice only): learnt on its
    # first slice, located in the two others and in the other 2-D image, each
    # slice's defects where that slice's copies are (not another slice's).
    from napari_sasd.metrics import precision_recall

    viewer, widget = viewer_widget
    kinds = make_synthetic((64, 64), K, 2, seed=1).kernels
    truth = {}
    planes = []
    for i, seed in enumerate((11, 12, 13)):
        planes.append(_scan(kinds, seed))
        truth[f"stack [{i}]"] = np.concatenate(
            make_synthetic((128, 128), K, 2, seed=seed).positions
        )
    viewer.add_image(np.stack(planes), name="stack")
    viewer.add_image(_scan(kinds, 14), name="b")
    truth["b"] = np.concatenate(make_synthetic((128, 128), K, 2, seed=14).positions)
    widget._image.value = viewer.layers["stack"]
    widget._stack.value = "slice"
    viewer.dims.set_current_step(0, 0)
    widget._k.value, widget._n.value = K, 2
    assert run_and_wait(widget) == "done"
    with qtbot.waitSignal(widget.all_located, timeout=120_000) as blocker:
        widget.motifs.locate_all.clicked.emit(True)
    assert blocker.args == [3]
    names = [layer.name for layer in viewer.layers]
    assert "stack [0] defects" not in names  # the slice learnt on: its own results
    for name in ("stack [1]", "stack [2]", "b"):
        pts = viewer.layers[f"{name} defects"]
        assert pts.metadata[META_KEY]["params"]["mode"] == "locate"
        found = np.asarray(pts.data)[:, -2:]
        prec, rec = precision_recall(found, truth[name])
        # (Half the copies of these scenes are too weak for the default
        # significance, in the 2-D image as in the slices.)
        assert prec >= 0.9 and rec >= 0.4, (name, prec, rec)
        other = "stack [1]" if name != "stack [1]" else "stack [2]"
        assert precision_recall(found, truth[other])[0] < 0.5
