"""The one split policy: `train`, `split` and the demo all divide data with `assign_splits`.

Each stratum (a class, a label combination, or a quintile of a regression target) is shuffled with the seed and
divided on its own, so every part keeps the strata's proportions. Whenever a stratum has two or more images, at
least one goes to validation and at least one stays for training; the same items, keys and seed always give the
same assignment, whichever command asks. A file whose bytes are in both training and validation breaks a split
(`digest_leaks`: `train` warns of them; `check` also finds near duplicates).
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from pathlib import Path

from vistrain.data.samples import DataError, Sample

SPLITS = ("train", "val", "test")


def assign_splits(keys: Sequence[Hashable], val_fraction: float, seed: int, test_fraction: float = 0.0,
                  per_stratum: int | None = None) -> list[str | None]:
    """The split ("train", "val" or "test") of each item, from its stratum key; None for items left out because
    their stratum had more than `per_stratum`. Items should come in a stable order (sorted by path): a stratum's
    members are shuffled from that order. Test images are taken first, then validation, the rest train."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(f"the validation ({val_fraction}) and test ({test_fraction}) fractions must be ≥ 0 and "
                        "add up to less than 1")
    rng = random.Random(seed)
    assigned: list[str | None] = [None] * len(keys)
    for key in sorted(set(keys)):
        members = [i for i, k in enumerate(keys) if k == key]
        rng.shuffle(members)
        members = members[:per_stratum] if per_stratum else members
        n_test = _share(len(members), test_fraction, reserve=1)
        n_val = _share(len(members) - n_test, val_fraction, reserve=0, of=len(members))
        for position, index in enumerate(members):
            assigned[index] = "test" if position < n_test else "val" if position < n_test + n_val else "train"
    return assigned


def _share(n: int, fraction: float, reserve: int, of: int | None = None) -> int:
    """round(of x fraction) images, at least one when there are two or more and `fraction` > 0, and never so
    many that fewer than 1 + `reserve` are left."""
    if fraction == 0 or n < 2 + reserve:
        return 0
    return min(max(round((of or n) * fraction), 1), n - 1 - reserve)


def stratum(samples: list[Sample]) -> list:
    """What a split keeps in proportion: the class, the label combination, or the quintile of the first
    regression target."""
    if not samples or not isinstance(samples[0].target, tuple) or all(set(s.target) <= {0.0, 1.0} for s in samples):
        return [s.target for s in samples]
    order = sorted(range(len(samples)), key=lambda i: samples[i].target[0])
    keys = [0] * len(samples)
    for rank, i in enumerate(order):
        keys[i] = rank * 5 // len(samples)
    return keys


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(training, validation) samples, each sorted by path, by `assign_splits` over `stratum` (`samples` in a
    stable order: folders sorted by path, CSV lists in row order)."""
    if not 0 < val_fraction < 1:
        raise DataError(f"the validation fraction must be between 0 and 1, not {val_fraction}")
    splits = assign_splits(stratum(samples), val_fraction, seed)
    return (sorted((s for s, split in zip(samples, splits) if split == "train"), key=lambda s: s.path),
            sorted((s for s, split in zip(samples, splits) if split == "val"), key=lambda s: s.path))


def digest_leaks(train_digests: dict[str, Path], val_digests: dict[str, Path]) -> list[tuple[Path, Path]]:
    """Files whose exact bytes (SHA-256 -> file) are in both training and validation: (training file, validation
    file)."""
    return [(train_digests[d], val_digests[d]) for d in sorted(set(train_digests) & set(val_digests))]
