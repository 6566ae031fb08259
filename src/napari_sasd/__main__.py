"""``python -m napari_sasd``: the ``napari-sasd`` command line."""

import sys

from .cli import main

sys.exit(main())
