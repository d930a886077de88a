"""Activations of a backbone's lower stages, computed once per image and view and cached: what upper-stage
fine-tuning trains on (`vistrain.training.tuning`).

A timm EfficientNet is cut before `model.blocks[cut]`: the lower part (normalisation, stem, `blocks[:cut]`) stays
frozen and runs on ONNX Runtime, exported once with static shapes like the whole backbone (`runtime.py`); the
upper part (`blocks[cut:]`, `conv_head`, `bn2`, pooling) trains on its cached output. Each view of an image
(`VIEWS`: flips and quarter turns of the resized, cropped pixels) has its own cache.

A cache is a folder per backbone, weights, preprocessing, view and cut: `rows.f16`, every activation as float16
rows (memory-mapped when read), and `index.sqlite`, which maps each image file's SHA-256 to its row. Rows are
written first and indexed after, each batch in one transaction, so an interrupted run keeps every batch it
finished and an unindexed row is simply written over; a file lock keeps runs at the same time apart.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from vistrain.backbones import Backbone
from vistrain.backbones.preprocess import Preprocess
from vistrain.core.console import progress_bar
from vistrain.core.files import make_folder, sha256_text
from vistrain.features.runtime import INPUT, onnx_bytes

if TYPE_CHECKING:
    import onnxruntime
    import torch
    from torch import nn

ACTIVATION_FORMAT = 1  # bump when the way activations are computed or stored changes
OUTPUT = "activations"
# Views of the resized, cropped pixels: (flip the height, flip the width, quarter turns counter-clockwise).
VIEWS = {"identity": (False, False, 0), "hflip": (False, True, 0), "vflip": (True, False, 0),
         "rot180": (True, True, 0), "rot90": (False, False, 1), "rot270": (False, False, 3)}


def default_cut(model: nn.Module) -> int:
    """Where the trained part starts: the last two stages of `model.blocks` (EfficientNet-Lite0: the 192- and
    320-channel stages, from `blocks[5]` on)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) < 3:
        raise ValueError(f"upper-stage fine-tuning needs a backbone whose stages are model.blocks (timm "
                         f"EfficientNet); {type(model).__name__} has none")
    return len(blocks) - 2


def lower_part(model: nn.Module, preprocess: Preprocess, cut: int) -> nn.Module:
    """uint8 N x 3 x H x W pixels -> the input of `model.blocks[cut]` (normalised as `PixelNormalize` does)."""
    from torch import nn

    from vistrain.features.transforms import PixelNormalize

    return nn.Sequential(PixelNormalize(preprocess), model.conv_stem, model.bn1, *model.blocks[:cut]).eval()


def view_pixels(pixels: torch.Tensor, view: str) -> torch.Tensor:
    """N x 3 x H x W pixels as `view` shows them (see VIEWS)."""
    import torch

    flip_height, flip_width, turns = VIEWS[view]
    dims = [d for d, flip in ((-2, flip_height), (-1, flip_width)) if flip]
    pixels = pixels.flip(dims) if dims else pixels
    return torch.rot90(pixels, turns, (-2, -1)) if turns else pixels


class ActivationCache:
    """Cached lower-stage activations of one backbone, preprocessing, view and cut, keyed by file digest."""

    def __init__(self, directory: Path, backbone: Backbone, preprocess: Preprocess, view: str, cut: int,
                 shape: tuple[int, ...]):
        identity = json.dumps({"backbone": backbone.name, "weights": backbone.weights, "cut": cut,
                               "preprocess": preprocess.to_dict(), "view": view, "format": ACTIVATION_FORMAT},
                              sort_keys=True)
        self.folder = make_folder(directory / f"activations-{backbone.file_stem}-{sha256_text(identity)}",
                                  "the activation cache")
        self.shape = tuple(shape)
        self.row_bytes = int(np.prod(shape)) * 2  # float16
        self.rows_path = self.folder / "rows.f16"
        self.db = sqlite3.connect(self.folder / "index.sqlite", timeout=120)
        self.db.execute("PRAGMA journal_mode=WAL")
        with self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS rows (digest TEXT PRIMARY KEY, row INTEGER NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS identity (json TEXT)")
            if not self.db.execute("SELECT 1 FROM identity").fetchone():
                self.db.execute("INSERT INTO identity VALUES (?)", (identity,))
        self.rows_path.touch(exist_ok=True)

    def rows(self, digests: list[str]) -> dict[str, int]:
        """The row of each of `digests` that is cached and whole (a row past the end of rows.f16 is not)."""
        complete = os.path.getsize(self.rows_path) // self.row_bytes
        found: dict[str, int] = {}
        for start in range(0, len(digests), 500):
            chunk = digests[start : start + 500]
            found.update(self.db.execute(
                f"SELECT digest, row FROM rows WHERE digest IN ({','.join('?' * len(chunk))})", chunk))
        return {digest: row for digest, row in found.items() if row < complete}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.folder / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put_many(self, digests: list[str], activations: np.ndarray) -> None:
        """Append rows for `digests` (float16) and index them, as one batch."""
        data = np.ascontiguousarray(activations, dtype=np.float16).reshape(len(digests), -1).tobytes()
        with self._locked():
            start = (self.db.execute("SELECT MAX(row) FROM rows").fetchone()[0] or -1) + 1
            with open(self.rows_path, "r+b") as file:
                file.seek(start * self.row_bytes)
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO rows VALUES (?, ?)",
                                    [(d, start + i) for i, d in enumerate(digests)])

    def matrix(self) -> np.ndarray:
        """Every whole row, memory-mapped read-only: (rows, *shape) float16."""
        complete = os.path.getsize(self.rows_path) // self.row_bytes
        if not complete:
            return np.zeros((0, *self.shape), np.float16)
        return np.memmap(self.rows_path, dtype=np.float16, mode="r", shape=(complete, *self.shape))

    def close(self) -> None:
        self.db.close()


