"""Widget parameters remembered between napari sessions.

A small JSON file in the user's config directory (``platformdirs``), or in
``$NAPARI_SASD_CONFIG_DIR`` when set (tests use it to stay out of the real one).
Unknown keys and unreadable files are ignored: settings are a convenience and
must never stop the widget from opening.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Parameter defaults: 12 px motifs fit typical point defects at atomic
#: resolution; two motifs because real surfaces rarely have a single kind.
DEFAULTS: dict[str, Any] = {
    "kernel_size": 12,
    "n_motifs": 2,
    "auto_lam": True,
    "lam": 0.1,
    "positive": True,
    "flatten": False,
    "stack_mode": "cube",
    "region_mode": "whole",
    "mask_mode": "exclude",
    "max_iter": 0,
    "seed": 0,
    "with_reconstruction": False,
    "keep_previous": False,
}


def settings_path() -> Path:
    """Path of the settings file."""
    env = os.environ.get("NAPARI_SASD_CONFIG_DIR")
    if env:
        base = Path(env)
    else:
        from platformdirs import user_config_dir

        base = Path(user_config_dir("napari-sasd", appauthor=False))
    return base / "widget.json"


def load_settings() -> dict[str, Any]:
    """Saved parameters over :data:`DEFAULTS` (wrong types fall back to defaults)."""
    out = dict(DEFAULTS)
    try:
        saved = json.loads(settings_path().read_text())
    except (OSError, ValueError):
        return out
    if isinstance(saved, dict):
        for k, v in saved.items():
            if k in DEFAULTS and isinstance(v, type(DEFAULTS[k])):
                out[k] = v
            elif k in DEFAULTS and isinstance(DEFAULTS[k], float) and isinstance(v, int):
                out[k] = float(v)
    return out


def save_settings(values: dict[str, Any]) -> None:
    """Write the known keys of ``values``; failures (read-only home...) are ignored."""
    data = {k: values[k] for k in DEFAULTS if k in values}
    path = settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
    except OSError:
        pass
