"""Backbone features of image files: read from the cache (`cache.py`), the missing ones computed in parallel batches
and cached as they come.

Features are computed by ONNX Runtime (the default engine on a CPU, see `runtime.py`) or by torch eager (the
default on a CUDA device: `core.device`); both share one cache. int8 features (`int8.py`) are ONNX Runtime's
alone, cached apart.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

from vistrain.backbones import Backbone, BackboneUnavailable
from vistrain.backbones.preprocess import Preprocess
from vistrain.core.console import progress_bar
from vistrain.core.device import HalvingBatches, ignore
from vistrain.core.files import default_cache_dir, sha256_file
from vistrain.core.messages import warn
from vistrain.data.images import UnreadableImage
from vistrain.data.samples import Skipped
from vistrain.features.cache import FeatureCache
from vistrain.features.inputs import PartPixels, backbone_inputs
from vistrain.features.precision import FP32, Precision
from vistrain.features.runtime import INPUT, feature_session, pixel_feature_extractor
from vistrain.features.transforms import View

MEMORY_MAPPED_BYTES = 64 * 2**20  # larger feature matrices live in memory-mapped temporary files
ENGINES = ("onnx", "torch")
T, R = TypeVar("T"), TypeVar("R")


@dataclass
class Features:
    """Feature vectors of the readable files, in input order, with the input indices they belong to."""

    vectors: np.ndarray  # (n_kept, dim) float32
    kept: list[int]
    digests: dict[int, str]  # input index -> SHA-256 of the file's bytes
    skipped: list[Skipped]
    computed: int  # how many were computed now rather than read from the cache (by any part of a concatenation)
    compute_seconds: float


class _ImageFiles:
    """Batches of image files -> ({input: (the readable positions that want it, their uint8 pixels)},
    [(position, reason)] of the unreadable ones), each file decoded once for every input (`PartPixels`)."""

    def __init__(self, paths: list[Path], digests: list[str], wanted: list[tuple[int, ...]],
                 preprocesses: list[Preprocess], view: View):
        self.paths, self.digests, self.wanted = paths, digests, wanted
        self.pixels = PartPixels(preprocesses, view)

    def load(self, positions: range) -> tuple[dict[int, tuple[list[int], torch.Tensor]], list[tuple[int, str]]]:
        bad = []
        batches: dict[int, tuple[list[int], list[torch.Tensor]]] = {}
        with _one_torch_thread():
            for position in positions:
                try:
                    pixels = self.pixels(self.paths[position], self.digests[position], self.wanted[position])
                except UnreadableImage as error:
                    bad.append((position, str(error)))
                    continue
                for i, image in pixels.items():
                    batches.setdefault(i, ([], []))
                    batches[i][0].append(position)
                    batches[i][1].append(image)
        return {i: (where, torch.stack(images)) for i, (where, images) in batches.items()}, bad


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Torch ops in this block (resizing) run on the calling thread alone: extraction already runs one thread per
    core, and torch's idle OpenMP threads would otherwise spin on cores the backbone needs. The setting is the
    calling thread's own (OpenMP's), so other threads keep theirs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def in_threads(batches: Iterable[T], work: Callable[[T], R], threads: int) -> Iterator[R]:
    """`work(batch)` of each batch, in order, done by `threads` threads at once, at most `threads` + 1 batches
    ahead of the caller (so memory is set by the batch size, not the number of batches)."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="vistrain-features")
    pending: deque[Future[R]] = deque()
    try:
        for batch in batches:
            pending.append(pool.submit(work, batch))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)


