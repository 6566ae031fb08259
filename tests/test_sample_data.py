"""The sample-data contributions: shapes, metadata, ground truth, manifest."""

import numpy as np

from napari_sasd.sample_data import (
    CUBE,
    TOPOGRAPH,
    cube_data,
    sample_cube,
    sample_topograph,
    topograph_data,
)


def test_topograph_tuple_and_truth():
    ((data, kwargs, kind),) = sample_topograph()
    assert kind == "image"
    assert data.shape == TOPOGRAPH["shape"]
    assert data.dtype == np.float32
    truth = kwargs["metadata"]["ground_truth"]
    k = TOPOGRAPH["kernel_size"]
    assert truth["kernels"].shape == (TOPOGRAPH["n_motifs"], k, k)
    assert len(truth["positions"]) == TOPOGRAPH["n_motifs"]
    assert all(len(p) > 10 for p in truth["positions"])
    # The tuple and the SyntheticData are the same image (deterministic seed).
    np.testing.assert_allclose(data, topograph_data().image, rtol=1e-6)


def test_cube_tuple_and_truth():
    ((data, kwargs, kind),) = sample_cube()
    assert kind == "image"
    assert data.shape == (CUBE["n_channels"], *CUBE["shape"])
    truth = kwargs["metadata"]["ground_truth"]
    k = CUBE["kernel_size"]
    assert truth["kernels"].shape == (CUBE["n_motifs"], CUBE["n_channels"], k, k)
    assert len(kwargs["metadata"]["energies_mV"]) == CUBE["n_channels"]
    np.testing.assert_allclose(data, cube_data().image, rtol=1e-6)


def test_samples_in_manifest():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-sasd")
    keys = {s.key for s in pm.contributions.sample_data}
    assert {"topograph", "cube"} <= keys
