"""`vistrain serve`: a trained run behind HTTP (FastAPI), with a small web page to try it.

The model is loaded once, when the app is made. Each uploaded image is decoded with `load_rgb` and resized and
cropped with the run's `eval_transform` in a worker thread; a micro-batcher gathers the images of concurrent
requests (for up to `max_wait` seconds, or `max_batch` images) and runs one forward pass of backbone and head, in a
thread, so the event loop keeps serving. The backbone runs as `vistrain predict` runs it (`feature_function`: ONNX
Runtime by default, in the run's precision), without the feature cache.
"""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from vistrain.core.html import render
from vistrain.data.images import UnreadableImage, load_rgb
from vistrain.features.extract import feature_function
from vistrain.features.transforms import eval_transform
from vistrain.model.predictor import Predictor

MAX_BYTES = 20_000_000  # per uploaded file
MAX_FILES = 64  # per request
FIELD = "files"


class MicroBatcher:
    """Gathers single images from concurrent requests into batches for one `infer` call each."""

    def __init__(self, infer: Callable[[torch.Tensor], np.ndarray], max_batch: int = 16, max_wait: float = 0.005):
        self.infer = infer
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.batches: list[int] = []  # size of every batch run so far
        self._queue: asyncio.Queue[tuple[torch.Tensor, asyncio.Future]] = asyncio.Queue()

    async def predict(self, images: list[torch.Tensor]) -> np.ndarray:
        """The outputs for `images` (uint8 CHW tensors), computed in batches shared with other requests."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        for image, future in zip(images, futures):
            self._queue.put_nowait((image, future))
        return np.stack(await asyncio.gather(*futures))

    async def run(self) -> None:
        """Serve batches until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(items) < self.max_batch:
                try:
                    items.append(await asyncio.wait_for(self._queue.get(), max(0.0, deadline - loop.time())))
                except TimeoutError:
                    break
            self.batches.append(len(items))
            try:
                outputs = await asyncio.to_thread(self.infer, torch.stack([image for image, _ in items]))
            except Exception as error:  # a failed batch fails its requests, never the server
                for _, future in items:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), row in zip(items, outputs):
                if not future.done():
                    future.set_result(row)


@dataclass
class BadUpload(Exception):
    """An upload refused with an HTTP status and the reason."""

    status: int
    filename: str
    reason: str


def decode(data: bytes, filename: str, transform: Callable) -> torch.Tensor:
    """Upload bytes -> the model's input tensor, or BadUpload (415) when they are not a readable image."""
    with tempfile.NamedTemporaryFile(prefix="vistrain-upload-") as file:
        file.write(data)
        file.flush()
        try:
            return transform(load_rgb(file.name))
        except UnreadableImage as error:
            raise BadUpload(415, filename, str(error)) from None


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The file's bytes; BadUpload for an empty file (400) or one over `max_bytes` (413)."""
    data = await upload.read(max_bytes + 1)
    name = upload.filename or ""
    if not data:
        raise BadUpload(400, name, "empty file (0 bytes)")
    if len(data) > max_bytes:
        raise BadUpload(413, name, f"larger than the limit of {max_bytes:,} bytes")
    return data


def create_app(run: str | Path, threshold: float | None = None, max_bytes: int = MAX_BYTES, max_batch: int = 16,
               max_wait: float = 0.005) -> FastAPI:
    """The web app for the model in `run`: POST /predict, GET /health and GET / (the page)."""
    predictor = Predictor.from_run(run)
    predictor.check_threshold(threshold)
    transform = eval_transform(predictor.preprocess, output="uint8")
    features = feature_function(predictor.backbone, predictor.preprocess, precision=predictor.precision)

    def infer(batch: torch.Tensor) -> np.ndarray:
        return predictor.outputs(features(batch))

    batcher = MicroBatcher(infer, max_batch, max_wait)
    info = {"task": predictor.task, "classes": predictor.classes,
            **({"class_names": predictor.config["class_names"]} if "class_names" in predictor.config else {}),
            "backbone": predictor.config["backbone"], "precision": predictor.precision.name,
            "input_size": predictor.preprocess.input_size, "threshold": threshold, "max_bytes": max_bytes}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title="vistrain", lifespan=lifespan)
    app.state.batcher = batcher
    page = render("serve.html.j2", info=info, labels=predictor.labels)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", **info}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        try:
            if int(request.headers.get("content-length") or 0) > MAX_FILES * (max_bytes + 4096):
                raise BadUpload(413, "", f"request larger than {MAX_FILES} files of {max_bytes:,} bytes")
            async with request.form(max_files=MAX_FILES) as form:
                uploads = [item for item in form.getlist(FIELD) if isinstance(item, UploadFile)]
                if not uploads:
                    raise BadUpload(400, "", f"no files: send images as multipart/form-data under the field '{FIELD}'")
                names = [upload.filename or "" for upload in uploads]
                images = [await run_in_threadpool(decode, await read_upload(upload, max_bytes), name, transform)
                          for upload, name in zip(uploads, names)]
        except BadUpload as bad:
            return JSONResponse({"error": bad.reason, "filename": bad.filename}, status_code=bad.status)
        except HTTPException as error:  # the multipart parser's refusals: malformed body, too many files
            return JSONResponse({"error": error.detail, "filename": ""}, status_code=error.status_code)
        rows = predictor.describe(await batcher.predict(images), threshold, min(3, len(predictor.classes)))
        return JSONResponse({"results": [{"filename": name, **row} for name, row in zip(names, rows)]})

    return app