def lower_model_path(directory: Path, backbone: Backbone, preprocess: Preprocess, cut: int) -> Path:
    identity = json.dumps({"backbone": backbone.name, "weights": backbone.weights, "preprocess": preprocess.to_dict(),
                           "cut": cut, "format": ACTIVATION_FORMAT}, sort_keys=True)
    return directory / f"lower-{backbone.file_stem}-{sha256_text(identity)}.onnx"


def lower_session(backbone: Backbone, preprocess: Preprocess, cut: int, directory: Path,
                  threads: int) -> tuple[onnxruntime.InferenceSession, tuple[int, ...]]:
    """An ONNX Runtime session of the lower part (exported into `directory` on first use) and its output shape
    for one image."""
    import onnxruntime
    import torch

    from vistrain.core.files import write_atomic

    path = lower_model_path(directory, backbone, preprocess, cut)
    example = torch.zeros(2, 3, preprocess.input_size, preprocess.input_size, dtype=torch.uint8)
    lower = lower_part(backbone.build_feature_extractor(), preprocess, cut)
    with torch.no_grad():
        shape = tuple(lower(example[:1]).shape[1:])
    if not path.exists():
        write_atomic(path, onnx_bytes(lower, example, OUTPUT))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), shape


def run_lower(session: onnxruntime.InferenceSession) -> Callable[[torch.Tensor], np.ndarray]:
    """uint8 pixels -> float32 activations, on `session`."""
    return lambda pixels: session.run(None, {INPUT: pixels.contiguous().numpy()})[0]


class Activations:
    """Cached activations of some images in some views: `batch(images, views)` gathers rows as float32."""

    def __init__(self, matrices: dict[str, np.ndarray], rows: dict[str, np.ndarray], shape: tuple[int, ...],
                 computed: int, seconds: float):
        self.matrices, self.rows, self.shape = matrices, rows, shape
        self.computed, self.seconds = computed, seconds  # computed now (not read from the cache), and how long

    @property
    def views(self) -> list[str]:
        return list(self.rows)

    def batch(self, images: np.ndarray, views: np.ndarray | None = None) -> torch.Tensor:
        """float32 (len(images), *shape): image `images[k]` in view `self.views[views[k]]` (identity by default)."""
        import torch

        out = np.empty((len(images), *self.shape), np.float16)
        chosen = np.zeros(len(images), int) if views is None else np.asarray(views)
        for v, name in enumerate(self.views):
            picked = np.flatnonzero(chosen == v)
            if len(picked):
                rows = self.rows[name][np.asarray(images)[picked]]
                order = np.argsort(rows)  # memory-mapped rows read in file order
                out[picked[order]] = self.matrices[name][rows[order]]
        return torch.from_numpy(out).float()


def cached_activations(paths: list[Path], digests: list[str], backbone: Backbone, preprocess: Preprocess,
                       views: list[str], cut: int, cache_dir: Path, show_progress: bool = False,
                       batch_size: int = 32) -> Activations:
    """The lower-stage activations of every image in every view, from the cache; the missing ones computed (each
    image decoded once for all its views) and cached batch by batch. A file that cannot be read any more raises
    `UnreadableImage` (the training job's features step has already left out those it could not read).
    `show_progress`: a progress bar of the images computed."""
    import time

    from vistrain.data.images import UnreadableImage, load_pixels
    from vistrain.features.extract import extraction_threads, in_threads
    from vistrain.features.transforms import eval_transform

    at_once, threads_each = extraction_threads()
    session, shape = lower_session(backbone, preprocess, cut, cache_dir, threads_each)
    caches = {view: ActivationCache(cache_dir, backbone, preprocess, view, cut, shape) for view in views}
    started, computed = time.perf_counter(), 0
    try:
        unique = sorted(set(digests))
        have = {view: cache.rows(unique) for view, cache in caches.items()}
        missing = [i for i, d in enumerate(digests) if any(d not in have[v] for v in views)]
        missing = list({digests[i]: i for i in missing}.values())  # one per file content
        transform, forward = eval_transform(preprocess, output="uint8"), run_lower(session)

        def compute(positions: list[int]) -> tuple[list[int], dict[str, np.ndarray]]:
            import torch

            pixels = torch.stack([transform(load_pixels(paths[i], reduce_to=preprocess.resize_size)[0])
                                  for i in positions])
            return positions, {view: forward(view_pixels(pixels, view)) for view in views
                               if any(digests[i] not in have[view] for i in positions)}

        batches = [missing[start : start + batch_size] for start in range(0, len(missing), batch_size)]
        label = f"activations of the lower stages ({', '.join(views)})"
        with progress_bar(label, len(missing), show_progress and bool(missing)) as advance:
            for positions, outputs in in_threads(batches, compute, at_once):
                for view, values in outputs.items():
                    caches[view].put_many([digests[i] for i in positions], values)
                computed += len(positions)
                advance(len(positions))
        rows = {view: cache.rows(unique) for view, cache in caches.items()}
        lost = [paths[i] for i, d in enumerate(digests) if any(d not in rows[v] for v in views)]
        if lost:
            raise UnreadableImage(f"{lost[0]}: its activations could not be cached")
        return Activations({view: cache.matrix() for view, cache in caches.items()},
                           {view: np.array([rows[view][d] for d in digests]) for view in views}, shape, computed,
                           time.perf_counter() - started)
    finally:
        for cache in caches.values():
            cache.close()
