"""Widget parameters remembered between napari sessions.

A small JSON file in the user's config directory (``platformdirs``), or in
``$NAPARI_SASD_CONFIG_DIR`` when set (tests use it to stay out of the real one).
Unknown keys, unreadable files and values the widget cannot take (out of
range, a choice an older version offered) are ignored: settings are a
convenience and must never stop the widget from opening.
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
    # Real scans (issue 14): scars left out and the lattice removed when the
    # image shows them, copies counted above 5 x their local noise, copies
    # of motifs that look like scan artefacts not counted.
    "scars": True,
    "lattice": True,
    "significance": 4.0,  # detection.DEFAULT_SIGNIFICANCE (tests check they agree)
    "keep_artefacts": False,
}
#: Ranges of the numeric parameters (the widget's spin boxes use them too).
LIMITS: dict[str, tuple[float, float]] = {
    "kernel_size": (3, 99),
    "n_motifs": (1, 8),
    "lam": (1e-4, 10.0),
    "max_iter": (0, 100000),
    "seed": (0, 2**31 - 1),
    "significance": (0.0, 20.0),
}
#: Values of the drop-down parameters (the widget's combo boxes).
CHOICES: dict[str, tuple[str, ...]] = {
    "stack_mode": ("cube", "slice"),
    "region_mode": ("whole", "shapes", "view"),
    "mask_mode": ("exclude", "include"),
}


def _valid(key: str, value: Any) -> Any:
    """``value`` in the type of ``DEFAULTS[key]`` if the widget can take it, else None."""
    default = DEFAULTS[key]
    if isinstance(value, bool) != isinstance(default, bool):
        return None  # JSON true is not a motif size, 1 is not a tick
    if isinstance(default, float) and isinstance(value, int):
        value = float(value)
    if not isinstance(value, type(default)):
        return None
    if key in LIMITS:
        lo, hi = LIMITS[key]
        if not lo <= value <= hi:
            return None
    if key in CHOICES and value not in CHOICES[key]:
        return None
    return value


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
    """Saved parameters over :data:`DEFAULTS` (invalid values fall back to defaults)."""
    out = dict(DEFAULTS)
    try:
        saved = json.loads(settings_path().read_text())
    except (OSError, ValueError):
        return out
    if isinstance(saved, dict):
        for k, v in saved.items():
            if k in DEFAULTS and (v := _valid(k, v)) is not None:
                out[k] = v
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
