"""Where facerig's shipped data (``assets/`` in the repository) is found at run time.

Search order for :func:`asset_path`:

1. ``$FACERIG_ASSETS`` (a folder), when set;
2. the repository's ``assets/`` folder (a source checkout or an editable install);
3. ``<sys.prefix>/share/facerig/assets`` (where a regular ``pip install`` puts them: see
   ``[tool.setuptools.data-files]`` in pyproject.toml).

Nothing is ever downloaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["asset_dirs", "asset_path"]


def asset_dirs() -> list[Path]:
    """The folders searched for assets, in order (they need not exist)."""
    dirs = []
    if os.environ.get("FACERIG_ASSETS"):
        dirs.append(Path(os.environ["FACERIG_ASSETS"]))
    dirs.append(Path(__file__).resolve().parents[1] / "assets")
    dirs.append(Path(sys.prefix) / "share" / "facerig" / "assets")
    return dirs


def asset_path(name: str, *, missing_hint: str = "") -> Path:
    """Path of the shipped asset ``name`` (e.g. ``"default_model.npz"``).

    Raises:
        FileNotFoundError: naming every folder searched, plus ``missing_hint`` (how to rebuild it).
    """
    for d in asset_dirs():
        p = d / name
        if p.is_file():
            return p
    searched = ", ".join(str(d) for d in asset_dirs())
    raise FileNotFoundError(f"asset {name!r} not found (searched {searched}). {missing_hint}".strip())
