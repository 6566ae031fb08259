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

    #: The slice of a stack the current "Locate in all images" run takes
    #: (``RunSetup.prepare``); None: as the controls say.
    _locate_plane: int | None = None

    def locate_everywhere(self, *_: Any) -> int:
        """Locate the last result's motifs in every other open image, one after
        the other (each as a run: results, thresholds, saving as usual).

        Other 2-D images, and every slice of a 3-D stack when stacks are
        stacks of scans (*3-D stack: Current slice only*), the slice the
        motifs were learnt on left out; with motifs learnt on a spectroscopy
        cube, the other cubes of as many energies. A slice's results are
        named after it (``stack [3] defects``) and kept beside the others'.

        Returns
        -------
        int
            The number of images (slices) queued; ``all_located`` is emitted
            at the end.
        """
        from napari.layers import Image

        if self.result is None or (self.runner is not None and self.runner.running):
            return 0
        ctx = self.context
        src = ctx.source if ctx is not None else None
        src_plane = ctx.key[4] if ctx is not None else None
        kernels = np.asarray(self.result.kernels)
        cube = kernels.ndim == 4
        scans = self._stack.value == "slice"
        targets: list[tuple[Any, int | None]] = []
        for layer in self.viewer.layers:
            if not isinstance(layer, Image) or layer.rgb or META_KEY in layer.metadata:
                continue
            if cube:
                if (
                    layer is not src
                    and layer.ndim == 3
                    and layer.data.shape[0] == kernels.shape[1]
                ):
                    targets.append((layer, None))
            elif layer.ndim == 2 and layer is not src:
                targets.append((layer, None))
            elif layer.ndim == 3 and scans:
                targets += [
                    (layer, i) for i in range(layer.data.shape[0])
                    if not (layer is src and i == src_plane)
                ]  # fmt: skip
        if not targets:
            self._status.value = (
                "No other image of that kind is open to locate the motifs in"
                + ("." if cube or scans else " (3-D stacks count as stacks of scans with "
                   "'3-D stack: Current slice only').")
            )  # fmt: skip
            return 0
        self._locate_with = np.array(kernels, copy=True)
        self._locate_queue, self._located = targets, 0
        self._next_located()
        return len(targets)

    def _next_located(self) -> None:
        while self._locate_queue:
            layer, plane = self._locate_queue.pop(0)
            if layer not in self.viewer.layers:
                continue
            self._image.value = layer
            self._locate_plane = plane
            started = self.run()
            self._locate_plane = None
            if started:
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
