"""Files vistrain writes (always atomically), and the one way it opens the data files it reads.

Every file is written to a temporary name beside its destination and renamed into place, so a reader, a crash or
a second process never sees it half-written, and a failed write leaves no temporary file behind.

Every data file (an image, a file to hash or to copy) is opened with `open_data_file`, which refuses what is not a
regular file (a FIFO would block forever, a device such as /dev/zero never ends) and files over MAX_FILE_BYTES,
before reading a byte.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

CHUNK = 1 << 20  # bytes read at a time when hashing or copying
MAX_FILE_BYTES = 256 * 2**20  # larger data files are refused unread (no image a classifier trains on is that big)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # POSIX: opening a FIFO returns at once instead of waiting for a writer
KINDS = {stat.S_ISFIFO: "FIFO", stat.S_ISCHR: "character device", stat.S_ISBLK: "block device",
         stat.S_ISSOCK: "socket", stat.S_ISDIR: "directory"}


class RefusedFile(OSError):
    """A data file vistrain will not read: not a regular file, or over the size limit; the message says why."""


UMASK = os.umask(0o022)
os.umask(UMASK)  # read once, at import: the umask can only be read by setting it


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write `data` (bytes, or a function that writes to the open binary file) to `path` atomically, with the
    permissions `open` would give a new file (a temporary file is private until it is renamed). An OSError (a full
    disk) names `path`."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~UMASK)
        with os.fdopen(handle, "wb") as file:
            data(file) if callable(data) else file.write(data)
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:
            error.filename = str(path)
        raise


def write_folder_atomic(path: Path, fill: Callable[[Path], None]) -> None:
    """Make the folder `path` atomically: `fill` writes its files into a temporary folder beside it, which then
    replaces whatever `path` was (a reader sees the old folder or the new one, never half of one)."""
    path = Path(path)
    temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = temporary.with_suffix(".old")
    try:
        fill(temporary)
        for folder in (temporary, *temporary.rglob("*")):
            folder.chmod(0o777 & ~UMASK if folder.is_dir() else 0o666 & ~UMASK)
        if path.exists():
            path.rename(old)
        temporary.rename(path)
    finally:
        for leftover in (temporary, old):
            shutil.rmtree(leftover, ignore_errors=True)


def remove_atomic(path: Path) -> None:
    """Remove the file, link or folder `path`. A folder is renamed to `.NAME.removed` beside it first, then deleted:
    it is gone whole or still whole, never half there under its name, even when the process is killed while deleting
    its files (the hidden leftover is one of `leftovers`)."""
    if path.is_dir() and not path.is_symlink():
        trash = path.with_name(f".{path.name}.removed")
        shutil.rmtree(trash, ignore_errors=True)  # an earlier removal's, killed
        path.rename(trash)
        shutil.rmtree(trash)
    else:
        path.unlink(missing_ok=True)


def leftovers(folder: Path, name: str) -> list[Path]:
    """What `write_atomic`, `write_folder_atomic` and `remove_atomic` leave in `folder` beside a file or folder called
    `name` (a glob pattern) when they are killed: the hidden .NAME.RANDOM.tmp and .NAME.RANDOM.old, and .NAME.removed."""
    return sorted(path for pattern in (f".{name}.*.tmp", f".{name}.*.old", f".{name}.removed")
                  for path in folder.glob(pattern))


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


def utf8(text: str) -> bytes:
    """`text` as UTF-8, the bytes of a file name that was not UTF-8 (held as lone surrogates) written as \\xNN, as the
    terminal shows them (`vistrain.core.console.printable`): a page or a CSV naming such a file can still be written."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").encode()


def write_json(path: Path, value: dict | list) -> None:
    write_atomic(path, utf8(json.dumps(value, indent=2) + "\n"))


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(path, utf8(buffer.getvalue()))


def read_csv(path: Path, needed: Sequence[str] = ()) -> list[dict]:
    """Rows of a CSV file written by `write_csv`, or [] when it does not exist; a ValueError naming the file and the
    columns of `needed` its header lacks, when it has rows."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    missing = [column for column in needed if rows and column not in rows[0]]
    if missing:
        raise ValueError(f"{path} is damaged: no column {', '.join(missing)}")
    return rows


def default_cache_dir() -> Path:
    """Where vistrain keeps what it computes once (features, the exported backbones, converted datasets):
    $VISTRAIN_CACHE, else $XDG_CACHE_HOME/vistrain, else ~/.cache/vistrain."""
    if "VISTRAIN_CACHE" in os.environ:
        return Path(os.environ["VISTRAIN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vistrain"


def open_data_file(path: Path | str, max_bytes: int | None = MAX_FILE_BYTES) -> BinaryIO:
    """`path` opened for binary reading; RefusedFile (an OSError) when it is not a regular file (links are followed)
    or is over `max_bytes` (None: no limit). Checked before opening, so no device is ever opened, and again on the open
    file (it may have been replaced in between); opened non-blocking, so a FIFO cannot hang."""
    _refuse(os.stat(path), max_bytes)
    handle = os.open(path, os.O_RDONLY | NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        _refuse(os.fstat(handle), max_bytes)
        if NONBLOCK:
            os.set_blocking(handle, True)
        return os.fdopen(handle, "rb")
    except BaseException:
        os.close(handle)
        raise


def _refuse(info: os.stat_result, max_bytes: int | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in KINDS.items() if test(info.st_mode)), "unknown kind")
        raise RefusedFile(f"not a regular file ({kind})")
    if max_bytes is not None and info.st_size > max_bytes:
        raise RefusedFile(f"{info.st_size / 2**20:,.0f} MiB is over the limit of {max_bytes / 2**20:,.0f} MiB "
                          "for a data file")


def sha256_file(path: Path | str, max_bytes: int | None = MAX_FILE_BYTES) -> str:
    """The SHA-256 of a file's bytes (opened with `open_data_file`), read a chunk at a time: memory stays flat
    whatever the file's size."""
    with open_data_file(path, max_bytes) as file:
        return sha256_stream(file)


def sha256_stream(file: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: file.read(CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str, length: int = 16) -> str:
    """A short hex key for a JSON identity (cache and export file names)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]
