"""Saving the shown result as a bundle (the dock's *Save bundle...*).

A part of :class:`napari_sasd.widget.SasdWidget` (a mixin: it uses the
dock's controls and state), kept apart so the dock reads in parts."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QFileDialog

from ..layers import (
    motif_color,
    plane_transform,
)


class SaveAction:
    """Saving the shown result as a bundle (the dock's *Save bundle...*)."""

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
            from ..bundle import save_bundle
            from ..nanonis import sweep_record
            from ..pipeline import analysis_record
            from ..quicklook import bundle_pictures

            layer, ctx = self.context.source, self.context
            thresholds = self._thresholds()
            cube = self.result.kernels.ndim == 4
            nd = 3 if cube else 2
            defects = self.current_defects()
            colors = [motif_color(n) for n in range(self.result.n_motifs)]
            extra: dict[str, Any] = {}
            if cube and self.spectra is not None:
                sw = self.spectra
                extra["sweep"] = sweep_record(sw.energies, sw.label, sw.unit)
            if getattr(layer, "units", None) is not None:
                extra["space_units"] = str(layer.units[-1])  # e.g. "nanometer", "pixel"
            if self.catalogue():
                extra["catalogue"] = self.catalogue()
            pictures = bundle_pictures(
                ctx.image,
                defects,
                self.result.kernels,
                colors=colors,
                spectra=self.spectra if cube else None,
                title=layer.name,
            )
            out = save_bundle(
                path,
                self.result,
                defects=defects,
                source=layer.name,
                source_path=getattr(layer.source, "path", None),
                region=ctx.region,
                scale=tuple(float(v) for v in layer.scale[-nd:]),
                translate=tuple(float(v) for v in layer.translate[-nd:]),
                colors=colors,
                threshold=thresholds["threshold"],
                extra={
                    # What the command line records (cli.solve_file), so the
                    # bundles of both agree: steps, significance, noise, flags.
                    "flatten": "both" if self.context.key[5] else "none",
                    "line_shape_removed": bool(self.context.key[5]),
                    "threshold_relative": thresholds["threshold_relative"],
                    "threshold_per_motif": False,
                    "command": "napari-sasd dock",
                    **analysis_record(self.current_analysis()),
                    **plane_transform(layer),
                    **extra,
                },
                extra_files=pictures,
            )
        except Exception as exc:
            show_error(f"napari-sasd: could not save the bundle: {exc}")
            return None
        show_info(f"napari-sasd: saved {out or path}")
        return str(out or path)
