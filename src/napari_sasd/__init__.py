"""napari-sasd: find repeated motifs and where each copy sits, by short-and-sparse
blind deconvolution.

The core (this namespace) is napari-free: importing it does not import Qt or napari.
"""

from ._version import __version__
from .locate import iter_locate, locate
from .peaks import Defects, find_defects
from .pipeline import Analysis, analyse, iter_analyse
from .result import SolveProgress, SolveResult
from .solver import iter_solve, solve

__all__ = [
    "Analysis",
    "Defects",
    "SolveProgress",
    "SolveResult",
    "__version__",
    "analyse",
    "find_defects",
    "iter_analyse",
    "iter_locate",
    "iter_solve",
    "locate",
    "solve",
]
