"""The built-in demo data: one label CSV per task over the elpv solar-cell photos, all with the same split."""

from __future__ import annotations

from pathlib import Path

import pytest

from vistrain.data.datasets import load_dataset
from vistrain.data.demo import elpv_csv, elpv_labels, elpv_root
from vistrain.data.images import load_rgb


def test_elpv_csv_per_task_with_one_shared_split(tmp_path: Path):
    labels = elpv_labels()
    assert len(labels) == 2624
    defective = sum(probability >= 0.5 for _, probability, _ in labels)
    datasets = {task: load_dataset(elpv_csv(tmp_path, task), task="auto" if task != "multiclass" else task,
                                   image_root=elpv_root())
                for task in ("binary", "multiclass", "multilabel", "regression")}
    assert all(not d.skipped for d in datasets.values())
    assert {task: d.task for task, d in datasets.items()} == {t: t for t in datasets}
    binary = datasets["binary"]
    assert binary.classes == ["defective", "functional"]
    assert sum(s.target == 0 for s in binary.train + binary.val) == defective
    assert datasets["multiclass"].classes == ["p0.00", "p0.33", "p0.67", "p1.00"]
    assert datasets["multilabel"].classes == ["defective", "mono", "poly"]
    assert datasets["regression"].classes == ["defect_probability"]
    assert {round(s.target[0], 4) for s in datasets["regression"].train} == {0.0, 0.3333, 0.6667, 1.0}
    splits = {task: [s.path for s in d.val] for task, d in datasets.items()}
    assert len(binary.val) == 525 and all(paths == splits["binary"] for paths in splits.values())
    assert load_rgb(binary.val[0].path).size == (300, 300)


def test_the_demo_command_gives_its_csv_image_root(tmp_path: Path, monkeypatch):
    """`vistrain demo` trains on every photo: its CSV's paths lie inside the image root it passes (the training
    itself is not run here)."""
    import vistrain.api
    from conftest import invoke

    loaded = []

    def load_only(data, out, options, **kwargs):
        loaded.append(load_dataset(data, task=options.task, image_root=kwargs["image_root"]))
        raise SystemExit(0)

    monkeypatch.setattr(vistrain.api, "train", load_only)
    assert invoke("demo", "--cache-dir", tmp_path).exit_code == 0
    assert len(loaded[0].train) + len(loaded[0].val) == 2624 and not loaded[0].skipped


@pytest.mark.parametrize("args, head", [((), "logistic"), (("--task", "multiclass"), "logistic"),
                                        (("--task", "regression"), "mlp"), (("--head", "mlp"), "mlp")])
def test_the_demo_picks_the_head_measured_best_unless_told(tmp_path: Path, monkeypatch, args, head):
    """The logistic head for classification and the MLP for regression (benchmarks/elpv_tasks.py); --head wins."""
    import vistrain.api
    from conftest import invoke

    chosen = []

    def record_head(data, out, options, **kwargs):
        chosen.append(options.head)
        raise SystemExit(0)

    monkeypatch.setattr(vistrain.api, "train", record_head)
    assert invoke("demo", "--cache-dir", tmp_path, *args).exit_code == 0
    assert chosen == [head]
