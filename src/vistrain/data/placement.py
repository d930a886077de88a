"""Placing files in a split's destination, and taking back what an earlier split placed there.

DEST/.vistrain-split.json (the manifest) lists every file `vistrain split` placed in DEST and what it was: a hard
link's inode, a copy's size and modification time (copied from its source), a symbolic link's target. It is
written before the files are placed, so an interrupted split can be cleaned as well as a finished one. A re-split
takes back only files listed there that are still what was placed — nothing else in DEST, never through a link out
of DEST, never the last link to one of its inputs — and places the new ones under names nothing holds, so no file
is ever replaced.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from vistrain.core.files import CHUNK, open_data_file, write_atomic, write_json
from vistrain.data.samples import DataError

MANIFEST = ".vistrain-split.json"
SPLITS = ("train", "val", "test")
LINK_MODES = ("hardlink", "copy", "symlink")


@dataclass(frozen=True)
class Placed:
    """A file a split placed: its path in DEST (split/class/name), how, and what identifies it."""

    path: str
    kind: str  # "hardlink" (id: [st_dev, st_ino]), "copy" (id: [st_size, st_mtime_ns]) or "symlink" (id: target)
    id: list[int] | str

    def is_still(self, target: Path, info: os.stat_result) -> bool:
        """Whether `target` (lstat `info`) is still the file this split placed."""
        if self.kind == "symlink":
            return stat.S_ISLNK(info.st_mode) and os.readlink(target) == self.id
        found = [info.st_dev, info.st_ino] if self.kind == "hardlink" else [info.st_size, info.st_mtime_ns]
        return stat.S_ISREG(info.st_mode) and found == self.id


def is_valid(entry: object) -> bool:
    """An entry of a manifest read back (untrusted): split/class/name inside DEST, a known kind and its id."""
    if not isinstance(entry, dict) or set(entry) != {"path", "kind", "id"} or not isinstance(entry["path"], str):
        return False
    parts = PurePosixPath(entry["path"]).parts
    if len(parts) != 3 or parts[0] not in SPLITS or any(p in (".", "..") or "\0" in p for p in parts):
        return False
    if entry["kind"] == "symlink":
        return isinstance(entry["id"], str)
    numbers = entry["id"]
    return entry["kind"] in ("hardlink", "copy") and isinstance(numbers, list) and len(numbers) == 2 and all(
        type(n) is int for n in numbers)


def read_manifest(dest: Path) -> list[Placed]:
    """The files an earlier split placed in DEST (none when DEST has no manifest); entries that do not make sense
    are left out, so their files are never touched."""
    path = dest / MANIFEST
    if not path.exists():
        return []
    try:
        with open_data_file(path) as file:
            data = json.load(file)
        entries = data["files"] if isinstance(data, dict) and isinstance(data.get("files"), list) else None
    except (OSError, ValueError) as error:
        raise DataError(f"{path} cannot be read ({error}); remove the files of the earlier split by hand") from None
    if entries is None:
        raise DataError(f"{path} is not a split manifest; remove the files of the earlier split by hand")
    return [Placed(**entry) for entry in entries if is_valid(entry)]


def write_manifest(dest: Path, placed: list[Placed]) -> None:
    write_json(dest / MANIFEST, {"format": 1, "files": [{"path": p.path, "kind": p.kind, "id": p.id} for p in placed]})


def take_back(dest: Path, inputs: set[tuple[int, int]]) -> None:
    """Remove the files of DEST's manifest that are still what was placed (and the temporary files of copies that
    were interrupted), then the folders that leaves empty. `dest` is resolved; `inputs` are the (st_dev, st_ino)
    of this split's inputs, whose last link stays."""
    entries = read_manifest(dest)
    names: dict[Path, set[str]] = defaultdict(set)
    for entry in entries:
        names[(dest / entry.path).parent].add(PurePosixPath(entry.path).name)
    for folder, placed in names.items():
        if folder.is_dir() and folder.resolve() == folder:
            for partial in folder.glob(".*.tmp"):  # `write_atomic`'s .NAME.RANDOM.tmp, when a copy was killed
                if partial.name[1:].rsplit(".", 2)[0] in placed and partial.is_file() and not partial.is_symlink():
                    partial.unlink()
    for entry in entries:
        target = dest / entry.path
        if target.parent.resolve() != target.parent:
            continue  # a link on the way: the file would be outside DEST's own folders
        try:
            info = os.lstat(target)
            if entry.is_still(target, info) and not ((info.st_dev, info.st_ino) in inputs and info.st_nlink <= 1):
                target.unlink()
                prune(dest, entry.path)
        except OSError:
            continue  # gone already


def prune(dest: Path, path: str) -> None:
    """Remove the class folder, then the split folder, of DEST/path while they are empty."""
    for folder in ((dest / path).parent, (dest / path).parent.parent):
        try:
            folder.rmdir()
        except OSError:
            return


def unique_name(source: Path, taken: set[str]) -> str:
    """The source's file name, or with its parent folders in front (`img-1.jpg`, then `a-img-1.jpg`), or with a
    counter (`1-2.jpg`), until no name in `taken` (compared case-insensitively) holds it."""
    parts = [p for p in source.parts[:-1] if p not in (source.anchor, ".", "..")]
    candidates = [source.name] + ["-".join([*parts[-n:], source.name]) for n in range(1, len(parts) + 1)]
    counted = (f"{source.stem}-{n}{source.suffix}" for n in itertools.count(2))
    return next(name for name in itertools.chain(candidates, counted) if name.casefold() not in taken)


def identify(source: Path) -> os.stat_result:
    """The source's status, opened as a data file: OSError (RefusedFile) for a FIFO, a device, a file over the
    size limit, or one that cannot be opened."""
    with open_data_file(source) as file:
        return os.fstat(file.fileno())


def planned(rel: str, source: Path, info: os.stat_result, mode: str) -> Placed:
    """The manifest entry of a file about to be placed (hard links and symbolic links are known before)."""
    if mode == "symlink":
        return Placed(rel, mode, str(source.resolve()))
    if mode == "hardlink":
        return Placed(rel, mode, [info.st_dev, info.st_ino])
    return Placed(rel, mode, [info.st_size, info.st_mtime_ns])


def place(source: Path, dest: Path, entry: Placed) -> Placed:
    """Place `source` at DEST/entry.path as the entry says (a hard link falls back to a copy across file
    systems); never replaces a file. Returns the entry of what was placed."""
    target = dest / entry.path
    target.parent.mkdir(parents=True, exist_ok=True)
    if entry.kind == "symlink":
        target.symlink_to(entry.id)
        return entry
    if entry.kind == "hardlink":
        try:
            os.link(source, target)
            return entry
        except FileExistsError:
            raise
        except OSError:
            pass  # another file system, or one without hard links: copy
    with open_data_file(source) as file:
        info = os.fstat(file.fileno())
        copy(file, target, info)
    return Placed(entry.path, "copy", [info.st_size, info.st_mtime_ns])


def copy(source: BinaryIO, target: Path, info: os.stat_result) -> None:
    """Copy an open file to `target` through a temporary file (never a partial file), with its permissions and
    times (`info`)."""

    def write(out: BinaryIO) -> None:
        shutil.copyfileobj(source, out, CHUNK)
        out.flush()
        os.fchmod(out.fileno(), stat.S_IMODE(info.st_mode))
        os.utime(out.fileno(), ns=(info.st_atime_ns, info.st_mtime_ns))

    write_atomic(target, write)
