"""How many scan lines a copy spans: faint defects from scar segments, napari-free.

Just under the significance threshold, real scans hold two kinds of copies:
faint defects, and pieces of scan-line streaks that the scar marking left
(too faint or too short for it). On the labelled WSe2 scans, at significance
2.5 to 4, 11 copies were defects and 115 were not, most of those one to
three lines tall. A defect spans many lines: its departure from the
background, along the column through its centre, stays past half its peak
over a good part of the motif's height.

So a copy between ``threshold - FAINT_MARGIN`` and the threshold counts when
it spans at least :data:`TALL_SHARE` of the motif's height
(:func:`napari_sasd.detection.detect_copies`). Copies past the threshold
count whatever their span: the measure is rough on a single copy (a streak
across a clear defect shortens it): 11 of the 85 defects found at
significance 5 to 8 measured four lines or fewer. Measured on the labelled scans
(``benchmarks/README.md``): F1 0.82/0.87/0.91/0.757/0.82 without the faint
tier, 0.815/0.872/0.907/0.821/0.847 with it; over shares 0.2 to 0.4 and margins
0.75 to 1.25, 0.77 to 0.82 on 073 (0.757 without), 0.78 to 0.82 on the 100 nm
scan, the others within 0.02.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .flags import main_channel_sign
from .peaks import Defects

__all__ = ["FAINT_MARGIN", "TALL_SHARE", "LineSpans", "counted"]

#: How far under the threshold (in significance units) a copy that spans many
#: scan lines still counts.
FAINT_MARGIN = 1.0
#: Share of the motif's height a faint copy must span to count.
TALL_SHARE = 0.3


@dataclass
class LineSpans:
    """The analysed data and motifs, to measure copies' spans on demand.

    Attributes
    ----------
    data : ndarray
        ``(C, H, W)`` analysed data (rows are scan lines).
    kernels : ndarray
        ``(N, C, kh, kw)`` motifs.
    """

    data: np.ndarray
    kernels: np.ndarray

    def lines(self, defects: Defects) -> np.ndarray:
        """Scan lines each copy's departure spans, at half its peak.

        The departure is the data's mean over the central third of the
        motif's width, along the column through the copy, with the motif's
        sign, less the local median (two motif sizes around); its peak is
        sought within a quarter motif of the copy, and the span is the run of
        lines past half of it. 0 where nothing departs with that sign.
        """
        n_, _, kh, kw = self.kernels.shape
        _, h, w = self.data.shape
        out = np.zeros(len(defects))
        main, sign = zip(*(main_channel_sign(a) for a in self.kernels), strict=True)
        cw = kw // 6
        for j, ((r, c), n) in enumerate(zip(defects.positions, defects.motif, strict=True)):
            n = int(n)
            if n >= n_ or sign[n] == 0:
                continue
            y = self.data[main[n]]
            r0, c0 = round(float(r)), round(float(c))
            rows = slice(max(r0 - kh, 0), min(r0 + kh + 1, h))
            strip = slice(max(c0 - cw, 0), min(c0 + cw + 1, w))
            around = y[rows, max(c0 - kw, 0) : min(c0 + kw + 1, w)]
            prof = sign[n] * (y[rows, strip].mean(axis=1) - np.median(around))
            i = int(np.clip(r0 - rows.start, 0, len(prof) - 1))
            lo, hi = max(i - kh // 4, 0), min(i + kh // 4 + 1, len(prof))
            top = lo + int(np.argmax(prof[lo:hi]))
            if prof[top] <= 0:
                continue
            past = prof > prof[top] / 2
            u = top
            while u > 0 and past[u - 1]:
                u -= 1
            v = top
            while v < len(prof) - 1 and past[v + 1]:
                v += 1
            out[j] = v - u + 1
        return out

    def tall(self, defects: Defects) -> np.ndarray:
        """Whether each copy spans at least :data:`TALL_SHARE` of its motif's height."""
        return self.lines(defects) > TALL_SHARE * self.kernels.shape[-2]


def counted(z: np.ndarray, significance: float, tall: np.ndarray | None) -> np.ndarray:
    """Which copies count at ``significance``: those past it, and with ``tall``
    (each copy's :meth:`LineSpans.tall`; None: no faint tier) the tall ones
    down to ``significance - FAINT_MARGIN``. One rule for the detection and
    the dock's slider."""
    ok = np.asarray(z) > significance
    if tall is not None:
        ok |= np.asarray(tall, bool) & (np.asarray(z) > max(significance - FAINT_MARGIN, 0.0))
    return ok
