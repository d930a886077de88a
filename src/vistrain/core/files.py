"""Files vistrain writes (always atomically) and the digests of files it reads.

Every file is written to a temporary name beside its destination and renamed into place, so a reader, a crash or
a second process never sees it half-written, and a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

CHUNK = 1 << 20  # bytes read at a time when hashing


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write `data` (bytes, or a function that writes to the open binary file) to `path` atomically."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            data(file) if callable(data) else file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def make_folder(path: Path, what: str) -> Path:
    """`path` as a folder, made with its parents if needed; a ValueError naming `what` when it cannot be (a file
    in the way, no permission)."""
    path = Path(path)
    file = next((p for p in (path, *path.parents) if p.is_file()), None)
    if file == path:
        raise ValueError(f"{what} {path} is a file, not a folder")
    if file is not None:
        raise ValueError(f"{what} {path} cannot be made: {file} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{what} {path} cannot be made: {error.strerror or error}") from None
    return path


def write_json(path: Path, value: dict | list) -> None:
    write_atomic(path, (json.dumps(value, indent=2) + "\n").encode())


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue().encode())


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV file written by `write_csv`, or [] when it does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def sha256_file(path: Path | str) -> str:
    """The SHA-256 of a file's bytes, read a chunk at a time (memory stays flat whatever the file's size)."""
    with open(path, "rb") as file:
        return sha256_stream(file)


def sha256_stream(file: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: file.read(CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str, length: int = 16) -> str:
    """A short hex key for a JSON identity (cache and export file names)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]
