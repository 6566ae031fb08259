"""Where the motifs come from: learnt by a search, or known (a library or a
bundle); locating the last result's motifs in every other open image; adding
new motifs to the library."""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, FileEdit, PushButton
from qtpy.QtWidgets import QVBoxLayout, QWidget

LEARN = "learn"
KNOWN = "from a library or bundle"


class MotifSourcePanel(QWidget):
    """*Motifs: learn | from a library or bundle*, and *Locate in all images*."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source = ComboBox(
            label="Motifs",
            choices=(LEARN, KNOWN),
            value=LEARN,
            tooltip="learn: find the motifs in this image (a search). From a library or "
            "bundle: locate known motifs (a .sasdlib motif library or a .sasd result "
            "bundle), with the motifs held fixed: a fraction of a search's time.",
        )
        self.path = FileEdit(
            label="Library / bundle",
            mode="d",
            visible=False,
            tooltip="A motif library folder (.sasdlib) or a result bundle folder (.sasd).",
        )
        self.locate_all = PushButton(
            text="Locate in all images",
            enabled=False,
            tooltip="Locate the last result's motifs in every other open 2-D image, one after "
            "the other (learn once on one scan, locate everywhere).",
        )
        self.add_new = PushButton(
            text="Add the new motifs to the library",
            enabled=False,
            tooltip="After a search, with a library chosen above: add the motifs it calls new "
            "to it, named after the image ('scan #2').",
        )
        self.container = Container(widgets=[self.source, self.path], labels=True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.container.native)
        lay.addWidget(self.locate_all.native)
        lay.addWidget(self.add_new.native)
        self.source.changed.connect(lambda v: setattr(self.path, "visible", v == KNOWN))

    @property
    def known(self) -> bool:
        """Whether the motifs are to be read from a library or bundle."""
        return self.source.value == KNOWN

    def set_enabled(self, on: bool) -> None:
        """Lock or unlock the controls (locked while a search runs)."""
        self.container.enabled = on
