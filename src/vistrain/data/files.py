"""Finding files under a data folder."""

from __future__ import annotations

import os
from pathlib import Path


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def list_files(folder: Path) -> list[Path]:
    """Every non-hidden file below `folder` (hidden folders are not entered), sorted."""
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(Path(root) / name for name in names if not name.startswith("."))
    return sorted(files)
