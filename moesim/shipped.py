"""Where the data files shipped with moesim live: installed, or in a source checkout.

A plain ``pip install .`` copies the repository's top-level data (``topologies/*.yaml``, the
validation measurements under ``data/validation/``) into the package as ``moesim/_data/...``
(setup.py); a source checkout (editable install, tests) reads them where they are.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_path(*parts: str) -> Path:
    """``moesim/_data/<parts>`` when the installed package carries it, else ``<repo>/<parts>``
    (``data_path("topologies")``, ``data_path("data", "validation", "layers")``)."""
    installed = Path(str(resources.files("moesim"))) / "_data" / Path(*parts)
    return installed if installed.exists() else REPO_ROOT.joinpath(*parts)
