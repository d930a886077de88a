"""Finding files under a data folder."""

from __future__ import annotations

import os
from pathlib import Path


DECISIONS_FILE = "vistrain-decisions.csv"  # vistrain's own file in a data folder (see `decisions.py`)


def is_hidden(path: Path) -> bool:
    """Hidden files and folders, and vistrain's own files, are not data."""
    return path.name.startswith(".") or path.name == DECISIONS_FILE


def list_files(folder: Path) -> list[Path]:
    """Every file below `folder` that is not hidden (hidden folders are not entered), sorted."""
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not is_hidden(Path(d))]
        files.extend(Path(root) / name for name in names if not is_hidden(Path(name)))
    return sorted(files)
