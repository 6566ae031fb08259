"""The napari dock widget: find the repeated motifs (defects) of an image layer.

The thin assembly of the dock's parts (:mod:`napari_sasd._qt`): the panels
(inputs, parameters, motifs, gallery, histogram, spectra) and the run's parts
as mixins -- :mod:`~napari_sasd._qt.run_setup` (what a run analyses),
:mod:`~napari_sasd._qt.run_control` (worker start, cancel, progress, finish),
:mod:`~napari_sasd._qt.result_display` (result -> layers and plots, one per
event-loop turn; the significance slider), and the library, save and suggest
actions. Everything here runs on the main thread; the solve itself runs in a
napari worker thread (:mod:`napari_sasd.worker`) and talks back through Qt
signals.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSlider, Label, PushButton
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QProgressBar, QVBoxLayout, QWidget

from ._qt.gallery import MotifGallery
from ._qt.inputs import InputsPanel
from ._qt.inputs import camera as _camera  # noqa: F401 (kept importable from here)
from ._qt.library_actions import LibraryActions
from ._qt.motifs import MotifSourcePanel
from ._qt.parameters import ParametersPanel
from ._qt.plots import ResultPlots
from ._qt.result_display import ResultDisplay, layer_sweep
from ._qt.run_control import RunControl
from ._qt.run_setup import RunContext, RunSetup
from ._qt.save_action import SaveAction
from ._qt.suggest_action import SuggestAction
from .dock_run import DockAnalysis
from .result import SolveResult
from .settings import load_settings, save_settings
from .spectra import MotifSpectra
from .worker import SolveRunner

__all__ = ["RunContext", "SasdWidget", "layer_sweep"]


class SasdWidget(
    RunSetup,
    RunControl,
    ResultDisplay,
    LibraryActions,
    SaveAction,
    SuggestAction,
    QWidget,
):
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
        # id(source layer), or (id, slice label) for a stack slice -> run_id of its layers
        self._last_run: dict[int | tuple[int, str], str] = {}
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
            "1024² image of pure noise). A copy up to 1 under it counts too when it spans "
            "many scan lines, like a faint defect and unlike a streak.\nUpdates the points "
            "at once, without searching again.",
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

    def closeEvent(self, event) -> None:
        """Cancel a running search when the dock widget is closed."""
        self.cancel()
        super().closeEvent(event)


def _warm_imports() -> None:
    try:
        import napari.layers.utils.layer_utils  # noqa: F401
        import pandas  # noqa: F401
    except Exception:  # only a head start; the main thread imports it anyway
        pass
