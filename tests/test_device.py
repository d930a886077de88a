"""--device: resolving a name (CUDA faked where a GPU is needed), mixed precision only on CUDA, batches halved on
out-of-memory (faked), the process group's backend, and `--device cpu` through every torch path while CUDA is
faked available (so nothing may reach for the GPU)."""

from __future__ import annotations

import csv
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from conftest import invoke
from vistrain.backbones import get_backbone
from vistrain.core import device as device_module
from vistrain.core.device import HalvingBatches, autocast, autocast_dtype, grad_scaler, resolve_device
from vistrain.features import extract
from vistrain.features.extract import extract_features
from vistrain.training import distributed, engine
from vistrain.training import train as train_module
from vistrain.training.engine import train_one_epoch

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)
LITE0 = get_backbone("efficientnet_lite0")
TUNE_ARGS = ["--epochs", "3", "--fine-tune", "1", "--fine-tune-epochs", "2", "--batch-size", "16", "--seed", "1"]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda says two CUDA GPUs with bfloat16 are here; actually using one still fails."""
    pretend_cuda(monkeypatch, count=2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def pretend_cuda(monkeypatch, count: int) -> None:
    for name, value in (("is_available", lambda: True), ("device_count", lambda: count),
                        ("get_device_name", lambda device=None: "Fake GPU"),
                        ("is_bf16_supported", lambda *args, **kwargs: True)):
        monkeypatch.setattr(torch.cuda, name, value)
    # torch's own optimisers ask for the current accelerator's stream, which needs a real GPU: theirs stays the CPU
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: None)


class OutOfMemoryAbove(nn.Module):
    """`inner`, but out of memory (as CUDA says it) on batches of more than `limit` images."""

    def __init__(self, inner: nn.Module, limit: int):
        super().__init__()
        self.inner, self.limit = inner, limit

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (fake): a batch of {len(inputs)}")
        return self.inner(inputs)


class Reached(Exception):
    """Raised by a spy: the work reached it, with this device."""


# --- resolving a device name -----------------------------------------------------------------------------------

def test_auto_is_the_cpu_where_there_is_no_gpu(no_cuda):
    assert resolve_device("auto") == CPU and resolve_device("cpu") == CPU


def test_cuda_without_a_gpu_is_refused_in_one_line(no_cuda):
    with pytest.raises(ValueError) as error:
        resolve_device("cuda")
    assert "no CUDA GPU" in str(error.value) and "device cpu" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_train_with_cuda_and_no_gpu_stops_before_making_the_run(no_cuda, shapes_split: Path, tmp_path: Path):
    result = invoke("train", shapes_split, "--out", tmp_path / "run", "--device", "cuda")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --device cuda: no CUDA GPU") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_auto_and_cuda_take_the_gpu_where_there_is_one(fake_cuda, monkeypatch):
    assert resolve_device("auto") == GPU and resolve_device("cuda") == GPU and resolve_device("cpu") == CPU
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process on this machine: its own GPU
    assert resolve_device("auto") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match="LOCAL_RANK=2 has no GPU of its own: this machine has 2"):
        resolve_device("cuda")


def test_mixed_precision_on_cuda_only(fake_cuda, monkeypatch):
    assert autocast_dtype(CPU) is None and not grad_scaler(CPU).is_enabled()
    with autocast(CPU):
        assert not torch.is_autocast_enabled("cpu") and (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert autocast_dtype(GPU) == torch.bfloat16 and not grad_scaler(GPU).is_enabled()  # bf16 needs no scaling
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert autocast_dtype(GPU) == torch.float16 and grad_scaler(GPU).is_enabled()


def test_the_training_step_runs_under_the_devices_autocast(monkeypatch):
    entered = []
    real = engine.autocast
    monkeypatch.setattr(engine, "autocast", lambda device: entered.append(device) or real(device))
    data = torch.utils.data.TensorDataset(torch.randn(6, 4), torch.tensor([0, 1, 2] * 2))
    model = nn.Linear(4, 3)
    train_one_epoch(model, torch.utils.data.DataLoader(data, batch_size=3), "multiclass",
                    torch.optim.SGD(model.parameters(), lr=0.1), device=CPU)
    assert entered == [CPU, CPU]


# --- halving a batch on out-of-memory --------------------------------------------------------------------------

def test_halving_batches_halves_until_the_work_fits_and_remembers():
    said, calls = [], []

    def work(pieces: list[slice]) -> list[int]:
        calls.append([p.stop - p.start for p in pieces])
        if any(p.stop - p.start > 5 for p in pieces):
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return [i for p in pieces for i in range(p.start, p.stop)]

    batches = HalvingBatches(said.append)
    assert batches.run(16, work) == list(range(16))
    assert said == [8, 4] and calls == [[16], [8, 8], [4, 4, 4, 4]]
    assert batches.run(10, work) == list(range(10)) and calls[-1] == [4, 4, 2] and said == [8, 4]  # kept
    assert HalvingBatches().run(3, work) == [0, 1, 2]  # small batches never halve


def test_out_of_memory_with_one_image_is_raised():
    def work(pieces: list[slice]):
        raise torch.OutOfMemoryError("CUDA out of memory (fake)")

    said = []
    with pytest.raises(torch.OutOfMemoryError):
        HalvingBatches(said.append).run(4, work)
    assert said == [2, 1]


def test_a_batch_out_of_memory_trains_in_pieces_to_the_same_weights():
    """Gradients summed over the pieces, each weighted by its share: the step a whole batch would have taken."""
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 5), torch.randint(0, 3, (16,)))
    reference = nn.Linear(5, 3)
    pieced = OutOfMemoryAbove(nn.Linear(5, 3), limit=3)
    pieced.inner.load_state_dict(reference.state_dict())
    results, said = [], []
    for model, on_halve in ((reference, None), (pieced, said.append)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # not Adam: it would hide a wrongly scaled gradient
        loader = torch.utils.data.DataLoader(data, batch_size=8)
        results.append(train_one_epoch(model, loader, "multiclass", optimizer, device=CPU,
                                       batches=HalvingBatches(on_halve) if on_halve else None))
    assert said == [4, 2]
    assert results[1] == pytest.approx(results[0], abs=1e-6)  # the epoch's loss and accuracy
    for name, value in reference.state_dict().items():
        assert torch.allclose(pieced.inner.state_dict()[name], value, atol=1e-6), name


def fake_oom_extractor(monkeypatch, limit: int) -> None:
    real = extract.pixel_feature_extractor
    monkeypatch.setattr(extract, "pixel_feature_extractor",
                        lambda backbone, preprocess: OutOfMemoryAbove(real(backbone, preprocess), limit))


def test_the_torch_engine_halves_its_batches_to_the_same_features(shapes_split: Path, tmp_path: Path, monkeypatch):
    paths = sorted((shapes_split / "val").rglob("*.png"))
    expected = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "whole", batch_size=8, show_progress=False,
                                engine="torch", device=CPU)
    fake_oom_extractor(monkeypatch, limit=2)
    said = []
    pieced = extract_features(paths, LITE0, LITE0.preprocess, tmp_path / "pieces", batch_size=8, show_progress=False,
                              engine="torch", device=CPU, on_halve=said.append)
    assert said == [4, 2] and pieced.computed == len(paths)
    assert np.abs(pieced.vectors - expected.vectors).max() < 1e-5


# --- the process group ----------------------------------------------------------------------------------------

def test_nccl_for_cuda_tensors_on_a_gpu_gloo_otherwise(monkeypatch):
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    assert distributed.process_group_backend(GPU) == "cpu:gloo,cuda:nccl"
    assert distributed.process_group_backend(CPU) == "gloo"
    monkeypatch.setattr(dist, "is_nccl_available", lambda: False)
    assert distributed.process_group_backend(GPU) == "gloo"


@pytest.mark.parametrize("device, backend", [(GPU, "cpu:gloo,cuda:nccl"), (CPU, "gloo")])
def test_setup_joins_with_the_backend_of_the_device(device, backend, monkeypatch):
    joined, chosen = [], []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: joined.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(distributed.atexit, "register", lambda function: None)
    assert distributed.setup(device) == distributed.Context(1, 2)
    assert joined == [backend] and chosen == ([device] if device.type == "cuda" else [])


# --- the option reaches every torch path ----------------------------------------------------------------------

def spy(monkeypatch, module, name: str, seen: list, stop_on_gpu: bool = False) -> None:
    """Record the `device` each call of module.name gets; with `stop_on_gpu`, raise Reached(device) on a GPU."""
    real = getattr(module, name)
    signature = inspect.signature(real)

    def recorded(*args, **kwargs):
        device = signature.bind(*args, **kwargs).arguments.get("device")
        seen.append(device)
        if stop_on_gpu and device is not None and device.type == "cuda":
            raise Reached(device)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recorded)


@pytest.mark.slow
def test_auto_sends_training_to_the_gpu_and_its_process_group(fake_cuda, shapes_split: Path, tmp_path: Path,
                                                              monkeypatch):
    joined, features = [], []
    spy(monkeypatch, distributed, "setup", joined)
    spy(monkeypatch, extract, "feature_function", features, stop_on_gpu=True)
    monkeypatch.delenv("VISTRAIN_ENGINE", raising=False)
    engines = []
    real_engine = extract.resolve_engine
    monkeypatch.setattr(extract, "resolve_engine", lambda *args: engines.append(real_engine(*args)) or engines[-1])
    with pytest.raises(Reached):
        invoke("train", shapes_split, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache")
    assert joined == [GPU] and features == [GPU] and engines[0] == "torch"  # torch computes features on a GPU


@pytest.mark.slow
def test_auto_sends_fine_tuning_to_the_gpu(fake_cuda, shapes_split: Path, tmp_path: Path, monkeypatch):
    tuned = []
    spy(monkeypatch, train_module, "fine_tune", tuned, stop_on_gpu=True)
    monkeypatch.setattr(extract, "resolve_engine", lambda engine, device=None: "onnx")  # features on the CPU here
    with pytest.raises(Reached):
        invoke("train", shapes_split, "--out", tmp_path / "run", *TUNE_ARGS)
    assert tuned == [GPU]


@pytest.fixture(scope="module")
def cpu_tuned_run(shapes_split: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A fine-tuned run trained with --device cpu and the torch engine while CUDA is faked available; (run, its
    fresh feature cache)."""
    patcher = pytest.MonkeyPatch()
    pretend_cuda(patcher, count=1)
    patcher.setenv("VISTRAIN_ENGINE", "torch")
    seen = {"fine_tune": [], "feature_function": []}
    spy(patcher, train_module, "fine_tune", seen["fine_tune"])
    spy(patcher, extract, "feature_function", seen["feature_function"])
    root = tmp_path_factory.mktemp("cpu-tuned")
    try:
        result = invoke("train", shapes_split, "--out", root / "run", "--cache-dir", root / "cache", "--device", "cpu",
                        *TUNE_ARGS)
    finally:
        patcher.undo()
    assert result.exit_code == 0, result.output
    assert seen == {"fine_tune": [CPU], "feature_function": [CPU]}
    return root / "run", root / "cache"


