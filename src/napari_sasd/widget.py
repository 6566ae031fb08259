"""The napari dock widget: find the repeated motifs (defects) of an image layer.

The thin assembly of the dock's parts (:mod:`napari_sasd._qt`: inputs,
parameters, gallery, histogram, spectra) with the run logic. Everything here
runs on the main thread; the solve itself runs in a napari worker thread
(:mod:`napari_sasd.worker`) and talks back through Qt signals. Results are
shown over several event-loop turns (one layer or one plot per turn), so the
viewer never stalls while they arrive.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSlider, Label, PushButton
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QProgressBar, QVBoxLayout, QWidget

from ._qt.gallery import MotifGallery
from ._qt.inputs import InputsPanel
from ._qt.inputs import camera as _camera  # noqa: F401 (kept importable from here)
from ._qt.library_actions import LibraryActions
from ._qt.motifs import MotifSourcePanel
from ._qt.parameters import ParametersPanel
from ._qt.plots import ResultPlots
from ._qt.save_action import SaveAction
from ._qt.suggest_action import SuggestAction
from .dock_run import DockAnalysis, iter_dock_analysis, iter_dock_locate
from .flags import FLAG_TEXT
from .flatten import flatten
from .layers import (
    META_KEY,
    defects_layer_data,
    iter_apply_layer_data,
    plane_transform,
    prepared_layer_data,
    region_geometry,
    result_layer_data,
    result_layers,
    update_points,
)
from .locate import iter_locate
from .result import SolveProgress, SolveResult
from .settings import load_settings, save_settings
from .spectra import MotifSpectra
from .worker import SolveRunner

__all__ = ["SasdWidget", "layer_sweep"]


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


def layer_sweep(layer) -> tuple[np.ndarray, str, str]:
    """``(values, label, unit)`` of a cube layer's first (sweep) axis.

    From the reader's metadata (``sweep``, ``sweep_label``, ``sweep_unit``),
    the sample cube's ``energies_mV``, else the layer's own axis: ``translate
    + scale * index`` with its axis label and unit (``"index"`` when the axis
    has no physical unit).
    """
    meta = layer.metadata or {}
    n = int(np.shape(layer.data[0] if layer.multiscale else layer.data)[0])
    if meta.get("sweep") is not None and len(meta["sweep"]) == n:
        label = meta.get("sweep_label") or "sweep"
        return np.asarray(meta["sweep"], float), label, meta.get("sweep_unit", "")
    if meta.get("energies_mV") is not None and len(meta["energies_mV"]) == n:
        return np.asarray(meta["energies_mV"], float), "Bias", "mV"
    unit = str(layer.units[0]) if getattr(layer, "units", None) is not None else "pixel"
    label = str(layer.axis_labels[0]) if getattr(layer, "axis_labels", None) else "axis 0"
    values = float(layer.translate[0]) + float(layer.scale[0]) * np.arange(n)
    if unit in ("pixel", "px", ""):
        return values, "channel", ""
    return values, label, {"volt": "V", "millivolt": "mV"}.get(unit, unit)


class SasdWidget(LibraryActions, SaveAction, SuggestAction, QWidget):
    """Dock widget: find repeated motifs (point defects) in an image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (injected by napari).

    Notes
    -----
    ``run_finished`` is emitted once per run, after the result layers and
    plots are shown, with ``"done"``, ``"cancelled"`` or ``"error"``.
    """

    run_finished = Signal(str)
    #: After *Suggest*: the motif size set (0 when it could not be suggested).
    size_suggested = Signal(int)
    #: After "Locate in all images": how many images got results.
    all_located = Signal(int)

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.runner: SolveRunner | None = None
        self.result: SolveResult | None = None
        #: The last run's analysis and candidate copies (the slider filters them).
        self.analysis: DockAnalysis | None = None
        self.context: RunContext | None = None
        self._pending: RunContext | None = None
        self._points = None  # defects layer of the last result
        self._last_run: dict[int, str] = {}  # id(source layer) -> run_id of its layers
        self._steps: Generator[None, None, None] | None = None  # results being shown
        self._deferred: str | None = None  # the worker's final state, while showing
        self._show_failed = False
        s = load_settings()

        self.inputs = InputsPanel(self.viewer, s)
        self.parameters = ParametersPanel(s)
        self.motifs = MotifSourcePanel()
        # "Locate in all images": the motifs and the images still to do.
        self._locate_with: np.ndarray | None = None
        self._locate_queue: list = []
        self._located = 0
        self._catalogue: tuple[tuple[int, str], list | None] | None = None
        # Short names for the controls (tests and settings use them).
        i, p = self.inputs, self.parameters
        self._image, self._info, self._stack = i.image, i.info, i.stack
        self._region, self._shapes, self._mask = i.region, i.shapes, i.mask
        self._mask_mode, self._flatten = i.mask_mode, i.flatten
        self._scars, self._lattice = i.scars, i.lattice
        self._k, self._n, self._auto_lam, self._lam = p.k, p.n, p.auto_lam, p.lam
        self._lam_used, self._positive, self._recon = p.lam_used, p.positive, p.recon
        self._keep, self._max_iter, self._seed = p.keep, p.max_iter, p.seed

        self._run = PushButton(text="Run", tooltip="Start the search (click again to cancel).")
        self._status = Label(value="")
        self._status.native.setWordWrap(True)
        self._threshold = FloatSlider(
            label="Significance (× noise)",
            min=0.0,
            max=20.0,
            step=0.1,
            value=s["significance"],
            readout=True,
            tooltip="A copy counts as a defect when its amplitude is above this many times "
            "the local noise of its motif's matched filter (4: about one false copy per "
            "1024² image of pure noise).\nUpdates the points at once, without searching again.",
        )
        self._keep_artefacts = CheckBox(
            text="Count artefact motifs too",
            value=s["keep_artefacts"],
            tooltip="Also count the copies of motifs that look like a scan artefact, the "
            "lattice or texture (their note in the gallery). Off: only defect motifs count.",
        )
        self._save = PushButton(
            text="Save bundle…",
            enabled=False,
            tooltip="Save motifs, maps, defects, parameters and pictures (quick look; spectra "
            "for a cube) of the last result to a folder.",
        )
        self._outputs = Container(widgets=[self._threshold, self._keep_artefacts], labels=True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.gallery = MotifGallery()
        self.plots = ResultPlots()
        self.histogram = self.plots.histogram
        self.spectra_panel = self.plots.spectra_panel
        self.fourier = self.plots.fourier

        lay = QVBoxLayout(self)
        lay.addWidget(self.inputs)
        lay.addWidget(self.parameters)
        lay.addWidget(self.motifs)
        lay.addWidget(self._run.native)
        lay.addWidget(self.progress)
        lay.addWidget(self._status.native)
        lay.addWidget(self.gallery)
        lay.addWidget(self._outputs.native)
        lay.addWidget(self.plots)
        lay.addWidget(self._save.native)
        lay.addStretch(1)

        self._suggest_worker = None
        p.suggest.changed.connect(self.suggest_size)
        self._run.changed.connect(self._on_run_clicked)
        self._threshold.changed.connect(self._on_threshold)
        self._keep_artefacts.changed.connect(self._on_threshold)
        for w in (self._keep_artefacts, self._scars, self._lattice):
            w.changed.connect(lambda *_: save_settings(self._values()))
        self._save.changed.connect(self._on_save)
        self.motifs.locate_all.changed.connect(self.locate_everywhere)
        self.motifs.add_new.changed.connect(self.add_new_motifs)
        self.viewer.dims.events.current_step.connect(self._on_dims)
        ev = self.viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.reordered, ev.renamed):
            e.connect(self.reset_choices)
        self.reset_choices()
        # The first Points layer makes napari import pandas (~0.2 s): do it
        # now, off the main thread, rather than while results arrive.
        threading.Thread(target=_warm_imports, daemon=True).start()

    # --- state -----------------------------------------------------------------
    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer pickers (called on layer insert/remove/rename)."""
        self.inputs.reset_choices()

    def _values(self) -> dict[str, Any]:
        return {
            "kernel_size": int(self._k.value),
            "n_motifs": int(self._n.value),
            "auto_lam": bool(self._auto_lam.value),
            "lam": float(self._lam.value),
            "positive": bool(self._positive.value),
            "flatten": bool(self._flatten.value),
            "stack_mode": self._stack.value,
            "region_mode": self._region.value,
            "mask_mode": self._mask_mode.value,
            "max_iter": int(self._max_iter.value),
            "seed": int(self._seed.value),
            "with_reconstruction": bool(self._recon.value),
            "keep_previous": bool(self._keep.value),
            "scars": bool(self._scars.value),
            "lattice": bool(self._lattice.value),
            "significance": float(self._threshold.value),
            "keep_artefacts": bool(self._keep_artefacts.value),
        }

    def _set_enabled(self, on: bool) -> None:
        self.inputs.container.enabled = on
        self.parameters.set_enabled(on)
        self.motifs.set_enabled(on)
        self.motifs.locate_all.enabled = on and self.result is not None

    @property
    def spectra(self) -> MotifSpectra | None:
        """Spectra of the last cube result at the current threshold (else None)."""
        return self.plots.spectra

    # --- geometry (the inputs panel does it) -------------------------------------
    def region_for(self, layer) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` in ``layer``'s pixels chosen by the Region control."""
        return self.inputs.region_for(layer)

    def _canvas_size(self) -> tuple[int, int]:
        return self.inputs.canvas_size()

    def _plane_index(self, layer) -> tuple[int, ...]:
        return self.inputs.plane_index(layer)

    def _mask_for(self, layer, region) -> np.ndarray | None:
        return self.inputs.mask_for(layer, region)

    # --- run -------------------------------------------------------------------
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
        cube = layer.ndim == 3 and v["stack_mode"] == "cube"
        if layer.ndim == 2:
            img = np.asarray(data[y0:y1, x0:x1], dtype=np.float64)
            plane = None
        elif cube:
            img = np.asarray(data[:, y0:y1, x0:x1], dtype=np.float64)
            plane = "cube"
        else:
            plane = self._plane_index(layer)[0]
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
                img = flatten(img, plane=True, lines=True, mask=mask)
            kwargs = {
                "solve": iter_dock_locate, "locate": iter_locate, "kernels": known,
                "info": {"flatten": v["flatten"]}, **common, **detect,
            }  # fmt: skip
            return img, kwargs, ctx
        # Learn: the whole analysis (flatten, scars, lattice, solve, detection)
        # runs in the worker thread (dock_run.iter_dock_analysis). The
        # solver's input checks run here first, so bad input is refused
        # before any work starts (tens of ms on 1024^2).
        from .validation import prepare as check_inputs

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

    # --- motif size ------------------------------------------------------------------

    def _on_run_clicked(self, *_: Any) -> None:
        if self.runner is not None and self.runner.running:
            self.cancel()
        elif self._steps is None:  # not while the last results are still appearing
            self.run()

    def run(self) -> bool:
        """Start a search with the current settings.

        Returns
        -------
        bool
            False when the input was refused (the reason is shown to the user).
        """
        from napari.utils.notifications import show_error

        if (self.runner is not None and self.runner.running) or self._steps is not None:
            return False
        save_settings(self._values())
        try:
            img, kwargs, ctx = self.prepare()
            runner = SolveRunner(
                img,
                on_progress=self._on_progress,
                on_result=self._on_result,
                on_error=self._on_error,
                on_finished=self._on_finished,
                desc=f"Finding motifs in {ctx.source.name}",
                **kwargs,
            )
            runner.start()
        except (ValueError, TypeError) as exc:  # input refused before any work
            self._status.value = str(exc)
            show_error(f"napari-sasd: {exc}")
            return False
        self.runner = runner
        self._pending = ctx
        self._run.text = "Cancel"
        self._set_enabled(False)
        self.progress.setValue(0)
        again = "kernels" in kwargs
        # A learn run first prepares the data in the worker (flatten, scars,
        # lattice: seconds on 1024^2) before the first progress snapshot.
        self._status.value = (
            "Locating the current motifs…"
            if again
            else "Preparing the data (flatten, scars, lattice), then searching…"
        )
        return True

    def cancel(self) -> None:
        """Stop the running search; the viewer is left as before Run."""
        if self.runner is not None and self.runner.running:
            self._status.value = "Cancelling…"
            self.runner.cancel()

    def _on_progress(self, snap: SolveProgress) -> None:
        self.progress.setValue(round(snap.fraction * 1000))
        self._status.value = (
            f"Stage {snap.stage + 1}/{snap.n_stages}, iteration {snap.iteration}/{snap.total}"
        )
        self.gallery.set_motifs(snap.kernels)

    def _on_result(self, result: DockAnalysis) -> None:
        ctx = self._pending
        assert ctx is not None
        if ctx.source not in self.viewer.layers:
            # The source was deleted while the solver ran: results aligned
            # with a layer that is gone would only confuse; drop them.
            from napari.utils.notifications import show_warning

            show_warning(f"napari-sasd: '{ctx.source.name}' was removed; results discarded.")
            self._status.value = "Source layer removed during the run: results discarded."
            return
        self._status.value = "Showing the results…"
        self._steps = self._show(result, ctx)
        self._show_failed = False
        QTimer.singleShot(1, self._step)

    def _step(self) -> None:
        """Run one step of showing a result, then give the event loop a turn."""
        if self._steps is None:
            return
        try:
            next(self._steps)
        except StopIteration:
            self._steps = None
            if self._deferred is not None:
                state, self._deferred = self._deferred, None
                self._finish(state)
            return
        except Exception as exc:
            # A plot or panel failed: say so and end the run, rather than leave
            # the dock waiting forever on steps that will not come (Run refused).
            self._steps = None
            self._show_failed = True
            self._on_error(exc)
            if self._deferred is not None:
                state, self._deferred = self._deferred, None
                self._finish(state)
            return
        QTimer.singleShot(1, self._step)

    def _show(self, dock: DockAnalysis, ctx: RunContext) -> Generator[None, None, None]:
        """Show a result, one layer or plot per step (see :meth:`_step`)."""
        analysis, result = dock.analysis, dock.result
        z = float(self._threshold.value)
        defects = dock.candidates.select(z, analysis.flags, bool(self._keep_artefacts.value))
        # The data as analysed, lattice included (pictures of the bundle).
        ctx.image = analysis.data if analysis.lattice is None else analysis.data + analysis.lattice
        layer = ctx.source
        geometry = {
            "source": layer.name,
            "region": ctx.region,
            "scale": layer.scale,
            "translate": layer.translate,
            "source_path": getattr(layer.source, "path", None),
            "run_id": ctx.run_id,
            "plane": plane_transform(layer),
        }
        tuples = result_layer_data(
            result,
            defects,
            analysed=analysis.data,
            with_reconstruction=bool(self._recon.value),
            **geometry,
            **self._thresholds(dock),
        )
        tuples += self._prepared_layers(analysis, ctx, geometry)
        _carry_axes(tuples, layer)
        # Replace only the layers of this source's previous run in this widget,
        # found by run id: a renamed source still finds them, and result layers
        # the user opened from a bundle (same source name) are left alone.
        prev = self._last_run.get(id(layer))
        if self._keep.value or prev is None:
            replace = []
        else:
            replace = result_layers(self.viewer, None, prev)
        if ctx.scars_layer is not None and ctx.scars_layer not in replace:
            replace.append(ctx.scars_layer)  # the user's marks, kept as they are
        yield
        try:
            shown = yield from iter_apply_layer_data(self.viewer, tuples, replace)
        except Exception as exc:  # napari rejected a layer: the viewer is unchanged
            self._on_error(exc)
            self._show_failed = True
            return
        self.result, self.context, self.analysis = result, ctx, dock
        if analysis.scars is not None:
            # The marks are in the scars layer now: a re-run that only changes
            # lambda finds the same key and re-locates.
            ctx.key = (*ctx.key[:-2], _digest(analysis.scars), ctx.key[-1])
        self._last_run[id(layer)] = ctx.run_id
        self._points = next(lay for lay in shown if lay.metadata[META_KEY]["role"] == "defects")
        # Keep the source selected (result layers become the active ones).
        self.viewer.layers.selection.active = self._points
        self._refresh_gallery(defects)
        self._lam_used.value = f"λ used: {result.lam:.4g}"
        if self._auto_lam.value:
            with self._lam.changed.blocked():
                self._lam.value = float(np.clip(result.lam, self._lam.min, self._lam.max))
        self._save.enabled = True
        yield
        # The cube's plots first: they pick the tab on show, and a hidden
        # plot is drawn only when its tab is opened (one plot per turn).
        cube = result.kernels.ndim == 4
        self.plots.show_cube(
            result.kernels if cube else None,
            defects,
            self._measured(ctx) if cube else None,
            layer_sweep(layer) if cube else None,
            self._energy_index(),
        )
        yield
        cand = dock.candidates
        self.plots.show_significance(
            cand.significance, cand.defects.motif, z, result.n_motifs, len(defects)
        )

    def _prepared_layers(self, analysis, ctx: RunContext, geometry: dict) -> list[tuple]:
        """The scars (Labels, to correct) and the lattice removed (hidden image)."""
        out = []
        scars = None
        if ctx.scars_layer is not None:
            scars = np.asarray(ctx.scars_layer.data)  # as the user left it
        elif analysis.scars is not None:
            scars = analysis.scars
        if scars is not None and scars.ndim == 2:
            out.append(prepared_layer_data("scars", scars, analysis.result, **geometry))
        lat = analysis.lattice
        if lat is not None and np.ndim(lat) == 2:
            periods = analysis.settings.get("lattice_periods_px")
            out.append(
                prepared_layer_data(
                    "lattice", lat, analysis.result, lattice_periods_px=periods, **geometry
                )
            )
        return out

    def _measured(self, ctx: RunContext) -> np.ndarray:
        """The measured (unflattened) cube of the region, NaN where left out."""
        layer = ctx.source
        data = layer.data[0] if layer.multiscale else layer.data
        y0, x0, y1, x1 = ctx.region
        cube = np.asarray(data[:, y0:y1, x0:x1], dtype=float)
        if ctx.mask is not None:
            cube = np.where(ctx.mask[None], cube, np.nan)
        return cube

    def _energy_index(self) -> int:
        """The channel of the last result's source the viewer shows."""
        if self.context is None:
            return 0
        try:
            return self._plane_index(self.context.source)[0]
        except Exception:  # the source is gone or not a stack any more
            return 0

    def _on_dims(self, *_: Any) -> None:
        if self.plots.spectra is not None:
            self.plots.set_energy(self._energy_index())

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self._status.value = f"Failed: {exc}"
        show_error(f"napari-sasd: the search failed: {exc}")

    def _on_finished(self, state: str) -> None:
        if self._steps is not None:  # results still appearing: finish after them
            self._deferred = state
            return
        self._finish(state)

    def _finish(self, state: str) -> None:
        if self._show_failed:
            state, self._show_failed = "error", False
        self._run.text = "Run"
        self._set_enabled(True)
        ctx = self._pending
        if state == "done" and self.result is not None and ctx is not None:
            if self.context is ctx:
                r = self.result
                self.progress.setValue(1000)
                a = self.analysis.analysis if self.analysis is not None else None
                self._status.value = _done_message(
                    r, self.current_defects(), ctx.started,
                    a.settings if a is not None else None, a.flags if a is not None else None,
                    user_scars=ctx.scars is not None and bool(ctx.scars.any()),
                    scars_left_out=(
                        ctx.scars_layer is None and a is not None and a.scars is not None
                    ),
                )  # fmt: skip
                conv = "converged" if r.converged else "stopped at the iteration budget"
                self._status.native.setToolTip(f"{r.n_iter} iterations, {conv}.")
        elif state in ("cancelled", "error"):
            self.progress.setValue(0)
            if state == "cancelled":
                self._status.value = "Cancelled."
            # The preview showed unfinished motifs: back to the last result.
            if self.result is not None:
                self._refresh_gallery()
            else:
                self.gallery.set_motifs(np.zeros((0, 1, 1)))
        self._pending = None
        self.run_finished.emit(state)
        if self._locate_with is not None:
            # "Locate in all images": the next one, or the end (stopped on a
            # cancel or an error).
            self._located += state == "done"
            if state != "done":
                self._locate_queue = []
            QTimer.singleShot(0, self._next_located)

    # --- threshold ---------------------------------------------------------------
    def current_defects(self):
        """Defects of the last result at the current significance (one per copy;
        copies of flagged motifs only with "Count artefact motifs too")."""
        assert self.analysis is not None
        a = self.analysis
        return a.candidates.select(
            float(self._threshold.value), a.analysis.flags, bool(self._keep_artefacts.value)
        )

    def current_analysis(self):
        """The last :class:`~napari_sasd.pipeline.Analysis` at the current
        significance and artefact choice (what a bundle records)."""
        import dataclasses

        assert self.analysis is not None
        a = self.analysis.analysis
        z, keep = float(self._threshold.value), bool(self._keep_artefacts.value)
        settings = {**a.settings, "significance": z, "keep_artefacts": keep}
        return dataclasses.replace(
            a, defects=self.current_defects(), significance=z, settings=settings
        )

    def _refresh_gallery(self, defects=None) -> None:
        if self.result is None or self.analysis is None:
            return
        defects = defects if defects is not None else self.current_defects()
        flags = self.analysis.analysis.flags
        keep = bool(self._keep_artefacts.value)
        n = self.result.n_motifs
        counts = defects.counts(n)
        if any(flags) and not keep:
            # A flagged motif's copies are not counted, but how many it has
            # tells the user what it is (hundreds along the streaks...).
            every = self.analysis.candidates.select(float(self._threshold.value), flags, True)
            counts = np.where([bool(f) for f in flags], every.counts(n), counts)
        # The first flag under the thumbnail (short enough for the dock),
        # every flag's sentence in its tooltip.
        notes = [
            "" if not fl else ("" if keep else "not counted: ") + FLAG_TEXT[_main_flag(fl)]
            for fl in flags
        ]
        tips = ["; ".join(FLAG_TEXT[f] for f in fl) for fl in flags]
        cat = self.catalogue()
        self.motifs.add_new.enabled = bool(cat) and any(e["match"] is None for e in cat or [])
        if cat:
            # Known or new, against the library chosen in the Motifs panel.
            pairs = zip(notes, cat, strict=False)
            notes = ["; ".join(t for t in (note, e["text"]) if t) for note, e in pairs]
        self.gallery.set_motifs(self.result.kernels, counts, notes, tips, [bool(f) for f in flags])

    def _thresholds(self, dock: DockAnalysis | None = None) -> dict[str, Any]:
        # The slider is a significance; the bundle and the metadata also want
        # image units, one per motif (z times each motif's noise), as the
        # command line records them. ``dock``: the run being shown (not yet
        # ``self.analysis``), else the last one.
        z = float(self._threshold.value)
        out: dict[str, Any] = {"threshold": None, "threshold_relative": None, "significance": z}
        dock = dock if dock is not None else self.analysis
        if dock is not None:
            out["threshold"] = dock.analysis.copies.thresholds(z).tolist()
        return out

    def _on_threshold(self, *_: Any) -> None:
        if self.result is None or self.context is None or self.analysis is None:
            return
        defects = self.current_defects()
        self._refresh_gallery(defects)
        self.plots.update_defects(defects, [float(self._threshold.value)])
        if self._points is None or self._points not in self.viewer.layers:
            return
        ctx, layer = self.context, self.context.source
        plane = plane_transform(layer)
        s, t = region_geometry(layer.scale, layer.translate, ctx.region, plane)
        data, kwargs, _ = defects_layer_data(
            defects,
            self.result,
            scale=s,
            translate=t,
            region=ctx.region,
            source=self._points.metadata[META_KEY]["source"],
            source_path=self._points.metadata[META_KEY]["source_path"],
            run_id=ctx.run_id,
            plane=plane,
            **self._thresholds(),
        )
        update_points(self._points, data, kwargs)

    # --- save --------------------------------------------------------------------

    def closeEvent(self, event) -> None:
        """Cancel a running search when the dock widget is closed."""
        self.cancel()
        super().closeEvent(event)


#: Which flag says most about a motif, first: a streak or the lattice is
#: what the user can act on (scars, lattice boxes); texture and density follow.
_FLAG_ORDER = ("scan lines", "periodic", "dense", "texture")


def _main_flag(flags: list[str]) -> str:
    return min(flags, key=lambda f: _FLAG_ORDER.index(f) if f in _FLAG_ORDER else 99)


def _digest(a: np.ndarray | None) -> str | None:
    """A short fingerprint of the data or of a scar mask (the run key: pixels
    or marks edited -> new data)."""
    import hashlib

    if a is None:
        return None
    a = np.asarray(a)
    raw = np.packbits(a).tobytes() if a.dtype == bool else np.ascontiguousarray(a).tobytes()
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def _carry_axes(tuples: list[tuple], source) -> None:
    """Give result layers the source's units and axis labels (its last axes).

    napari stops using units as soon as two layers disagree ("Inconsistent
    units across layers"), so results of a scan in nm, or of a grid whose
    bias axis is in volts, must say the same.
    """
    units = [str(u) for u in getattr(source, "units", ())]
    labels = [str(a) for a in getattr(source, "axis_labels", ())]
    for data, kwargs, kind in tuples:
        nd = int(np.shape(data)[1]) if kind == "points" else int(np.ndim(data))
        if 0 < nd <= min(len(units), len(labels)):
            kwargs["units"] = tuple(units[-nd:])
            kwargs["axis_labels"] = tuple(labels[-nd:])


def _done_message(
    result: SolveResult,
    defects,
    started: float,
    settings: dict[str, Any] | None = None,
    flags: list[list[str]] | None = None,
    user_scars: bool = False,
    scars_left_out: bool = False,
) -> str:
    """What a finished run found, in the user's terms: the defects, then what
    was left out or removed before the search and which motifs are artefacts."""
    n = result.n_motifs
    total = len(defects)
    per = defects.counts(n)
    split = f" ({' + '.join(str(int(c)) for c in per)})" if n > 1 else ""
    secs = time.perf_counter() - started
    msg = (
        f"Done in {secs:.1f} s: {n} motif{'s' * (n != 1)}, "
        f"{total} defect{'s' * (total != 1)}{split}."
    )
    settings = settings or {}
    if user_scars:
        msg += " Scars: your marks in the scars layer were left out."
    elif scars_left_out:
        frac = 100 * float(settings.get("scar_fraction", 0.0))
        msg += f" Scars: {frac:.1f} % of the pixels marked and left out (layer 'scars')."
    periods = settings.get("lattice_periods_px")
    if settings.get("lattice_found") and periods:
        msg += " Lattice removed: periods " + ", ".join(f"{p:.2f}" for p in periods) + " px."
    bad = [str(i + 1) for i, f in enumerate(flags or []) if f]
    if len(bad) == 1:
        msg += f" Motif {bad[0]} looks like an artefact, not a defect (see the gallery)."
    elif bad:
        msg += f" Motifs {', '.join(bad)} look like artefacts, not defects (see the gallery)."
    return msg


def _warm_imports() -> None:
    try:
        import napari.layers.utils.layer_utils  # noqa: F401
        import pandas  # noqa: F401
    except Exception:  # only a head start; the main thread imports it anyway
        pass
