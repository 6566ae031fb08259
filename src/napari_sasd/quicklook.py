"""Pictures of a result with matplotlib, napari-free: the quick look and its parts.

The same drawing functions serve the dock (a Qt canvas) and the files of a
bundle (Agg, no display needed): :func:`draw_spectra` (a cube result's motif
spectra), :func:`draw_histogram` (peak amplitudes per motif and the detection
threshold) and :func:`quicklook_figure` (the analysed image with the defects
coloured by motif, the motif gallery with counts and, for cubes, the spectra),
written by :func:`save_quicklook` as ``quicklook.png`` into every bundle.

Only :class:`matplotlib.figure.Figure` is used, never ``pyplot``: no global
state, so figures can be drawn from any thread and no GUI backend is chosen
behind the caller's back.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .bundle import DEFAULT_COLORS
from .peaks import Defects
from .spectra import MotifSpectra, write_spectra_csv

__all__ = [
    "BG",
    "bundle_pictures",
    "draw_histogram",
    "draw_spectra",
    "quicklook_figure",
    "save_quicklook",
    "save_spectra",
    "style_axes",
]

#: Background and text colours: napari's dark theme, on which the motif
#: palette (bright colours) was chosen to show.
BG = "#262930"
FG = "#f0f1f2"
GRID = "#5a626c"


def _colors(colors: Sequence[str] | None, n: int) -> list[str]:
    if colors is None or len(colors) < n:
        return [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(n)]
    return list(colors)


def style_axes(ax) -> None:
    """Dark-theme look of one axes (napari's colours)."""
    ax.set_facecolor(BG)
    for s in ax.spines.values():
        s.set_color(GRID)
    ax.tick_params(colors=FG, labelsize=7)
    ax.xaxis.label.set_color(FG)
    ax.yaxis.label.set_color(FG)
    ax.title.set_color(FG)
    ax.xaxis.label.set_size(8)
    ax.yaxis.label.set_size(8)
    ax.title.set_size(9)


def draw_spectra(
    axes: Sequence,
    spectra: MotifSpectra,
    colors: Sequence[str] | None = None,
    current: float | None = None,
) -> list:
    """Draw the motif spectra on two axes.

    Left: the mean measured spectrum at each motif's copies (solid, the
    motif's colour) and away from all copies (grey, dashed), in the data's
    units. Right: each motif's value at its centre (solid) and its norm
    (dotted) per energy. A vertical line marks ``current`` (the viewer's
    energy) on both.

    Returns
    -------
    list of Line2D
        The current-energy markers (move them with ``set_xdata``).
    """
    ax_data, ax_motif = axes
    cols = _colors(colors, spectra.n_motifs)
    e = spectra.energies
    mk = "o" if len(e) <= 24 else None
    for ax in axes:
        ax.clear()
        style_axes(ax)
        ax.axhline(0, color=GRID, lw=0.6)
    ax_data.plot(e, spectra.away, "--", color="#b0b0b0", lw=1.2, label="away from copies")
    for m in range(spectra.n_motifs):
        c = cols[m]
        ax_data.plot(
            e, spectra.at_copies[m], "-", marker=mk, ms=3, color=c, lw=1.5,
            label=f"motif {m + 1} ({spectra.n_copies[m]} copies)",
        )  # fmt: skip
        ax_motif.plot(e, spectra.centre[m], "-", marker=mk, ms=3, color=c, lw=1.5,
                      label=f"motif {m + 1} centre")  # fmt: skip
        ax_motif.plot(e, spectra.norm[m], ":", color=c, lw=1.2, label=f"motif {m + 1} norm")
    ax_data.set_title("Measured at copies vs away")
    ax_motif.set_title("Motif per energy (centre —, norm ···)")
    ax_data.set_xlabel(spectra.axis_title)
    ax_motif.set_xlabel(spectra.axis_title)
    ax_data.set_ylabel("mean value")
    ax_motif.set_ylabel("motif (normalised)")
    leg = ax_data.legend(fontsize=6, frameon=False, loc="best")
    for t in leg.get_texts():
        t.set_color(FG)
    x0 = float(e[0]) if current is None else float(current)
    marks = [ax.axvline(x0, color=FG, lw=0.8, alpha=0.7) for ax in axes]
    for mline in marks:
        mline.set_visible(current is not None)
    return marks


def draw_histogram(
    ax,
    amplitudes: np.ndarray,
    motif: np.ndarray,
    thresholds: Sequence[float],
    n_motifs: int,
    colors: Sequence[str] | None = None,
) -> list:
    """Peak amplitudes per motif (step histograms, log counts) and the threshold.

    ``amplitudes``/``motif`` are every local maximum of the activation maps
    (the candidates the threshold splits into defects and noise);
    ``thresholds`` one value for all motifs or one per motif (image units).

    Returns
    -------
    list of Line2D
        The threshold lines, one per motif (move them with ``set_xdata``).
    """
    cols = _colors(colors, n_motifs)
    ax.clear()
    style_axes(ax)
    amplitudes = np.asarray(amplitudes, float)
    motif = np.asarray(motif, int)
    top = float(amplitudes.max(initial=0.0)) or 1.0
    bins = np.linspace(0.0, top, 41)
    for m in range(n_motifs):
        a = amplitudes[motif == m]
        if len(a):
            ax.hist(a, bins=bins, histtype="step", color=cols[m], lw=1.3, label=f"motif {m + 1}")
    ax.set_yscale("log")
    ax.set_xlabel("peak amplitude (image units)")
    ax.set_ylabel("peaks")
    ax.set_title("Peak amplitudes; counted right of the line")
    thr = list(thresholds) or [0.0]
    if len(thr) == 1:
        thr = thr * n_motifs
    one = len(set(np.round(thr, 12))) == 1
    lines = [
        ax.axvline(t, color=FG if one else cols[m], lw=1.2, ls="-" if one else "--")
        for m, t in enumerate(thr[:n_motifs])
    ]
    ax.set_xlim(0, top * 1.02)
    return lines


def _gallery_image(k: np.ndarray) -> np.ndarray:
    # Channels side by side with a 1-px gap, zero at mid-grey (as the dock).
    k = np.asarray(k, float)
    if k.ndim == 3:
        gap = np.full((k.shape[-2], 1), np.nan)
        k = np.concatenate([x for c in k for x in (c, gap)][:-1], axis=1)
    return k


def quicklook_figure(
    image: np.ndarray,
    defects: Defects,
    kernels: np.ndarray,
    *,
    colors: Sequence[str] | None = None,
    spectra: MotifSpectra | None = None,
    title: str = "",
):
    """The quick look of a result, as a matplotlib Figure (not shown).

    Parameters
    ----------
    image : ndarray
        The analysed image ``(H, W)``; for a cube ``(C, H, W)`` the energy
        where the motifs are strongest is shown (said in its title).
    defects : Defects
        Positions in pixels of ``image``.
    kernels : ndarray
        ``(N, kh, kw)`` or ``(N, C, kh, kw)``.
    colors : sequence of str, optional
        One colour per motif (the plugin's palette by default).
    spectra : MotifSpectra, optional
        Drawn below for a cube.
    title : str
        Figure title (e.g. the source's name).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    kernels = np.asarray(kernels, float)
    n = len(kernels)
    cols = _colors(colors, n)
    img = np.asarray(image, float)
    shown = ""
    if img.ndim == 3:
        # The energy whose motif images carry the most weight.
        c = int(np.argmax((kernels**2).sum(axis=(0, 2, 3)))) if kernels.ndim == 4 else 0
        img = img[c]
        if spectra is not None:
            shown = f" at {spectra.label} = {spectra.energies[c]:.4g} {spectra.unit}".rstrip()
        else:
            shown = f" (channel {c + 1})"
    rows = 2 if spectra is not None else 1
    fig = Figure(figsize=(9.0, 4.6 * rows if rows == 1 else 8.2), facecolor=BG)
    gs = fig.add_gridspec(
        rows, 2, width_ratios=(1.25, 1), height_ratios=(1.35, 1) if rows == 2 else (1,)
    )
    ax = fig.add_subplot(gs[0, 0])
    style_axes(ax)
    finite = img[np.isfinite(img)]
    lo, hi = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    counts = defects.counts(n) if n else np.zeros(0, int)
    pos = np.asarray(defects.positions, float).reshape(-1, 2)
    mot = np.asarray(defects.motif, int)
    size = max(4.0, 1600.0 / max(img.shape))
    for m in range(n):
        p = pos[mot == m]
        ax.scatter(p[:, 1], p[:, 0], s=size, facecolors="none", edgecolors=cols[m], lw=0.9)
    ax.set_xticks([])
    ax.set_yticks([])
    total = len(mot)
    ax.set_title(f"{total} defect{'s' * (total != 1)}{shown}")

    # Motif gallery: one tile per motif with its count.
    # Cube motifs are wide (energies side by side): one per row.
    ncol = 1 if kernels.ndim == 4 or n == 1 else 2
    sub = gs[0, 1].subgridspec(max(1, -(-n // ncol)), ncol, hspace=0.35)
    for m in range(n):
        a = fig.add_subplot(sub[m // ncol, m % ncol])
        style_axes(a)
        k = _gallery_image(kernels[m])
        lim = float(np.nanmax(np.abs(k))) or 1.0
        a.imshow(k, cmap="gray", vmin=-lim, vmax=lim, interpolation="nearest")
        a.set_xticks([])
        a.set_yticks([])
        for s in a.spines.values():
            s.set_color(cols[m])
            s.set_linewidth(2.5)
        a.set_title(f"motif {m + 1}: {int(counts[m])} copies", color=cols[m])
    if spectra is not None:
        axes = [fig.add_subplot(gs[1, 0]), fig.add_subplot(gs[1, 1])]
        draw_spectra(axes, spectra, cols)
    if title:
        fig.suptitle(title, color=FG, fontsize=11)
    fig.subplots_adjust(left=0.04, right=0.98, top=0.9 if title else 0.95, bottom=0.08)
    if spectra is not None:
        fig.subplots_adjust(hspace=0.3, wspace=0.22, left=0.07)
    return fig


def _save(fig, path: Path, dpi: int = 110) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, facecolor=fig.get_facecolor())
    return path


def save_quicklook(path: str | os.PathLike[str], *args, **kwargs) -> Path:
    """Write :func:`quicklook_figure` (same arguments) as a PNG at ``path``."""
    return _save(quicklook_figure(*args, **kwargs), Path(path))


def save_spectra(
    folder: str | os.PathLike[str], spectra: MotifSpectra, colors: Sequence[str] | None = None
) -> list[Path]:
    """Write ``spectra.csv`` and ``spectra.png`` into ``folder``; return their paths."""
    from matplotlib.figure import Figure

    folder = Path(folder)
    fig = Figure(figsize=(8.0, 3.2), facecolor=BG)
    axes = fig.subplots(1, 2)
    draw_spectra(axes, spectra, colors)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.9, wspace=0.25)
    return [write_spectra_csv(folder / "spectra.csv", spectra), _save(fig, folder / "spectra.png")]


def bundle_pictures(
    image: np.ndarray,
    defects: Defects,
    kernels: np.ndarray,
    *,
    colors: Sequence[str] | None = None,
    spectra: MotifSpectra | None = None,
    title: str = "",
) -> Callable[[Path], None]:
    """A hook for :func:`napari_sasd.bundle.save_bundle` (``extra_files``).

    Called with the bundle folder being written, it adds ``quicklook.png``
    and, with ``spectra``, ``spectra.csv`` and ``spectra.png``. These are
    pictures of a result that is already saved: if drawing fails, a warning
    says so and the bundle is still written.
    """

    def write(folder: Path) -> None:
        try:
            save_quicklook(
                Path(folder) / "quicklook.png",
                image,
                defects,
                kernels,
                colors=colors,
                spectra=spectra,
                title=title,
            )
            if spectra is not None:
                save_spectra(folder, spectra, colors)
        except OSError:
            raise  # the folder itself is unwritable: the bundle reports it
        except Exception as exc:  # a plotting failure must not lose the result
            warnings.warn(f"{folder}: quick look not written: {exc}", stacklevel=2)

    return write
