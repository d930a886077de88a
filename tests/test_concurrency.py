"""Two `vistrain train` processes sharing one feature cache at the same time both finish correctly."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_class_folders


@pytest.mark.slow
def test_two_trainings_share_one_cache_at_once(tmp_path: Path):
    data = write_class_folders(tmp_path / "data", 60)
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "vistrain", "train", str(data), "--epochs", "5", "--cache-dir", str(cache)]
    processes = [subprocess.Popen([*command, "--out", str(tmp_path / f"run{i}")], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n\n".join(err[-3000:] for _, err in outputs)
    metrics = [json.loads((tmp_path / f"run{i}" / "metrics.json").read_text()) for i in range(2)]
    assert metrics[0]["accuracy"] == metrics[1]["accuracy"] and metrics[0]["val_loss"] == metrics[1]["val_loss"]
    # Both computed features: each looked in the cache before the other had filled it, so they really overlapped.
    computed = [m["timing"]["features_computed"] for m in metrics]
    assert all(n > 0 for n in computed), computed
    databases = list(cache.glob("features-*.sqlite"))
    assert len(databases) == 1
    with sqlite3.connect(databases[0]) as db:
        assert db.execute("SELECT COUNT(*) FROM features").fetchone()[0] == 120  # every image once


def test_atomic_writes_get_the_permissions_a_plain_write_would(tmp_path: Path):
    """A run shared with a team stays readable: write_atomic's file has the mode `open` gives under the umask,
    not its private temporary file's 0600."""
    from vistrain.core.files import write_atomic

    write_atomic(tmp_path / "atomic.json", b"{}")
    (tmp_path / "plain.json").write_bytes(b"{}")
    assert (tmp_path / "atomic.json").stat().st_mode == (tmp_path / "plain.json").stat().st_mode



def _open_cache(directory: str, barrier) -> str:
    from vistrain.backbones import get_backbone
    from vistrain.features.cache import FeatureCache

    backbone = get_backbone("efficientnet_lite0")  # resolved in the parent before the fork: no weights loaded here
    barrier.wait()
    try:
        FeatureCache(Path(directory), backbone, backbone.preprocess)
        return "ok"
    except Exception as error:  # noqa: BLE001 - the test reports what each process met
        return repr(error)


def test_processes_creating_one_new_cache_at_the_same_moment_all_open_it(tmp_path: Path):
    """SQLite answers "database is locked" at once, without its busy wait, to one of two connections switching a
    new file to WAL together (CI met it in the test above): opening tries again."""
    import multiprocessing

    from vistrain.backbones import get_backbone
    from vistrain.features.cache import FeatureCache  # noqa: F401 - imported before the fork

    get_backbone("efficientnet_lite0")
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager, context.Pool(4) as pool:
        results = []
        for trial in range(40):
            barrier = manager.Barrier(4)
            results += pool.starmap(_open_cache, [(str(tmp_path / str(trial)), barrier)] * 4)
    assert set(results) == {"ok"}, sorted(set(results))
