"""What a dock run analyses: the image, solver arguments and context, from the controls.

A part of :class:`napari_sasd.widget.SasdWidget` (a mixin: it uses the
dock's controls and state), kept apart so the dock reads in parts.
Everything here runs on the main thread, before the worker starts, so bad
input is refused before any work.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dock_run import iter_dock_analysis, iter_dock_locate
from ..flatten import flatten
from ..layers import META_KEY
from ..locate import iter_locate

__all__ = ["RunContext", "RunSetup"]


@dataclass
class RunContext:
    """What a run analysed, kept to place its results and to warm-start the next."""

    source: Any  # the napari Image layer
    region: tuple[int, int, int, int]
    image: np.ndarray
    key: tuple
    seed: int
    mask: np.ndarray | None = None
    #: The "<image> scars" layer the run took its scar mask from (as the user
    #: left it), and that mask; None when the run marked scars itself.
    scars_layer: Any = None
    scars: np.ndarray | None = None
    started: float = field(default_factory=time.perf_counter)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: What the result layers are named after, when not the source's name: a
    #: slice located by "Locate in all images" (its results kept beside the
    #: other slices').
    label: str | None = None


class RunSetup:
    """Collecting a run's image, solver arguments and context from the controls."""

    def prepare(self) -> tuple[np.ndarray, dict[str, Any], RunContext]:
        """Collect the image, solver arguments and context of a run from the controls.

        Raises
        ------
        ValueError
            With a message for the user, before anything starts.
        """
        layer = self._image.value
        if layer is None:
            raise ValueError("Open an image first (File > Open Sample > napari-sasd).")
        if layer.rgb:
            raise ValueError(
                f"'{layer.name}' is an RGB image: the search needs one value per pixel. "
                "Split it into channels (right-click > Split RGB) and pick one."
            )
        if layer.ndim not in (2, 3):
            raise ValueError(f"'{layer.name}' is {layer.ndim}-D: use a 2-D image or a 3-D stack.")
        v = self._values()
        region = self.region_for(layer)
        y0, x0, y1, x1 = region
        k, n = v["kernel_size"], v["n_motifs"]
        known = self._known_motifs()
        if known is not None:
            k, n = int(known.shape[-1]), len(known)
        if k > min(y1 - y0, x1 - x0):
            raise ValueError(
                f"The motif size ({k} px) is larger than the region ({y1 - y0} × {x1 - x0} px): "
                "choose a smaller motif size or a larger region."
            )
        data = layer.data[0] if layer.multiscale else layer.data
        # "Locate in all images" names the slice of a stack it takes.
        slice_of = getattr(self, "_locate_plane", None)
        cube = layer.ndim == 3 and v["stack_mode"] == "cube" and slice_of is None
        if layer.ndim == 2:
            img = np.asarray(data[y0:y1, x0:x1], dtype=np.float64)
            plane = None
        elif cube:
            img = np.asarray(data[:, y0:y1, x0:x1], dtype=np.float64)
            plane = "cube"
        else:
            plane = self._plane_index(layer)[0] if slice_of is None else int(slice_of)
            img = np.asarray(data[plane, y0:y1, x0:x1], dtype=np.float64)
        user_mask = self._mask_for(layer, region)
        # The scar marks the user corrected: used as they are, not marked again.
        scars_layer = self._scars_layer(layer, region) if v["scars"] else None
        scars = None if scars_layer is None else np.asarray(scars_layer.data) > 0
        mask = user_mask
        if scars is not None and scars.any():
            mask = ~scars if mask is None else mask & ~scars
        if mask is not None and mask.sum() < k * k:
            raise ValueError("The mask leaves too few pixels to analyse.")
        mask_key = None if user_mask is None else (self._mask.value.name, v["mask_mode"])
        scars_key = _digest(scars)
        # The data's fingerprint too: the re-locate path below reuses the last
        # run's prepared data, so edited pixels must make a new run (~10 ms
        # for 1024^2 on the main thread).
        key = (
            id(layer), region, k, n, plane, v["flatten"], mask_key, v["positive"], v["seed"],
            _digest(img), v["scars"], scars_key, v["lattice"],
        )  # fmt: skip
        common = {
            "lam": None if v["auto_lam"] else v["lam"],
            "channel_axis": 0 if cube else None,
            "positive": v["positive"],
            "mask": mask,
        }
        detect = {
            "significance": float(self._threshold.value),
            "keep_artefacts": bool(self._keep_artefacts.value),
        }
        ctx = RunContext(
            source=layer, region=region, image=img, key=key, seed=v["seed"], mask=user_mask,
            scars_layer=scars_layer, scars=scars,
            label=None if slice_of is None else f"{layer.name} [{int(slice_of)}]",
        )  # fmt: skip
        # Same data and motif shape as last time, only lambda changed:
        # re-locate the current motifs (issue 15), a convex fit of the
        # activations, background and amplitudes, no new discovery, on the
        # data the last run prepared (flattened, lattice removed).
        last = self.analysis
        again = last is not None and self.context is not None and self.context.key == key
        if again:
            a = last.analysis
            kwargs = {
                "solve": iter_dock_locate, "locate": iter_locate, "kernels": a.result.kernels,
                "scars": a.scars, "lattice": a.lattice, "info": a.settings,
                **common, **detect,
            }  # fmt: skip
            return a.data, kwargs, ctx
        if known is not None:
            # Known motifs (a library or bundle): flatten as for a learn run;
            # no scar marking or lattice removal (the motifs were learnt on
            # their own data).
            if v["flatten"]:
                img = flatten(img, plane=True, lines=True, mask=mask, columns=True)
            kwargs = {
                "solve": iter_dock_locate, "locate": iter_locate, "kernels": known,
                "info": {"flatten": v["flatten"]}, **common, **detect,
            }  # fmt: skip
            return img, kwargs, ctx
        # Learn: the whole analysis (flatten, scars, lattice, solve, detection)
        # runs in the worker thread (dock_run.iter_dock_analysis). The
        # solver's input checks run here first, so bad input is refused
        # before any work starts (tens of ms on 1024^2).
        from ..validation import prepare as check_inputs

        check_inputs(img, k, n, common["lam"], common["channel_axis"], mask, None)
        kwargs = {
            "solve": iter_dock_analysis,
            "kernel_size": k,
            "n_motifs": n,
            "seed": v["seed"],
            "max_iter": v["max_iter"] or None,
            "flatten": v["flatten"],
            "scars": "off" if scars_layer is not None or not v["scars"] else "auto",
            # Below 16 px a side no lattice can be told from the Fourier
            # transform (lattice.py refuses): nothing to remove.
            "lattice": "auto" if v["lattice"] and min(y1 - y0, x1 - x0) >= 16 else "off",
            **common,
            **detect,
        }
        return img, kwargs, ctx

    def _scars_layer(self, source, region):
        """The "<image> scars" Labels layer of ``source`` over ``region``, if any."""
        from napari.layers import Labels

        h, w = region[2] - region[0], region[3] - region[1]
        for lay in self.viewer.layers:
            meta = lay.metadata.get(META_KEY) if isinstance(lay, Labels) else None
            if (
                isinstance(meta, dict) and meta.get("role") == "scars"
                and meta.get("source") == source.name
                and list(meta.get("region", [])) == list(region)
                and lay.data.shape == (h, w)
            ):  # fmt: skip
                return lay
        return None


def _digest(a: np.ndarray | None) -> str | None:
    """A short fingerprint of the data or of a scar mask (the run key: pixels
    or marks edited -> new data)."""
    import hashlib

    if a is None:
        return None
    a = np.asarray(a)
    raw = np.packbits(a).tobytes() if a.dtype == bool else np.ascontiguousarray(a).tobytes()
    return hashlib.blake2b(raw, digest_size=8).hexdigest()
