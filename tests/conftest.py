"""Shared fixtures: images and data folders made by the tests themselves (no downloads, no shared data)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import inspect
import os
import random
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from vistrain.cli import main

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
ONNX_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "onnx_predict.py"


PROBE = Path(__file__).parent / "probe"  # sitecustomize.py: records each training job (see its docstring)
TRAINING_FIXTURES: set[str] = set()  # fixtures whose set-up trained: a test that uses one trains too


def pytest_configure(config) -> None:
    """Record every training job of the session, in this process and in those the tests start."""
    handle, log = tempfile.mkstemp(prefix="vistrain-trainings-")
    os.close(handle)
    os.environ["VISTRAIN_TEST_TRAININGS"] = log
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")]))
    spec = importlib.util.spec_from_file_location("vistrain_training_probe", PROBE / "sitecustomize.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    probe.install()
    config.pluginmanager.register(TrainingFixtures(), "vistrain-training-fixtures")


def pytest_unconfigure(config) -> None:
    Path(os.environ.pop("VISTRAIN_TEST_TRAININGS")).unlink(missing_ok=True)


def trainings() -> int:
    """How many training jobs the session has run so far (a line each in the probe's log)."""
    return Path(os.environ["VISTRAIN_TEST_TRAININGS"]).stat().st_size


class TrainingFixtures:
    """Notes the fixtures whose set-up trained (a plugin, since a conftest's hooks do not see session fixtures)."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        before = trainings()
        yield
        if trainings() > before:
            TRAINING_FIXTURES.add(fixturedef.argname)


@pytest.fixture(autouse=True)
def slow_if_it_trains(request):
    """A test that trains a model, itself or through a fixture (whichever test set the fixture up), is marked slow:
    `python -m pytest -m "not slow"` leaves out every training job."""
    before = trainings()
    yield
    through = sorted(TRAINING_FIXTURES & set(request.fixturenames))
    if (trainings() > before or through) and request.node.get_closest_marker("slow") is None:
        pytest.fail(f"{request.node.nodeid} trains a model{' through ' + ', '.join(through) if through else ''}: "
                    "mark it @pytest.mark.slow", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory) -> Path:
    """One feature cache for the whole test session, never the user's own."""
    path = tmp_path_factory.mktemp("feature-cache")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("VISTRAIN_CACHE", str(path))
    # `--precision auto` would pick int8 on a CPU with int8 dot products: tests ask for int8 where they mean it
    patcher.setenv("VISTRAIN_PRECISION", "fp32")
    yield path
    patcher.undo()


def shape_image(kind: str, seed: int, size: int = 96) -> Image.Image:
    """A random-coloured circle or square on a noisy background: easy for an ImageNet backbone to tell apart."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed).integers(0, 60, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(noise + np.uint8(rng.randrange(100, 180)))
    draw = ImageDraw.Draw(image)
    r = rng.randrange(size // 4, size // 3)
    cx, cy = rng.randrange(r, size - r), rng.randrange(r, size - r)
    colour = tuple(rng.randrange(0, 256) for _ in range(3))
    box = (cx - r, cy - r, cx + r, cy + r)
    (draw.ellipse if kind == "circle" else draw.rectangle)(box, fill=colour)
    return image


def without_distribution(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make `importlib.metadata` answer that the distribution `name` is not installed (a weights package)."""
    installed = importlib.metadata.distribution

    def distribution(wanted: str):
        if wanted == name:
            raise importlib.metadata.PackageNotFoundError(wanted)
        return installed(wanted)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


def run_onnx_example(model: Path, images: list[Path]) -> list[str]:
    """examples/onnx_predict.py's lines (`file class probability`) for `model` and `images`, run where importing
    vistrain fails: onnxruntime, Pillow and numpy only."""
    block_vistrain = ("import runpy, sys; sys.modules['vistrain'] = None; sys.argv = sys.argv[1:]; "
                      "runpy.run_path(sys.argv[0], run_name='__main__')")
    return subprocess.run([sys.executable, "-I", "-c", block_vistrain, ONNX_EXAMPLE, model, *images], check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()


def write_class_folders(root: Path, per_class: int, classes=("circle", "square"), offset: int = 0,
                        size: int = 96) -> Path:
    for c, kind in enumerate(classes):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_image(kind if kind in ("circle", "square") else ("circle", "square")[c % 2],
                        seed=offset + 1000 * c + i, size=size).save(folder / f"{kind}_{i}.png")
    return root


@pytest.fixture(scope="session")
def shapes_split(tmp_path_factory) -> Path:
    """shapes/train/{circle,square} (16 each) and shapes/val/{circle,square} (8 each)."""
    root = tmp_path_factory.mktemp("shapes")
    write_class_folders(root / "train", 16)
    write_class_folders(root / "val", 8, offset=500)
    return root


TRAIN_ARGS = ["--epochs", "15", "--seed", "1"]


def invoke(*args):
    """Run the `vistrain` command line in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def run(shapes_split: Path, tmp_path_factory) -> Path:
    """A run directory trained on the shapes with the command line."""
    out = tmp_path_factory.mktemp("runs") / "shapes"
    result = invoke("train", shapes_split, "--out", out, *TRAIN_ARGS)
    assert result.exit_code == 0, result.output
    return out


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry below `root`, links not followed: a file's mode and SHA-256 (read a chunk at a time), a link's
    target, anything else's mode (a FIFO or a device is never opened; nor a file we may not read)."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                state[str(path)] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode) and os.access(path, os.R_OK):
                digest = hashlib.sha256()
                with open(path, "rb") as file:
                    for block in iter(lambda: file.read(1 << 20), b""):
                        digest.update(block)
                state[str(path)] = ("file", info.st_mode, digest.hexdigest())
            else:
                state[str(path)] = ("other", info.st_mode)
    return state


@pytest.fixture
def sources_unchanged(monkeypatch):
    """Every `split` in the test (command line or library) must leave its sources as they were, byte for byte, links
    and their targets included: the source folder, or a CSV's image root (by default the CSV's folder)."""
    from vistrain.data import organise

    split_dataset = organise.split_dataset

    def checked(*args, **kwargs):
        arguments = inspect.signature(split_dataset).bind(*args, **kwargs).arguments
        source = Path(arguments["source"])
        root = (arguments.get("image_root") or source.parent) if source.is_file() else source
        before = tree_state(root)
        try:
            return split_dataset(*args, **kwargs)
        finally:
            assert tree_state(root) == before, f"split changed its sources in {root}"

    monkeypatch.setattr(organise, "split_dataset", checked)


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], limit: float = 300) -> None:
    """SIGKILL `process` as soon as `ready()` holds (or it has exited, or `limit` seconds have passed), and reap it."""
    deadline = time.monotonic() + limit
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait()
