"""The napari dock widget: find the repeated motifs (defects) of an image layer.

Everything here runs on the main thread; the solve itself runs in a napari
worker thread (:mod:`napari_sasd.worker`) and talks back through Qt signals.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QLabel,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from .flatten import flatten
from .layers import (
    META_KEY,
    apply_layer_data,
    defects_layer_data,
    motif_color,
    pixel_to_world,
    plane_transform,
    region_geometry,
    result_layer_data,
    result_layers,
    update_points,
)
from .peaks import default_threshold, find_defects, motif_thresholds
from .result import SolveProgress, SolveResult
from .settings import LIMITS, load_settings, save_settings
from .worker import SolveRunner

REGION_CHOICES = [
    ("Whole image", "whole"),
    ("Rectangle in a Shapes layer", "shapes"),
    ("Current field of view", "view"),
]
STACK_CHOICES = [
    ("Spectroscopy cube (energies share positions)", "cube"),
    ("Current slice only", "slice"),
]
MASK_MODE_CHOICES = [
    ("are left out", "exclude"),
    ("are the only ones analysed", "include"),
]


@dataclass
class RunContext:
    """What a run analysed, kept to place its results and to warm-start the next."""

    source: Any  # the napari Image layer
    region: tuple[int, int, int, int]
    image: np.ndarray
    key: tuple
    seed: int
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class MotifGallery(QWidget):
    """A row of small motif thumbnails with a caption each (count of copies)."""

    def __init__(self, parent: QWidget | None = None, size: int = 64) -> None:
        super().__init__(parent)
        self._size = size
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self.images: list[QLabel] = []
        self.captions: list[QLabel] = []

    def set_motifs(self, kernels: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Show ``kernels`` ``(N, kh, kw)`` or ``(N, C, kh, kw)``; ``counts`` per motif."""
        n = len(kernels)
        while len(self.images) > n:
            for w in (self.images.pop(), self.captions.pop()):
                self._grid.removeWidget(w)
                w.deleteLater()
        while len(self.images) < n:
            i = len(self.images)
            img, cap = QLabel(), QLabel()
            img.setAlignment(Qt.AlignmentFlag.AlignCenter)
            img.setFixedSize(self._size + 8, self._size + 8)
            cap.setAlignment(Qt.AlignmentFlag.AlignCenter)
            cap.setMinimumHeight(2 * cap.fontMetrics().height() + 4)
            img.setStyleSheet(f"border: 2px solid {motif_color(i)};")
            self._grid.addWidget(img, 0, i)
            self._grid.addWidget(cap, 1, i)
            self.images.append(img)
            self.captions.append(cap)
        for i, k in enumerate(kernels):
            self.images[i].setPixmap(_kernel_pixmap(np.asarray(k), self._size))
            text = f"Motif {i + 1}"
            if counts is not None:
                text += f"\n{int(counts[i])} copies"
            self.captions[i].setText(text)


