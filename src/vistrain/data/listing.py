"""Finding files under a data folder.

Links to folders are not followed: one can loop (`ln -s . loop` lists every file again and again) or lead out of
the data, into another class or anywhere on the disk (`ln -s .. up`). Each is reported as skipped instead. Links to
files are listed like files: reading them (`vistrain.core.files.open_data_file`) follows them and refuses what is
not a regular file.

A file or folder whose name is not UTF-8 (bytes of another encoding: Python holds them as lone surrogates) is
skipped when it is listed, with the reason: no CSV, page or JSON vistrain writes could name it.
"""

from __future__ import annotations

import os
from pathlib import Path

from vistrain.data.samples import Skipped

FOLDER_LINK = "directory link not followed"
NOT_UTF8 = "name is not UTF-8: rename it to use it"
DECISIONS_FILE = "vistrain-decisions.csv"  # vistrain's own file in a data folder (see `decisions.py`)


def is_hidden(name: str) -> bool:
    """Hidden files and folders, and vistrain's own files, are not data (by name: listing calls it for every file)."""
    return name.startswith(".") or name == DECISIONS_FILE


def resolves_inside(path: Path, folder: Path) -> bool:
    """Whether `path`, every link on the way followed, lies in `folder`, which the caller resolved (once, not for
    every path); False for a path that cannot be resolved (a link loop, a NUL byte in the name)."""
    try:
        return path.resolve().is_relative_to(folder)
    except (OSError, RuntimeError, ValueError):
        return False


def is_utf8(name: str) -> bool:
    """Whether a file name read from the disk was UTF-8 (else it holds the surrogates that stand for its bytes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def list_files(folder: Path) -> tuple[list[Path], list[Skipped]]:
    """Every file below `folder` that is not hidden, sorted (hidden folders are not entered), and as skipped: the
    links to folders found on the way, and the files and folders whose names are not UTF-8 (not entered)."""
    files, skipped = [], []
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        skipped += [Skipped(here / d, FOLDER_LINK) for d in dirs if (here / d).is_symlink()]  # os.walk leaves them
        skipped += [Skipped(here / name, NOT_UTF8) for name in dirs + names if not is_utf8(name)]
        dirs[:] = [d for d in dirs if is_utf8(d)]
        files.extend(here / name for name in names if not is_hidden(name) and is_utf8(name))
    return sorted(files), sorted(skipped, key=lambda s: s.path)
