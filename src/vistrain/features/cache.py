"""The feature cache: one SQLite file per (backbone, weights, preprocessing, view, precision), feature vectors keyed
by the SHA-256 of an image file's bytes.

Renaming or moving a file keeps its features; editing it computes them again. Each batch is committed as soon as
it is computed, so an interrupted run keeps everything done so far, and SQLite's locking makes the cache safe for
several runs at once. Both engines (ONNX Runtime and torch) share a cache: their features agree to about 1e-5,
far below what changes a trained head, so the engine is not part of the key. int8 features differ more (cosine
about 0.996 to fp32): their precision and calibration set are part of the key, so precisions never mix.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from vistrain.backbones import Backbone
from vistrain.backbones.preprocess import Preprocess
from vistrain.core.files import make_folder, sha256_text
from vistrain.core.messages import warn
from vistrain.features.precision import FP32, Precision
from vistrain.features.transforms import View

FEATURE_FORMAT = 1  # bump when the way features are computed changes, to invalidate old caches
LOCKED_WAIT_S = 120  # how long opening waits for another process that holds the cache


class FeatureCache:
    """Feature vectors of one backbone, preprocessing, view and precision, keyed by image-content digest."""

    def __init__(self, directory: Path, backbone: Backbone, preprocess: Preprocess, view: View = View(),
                 precision: Precision = FP32):
        key_parts = {"backbone": backbone.name, "weights": backbone.weights, "preprocess": preprocess.to_dict(),
                     "format": FEATURE_FORMAT}
        if view.identity():
            key_parts["view"] = view.identity()
        if precision.identity():
            key_parts["precision"] = precision.identity()
        identity = json.dumps(key_parts, sort_keys=True)
        key = sha256_text(identity)
        self.path = make_folder(directory, "the feature cache") / f"features-{backbone.file_stem}-{key}.sqlite"
        self.dim = backbone.feature_dim
        try:
            with self._full_disk():
                self._db = self._open(identity)
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError):  # locked, read-only: not a damaged file
                raise
            self._db = self._start_again(identity, error)

    def _open(self, identity: str) -> sqlite3.Connection:
        """Open (or create) the cache. Two processes creating one at the same moment can get "database is locked"
        at once, without SQLite's busy wait (switching a new file to WAL): that is tried again, for LOCKED_WAIT_S."""
        deadline = time.monotonic() + LOCKED_WAIT_S
        while True:
            try:
                return self._try_open(identity)
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _try_open(self, identity: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=LOCKED_WAIT_S)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # Each commit reaches the operating system, so a killed process loses nothing; only a power cut may lose
            # the last batches, never the database itself (SQLite's guarantee for WAL with synchronous=NORMAL).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS features (digest TEXT PRIMARY KEY, vector BLOB NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS identity (json TEXT)")
            if not db.execute("SELECT 1 FROM identity").fetchone():
                db.execute("INSERT INTO identity VALUES (?)", (identity,))
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _start_again(self, identity: str, error: sqlite3.DatabaseError) -> sqlite3.Connection:
        """A damaged cache file (not SQLite, or a corrupt one) is moved aside, with its journal, and a new one begun:
        its features are computed again."""
        damaged = self.path.with_name(self.path.name + ".damaged")
        os.replace(self.path, damaged)
        for journal in ("-wal", "-shm"):
            Path(f"{self.path}{journal}").unlink(missing_ok=True)
        warn(f"warning: the feature cache {self.path} is damaged ({error}); moved it to "
             f"{damaged.name} and starting a new one (its features are computed again)")
        return self._open(identity)

    def has(self, digests: list[str]) -> set[str]:
        """Which of `digests` are cached (their vectors are not read). A vector of the wrong size (a damaged row) is
        not: it is computed again and replaced."""
        found: set[str] = set()
        damaged = 0
        for start in range(0, len(digests), 500):
            chunk = digests[start : start + 500]
            rows = self._db.execute(
                f"SELECT digest, length(vector) FROM features WHERE digest IN ({','.join('?' * len(chunk))})", chunk)
            for digest, size in rows:
                if size == self.dim * 4:  # float32
                    found.add(digest)
                else:
                    damaged += 1
        if damaged:
            warn(f"warning: {damaged} feature vector(s) in {self.path} have the wrong size; "
                 "computing them again")
        return found

    def read_into(self, matrix: np.ndarray, digests: list[str]) -> None:
        """Row i of `matrix` <- the cached vector of digests[i], a chunk at a time (memory: one chunk)."""
        for start in range(0, len(digests), 500):
            chunk = digests[start : start + 500]
            rows = dict(self._db.execute(
                f"SELECT digest, vector FROM features WHERE digest IN ({','.join('?' * len(set(chunk)))})",
                sorted(set(chunk))))
            matrix[start : start + len(chunk)] = [np.frombuffer(rows[d], dtype=np.float32) for d in chunk]

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        rows = [(digest, np.asarray(v, dtype=np.float32).tobytes()) for digest, v in items.items()]
        with self._full_disk(), self._db:
            self._db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?)", rows)

    @contextmanager
    def _full_disk(self) -> Iterator[None]:
        """SQLite's "database or disk is full" as the OSError (ENOSPC) a full disk gives any other file, naming the
        cache."""
        try:
            yield
        except sqlite3.OperationalError as error:
            if "full" not in str(error):
                raise
            raise OSError(errno.ENOSPC, f"No space left on device ({error})", str(self.path)) from None

    def close(self) -> None:
        self._db.close()