@pytest.mark.slow
def test_device_cpu_trains_on_the_cpu_where_cuda_is_available(cpu_tuned_run):
    run, _ = cpu_tuned_run
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["training"]["device"] == "cpu" and metrics["timing"]["device"] == "cpu"
    assert config["fine_tune"]["sha256"]  # fine-tuning beat the frozen head: predict uses the tuned backbone


@pytest.mark.slow
def test_device_cpu_predicts_evaluates_and_serves_a_fine_tuned_run(cpu_tuned_run, fake_cuda, shapes_split: Path,
                                                                    tmp_path: Path, monkeypatch):
    from fastapi.testclient import TestClient
    from vistrain.deploy import serve

    run, _ = cpu_tuned_run
    monkeypatch.setenv("VISTRAIN_ENGINE", "torch")
    seen = []
    spy(monkeypatch, extract, "feature_function", seen)
    val = shapes_split / "val"
    predicted = invoke("predict", run, val, "--device", "cpu", "--format", "json", "--cache-dir", tmp_path / "p")
    assert predicted.exit_code == 0, predicted.output
    evaluated = invoke("evaluate", run, shapes_split, "--device", "cpu", "--format", "json",
                       "--cache-dir", tmp_path / "e")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == json.loads((run / "metrics.json").read_text())["accuracy"]
    served = []
    monkeypatch.setattr("uvicorn.run", lambda app, host, port: served.append(app))
    spy(monkeypatch, serve, "feature_function", seen)
    assert invoke("serve", run, "--device", "cpu").exit_code == 0
    with TestClient(served[0]) as client:
        image = next(val.rglob("*.png"))
        response = client.post("/predict", files={"files": (image.name, image.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    assert seen == [CPU, CPU, CPU]  # predict, evaluate, serve


@pytest.mark.slow
def test_predict_says_when_it_halved_its_batches(cpu_tuned_run, shapes_split: Path, tmp_path: Path, monkeypatch):
    run, _ = cpu_tuned_run
    monkeypatch.setenv("VISTRAIN_ENGINE", "torch")
    val = shapes_split / "val"
    whole = invoke("predict", run, val, "--device", "cpu", "--format", "csv", "--cache-dir", tmp_path / "whole")
    fake_oom_extractor(monkeypatch, limit=4)
    pieced = invoke("predict", run, val, "--device", "cpu", "--format", "csv", "--cache-dir", tmp_path / "pieces")
    assert pieced.exit_code == 0, pieced.output
    assert "out of memory: feature batches now run in pieces of 8" in pieced.stderr
    assert "out of memory: feature batches now run in pieces of 4" in pieced.stderr
    assert "out of memory" not in whole.stderr
    rows = [list(csv.reader(result.stdout.splitlines())) for result in (whole, pieced)]
    assert len(rows[0]) == 17 and len(rows[1]) == 17  # a header and the 16 images
    for a, b in zip(*rows):
        assert a[:2] == b[:2] and (a[0] == "file" or float(a[2]) == pytest.approx(float(b[2]), abs=1e-4))


@pytest.mark.slow
def test_the_library_stays_quiet_when_it_halves(cpu_tuned_run, shapes_split: Path, tmp_path: Path, monkeypatch,
                                                capsys):
    from vistrain import api

    monkeypatch.setenv("VISTRAIN_ENGINE", "torch")
    fake_oom_extractor(monkeypatch, limit=4)
    said = []
    result = api.predict(cpu_tuned_run[0], [shapes_split / "val"], cache_dir=tmp_path / "cache", device="cpu",
                         on_halve=said.append)
    assert len(result) == 16 and said == [8, 4]
    assert "out of memory" not in capsys.readouterr().err
    assert device_module.halved_message("feature batches", 4) == "out of memory: feature batches now run in pieces of 4"


# --- benchmarks/gpu_check.py ----------------------------------------------------------------------------------

GPU_CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_gpu_check_stops_at_once_without_a_gpu(shapes_split: Path):
    result = subprocess.run([sys.executable, str(GPU_CHECK), "--data", str(shapes_split)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("gpu_check: --device cuda: no CUDA GPU") and result.stderr.count("\n") == 1


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu(shapes_split: Path):
    result = subprocess.run([sys.executable, str(GPU_CHECK), "--device", "cpu", "--data", str(shapes_split),
                             "--per-class", "6", "--fine-tune-epochs", "1", "--budget", "20s"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| step")}
    assert [step.split(" (")[0] for step in rows] == ["train", "predict", "export ONNX",
                                                      "exported model on ONNX Runtime"]
    train, predict, _, exported = rows.values()
    assert train[0] == "cpu" and int(train[2]) == 24 and predict[2] == exported[2] == "12"
    assert 0.5 <= float(train[4]) <= 1
    for step in (predict, exported):  # agree with training's validation outputs, but for a close call
        assert abs(float(step[4]) - float(train[4])) <= 1 / 12
    assert "device cpu" in result.stdout and train[5].strip(" |") == "-"  # no GPU memory on the CPU
    assert "--budget 20s --device cpu;" in result.stdout or "--fine-tune-epochs 1 --device cpu;" in result.stdout
    assert "predict: --device cpu;" in result.stdout
