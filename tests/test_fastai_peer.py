"""benchmarks/fastai_peer.py, the parts that need no fastai: how it says that its python or its data is missing
(fastai itself lives in a benchmark-only venv; the peer's figures are in docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PEER = Path(__file__).resolve().parents[1] / "benchmarks" / "fastai_peer.py"


def peer_module():
    spec = importlib.util.spec_from_file_location("fastai_peer", PEER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_missing_fastai_python_is_named_with_the_way_out(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VISTRAIN_FASTAI_PYTHON", str(tmp_path / "no-venv" / "python"))
    with pytest.raises(RuntimeError, match="no python at .*no-venv/python: create the fastai venv"):
        peer_module().run_fastai_peer(tmp_path, 64, 10)


def test_a_failing_peer_reports_what_it_said(tmp_path: Path):
    with pytest.raises(RuntimeError, match=f"failed under {sys.executable}: fastai_peer: .* has no train/ and val/"):
        peer_module().run_fastai_peer(tmp_path, 64, 10, python=sys.executable)


def test_the_command_line_wants_train_and_val_folders(tmp_path: Path):
    result = subprocess.run([sys.executable, str(PEER), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.strip() == f"fastai_peer: {tmp_path} has no train/ and val/ folders"
