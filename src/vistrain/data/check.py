"""`vistrain check`: what is wrong with a dataset before training on it.

Counts per split and class, unreadable files, image sizes, exact duplicates (same bytes) and near duplicates
(perceptual hash, via the imagehash library) within a split and across splits (train/validation leakage),
and the same image under two classes (conflicting labels). Files are streamed: one image is decoded at a
time and only a small record per file is kept.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import imagehash
import numpy as np

from vistrain.core.files import write_csv
from vistrain.data.decisions import Decisions, apply_to_files
from vistrain.data.folders import find_split_dirs, read_class_folders
from vistrain.data.images import UnreadableImage, load_rgb_and_digest
from vistrain.data.samples import Skipped

HASHED_FROM = 256  # `reduce_to` for hashing: a shorter side of 2,048+ is hashed from 1,024 (phash looks at 32 x 32)


@dataclass(frozen=True)
class Record:
    path: Path
    split: str
    label: str
    digest: str
    phash: int
    width: int
    height: int


@dataclass(frozen=True)
class Pair:
    """Two files that hold the same (distance 0, same bytes) or a nearly the same picture."""

    a: Record
    b: Record
    kind: str  # "exact" or "near"
    distance: int  # Hamming distance of the perceptual hashes

    @property
    def where(self) -> str:
        """within split / across splits (leakage), and whether the labels conflict."""
        place = f"within {self.a.split}" if self.a.split == self.b.split else f"across {self.a.split}/{self.b.split}"
        return place + ("" if self.a.label == self.b.label else ", conflicting labels")


@dataclass
class CheckResult:
    counts: dict[str, dict[str, int]]  # split -> class -> readable images
    records: list[Record]
    unreadable: list[Skipped]
    pairs: list[Pair] = field(default_factory=list)
    excluded: list[Skipped] = field(default_factory=list)  # left out by review decisions

    def leaks(self) -> list[Pair]:
        return [p for p in self.pairs if p.a.split != p.b.split]

    def conflicts(self) -> list[Pair]:
        return [p for p in self.pairs if p.a.label != p.b.label]


def split_folders(root: Path) -> dict[str, Path]:
    """{split name: folder of class folders}: train and val when DATA has them, else the whole of DATA."""
    train, val = find_split_dirs(root)
    if val is None:
        return {"train" if train != root else "all": train}
    test = root / "test"
    return {"train": train, val.name: val, **({"test": test} if test.is_dir() else {})}


def read_record(path: Path, split: str, label: str) -> Record:
    """Digest, perceptual hash and size of one image, read from the disk once."""
    image, digest = load_rgb_and_digest(path, reduce_to=HASHED_FROM)
    phash = int(str(imagehash.phash(image)), 16)
    return Record(path, split, label, digest, phash, *image.info["source_size"])


def near_pairs(records: list[Record], threshold: int, chunk: int = 1024) -> list[tuple[int, int, int]]:
    """(i, j, distance) for i < j whose perceptual hashes differ in at most `threshold` bits, compared in
    chunk x chunk tiles (memory: one tile, whatever the number of images)."""
    hashes = np.array([r.phash for r in records], dtype=np.uint64)
    found = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk]
        for other in range(start, len(hashes), chunk):
            distances = np.bitwise_count(block[:, None] ^ hashes[None, other : other + chunk])
            for i, j in zip(*np.nonzero(distances <= threshold)):
                if start + i < other + j:
                    found.append((int(start + i), int(other + j), int(distances[i, j])))
    return found


def check_dataset(root: Path, threshold: int = 4, on_file: Callable[[int, int], None] = lambda done, total: None,
                  decisions: Path | None = None) -> CheckResult:
    """Read every file once and find unreadable ones, exact and near duplicates; `on_file(done, total)` after
    each file. Review decisions (the file `decisions`, else the one beside ROOT) are honoured."""
    unreadable: list[Skipped] = []
    excluded: list[Skipped] = []
    counts: dict[str, dict[str, int]] = {}
    work = []
    decisions = Decisions.resolve(decisions, root)
    for split, folder in split_folders(root).items():
        labelled = read_class_folders(folder)
        files, left_out = apply_to_files(labelled.files, decisions)
        unreadable += labelled.skipped
        excluded += left_out
        counts[split] = {label: 0 for label in files}
        work += [(split, label, path) for label, paths in files.items() for path in paths]
    records = []
    for done, (split, label, path) in enumerate(work, 1):
        try:
            records.append(read_record(path, split, label))
            counts[split][label] += 1
        except (UnreadableImage, OSError) as error:
            unreadable.append(Skipped(path, str(error)))
        on_file(done, len(work))
    result = CheckResult(counts, records, unreadable, excluded=excluded)
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_digest[record.digest].append(i)
    exact = {(group[0], j) for group in by_digest.values() for j in group[1:]}
    result.pairs = [Pair(records[i], records[j], "exact", 0) for i, j in sorted(exact)]
    result.pairs += [Pair(records[i], records[j], "near", d) for i, j, d in near_pairs(records, threshold)
                     if (i, j) not in exact and records[i].digest != records[j].digest]
    return result


def size_summary(records: list[Record], min_size: int) -> dict:
    """Smallest, median and largest width and height, and the images smaller than `min_size` on a side."""
    if not records:
        return {"tiny": []}
    widths, heights = np.array([r.width for r in records]), np.array([r.height for r in records])
    return {
        "width": (int(widths.min()), int(np.median(widths)), int(widths.max())),
        "height": (int(heights.min()), int(np.median(heights)), int(heights.max())),
        "tiny": [r for r in records if min(r.width, r.height) < min_size],
    }


def imbalance(counts: dict[str, int]) -> float:
    """Largest class over smallest class (inf when a class is empty)."""
    values = list(counts.values())
    return max(values) / min(values) if values and min(values) else float("inf")


CHECK_FILES = ("images.csv", "duplicates.csv", "unreadable.csv")


def write_check_files(result: CheckResult, out: Path) -> None:
    """OUT/images.csv (one row per readable image), duplicates.csv (every pair) and unreadable.csv (with reasons)."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "duplicates.csv", ["kind", "distance", "where", "file_a", "split_a", "class_a", "file_b",
                                       "split_b", "class_b"],
              [[p.kind, p.distance, p.where, p.a.path, p.a.split, p.a.label, p.b.path, p.b.split, p.b.label]
               for p in result.pairs])
    write_csv(out / "unreadable.csv", ["file", "reason"], [[s.path, s.reason] for s in result.unreadable])
    write_csv(out / "images.csv", ["file", "split", "class", "width", "height", "sha256", "phash"],
              [[r.path, r.split, r.label, r.width, r.height, r.digest, f"{r.phash:016x}"] for r in result.records])