def extraction_threads() -> tuple[int, int]:
    """(batches computed at once, ONNX Runtime threads per batch) for feature extraction: one batch per core, up
    to 4 at once, sharing the cores. Each thread decodes its batch and runs the backbone on it: on a small CPU,
    single-threaded ONNX Runtime on separate batches gets about a third more images/s out of the cores than
    one batch at a time on all of them, and decoding fills the gaps (`benchmarks/feature_speed.py`)."""
    cores = os.cpu_count() or 1
    at_once = max(1, min(4, cores))
    return at_once, max(1, cores // at_once)


def resolve_engine(engine: str | None, device: torch.device | None = None) -> str:
    """`engine`, else $VISTRAIN_ENGINE, else "torch" on a CUDA `device` and "onnx" elsewhere; checked to be one of
    ENGINES."""
    default = "torch" if device is not None and device.type == "cuda" else "onnx"
    engine = engine or os.environ.get("VISTRAIN_ENGINE", default)
    if engine not in ENGINES:
        raise ValueError(f"unknown feature engine {engine!r}; engines: {', '.join(ENGINES)}")
    return engine


def extract_features(
    paths: list[Path],
    backbone: Backbone,
    preprocess: Preprocess,
    cache_dir: Path | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
    engine: str | None = None,
    view: View = View(),
    precision: Precision = FP32,
    device: torch.device | None = None,
    on_halve: Callable[[int], None] = ignore,
) -> Features:
    """Feature vectors for `paths` (of `view`: by default the images as validation sees them; in `precision`),
    reading cached ones and computing (and caching) the rest. `preprocess` is the run's; a concatenation's parts
    take their own (`inputs.backbone_inputs`), each image decoded once for all of them.

    `engine` computes them: "onnx" (ONNX Runtime on the CPU, falling back to torch with a warning where it cannot
    run, for fp32) or "torch" (torch eager on `device`, default the CPU; fp32 only; `on_halve` is told when a batch
    had to be cut into smaller pieces to fit the device's memory); the default is `resolve_engine`'s.
    """
    engine = resolve_engine(engine, device if precision == FP32 else None)
    cache_dir = cache_dir or default_cache_dir()
    skipped: dict[int, str] = {}
    digests: dict[int, str] = {}
    for index, path in enumerate(paths):
        try:
            digests[index] = sha256_file(path)
        except OSError as error:
            skipped[index] = f"cannot read: {error.strerror or error}"
    inputs = backbone_inputs(backbone, preprocess)  # a concatenation's parts, each cached on its own
    caches = []
    try:
        started = time.perf_counter()
        for part, part_preprocess in inputs:  # one at a time, so that each opened is closed below
            caches.append(FeatureCache(cache_dir, part, part_preprocess, view, precision))
        label = f"features ({', '.join(part.name for part, _ in inputs)})" if backbone.parts else "features"
        computed = _fill_caches(paths, digests, skipped, caches, inputs, cache_dir, batch_size, show_progress, engine,
                                view, precision, label, device, on_halve)
        seconds = time.perf_counter() - started
        kept = [i for i in range(len(paths)) if i not in skipped]
        matrix = feature_matrix(len(kept), backbone.feature_dim, cache_dir)
        columns = np.cumsum([0] + [part.feature_dim for part, _ in inputs])
        for cache, start, end in zip(caches, columns, columns[1:]):
            cache.read_into(matrix[:, start:end], [digests[i] for i in kept])
    finally:
        for cache in caches:
            cache.close()
    return Features(
        vectors=matrix,
        kept=kept,
        digests=digests,
        skipped=[Skipped(paths[i], reason) for i, reason in sorted(skipped.items())],
        computed=computed,
        compute_seconds=seconds,
    )


def _fill_caches(paths: list[Path], digests: dict[int, str], skipped: dict[int, str], caches: list[FeatureCache],
                 inputs: list[tuple[Backbone, Preprocess]], cache_dir: Path, batch_size: int, show_progress: bool,
                 engine: str, view: View, precision: Precision, label: str, device: torch.device | None,
                 on_halve: Callable[[int], None]) -> int:
    """Compute what each of `caches` (one per input) lacks of the files not yet `skipped` (adding the unreadable
    ones to it), decoding each file once for all inputs; returns how many files were computed."""
    readable = sorted({digests[i] for i in digests if i not in skipped})
    cached = [cache.has(readable) for cache in caches]
    wanted = {i: tuple(k for k, have in enumerate(cached) if digest not in have)
              for i, digest in digests.items() if i not in skipped}
    missing = [i for i, parts in wanted.items() if parts]
    if not missing:
        return 0
    at_once, threads_each = extraction_threads()
    forwards = {k: feature_function(part, part_preprocess, cache_dir, engine, threads_each, precision,
                                     device, on_halve)
                for k, (part, part_preprocess) in enumerate(inputs) if any(k in wanted[i] for i in missing)}
    files = _ImageFiles([paths[i] for i in missing], [digests[i] for i in missing], [wanted[i] for i in missing],
                        [part_preprocess for _, part_preprocess in inputs], view)
    failures = _compute_into_cache(files, forwards, caches, batch_size, at_once, show_progress, label)
    skipped.update({missing[position]: reason for position, reason in failures.items()})
    return len(missing) - len(failures)


def feature_matrix(rows: int, dim: int, directory: Path) -> np.ndarray:
    """An empty float32 matrix, memory-mapped from an anonymous temporary file in `directory` once it would
    exceed MEMORY_MAPPED_BYTES: feature matrices of any size leave the process's own memory flat."""
    if rows * dim * 4 <= MEMORY_MAPPED_BYTES:
        return np.zeros((rows, dim), np.float32)
    with tempfile.TemporaryFile(dir=directory, prefix="features-", suffix=".f32") as file:
        return np.memmap(file, dtype=np.float32, mode="w+", shape=(rows, dim))  # the mapping outlives the file


def feature_function(backbone: Backbone, preprocess: Preprocess, cache_dir: Path | None = None,
                     engine: str | None = None, threads: int | None = None,
                     precision: Precision = FP32, device: torch.device | None = None,
                     on_halve: Callable[[int], None] = ignore) -> Callable[[torch.Tensor], np.ndarray]:
    """The feature extractor in `precision` on `engine` (see `extract_features`): uint8 N x 3 x H x W pixels (a
    view's transform) -> (N, dim) float32 features. `threads`: ONNX Runtime threads per call (default: every core).
    Several threads may call it at once: ONNX Runtime runs the calls in parallel, torch (on `device`, in float32,
    in pieces of a batch that fit its memory) one after another."""
    engine = resolve_engine(engine, device if precision == FP32 else None)
    if precision != FP32 and engine != "onnx":
        raise ValueError(f"{precision.name} features are computed by ONNX Runtime only, not by the {engine} engine "
                         "(VISTRAIN_ENGINE)")
    if backbone.parts:
        raise ValueError(f"{backbone.name}: a concatenation's features are computed part by part, each on its own "
                         "input (`inputs.backbone_inputs`)")
    if engine == "onnx":
        try:
            session = feature_session(backbone, preprocess, cache_dir or default_cache_dir(),
                                      threads=threads or os.cpu_count() or 1, precision=precision)
        except BackboneUnavailable:
            raise
        except Exception as error:
            if precision != FP32:  # torch cannot compute these: no fallback
                raise
            # onnxruntime missing, or the export or load failed: torch computes the same
            warn(f"warning: ONNX Runtime cannot run the backbone ({type(error).__name__}: {error}); "
                 "computing features with torch instead (slower)")
        else:
            return lambda batch: session.run(None, {INPUT: batch.numpy()})[0]
    device = device or torch.device("cpu")
    model = pixel_feature_extractor(backbone, preprocess).to(device, memory_format=torch.channels_last)
    one_at_a_time = threading.Lock()  # torch already spreads one batch over every core (or fills the GPU)
    batches = HalvingBatches(on_halve)

    def pieces_forward(batch: torch.Tensor, pieces: list[slice]) -> np.ndarray:
        batch = batch.to(device).contiguous(memory_format=torch.channels_last)  # slices of it stay channels-last
        return np.concatenate([model(batch[piece]).cpu().numpy() for piece in pieces])

    def forward(batch: torch.Tensor) -> np.ndarray:
        with one_at_a_time, torch.inference_mode():
            return batches.run(len(batch), lambda pieces: pieces_forward(batch, pieces))

    return forward


def _compute_into_cache(files: _ImageFiles, forwards: dict[int, Callable[[torch.Tensor], np.ndarray]],
                        caches: list[FeatureCache], batch_size: int, at_once: int, show_progress: bool,
                        label: str = "features") -> dict[int, str]:
    """Compute the features `files` want with `forwards` (one per input), `at_once` batches at a time, and cache
    them in each input's cache under the files' digests (each batch committed as it comes); returns {position in
    files: reason} for unreadable files."""

    def compute(positions: range) -> tuple[dict[int, tuple[list[int], np.ndarray]], list[tuple[int, str]]]:
        pixels, bad = files.load(positions)
        return {i: (where, forwards[i](batch)) for i, (where, batch) in pixels.items()}, bad

    total = len(files.paths)
    batches = [range(start, min(start + batch_size, total)) for start in range(0, total, batch_size)]
    failures: dict[int, str] = {}
    with progress_bar(label, total, show_progress) as advance:
        for positions, (computed, bad) in zip(batches, in_threads(batches, compute, at_once)):
            failures.update(bad)
            for i, (where, vectors) in computed.items():
                caches[i].put_many({files.digests[p]: row for p, row in zip(where, vectors)})
            advance(len(positions))
    return failures
