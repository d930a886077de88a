"""Whether a run directory is being written, and whether it is complete.

A process that writes a run (`train`, `train --resume`) holds the run's lock, an advisory `flock` on
RUN/.vistrain-lock, from before it removes an old run's files until its last file is written, then removes it. A
second one is refused at once, in one line (two `train --overwrite` on one `--out` both reported success, and one
run overwrote the other). The lock goes with the process: a killed one leaves the file, which the next `train
--resume` or `--overwrite` takes.

A run is complete when every one of its files is written: until then it holds checkpoint.pt (`train` removes it
last, after the report). `predict`, `evaluate`, `serve` and `export` refuse an incomplete run in one line
(`require_complete`), and `train --resume` finishes it. A full disk used to leave a run without its report that
`predict` then used.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TextIO

from vistrain.core.errors import quoted
from vistrain.core.files import make_folder
from vistrain.model.run_dir import CHECKPOINT, LOCK, RunError, RunOptionError, new_run_dir, run_path


def start_run_dir(out: str | Path | None, overwrite: bool) -> tuple[Path, TextIO]:
    """(the new run directory, its lock held): locked before an old run's files are removed (`new_run_dir`)."""
    path = run_path(out)
    lock = lock_run(path)
    try:
        return new_run_dir(path, overwrite), lock
    except BaseException:
        unlock_run(lock)
        raise


def lock_run(path: Path) -> TextIO:
    """Make the run directory `path` if needed and hold its lock for as long as the returned file is open; a RunError
    naming the process that holds it already."""
    make_folder(path, "the run directory (--out)")
    handle = open(path / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _still_there(handle):  # its holder removed it as we opened it: another may be making a new one
            raise BlockingIOError
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunOptionError(f"{quoted(path)} is being written by {quoted(holder)}; wait for it to finish, or choose "
                             "another {out}") \
            from None
    handle.truncate(0)
    handle.write(f"vistrain process {os.getpid()}")
    handle.flush()
    return handle


def unlock_run(lock: TextIO) -> None:
    """Remove the lock file and let go of it (removed first, while held: `lock_run` checks that the file it locked
    is still the lock file)."""
    Path(lock.name).unlink(missing_ok=True)
    lock.close()


def _still_there(handle: TextIO) -> bool:
    try:
        return os.stat(handle.name).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def require_complete(run: Path) -> None:
    """A RunError when `run` is not complete (it still holds checkpoint.pt: its training stopped, or is running,
    before all its files were written)."""
    if (Path(run) / CHECKPOINT).exists():
        raise RunError(f"{run} is incomplete: its training stopped (or is still running) before all its files were "
                       f"written; `vistrain train --resume {run}` finishes it")
