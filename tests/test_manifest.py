"""The npe2 manifest: valid, found through the package's entry point, complete."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_npe2_validate_passes():
    exe = shutil.which("npe2", path=str(Path(sys.executable).parent)) or shutil.which("npe2")
    if exe is None:
        pytest.skip("npe2 command not installed")
    out = subprocess.run([exe, "validate", "napari-sasd"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout


def test_manifest_resolves_from_the_entry_point_and_commands_import():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-sasd")
    assert pm.name == "napari-sasd"
    # The root napari.yaml and the packaged one are the same file.
    root = Path(__file__).resolve().parents[1] / "napari.yaml"
    if root.exists():
        assert PluginManifest.from_file(root).model_dump() == pm.model_dump()
    for cmd in pm.contributions.commands:
        assert callable(_resolve(cmd.python_name)), cmd.id
    kinds = {"widgets", "readers", "writers", "sample_data"}
    assert all(getattr(pm.contributions, k) for k in kinds)


def _resolve(python_name: str):
    import importlib

    module, _, attr = python_name.partition(":")
    return getattr(importlib.import_module(module), attr)
