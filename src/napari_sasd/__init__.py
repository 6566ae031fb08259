"""napari-sasd: find repeated motifs and where each copy sits, by short-and-sparse
blind deconvolution.

The core (this namespace) is napari-free: importing it does not import Qt or napari.
"""

from ._version import __version__
from .locate import iter_locate, locate
from .peaks import Defects, find_defects
from .result import SolveProgress, SolveResult
from .solver import iter_solve, solve

__all__ = [
    "Defects",
    "SolveProgress",
    "SolveResult",
    "__version__",
    "find_defects",
    "iter_locate",
    "iter_solve",
    "locate",
    "solve",
]
