"""The built-in demo data: the elpv solar-cell photos laid out as class folders."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from vistrain.data import load_dataset
from vistrain.demo import elpv_labels, prepare_elpv
from vistrain.images import load_rgb


def test_elpv_becomes_two_class_folders(tmp_path: Path):
    labels = elpv_labels()
    assert len(labels) == 2624
    root = prepare_elpv(tmp_path / "elpv")
    counts = Counter(p.parent.name for p in root.glob("*/*.png"))
    defective = sum(probability >= 0.5 for _, probability, _ in labels)
    assert counts == {"defective": defective, "functional": 2624 - defective}
    dataset = load_dataset(root)
    assert dataset.classes == ["defective", "functional"]
    assert load_rgb(next(root.glob("defective/*.png"))).size == (300, 300)
    assert prepare_elpv(tmp_path / "elpv") == root  # a second call reuses the folder
