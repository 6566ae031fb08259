"""Showing a run's result: layers and plots on the main thread, one per event-loop turn.

A part of :class:`napari_sasd.widget.SasdWidget` (a mixin: it uses the
dock's controls and state), kept apart so the dock reads in parts.
Results are shown over several event-loop turns (one layer or one plot per
turn), so the viewer never stalls while they arrive; the significance slider
then filters the run's candidate copies (no new search).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from ..dock_run import DockAnalysis
from ..flags import FLAG_TEXT
from ..layers import (
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
from ..spans import FAINT_MARGIN
from .run_setup import RunContext, _digest

__all__ = ["ResultDisplay", "layer_sweep"]


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


class ResultDisplay:
    """Showing a result (layers, gallery, plots) and refiltering it by significance."""

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
            "source": ctx.label or layer.name,
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
        # (A slice's results replace only that slice's.)
        slot = id(layer) if ctx.label is None else (id(layer), ctx.label)
        prev = self._last_run.get(slot)
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
        self._last_run[slot] = ctx.run_id
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
        # The faint tier's lower edge, where the detection has one (spans.py).
        faint = None if cand.tall is None else FAINT_MARGIN
        self.plots.show_significance(
            cand.significance, cand.defects.motif, z, result.n_motifs, len(defects), faint
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


#: Which flag says most about a motif, first: a streak or the lattice is
#: what the user can act on (scars, lattice boxes); texture and density follow.
_FLAG_ORDER = ("scan lines", "periodic", "dense", "texture")


def _main_flag(flags: list[str]) -> str:
    return min(flags, key=lambda f: _FLAG_ORDER.index(f) if f in _FLAG_ORDER else 99)


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
