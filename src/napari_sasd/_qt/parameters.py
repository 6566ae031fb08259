"""How to search: motif size and count, sparsity, what to show; the advanced budget and seed."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, Container, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..settings import LIMITS


class ParametersPanel(QWidget):
    """The solver parameters, plus an "Advanced" fold (iteration budget, seed).

    Parameters
    ----------
    settings : dict
        Saved settings (:func:`napari_sasd.settings.load_settings`).
    """

    def __init__(self, settings: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        s = settings
        self.k = SpinBox(
            label="Motif size (px)",
            min=LIMITS["kernel_size"][0],
            max=LIMITS["kernel_size"][1],
            value=s["kernel_size"],
            tooltip="Height and width of a motif in pixels: a bit larger than one defect "
            "signature, including its halo.",
        )
        self.suggest = PushButton(
            text="Suggest",
            tooltip="Suggest a motif size from the region: the scale at which its strongest "
            "blobs answer a Laplacian of Gaussian, times the halo (computed in the background).",
        )
        # The size box and its Suggest button on one labelled row.
        self.k_row = Container(
            widgets=[self.k, self.suggest], layout="horizontal", labels=False, label=self.k.label
        )
        self.k_row.margins = (0, 0, 0, 0)
        self.n = SpinBox(
            label="Number of motifs",
            min=LIMITS["n_motifs"][0],
            max=LIMITS["n_motifs"][1],
            value=s["n_motifs"],
            tooltip="How many different kinds of defect to look for.",
        )
        self.auto_lam = CheckBox(
            text="Automatic sparsity (λ)",
            value=s["auto_lam"],
            tooltip="Let the solver choose λ; the value it used is shown after the run.",
        )
        self.lam = FloatSpinBox(
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
        self.lam.native.setDecimals(4)
        self.lam.min = LIMITS["lam"][0]
        self.lam.value = s["lam"]
        self.lam_used = Label(value="")
        self.lam_used.native.setWordWrap(True)
        self.positive = CheckBox(
            text="Non-negative activations",
            value=s["positive"],
            tooltip="Each copy adds the motif with a positive amplitude (usual for defects). "
            "Untick if the same defect can appear inverted.",
        )
        self.recon = CheckBox(
            text="Reconstruction and residual layers",
            value=s["with_reconstruction"],
            tooltip="Also show the image rebuilt from the motifs, and what is left over.",
        )
        self.keep = CheckBox(
            text="Keep previous results",
            value=s["keep_previous"],
            tooltip="Add new result layers instead of replacing the last ones of this image.",
        )
        self.max_iter = SpinBox(
            label="Iteration budget",
            min=LIMITS["max_iter"][0],
            max=LIMITS["max_iter"][1],
            step=50,
            value=s["max_iter"],
            tooltip="Maximum number of iterations (0 = the solver's default). Lower it for a "
            "quick look, raise it if the motifs still look noisy.",
        )
        self.seed = SpinBox(
            label="Random seed",
            min=LIMITS["seed"][0],
            max=LIMITS["seed"][1],
            value=s["seed"],
            tooltip="Seed of the random start: the same seed gives the same result.",
        )
        self.container = Container(
            widgets=[
                self.k_row,
                self.n,
                self.auto_lam,
                self.lam,
                self.lam_used,
                self.positive,
                self.recon,
                self.keep,
            ],
            labels=True,
        )
        self.advanced = Container(widgets=[self.max_iter, self.seed], labels=True)

        from superqt import QCollapsible

        self.collapsible = QCollapsible("Advanced")
        self.collapsible.addWidget(self.advanced.native)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.container.native)
        lay.addWidget(self.collapsible)
        self.auto_lam.changed.connect(lambda v: setattr(self.lam, "enabled", not v))

    def set_enabled(self, on: bool) -> None:
        """Lock or unlock the controls (locked while a search runs)."""
        self.container.enabled = on
        self.advanced.enabled = on
