"""Sample data for napari: synthetic STM images with known defects.

The ``*_data`` functions return the full :class:`~napari_sasd.synthetic.SyntheticData`
(for tests and notebooks); ``sample_*`` are the napari sample-data contributions and
return layer-data tuples with the ground truth in ``metadata['ground_truth']``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .synthetic import SyntheticData, make_synthetic

#: Parameters of the samples, so tests and docs can refer to them.
TOPOGRAPH = {
    "shape": (256, 256),
    "kernel_size": 12,
    "n_motifs": 2,
    "noise": 0.05,
    "lattice": 0.05,
    "seed": 3,
}
CUBE = {
    "shape": (128, 128),
    "kernel_size": 12,
    "n_motifs": 2,
    "n_channels": 4,
    "noise": 0.05,
    "lattice": 0.05,
    "seed": 3,
}
#: Bias energies (mV) labelling the cube's channels; purely cosmetic.
CUBE_ENERGIES_MV = (-400.0, -200.0, 200.0, 400.0)


def topograph_data() -> SyntheticData:
    """The synthetic topograph of :func:`sample_topograph`, with its ground truth.

    Returns
    -------
    SyntheticData
        A 256 x 256 image: a weak atomic lattice, two kinds of 12 px point
        defects (different shapes) and Gaussian noise.
    """
    p = dict(TOPOGRAPH)
    return make_synthetic(p.pop("shape"), p.pop("kernel_size"), p.pop("n_motifs"), **p)


def cube_data() -> SyntheticData:
    """The synthetic spectroscopy cube of :func:`sample_cube`, with its ground truth.

    Returns
    -------
    SyntheticData
        A ``(4, 128, 128)`` stack: the same two defect kinds at the same
        places in every channel, with a different signature per energy.
    """
    p = dict(CUBE)
    return make_synthetic(p.pop("shape"), p.pop("kernel_size"), p.pop("n_motifs"), **p)


def _truth(data: SyntheticData, params: dict[str, Any]) -> dict[str, Any]:
    # Arrays are fine here: napari keeps metadata in memory; only the
    # 'napari_sasd' key of result layers has to be JSON-serialisable.
    return {
        "kernels": data.kernels.copy(),
        "positions": [p.copy() for p in data.positions],
        "bias": data.bias,
        "noise": data.noise,
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()},
    }


def sample_topograph() -> list[tuple]:
    """napari sample: a synthetic STM topograph with two kinds of point defects.

    Returns
    -------
    list of LayerDataTuple
        One image layer; ``metadata['ground_truth']`` holds the true motifs
        (``kernels``) and defect centres (``positions``, one array per motif).
    """
    data = topograph_data()
    meta = {"ground_truth": _truth(data, TOPOGRAPH)}
    kwargs = {"name": "synthetic topograph", "colormap": "gray", "metadata": meta}
    return [(data.image.astype(np.float32), kwargs, "image")]


def sample_cube() -> list[tuple]:
    """napari sample: a small synthetic spectroscopy cube (4 energies).

    Returns
    -------
    list of LayerDataTuple
        One ``(4, 128, 128)`` image layer, energy first; analyse it as a
        spectroscopy cube so the energies share the defect positions.
    """
    data = cube_data()
    meta = {
        "ground_truth": _truth(data, CUBE),
        "energies_mV": list(CUBE_ENERGIES_MV),
    }
    kwargs = {"name": "synthetic cube", "colormap": "gray", "metadata": meta}
    return [(data.image.astype(np.float32), kwargs, "image")]
