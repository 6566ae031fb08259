"""Locating known motifs in every open image, and the motif library (issue 15).

A part of :class:`napari_sasd.widget.SasdWidget` (a mixin: it uses the
dock's controls and state), kept apart so the dock reads in parts."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..layers import (
    META_KEY,
)


class LibraryActions:
    """Locating known motifs in every open image, and the motif library (issue 15)."""

    def _known_motifs(self) -> np.ndarray | None:
        """Motifs to locate rather than learn: those being located in all
        images, or the chosen library's or bundle's; None to learn."""
        if self._locate_with is not None:
            return self._locate_with
        if not self.motifs.known:
            return None
        from ..library import LibraryError, load_motifs

        path = str(self.motifs.path.value or "")
        if not path or path == ".":
            raise ValueError("Choose a motif library (.sasdlib) or a result bundle (.sasd).")
        try:
            return load_motifs(path)[0]
        except LibraryError as exc:
            raise ValueError(str(exc)) from None

    def locate_everywhere(self, *_: Any) -> int:
        """Locate the last result's motifs in every other open 2-D image, one
        after the other (each as a run: results, thresholds, saving as usual).

        Returns
        -------
        int
            The number of images queued; ``all_located`` is emitted at the end.
        """
        from napari.layers import Image

        if self.result is None or (self.runner is not None and self.runner.running):
            return 0
        src = self.context.source if self.context is not None else None
        targets = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and layer is not src and layer.ndim == 2
            and not layer.rgb and META_KEY not in layer.metadata
        ]  # fmt: skip
        if not targets:
            self._status.value = "No other 2-D image is open to locate the motifs in."
            return 0
        self._locate_with = np.array(self.result.kernels, copy=True)
        self._locate_queue, self._located = targets, 0
        self._next_located()
        return len(targets)

    def _next_located(self) -> None:
        while self._locate_queue:
            layer = self._locate_queue.pop(0)
            if layer not in self.viewer.layers:
                continue
            self._image.value = layer
            if self.run():
                return
        self._locate_with = None
        self.all_located.emit(self._located)

    def add_new_motifs(self, *_: Any) -> list[str]:
        """Add the last result's motifs that the catalogue calls new to the
        library chosen in the Motifs panel, named after the image (issue 15).

        Returns
        -------
        list of str
            The names added.
        """
        from pathlib import Path

        from ..library import LibraryError, load_library

        cat = self.catalogue()
        if not cat or self.result is None:
            return []
        path = str(self.motifs.path.value)
        src = self.context.source.name if self.context is not None else "image"
        added: list[str] = []
        try:
            lib = load_library(path)
            for e in cat:
                if e["match"] is not None:
                    continue
                name, i = f"{src} #{e['motif'] + 1}", 2
                while name in lib.names:
                    name, i = f"{src} #{e['motif'] + 1} ({i})", i + 1
                prov = {"source": src, "motif": e["motif"], "lam": self.result.lam}
                lib.add(
                    self.result.kernels[e["motif"]], name, {**prov, "from": "napari-sasd dock"}
                )
                added.append(name)
            if added:
                lib.save(path)
        except (LibraryError, ValueError) as exc:
            self._status.value = f"Could not add to the library: {exc}"
            return []
        self._catalogue = None  # the added motifs are known now
        self._refresh_gallery()
        self._status.value = (
            f"Added to {Path(path).name}: {', '.join(added)}." if added else "No new motif."
        )
        return added

    def catalogue(self) -> list[dict[str, Any]] | None:
        """The last result's motifs against the library chosen in the Motifs
        panel ("same as 'Se vacancy' (0.96)" or "new"; issue 15), when one is
        chosen and the motifs were learnt (not located from it)."""
        from pathlib import Path

        if self.result is None or self.result.params.get("mode") == "locate":
            return None
        path = str(self.motifs.path.value or "")
        if not path or not (Path(path) / "library.json").is_file():
            return None
        key = (id(self.result), path)
        if self._catalogue is None or self._catalogue[0] != key:
            from ..library import LibraryError, catalogue, load_library

            try:
                entries = catalogue(self.result.kernels, load_library(path))
            except LibraryError:
                entries = None
            self._catalogue = (key, entries)
        return self._catalogue[1]
