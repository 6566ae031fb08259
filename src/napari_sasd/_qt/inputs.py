"""What to analyse: the image, the 3-D stack mode, the region, the mask, flattening.

Also turns those controls into pixels of the image (region, mask), through
napari's world coordinates, so Shapes, Labels and the camera may have any
scale, translation, rotation or affine of their own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..layers import META_KEY, pixel_to_world

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


class InputsPanel(QWidget):
    """The input controls (magicgui widgets in a labelled container).

    Parameters
    ----------
    viewer : napari.Viewer
    settings : dict
        Saved settings (:func:`napari_sasd.settings.load_settings`).
    """

    def __init__(self, viewer, settings: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._info_layer = None  # the image layer on_image_changed last described
        s = settings
        self.image = ComboBox(
            label="Image",
            choices=self._image_choices,
            nullable=True,
            tooltip="The image (topograph, current map or spectroscopy cube) to search.",
        )
        self.info = Label(value="")
        self.info.native.setWordWrap(True)
        self.stack = ComboBox(
            label="3-D stack",
            choices=STACK_CHOICES,
            value=s["stack_mode"],
            tooltip="Spectroscopy cube: all energies share one map of defect positions, each "
            "motif has a signature per energy.\nCurrent slice: analyse only the slice shown.",
        )
        self.region = ComboBox(
            label="Region",
            choices=REGION_CHOICES,
            value=s["region_mode"],
            tooltip="Which part of the image to analyse. Rectangle: the selected (or last) "
            "shape of a Shapes layer.\nField of view: what is visible in the canvas now.",
        )
        self.shapes = ComboBox(
            label="Shapes layer",
            choices=self._shapes_choices,
            nullable=True,
            tooltip="Shapes layer holding the rectangle to analyse.",
        )
        self.mask = ComboBox(
            label="Mask (Labels)",
            choices=self._labels_choices,
            nullable=True,
            tooltip="Optional Labels layer marking pixels to leave out (e.g. a step edge, a "
            "tip change, a big adsorbate).\nPainted pixels (label > 0) are left out, or, with "
            "'are the only ones analysed', only they are used.",
        )
        self.mask_mode = ComboBox(
            label="Labelled pixels",
            choices=MASK_MODE_CHOICES,
            value=s["mask_mode"],
            tooltip="label > 0 means 'leave out' (default) or 'analyse only these'.",
        )
        self.flatten = CheckBox(
            text="Flatten (plane + scan lines)",
            value=s["flatten"],
            tooltip="Remove a tilted plane and per-scan-line offsets before searching.",
        )
        self.scars = CheckBox(
            text="Leave out scan-line scars",
            value=s["scars"],
            tooltip="Mark partial scan-line streaks (tip noise) and leave them out of the fit, "
            "when the image shows them.\nThe marks appear as a Labels layer '<image> scars': "
            "paint or erase it, and the next runs use it as it is (delete it to mark again).",
        )
        self.lattice = CheckBox(
            text="Remove the atomic lattice (when found)",
            value=s["lattice"],
            tooltip="Find an atomic lattice from the Bragg peaks of the image's Fourier "
            "transform and remove it before the search, so motifs are the departures from it "
            "(vacancies, dopants, adsorbates).\nThe lattice removed is shown as a hidden layer "
            "'<image> lattice'.",
        )
        self.container = Container(
            widgets=[
                self.image,
                self.info,
                self.stack,
                self.region,
                self.shapes,
                self.mask,
                self.mask_mode,
                self.flatten,
                self.scars,
                self.lattice,
            ],
            labels=True,
        )
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.container.native)
        self.image.changed.connect(self.on_image_changed)
        self.region.changed.connect(self.update_visibility)
        self.mask.changed.connect(self.update_visibility)

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

    def reset_choices(self) -> None:
        """Refresh the layer pickers; pick the newest image when none is."""
        self.container.reset_choices()
        if self.image.value is None:
            choices = self._image_choices()
            if choices:
                self.image.value = choices[-1][1]
        self.on_image_changed()

    def on_image_changed(self, *_: Any) -> None:
        """Describe the picked image; turn flattening on for a newly picked STM scan."""
        layer = self.image.value
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
            scan = not layer.rgb and layer.ndim in (2, 3) and _is_stm_scan(layer)
            lines = (
                not scan and picked and not layer.rgb and layer.ndim in (2, 3)
                and _shows_scan_lines(layer)
            )  # fmt: skip
            if scan or lines:
                # Raw STM scans carry a tilt and scan-line offsets; unflattened,
                # the FeSe test scan gave motifs that were mostly the tilt. A
                # picture exported from a scan keeps its line offsets (the
                # labelled WSe2 JPEGs: 15 defects unflattened, 31 flattened,
                # on one of them).
                if picked:
                    self.flatten.value = True
                    self.scars.value = True
                if self.flatten.value:
                    msg += " (STM scan: flattening on)" if scan else " (scan lines: flattening on)"
            measured = (layer.metadata or {}).get("measured_points")
            if measured and measured[0] < measured[1]:
                msg += f"; {measured[0]} of {measured[1]} points measured"
        self.info.value = msg
        self.update_visibility()

    def update_visibility(self, *_: Any) -> None:
        """Show only the controls that apply."""
        layer = self.image.value
        self.stack.visible = layer is not None and layer.ndim == 3 and not layer.rgb
        self.shapes.visible = self.region.value == "shapes"
        self.mask_mode.visible = self.mask.value is not None

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
        mode = self.region.value
        if mode == "whole":
            return 0, 0, int(H), int(W)
        if mode == "shapes":
            shapes = self.shapes.value
            if shapes is None or len(shapes.data) == 0:
                raise ValueError("Draw a rectangle in a Shapes layer and pick that layer.")
            sel = sorted(shapes.selected_data)
            verts = np.asarray(shapes.data[sel[-1] if sel else -1], float)
            world = np.array([shapes.data_to_world(v) for v in verts])
        else:
            cam = camera(self.viewer)
            zoom = float(cam.zoom)
            ch, cw = self.canvas_size()
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

    def canvas_size(self) -> tuple[int, int]:
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

    def plane_index(self, layer) -> tuple[int, ...]:
        """Indices of the displayed plane along ``layer``'s leading axes."""
        d = layer.world_to_data(self._world_point(np.asarray(self.viewer.dims.point)))
        lead = np.shape(layer.data)[:-2]
        return tuple(int(np.clip(np.round(v), 0, n - 1)) for v, n in zip(d, lead, strict=False))

    def mask_for(self, layer, region) -> np.ndarray | None:
        """Boolean ``(h, w)`` (True = analysed) from the Labels layer, or None."""
        labels = self.mask.value
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
            data = data[self.plane_index(labels)]
        data = np.asarray(data)
        lh, lw = data.shape[-2:]
        inside = (rows >= 0) & (rows < lh) & (cols >= 0) & (cols < lw)
        lab = data[np.clip(rows, 0, lh - 1), np.clip(cols, 0, lw - 1)] > 0
        lab &= inside
        return ~lab if self.mask_mode.value == "exclude" else lab


def camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` since napari 0.9 (where
    ``viewer.camera`` is deprecated), ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera


def _shows_scan_lines(layer) -> bool:
    """Whether a picked picture carries scan-line offsets
    (:func:`napari_sasd.flatten.shows_scan_lines`, on its first plane, at most
    about 1024 px a side so that picking a layer stays instant)."""
    from ..flatten import shows_scan_lines

    data = layer.data[-1] if layer.multiscale else layer.data
    plane = data[(0,) * (data.ndim - 2)] if data.ndim > 2 else data
    step = max(1, max(plane.shape) // 1024)
    return shows_scan_lines(np.asarray(plane[::step, ::step]))


def _is_stm_scan(layer) -> bool:
    """Whether a layer was read from an instrument scan (Nanonis .sxm/.3ds)."""
    meta = getattr(layer, "metadata", {}) or {}
    path = str(meta.get("source_path") or getattr(layer.source, "path", "") or "")
    return "scan_direction" in meta or path.lower().endswith((".sxm", ".3ds"))
