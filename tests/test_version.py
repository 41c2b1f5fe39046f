"""cnnkit.version: the one version string, equal to pyproject.toml's and the installed metadata's, without torch."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import cnnkit
from cnnkit.version import __version__

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_version_is_pyprojects() -> None:
    with PYPROJECT.open("rb") as f:
        assert __version__ == tomllib.load(f)["project"]["version"]
    assert cnnkit.__version__ == __version__


def test_version_is_the_installed_distributions() -> None:
    assert importlib.metadata.version("cnnkit") == __version__


def test_version_imports_without_torch() -> None:
    code = "import sys, cnnkit.version; print('torch' in sys.modules, cnnkit.version.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", __version__]
