"""Read Nanonis ``.sxm`` scans and ``.3ds`` grid spectroscopy, napari-free.

Why a small parser of our own rather than a PyPI package
-------------------------------------------------------
We compared, on the real FeSe ``.sxm`` (224 x 224, scan direction down):

* ``nanonispy2`` 1.2 (and ``nanonispy``): returns the frames exactly as stored,
  with no handling of the scan direction (an 'up' scan comes out upside down)
  nor of the backward channels (mirrored left-right); it assumes every channel
  was recorded in both directions; and for ``.3ds`` it ``ndarray.resize``-s the
  data, which silently zero-pads a truncated file instead of reporting it.
* ``nanonis-reader`` 0.3: a vendored ``nanonispy`` plus analysis code; flips the
  backward channel but not 'up' scans, and pulls matplotlib, scikit-learn and
  python-pptx as runtime dependencies.
* ``xarray-nanonis``: orients correctly but needs xarray and pandas and returns
  a Dataset with a lower-left origin.

The format is small and documented (Nanonis "SXM file format" and "3ds grid
file format" notes), so a few hundred lines here (``sxm``, ``grid``,
``_common``) avoid a dependency and give us the orientation and the one-line
errors we want.

The reader is split by format: :mod:`.sxm` (scans), :mod:`.grid` (``.3ds``
grids and their sweep axis) and :mod:`._common` (the error type and the
header/data reading both share). Import everything from here.

Errors: anything wrong with a file raises :class:`NanonisError`, a
``ValueError`` whose message is one line starting with the file's path.
"""

from ._common import NanonisError, split_unit
from .grid import Grid, PartialGridWarning, read_3ds, sweep_axis, sweep_record
from .sxm import SxmScan, read_sxm

__all__ = [
    "Grid",
    "NanonisError",
    "PartialGridWarning",
    "SxmScan",
    "read_3ds",
    "read_sxm",
    "split_unit",
    "sweep_axis",
    "sweep_record",
]
