"""`vistrain export` (ONNX, TorchScript) and `vistrain serve` (HTTP API, micro-batching, the page in a browser)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from conftest import SHARED_DATA, invoke, run_onnx_example, shape_image
from vistrain.features.inputs import prepare_image
from vistrain.model.predictor import Predictor
from vistrain.deploy.limits import Limits
from vistrain.deploy.serve import MicroBatcher, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Real-ish photos of several sizes and formats (skimage's cat and coffee cup, a few real cats and dogs where
    the shared data is present), generated shapes, and a portrait image."""
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage.data.chelsea()).save(folder / "chelsea.jpg", quality=90)
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.png")
    shape_image("circle", 7, size=150).save(folder / "circle.png")
    shape_image("square", 8).resize((90, 200)).save(folder / "tall-square.webp")
    real = sorted((SHARED_DATA / "cats-vs-dogs" / "val").glob("*/*.jpg"))[::125]
    return [folder / name for name in ("chelsea.jpg", "coffee.png", "circle.png", "tall-square.webp")] + real


@pytest.fixture(scope="module")
def expected(run: Path, photos: list[Path], tmp_path_factory) -> np.ndarray:
    """`Predictor.predict`'s outputs for the photos (its own feature cache, so nothing is shared with export)."""
    result = Predictor.from_run(run).predict(photos, tmp_path_factory.mktemp("cache"), show_progress=False)
    assert result.paths == photos
    return result.outputs