def _kernel_pixmap(k: np.ndarray, size: int) -> QPixmap:
    # Channels side by side; zero is mid-grey so dips and bumps both show.
    if k.ndim == 3:
        k = np.concatenate(list(k), axis=1)
    lim = float(np.abs(k).max()) or 1.0
    g = np.ascontiguousarray(np.clip(127.5 + 127.5 * k / lim, 0, 255).astype(np.uint8))
    h, w = g.shape
    qimg = QImage(g.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    scale = max(1, size // max(h, 1))
    return QPixmap.fromImage(qimg).scaled(
        w * scale, h * scale, transformMode=Qt.TransformationMode.FastTransformation
    )


class SasdWidget(QWidget):
    """Dock widget: find repeated motifs (point defects) in an image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (injected by napari).

    Notes
    -----
    ``run_finished`` is emitted once per run, after the result layers are
    shown, with ``"done"``, ``"cancelled"`` or ``"error"``.
    """

    run_finished = Signal(str)

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.runner: SolveRunner | None = None
        self.result: SolveResult | None = None
        self.context: RunContext | None = None
        self._pending: RunContext | None = None
        self._points = None  # defects layer of the last result
        self._last_run: dict[int, str] = {}  # id(source layer) -> run_id of its layers
        self._info_layer = None  # the image layer _on_image_changed last described
        s = load_settings()

        # --- input ---------------------------------------------------------
        self._image = ComboBox(
            label="Image",
            choices=self._image_choices,
            nullable=True,
            tooltip="The image (topograph, current map or spectroscopy cube) to search.",
        )
        self._info = Label(value="")
        self._stack = ComboBox(
            label="3-D stack",
            choices=STACK_CHOICES,
            value=s["stack_mode"],
            tooltip="Spectroscopy cube: all energies share one map of defect positions, each "
            "motif has a signature per energy.\nCurrent slice: analyse only the slice shown.",
        )
        self._region = ComboBox(
            label="Region",
            choices=REGION_CHOICES,
            value=s["region_mode"],
            tooltip="Which part of the image to analyse. Rectangle: the selected (or last) "
            "shape of a Shapes layer.\nField of view: what is visible in the canvas now.",
        )
        self._shapes = ComboBox(
            label="Shapes layer",
            choices=self._shapes_choices,
            nullable=True,
            tooltip="Shapes layer holding the rectangle to analyse.",
        )
        self._mask = ComboBox(
            label="Mask (Labels)",
            choices=self._labels_choices,
            nullable=True,
            tooltip="Optional Labels layer marking pixels to leave out (e.g. a step edge, a "
            "tip change, a big adsorbate).\nPainted pixels (label > 0) are left out, or, with "
            "'are the only ones analysed', only they are used.",
        )
        self._mask_mode = ComboBox(
            label="Labelled pixels",
            choices=MASK_MODE_CHOICES,
            value=s["mask_mode"],
            tooltip="label > 0 means 'leave out' (default) or 'analyse only these'.",
        )
        self._flatten = CheckBox(
            text="Flatten (plane + scan lines)",
            value=s["flatten"],
            tooltip="Remove a tilted plane and per-scan-line offsets before searching.",
        )
        # --- parameters ----------------------------------------------------
        self._k = SpinBox(
            label="Motif size (px)",
            min=LIMITS["kernel_size"][0],
            max=LIMITS["kernel_size"][1],
            value=s["kernel_size"],
            tooltip="Height and width of a motif in pixels: a bit larger than one defect "
            "signature, including its halo.",
        )
        self._n = SpinBox(
            label="Number of motifs",
            min=LIMITS["n_motifs"][0],
            max=LIMITS["n_motifs"][1],
            value=s["n_motifs"],
            tooltip="How many different kinds of defect to look for.",
        )
        self._auto_lam = CheckBox(
            text="Automatic sparsity (λ)",
            value=s["auto_lam"],
            tooltip="Let the solver choose λ; the value it used is shown after the run.",
        )
        self._lam = FloatSpinBox(
            label="λ (sparsity)",
            min=LIMITS["lam"][0],
            max=LIMITS["lam"][1],
            step=0.01,
            value=s["lam"],
            enabled=not s["auto_lam"],
            tooltip="Larger λ: fewer, stronger copies are kept (sparser maps); smaller: more "
            "faint copies, more noise. Normalised units, so a value carries over between images.",
        )
        # Qt's default 2 decimals round a small automatic lambda (copied here
        # after a run) and the minimum to 0.00, which the solver refuses.
        self._lam.native.setDecimals(4)
        self._lam.min = LIMITS["lam"][0]
        self._lam.value = s["lam"]
        self._lam_used = Label(value="")
        self._positive = CheckBox(
            text="Non-negative activations",
            value=s["positive"],
            tooltip="Each copy adds the motif with a positive amplitude (usual for defects). "
            "Untick if the same defect can appear inverted.",
        )
        self._recon = CheckBox(
            text="Reconstruction and residual layers",
            value=s["with_reconstruction"],
            tooltip="Also show the image rebuilt from the motifs, and what is left over.",
        )
        self._keep = CheckBox(
            text="Keep previous results",
            value=s["keep_previous"],
            tooltip="Add new result layers instead of replacing the last ones of this image.",
        )
        self._max_iter = SpinBox(
            label="Iteration budget",
            min=LIMITS["max_iter"][0],
            max=LIMITS["max_iter"][1],
            step=50,
            value=s["max_iter"],
            tooltip="Maximum number of iterations (0 = the solver's default). Lower it for a "
            "quick look, raise it if the motifs still look noisy.",
        )
        self._seed = SpinBox(
            label="Random seed",
            min=LIMITS["seed"][0],
            max=LIMITS["seed"][1],
            value=s["seed"],
            tooltip="Seed of the random start: the same seed gives the same result.",
        )
        self._run = PushButton(text="Run", tooltip="Start the search (click again to cancel).")
        self._status = Label(value="")
        self._threshold = FloatSlider(
            label="Detection threshold",
            min=0.0,
            max=1.0,
            step=0.01,
            value=0.25,
            readout=True,
            tooltip="Smallest copy counted as a defect, as a fraction of the strongest copy. "
            "Updates the points at once, without searching again.",
        )
        self._per_motif = CheckBox(
            text="Threshold per motif",
            value=s["threshold_per_motif"],
            tooltip="Compare each motif's copies with its own strongest copy, so a faint kind "
            "of defect is found beside a bright one. Off: one threshold for all motifs.",
        )
        self._save = PushButton(
            text="Save bundle…",
            enabled=False,
            tooltip="Save motifs, maps, defects and parameters of the last result to a folder.",
        )

        self._inputs = Container(
            widgets=[
                self._image,
                self._info,
                self._stack,
                self._region,
                self._shapes,
                self._mask,
                self._mask_mode,
                self._flatten,
                self._k,
                self._n,
                self._auto_lam,
                self._lam,
                self._lam_used,
                self._positive,
                self._recon,
                self._keep,
            ],
            labels=True,
        )
        self._advanced = Container(widgets=[self._max_iter, self._seed], labels=True)
        self._outputs = Container(widgets=[self._threshold, self._per_motif], labels=True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.gallery = MotifGallery()
        for lab in (self._info, self._lam_used, self._status):
            lab.native.setWordWrap(True)

        from superqt import QCollapsible

        self._collapsible = QCollapsible("Advanced")
        self._collapsible.addWidget(self._advanced.native)

        lay = QVBoxLayout(self)
        lay.addWidget(self._inputs.native)
        lay.addWidget(self._collapsible)
        lay.addWidget(self._run.native)
        lay.addWidget(self.progress)
        lay.addWidget(self._status.native)
        lay.addWidget(self.gallery)
        lay.addWidget(self._outputs.native)
        lay.addWidget(self._save.native)
        lay.addStretch(1)

        self._image.changed.connect(self._on_image_changed)
        self._region.changed.connect(self._update_visibility)
        self._mask.changed.connect(self._update_visibility)
        self._auto_lam.changed.connect(lambda v: setattr(self._lam, "enabled", not v))
        self._run.changed.connect(self._on_run_clicked)
        self._threshold.changed.connect(self._on_threshold)
        self._per_motif.changed.connect(self._on_threshold)
        self._per_motif.changed.connect(lambda *_: save_settings(self._values()))
        self._save.changed.connect(self._on_save)
        ev = self.viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.reordered, ev.renamed):
            e.connect(self.reset_choices)
        self.reset_choices()

    # --- layer choices ---------------------------------------------------------
    def _layers_of(self, kind: str) -> list[tuple[str, Any]]:
        import napari.layers

        cls = getattr(napari.layers, kind)
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, cls)]

    def _image_choices(self, _w=None):
        # Result layers are images too, but searching them makes no sense.
        return [(n, lay) for n, lay in self._layers_of("Image") if META_KEY not in lay.metadata]

    def _shapes_choices(self, _w=None):
        return self._layers_of("Shapes")

    def _labels_choices(self, _w=None):
        return self._layers_of("Labels")

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer pickers (called on layer insert/remove/rename)."""
        self._inputs.reset_choices()
        if self._image.value is None:
            choices = self._image_choices()
            if choices:
                self._image.value = choices[-1][1]
        self._on_image_changed()

    # --- state -----------------------------------------------------------------
    def _on_image_changed(self, *_: Any) -> None:
        layer = self._image.value
        # Called on every layer event too (reset_choices): only a newly picked
        # layer may turn flattening on, so a user's unticking sticks.
        picked = layer is not None and layer is not self._info_layer
        self._info_layer = layer
        msg = ""
        if layer is not None:
            shape = tuple(layer.data[0].shape if layer.multiscale else layer.data.shape)
            if layer.rgb:
                msg = "RGB image: convert it to one channel first (right-click > Split RGB)."
            elif layer.ndim == 2:
                msg = f"{shape[0]} × {shape[1]} image"
            elif layer.ndim == 3:
                msg = f"stack of {shape[0]} × {shape[1]} × {shape[2]}"
            else:
                msg = f"{layer.ndim}-D data: only 2-D images and 3-D stacks are supported."
            if _is_stm_scan(layer) and not layer.rgb and layer.ndim in (2, 3):
                # Raw STM scans carry a tilt and scan-line offsets; unflattened,
                # the FeSe test scan gave motifs that were mostly the tilt.
                if picked:
                    self._flatten.value = True
                if self._flatten.value:
                    msg += " (STM scan: flattening on)"
        self._info.value = msg
        self._update_visibility()

    def _update_visibility(self, *_: Any) -> None:
        layer = self._image.value
        self._stack.visible = layer is not None and layer.ndim == 3 and not layer.rgb
        self._shapes.visible = self._region.value == "shapes"
        self._mask_mode.visible = self._mask.value is not None

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
            "threshold_per_motif": bool(self._per_motif.value),
        }

    # --- geometry ----------------------------------------------------------------
    def _world_point(self, p: np.ndarray) -> np.ndarray:
        # Pad a point with fewer axes than the viewer with the current dims position.
        p = np.asarray(p, float)
        point = np.asarray(self.viewer.dims.point, float)
        if len(p) < len(point):
            p = np.concatenate([point[: len(point) - len(p)], p])
        return p

    def _to_pixels(self, layer, world_pts: np.ndarray) -> np.ndarray:
        """World points -> (row, col) in ``layer``'s data, ``(M, 2)``."""
        return np.array(
            [np.asarray(layer.world_to_data(self._world_point(w)))[-2:] for w in world_pts]
        )

    def region_for(self, layer) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` in ``layer``'s pixels chosen by the Region control.

        Raises
        ------
        ValueError
            With a message for the user (no rectangle, region outside the image).
        """
        H, W = layer.data.shape[-2:] if not layer.multiscale else layer.data[0].shape[-2:]
        mode = self._region.value
        if mode == "whole":
            return 0, 0, int(H), int(W)
        if mode == "shapes":
            shapes = self._shapes.value
            if shapes is None or len(shapes.data) == 0:
                raise ValueError("Draw a rectangle in a Shapes layer and pick that layer.")
            sel = sorted(shapes.selected_data)
            verts = np.asarray(shapes.data[sel[-1] if sel else -1], float)
            world = np.array([shapes.data_to_world(v) for v in verts])
        else:
            cam = _camera(self.viewer)
            zoom = float(cam.zoom)
            ch, cw = self._canvas_size()
            cy, cx = np.asarray(cam.center, float)[-2:]
            hy, hx = ch / (2 * zoom), cw / (2 * zoom)
            world = np.array(
                [[cy - hy, cx - hx], [cy - hy, cx + hx], [cy + hy, cx - hx], [cy + hy, cx + hx]]
            )
        px = self._to_pixels(layer, world)
        lo, hi = px.min(0), px.max(0)
        # Shape corners sit on pixel edges (pixel i spans i - 0.5 .. i + 0.5).
        y0, x0 = (int(v) for v in np.clip(np.floor(lo + 0.5), 0, [H, W]))
        y1, x1 = (int(v) for v in np.clip(np.floor(hi + 0.5), 0, [H, W]))
        if y1 - y0 < 1 or x1 - x0 < 1:
            raise ValueError("The chosen region does not overlap the image.")
        return y0, x0, y1, x1

    def _canvas_size(self) -> tuple[int, int]:
        """``(height, width)`` of the viewer's canvas in screen pixels."""
        # napari 0.9 has no public canvas size, and its private one is going
        # away (FutureWarning); the canvas is the largest OpenGL widget of the
        # window this dock widget sits in, found with Qt's public API.
        from qtpy.QtOpenGLWidgets import QOpenGLWidget

        gls = self.window().findChildren(QOpenGLWidget)
        if gls:
            g = max(gls, key=lambda g: g.width() * g.height())
            return int(g.height()), int(g.width())
        # Not docked in the viewer's window (a widget made on its own).
        h, w = self.viewer.window._qt_viewer.canvas.size  # napari gives (height, width)
        return int(h), int(w)

    def _plane_index(self, layer) -> tuple[int, ...]:
        """Indices of the displayed plane along ``layer``'s leading axes."""
        d = layer.world_to_data(self._world_point(np.asarray(self.viewer.dims.point)))
        lead = np.shape(layer.data)[:-2]
        return tuple(int(np.clip(np.round(v), 0, n - 1)) for v, n in zip(d, lead, strict=False))

    def _mask_for(self, layer, region) -> np.ndarray | None:
        """Boolean ``(h, w)`` (True = analysed) from the Labels layer, or None."""
        labels = self._mask.value
        if labels is None:
            return None
        y0, x0, y1, x1 = region
        # Nearest labels pixel of each region pixel, through world coordinates
        # (scale, translate, rotation, shear, affine), so a Labels layer of
        # another size, or one not rotated with the image, still fits.
        to_labels = np.linalg.inv(pixel_to_world(labels)) @ pixel_to_world(layer)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        lin, off = to_labels[:2, :2], to_labels[:2, 2]
        rows = np.round(lin[0, 0] * yy + lin[0, 1] * xx + off[0]).astype(int)
        cols = np.round(lin[1, 0] * yy + lin[1, 1] * xx + off[1]).astype(int)
        data = labels.data
        if data.ndim > 2:  # the plane on display
            data = data[self._plane_index(labels)]
        data = np.asarray(data)
        lh, lw = data.shape[-2:]
        inside = (rows >= 0) & (rows < lh) & (cols >= 0) & (cols < lw)
        lab = data[np.clip(rows, 0, lh - 1), np.clip(cols, 0, lw - 1)] > 0
        lab &= inside
        return ~lab if self._mask_mode.value == "exclude" else lab

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
        mask = self._mask_for(layer, region)
        if mask is not None and mask.sum() < k * k:
            raise ValueError("The mask leaves too few pixels to analyse.")
        if v["flatten"]:
            img = flatten(img, plane=True, lines=True, mask=mask)
        kwargs: dict[str, Any] = {
            "kernel_size": k,
            "n_motifs": n,
            "lam": None if v["auto_lam"] else v["lam"],
            "channel_axis": 0 if cube else None,
            "positive": v["positive"],
            "mask": mask,
            "seed": v["seed"],
            "max_iter": v["max_iter"] or None,
        }
        mask_key = None if mask is None else (self._mask.value.name, v["mask_mode"])
        key = (
            id(layer),
            region,
            k,
            n,
            plane,
            v["flatten"],
            mask_key,
            v["positive"],
            v["seed"],
        )
        # Warm start: same data and motif shape as last time, only lambda (or
        # the threshold) changed -> start from the previous motifs.
        if self.result is not None and self.context is not None and self.context.key == key:
            kwargs["init_kernels"] = self.result.kernels
        ctx = RunContext(source=layer, region=region, image=img, key=key, seed=v["seed"])
        return img, kwargs, ctx

    def _on_run_clicked(self, *_: Any) -> None:
        if self.runner is not None and self.runner.running:
            self.cancel()
        else:
            self.run()

    def run(self) -> bool:
        """Start a search with the current settings.

        Returns
        -------
        bool
            False when the input was refused (the reason is shown to the user).
        """
        from napari.utils.notifications import show_error

        if self.runner is not None and self.runner.running:
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
        self._inputs.enabled = False
        self._advanced.enabled = False
        self.progress.setValue(0)
        warm = " (from the previous motifs)" if "init_kernels" in kwargs else ""
        self._status.value = f"Searching{warm}…"
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

    def _on_result(self, result: SolveResult) -> None:
        ctx = self._pending
        assert ctx is not None
        if ctx.source not in self.viewer.layers:
            # The source was deleted while the solver ran: results aligned
            # with a layer that is gone would only confuse; drop them.
            from napari.utils.notifications import show_warning

            show_warning(f"napari-sasd: '{ctx.source.name}' was removed; results discarded.")
            self._status.value = "Source layer removed during the run: results discarded."
            return
        acts = result.activations
        top = float(acts.max(initial=0.0))
        rel = default_threshold(acts) / top if top > 0 else 0.0
        with self._threshold.changed.blocked():
            self._threshold.value = round(min(max(rel, 0.0), 1.0), 2)
        defects = find_defects(acts, self._threshold.value, relative=True)
        layer = ctx.source
        src = layer.name
        tuples = result_layer_data(
            result,
            defects,
            source=src,
            region=ctx.region,
            scale=layer.scale,
            translate=layer.translate,
            source_path=getattr(layer.source, "path", None),
            analysed=ctx.image,
            with_reconstruction=bool(self._recon.value),
            run_id=ctx.run_id,
            plane=plane_transform(layer),
            **self._thresholds(result),
        )
        # Replace only the layers of this source's previous run in this widget,
        # found by run id: a renamed source still finds them, and result layers
        # the user opened from a bundle (same source name) are left alone.
        prev = self._last_run.get(id(layer))
        if self._keep.value or prev is None:
            replace = []
        else:
            replace = result_layers(self.viewer, None, prev)
        try:
            shown = apply_layer_data(self.viewer, tuples, replace)
        except Exception as exc:  # napari rejected a layer: the viewer is unchanged
            self._on_error(exc)
            return
        self.result, self.context = result, ctx
        self._last_run[id(layer)] = ctx.run_id
        self._points = next(lay for lay in shown if lay.metadata[META_KEY]["role"] == "defects")
        # Keep the source selected (result layers become the active ones).
        self.viewer.layers.selection.active = self._points
        self.gallery.set_motifs(result.kernels, defects.counts(result.n_motifs))
        self._lam_used.value = f"λ used: {result.lam:.4g}"
        if self._auto_lam.value:
            with self._lam.changed.blocked():
                self._lam.value = float(np.clip(result.lam, self._lam.min, self._lam.max))
        self._save.enabled = True

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self._status.value = f"Failed: {exc}"
        show_error(f"napari-sasd: the search failed: {exc}")

    def _on_finished(self, state: str) -> None:
        self._run.text = "Run"
        self._inputs.enabled = True
        self._advanced.enabled = True
        if state == "done" and self.result is not None:
            r = self.result
            self.progress.setValue(1000)
            conv = "converged" if r.converged else "iteration budget reached"
            self._status.value = f"Done: {r.n_iter} iterations ({conv})."
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

    # --- threshold ---------------------------------------------------------------
    def current_defects(self):
        """Defects of the last result at the current threshold."""
        assert self.result is not None
        return find_defects(
            self.result.activations, self._threshold.value, relative=True,
            per_motif=bool(self._per_motif.value),
        )  # fmt: skip

    def _refresh_gallery(self, defects=None) -> None:
        if self.result is None:
            return
        defects = defects or self.current_defects()
        self.gallery.set_motifs(self.result.kernels, defects.counts(self.result.n_motifs))

    def _thresholds(self, result: SolveResult | None = None) -> dict[str, Any]:
        # The slider is relative; the bundle and the metadata also want image
        # units: one value, or one per motif. ``result``: the run being shown
        # (not yet ``self.result``), else the last one.
        rel = float(self._threshold.value)
        per = bool(self._per_motif.value)
        out: dict[str, Any] = {"threshold": None, "threshold_relative": rel}
        result = result if result is not None else self.result
        if result is not None:
            thr = motif_thresholds(result.activations, rel, relative=True, per_motif=per)
            out["threshold"] = thr.tolist() if per else float(thr[0]) if len(thr) else 0.0
        return out

    def _on_threshold(self, *_: Any) -> None:
        if self.result is None or self.context is None:
            return
        defects = self.current_defects()
        self._refresh_gallery(defects)
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
    def _on_save(self, *_: Any, path: str | None = None) -> str | None:
        from napari.utils.notifications import show_error, show_info

        if self.result is None or self.context is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Save napari-sasd bundle", f"{self.context.source.name}.sasd"
            )
            if not path:
                return None
        try:
            from .bundle import save_bundle

            layer, ctx = self.context.source, self.context
            thresholds = self._thresholds()
            cube = self.result.kernels.ndim == 4
            nd = 3 if cube else 2
            out = save_bundle(
                path,
                self.result,
                defects=self.current_defects(),
                source=layer.name,
                source_path=getattr(layer.source, "path", None),
                region=ctx.region,
                scale=tuple(float(v) for v in layer.scale[-nd:]),
                translate=tuple(float(v) for v in layer.translate[-nd:]),
                colors=[motif_color(n) for n in range(self.result.n_motifs)],
                threshold=thresholds["threshold"],
                extra={
                    "threshold_relative": thresholds["threshold_relative"],
                    "threshold_per_motif": bool(self._per_motif.value),
                    **plane_transform(layer),
                },
            )
        except Exception as exc:
            show_error(f"napari-sasd: could not save the bundle: {exc}")
            return None
        show_info(f"napari-sasd: saved {out or path}")
        return str(out or path)

    def closeEvent(self, event) -> None:
        """Cancel a running search when the dock widget is closed."""
        self.cancel()
        super().closeEvent(event)


def _camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` since napari 0.9 (where
    ``viewer.camera`` is deprecated), ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera


def _is_stm_scan(layer) -> bool:
    """Whether a layer was read from an instrument scan (Nanonis .sxm/.3ds)."""
    meta = getattr(layer, "metadata", {}) or {}
    path = str(meta.get("source_path") or getattr(layer.source, "path", "") or "")
    return "scan_direction" in meta or path.lower().endswith((".sxm", ".3ds"))