@pytest.fixture(scope="module")
def onnx_file(run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    result = invoke("export", run, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_onnx_export_matches_predictor_on_every_batch_size(onnx_file: Path, run: Path, photos, expected):
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    preprocess = Predictor.from_run(run).preprocess
    images = np.stack([prepare_image(path, preprocess) for path in photos])
    assert images.dtype == np.uint8 and images.shape == (len(photos), 224, 224, 3)
    np.testing.assert_allclose(session.run(None, {"images": images})[0], expected, atol=1e-4)
    np.testing.assert_allclose(session.run(None, {"images": images[:1]})[0], expected[:1], atol=1e-4)
    assert [i.shape[0] for i in session.get_inputs()] == ["batch"]


@pytest.mark.slow
def test_onnx_metadata_describes_the_run(onnx_file: Path, run: Path):
    import onnx

    meta = {p.key: p.value for p in onnx.load(onnx_file).metadata_props}
    config = json.loads((run / "config.json").read_text())
    assert json.loads(meta["classes"]) == ["circle", "square"]
    assert meta["task"] == "binary"
    assert json.loads(meta["preprocess"]) == config["preprocess"]
    assert json.loads(meta["backbone"])["name"] == "efficientnet_lite0"
    assert meta["vistrain_version"]
    assert "thresholds" not in meta  # multi-label models only


@pytest.mark.slow
def test_torchscript_export_matches_predictor(run: Path, photos, expected, tmp_path: Path):
    out = tmp_path / "model.pt"
    assert invoke("export", run, "--format", "torchscript", "--out", out).exit_code == 0
    extra = {"classes": "", "task": "", "preprocess": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        model = torch.jit.load(out, _extra_files=extra)
    assert json.loads(extra["classes"]) == ["circle", "square"] and extra["task"] == b"binary"
    preprocess = Predictor.from_run(run).preprocess
    images = torch.from_numpy(np.stack([prepare_image(path, preprocess) for path in photos]))
    with torch.no_grad():
        np.testing.assert_allclose(model(images).numpy(), expected, atol=1e-4)
        np.testing.assert_allclose(model(images[2:3]).numpy(), expected[2:3], atol=1e-4)


@pytest.mark.slow
def test_export_defaults_to_the_run_directory_and_refuses_a_missing_run(run: Path, tmp_path: Path):
    result = invoke("export", tmp_path, "--format", "onnx")
    assert result.exit_code != 0 and "not a vistrain run directory" in result.output
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert invoke("export", copy).exit_code == 0
    assert (copy / "model.onnx").stat().st_size > 1_000_000


@pytest.mark.slow
def test_onnx_example_runs_without_vistrain(onnx_file: Path, photos, expected):
    """examples/onnx_predict.py with onnxruntime, Pillow and numpy only: importing vistrain there would fail."""
    lines = run_onnx_example(onnx_file, photos)
    assert len(lines) == len(photos)
    for line, path, row in zip(lines, photos, expected):
        file, name, probability = line.rsplit(" ", 2)
        assert file == str(path)
        assert name == ["circle", "square"][row.argmax()]
        # Pillow's bicubic resize differs from torchvision's by at most a grey level or two on a few pixels
        assert float(probability) == pytest.approx(row.max(), abs=2e-3)


@pytest.mark.slow
def test_int8_export_is_small_reports_its_agreement_and_runs_with_onnxruntime_alone(run: Path, shapes_split: Path,
                                                                                   tmp_path: Path):
    """`export --int8`: Lite0 in at most 4 MB (plus a byte per weight of the head), metadata saying int8 and the check against the fp32 export
    (both figures printed); run by examples/onnx_predict.py without vistrain, its top class is `predict`'s on at
    least the share it states."""
    import onnx

    out = tmp_path / "model-int8.onnx"
    result = invoke("export", run, "--int8", "--out", out)
    assert result.exit_code == 0, result.output
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    check = json.loads(meta["int8_check"])
    assert meta["precision"] == "int8" and json.loads(meta["classes"]) == ["circle", "square"]
    head_weights = sum(p.numel() for p in Predictor.from_run(run).head.parameters())  # one byte each in int8
    assert out.stat().st_size <= 4_000_000 + head_weights and check["fp32_bytes"] > 3 * out.stat().st_size
    assert check["images"] == 16 and check["calibration_images"] == 32  # the run's val images; its training images
    assert f"{out.stat().st_size / 1e6:.2f} MB" in result.stderr and f"{check['top1_agreement']:.1%}" in result.stderr
    photos = sorted((shapes_split / "val").glob("*/*.png"))
    lines = run_onnx_example(out, photos)
    predicted = Predictor.from_run(run).predict(photos, tmp_path / "cache", show_progress=False).outputs
    same = [line.rsplit(" ", 2)[1] == ["circle", "square"][row.argmax()]
            for line, row in zip(lines, predicted, strict=True)]
    assert check["top1_agreement"] >= 0.99 and np.mean(same) >= check["top1_agreement"]
    assert invoke("export", run, "--int8", "--format", "torchscript").exit_code != 0



@pytest.mark.slow
def test_int8_export_whose_check_images_cannot_be_read_is_one_clear_line(run: Path, tmp_path: Path):
    """A run whose validation images are not where predictions.csv says (moved, or relative to another folder):
    `export --int8` stops before quantising, naming the run and why, with no traceback."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    listed = (moved / "predictions.csv").read_text().splitlines()
    (moved / "predictions.csv").write_text("\n".join([listed[0]] + ["gone/" + line for line in listed[1:]]) + "\n")
    result = invoke("export", moved, "--int8", "--out", tmp_path / "model-int8.onnx")
    assert result.exit_code == 1 and "cannot be checked" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "model-int8.onnx").exists()


# ---- serving ----


def multipart(files: list[tuple[str, bytes]], field: str = "files") -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, files: list[tuple[str, bytes]], field: str = "files") -> tuple[int, dict]:
    body, content_type = multipart(files, field)
    request = urllib.request.Request(url + "/predict", body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Server:
    """A real uvicorn server in a thread, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


MAX_BYTES = 2_000_000
THRESHOLD = 0.9


@pytest.fixture(scope="module")
def server(run: Path):
    with Server(create_app(run, threshold=THRESHOLD, limits=Limits(max_bytes=MAX_BYTES))) as started:
        yield started


@pytest.mark.slow
def test_health_names_the_model(server: Server):
    with urllib.request.urlopen(server.url + "/health") as response:
        health = json.loads(response.read())
    assert health["status"] == "ok" and health["task"] == "binary"
    assert health["classes"] == ["circle", "square"] and health["backbone"]["name"] == "efficientnet_lite0"


@pytest.mark.slow
def test_predict_gives_each_file_its_class_and_the_threshold_verdict(server: Server, run: Path, photos, expected):
    files = [("a circle.png", png(shape_image("circle", 900))), ("square.png", png(shape_image("square", 901)))]
    files += [(path.name, path.read_bytes()) for path in photos[:4]]
    status, answer = post(server.url, files)
    assert status == 200
    results = answer["results"]
    assert [r["filename"] for r in results] == [name for name, _ in files]
    assert [r["class"] for r in results[:2]] == ["circle", "square"]
    for row, outputs in zip(results[2:], expected[:4]):  # the same numbers as `vistrain predict`
        assert row["probability"] == pytest.approx(outputs.max(), abs=1e-5)
    for row in results:
        assert row["uncertain"] == (row["probability"] < THRESHOLD)
        assert row["top"][0] == [row["class"], row["probability"]] and len(row["top"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name, data, status, reason, blamed", [
    ("notes.txt", b"hello, not an image", 415, "not an image", "notes.txt"),
    ("broken.jpg", b"\xff\xd8\xff\xe0" + bytes(200), 415, "", "broken.jpg"),
    ("empty.png", b"", 400, "empty", "empty.png"),
    ("huge.png", bytes(MAX_BYTES + 1), 413, "limit", ""),  # the request as a whole is refused
])
def test_bad_uploads_are_refused_and_the_next_request_is_served(server: Server, name, data, status, reason, blamed):
    code, answer = post(server.url, [("fine.png", png(shape_image("circle", 3))), (name, data)])
    assert code == status and reason in answer["error"] and answer["filename"] == blamed
    code, answer = post(server.url, [("fine.png", png(shape_image("circle", 3)))])
    assert code == 200 and answer["results"][0]["class"] == "circle"


@pytest.mark.slow
def test_a_request_without_files_is_refused(server: Server):
    code, answer = post(server.url, [("x.png", png(shape_image("circle", 4)))], field="image")
    assert code == 400 and "files" in answer["error"]
    request = urllib.request.Request(server.url + "/predict", b"{}", {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request)
    assert error.value.code == 400


@pytest.mark.slow
def test_concurrent_requests_share_forward_passes(server: Server):
    images = [png(shape_image(kind, 700 + i)) for i, kind in enumerate(["circle", "square"] * 6)]
    batcher = server.app.state.batcher
    before = len(batcher.batches)
    answers: list = [None] * len(images)

    def client(i: int) -> None:
        answers[i] = post(server.url, [(f"{i}.png", images[i])])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a[1]["results"][0]["class"] for a in answers] == ["circle", "square"] * 6
    batches = batcher.batches[before:]
    assert sum(batches) == len(images) and len(batches) < len(images)


def test_micro_batcher_gathers_splits_and_survives_failures():
    seen: list[int] = []

    def infer(batches: list[torch.Tensor]) -> np.ndarray:
        (batch,) = batches
        if (batch < 0).any():
            raise RuntimeError("bad batch")
        seen.append(len(batch))
        return batch.view(len(batch), -1)[:, :1].numpy() * 2

    async def scenario() -> None:
        batcher = MicroBatcher(infer, max_batch=4, max_wait=0.05)
        worker = asyncio.create_task(batcher.run())
        results = await asyncio.gather(*(batcher.predict([(torch.full((1,), float(i)),)]) for i in range(6)))
        assert [float(r[0, 0]) for r in results] == [0, 2, 4, 6, 8, 10]
        assert seen == [4, 2]
        with pytest.raises(RuntimeError, match="bad batch"):
            await batcher.predict([(torch.full((1,), -1.0),)])
        assert (await batcher.predict([(torch.ones(1),), (torch.zeros(1),)]))[:, 0].tolist() == [2, 0]
        worker.cancel()

    asyncio.run(scenario())


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`apt-get install chromium`)")
def test_page_shows_the_prediction_of_an_uploaded_image(server: Server, tmp_path: Path):
    playwright = pytest.importorskip("playwright.sync_api")
    circle, notes = tmp_path / "circle.png", tmp_path / "notes.txt"
    shape_image("circle", 321).save(circle)
    notes.write_text("not an image")
    problems: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        page = browser.new_page()
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(server.url + "/")
        page.set_input_files("#file", str(circle))
        page.wait_for_selector("#result[data-state=done]", timeout=60_000)
        shown, label = page.text_content("#result"), page.get_attribute("#result", "data-class")
        ranking = page.locator("#ranking tr").all_inner_texts()
        preview = page.evaluate("document.getElementById('preview').naturalWidth")
        page.set_input_files("#file", str(notes))
        page.wait_for_selector("#result[data-state=error]", timeout=60_000)
        error = page.text_content("#result")
        browser.close()
    assert problems == []
    assert label == "circle" and shown.startswith("circle (0.")
    assert len(ranking) == 2 and ranking[0].startswith("circle")
    assert preview == 96
    assert "not an image" in error
