"""`vistrain serve`: a trained run behind HTTP (FastAPI), with a small web page to try it.

The model is loaded once, when the app is made. Uploads are read within limits, and each image is decoded, resized
and cropped with the run's `eval_transform` on a decoding thread (`uploads.py`); a micro-batcher gathers the images
of concurrent requests (for up to `max_wait` seconds, or `max_batch` images) and runs one forward pass of backbone
and head, in a thread, so the event loop keeps serving. The backbone runs as `vistrain predict` runs it
(`feature_function`: ONNX Runtime on a CPU, torch on a CUDA `device`; in the run's precision), without the feature
cache.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.requests import ClientDisconnect

from vistrain.core.device import ignore
from vistrain.core.html import render
from vistrain.data.images import MAX_PIXELS
from vistrain.deploy.limits import Limits
from vistrain.deploy.uploads import FIELD, BadUpload, Decoders, decode_upload, uploaded_files
from vistrain.features.extract import feature_function
from vistrain.features.inputs import backbone_inputs
from vistrain.features.transforms import eval_transform
from vistrain.model.predictor import Predictor


class MicroBatcher:
    """Gathers single images from concurrent requests into batches for one `infer` call each."""

    def __init__(self, infer: Callable[[list[torch.Tensor]], np.ndarray], max_batch: int = 16,
                 max_wait: float = 0.005):
        self.infer = infer
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.batches: list[int] = []  # size of every batch run so far
        self._queue: asyncio.Queue[tuple[tuple[torch.Tensor, ...], asyncio.Future]] = asyncio.Queue()

    async def predict(self, images: list[tuple[torch.Tensor, ...]]) -> np.ndarray:
        """The outputs for `images` (each the uint8 CHW tensors of every backbone input, see `backbone_inputs`),
        computed in batches shared with other requests: `infer` gets a batch per input."""
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
                batches = [torch.stack(part) for part in zip(*(image for image, _ in items))]
                outputs = await asyncio.to_thread(self.infer, batches)
            except Exception as error:  # a failed batch fails its requests, never the server
                for _, future in items:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), row in zip(items, outputs):
                if not future.done():
                    future.set_result(row)


def create_app(run: str | Path, threshold: float | None = None, limits: Limits = Limits(), max_batch: int = 16,
               max_wait: float = 0.005, docs: bool = False, device: torch.device | None = None,
               on_halve: Callable[[int], None] = ignore) -> FastAPI:
    """The web app for the model in `run`, its backbone on `device` (see `Predictor.from_run`): POST /predict,
    GET /health and GET / (the page); with `docs`, also FastAPI's /docs, /redoc and /openapi.json."""
    predictor = Predictor.from_run(run, device, on_halve)
    predictor.check_threshold(threshold)
    inputs = backbone_inputs(predictor.backbone, predictor.preprocess)  # a concatenation: each part its own
    transforms = [eval_transform(preprocess, output="uint8") for _, preprocess in inputs]
    reduce_to = max(preprocess.resize_size for _, preprocess in inputs)
    features = [feature_function(backbone, preprocess, precision=predictor.precision,
                                 device=predictor.device, on_halve=predictor.on_halve) for backbone, preprocess in inputs]

    def transform(image: Image.Image) -> tuple[torch.Tensor, ...]:
        return tuple(each(image) for each in transforms)

    def infer(batches: list[torch.Tensor]) -> np.ndarray:
        return predictor.outputs(np.concatenate([part(batch) for part, batch in zip(features, batches)], axis=1))

    batcher = MicroBatcher(infer, max_batch, max_wait)
    decoders = Decoders(limits)
    largest = min(MAX_PIXELS, Image.MAX_IMAGE_PIXELS, limits.max_pixels)  # over it, the decoder refuses an image
    info = {"task": predictor.task, "classes": predictor.classes,
            **({"class_names": predictor.config.class_names} if predictor.config.class_names else {}),
            "backbone": predictor.config.backbone.to_json(), "precision": predictor.precision.name,
            "input_size": predictor.preprocess.input_size, "threshold": threshold,
            "limits": {**limits.to_dict(), "max_image_pixels": largest}}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()
        decoders.close()

    shown = {"docs_url": "/docs", "redoc_url": "/redoc", "openapi_url": "/openapi.json"}
    app = FastAPI(title="vistrain", lifespan=lifespan, **{key: path if docs else None for key, path in shown.items()})
    app.state.batcher = batcher
    app.state.decoders = decoders
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
            async with uploaded_files(request, limits) as uploads:
                if not uploads:
                    raise BadUpload(400, "", f"no files: send images as multipart/form-data under the field '{FIELD}'")
                names, images, pixels_left = [upload.filename or "" for upload in uploads], [], limits.max_pixels
                for upload, name in zip(uploads, names):
                    if not upload.size:
                        raise BadUpload(400, name, "empty file (0 bytes)")
                    image, pixels = await decoders.run(decode_upload, upload, transform, reduce_to, pixels_left)
                    images.append(image)
                    pixels_left -= pixels
        except BadUpload as bad:
            return refusal(bad)
        except ClientDisconnect:
            return JSONResponse({"error": "the client went away", "filename": ""}, status_code=400)
        rows = predictor.describe(await batcher.predict(images), threshold, min(3, len(predictor.classes)))
        return JSONResponse({"results": [{"filename": name, **row} for name, row in zip(names, rows)]})

    return app


def refusal(bad: BadUpload) -> JSONResponse:
    """The JSON answer to a refused upload: a body cut off is left unread (`Connection: close`), and a busy server
    says when to try again."""
    headers = {"Connection": "close"} if bad.cut_off else {"Retry-After": "1"} if bad.status == 503 else {}
    return JSONResponse({"error": bad.reason, "filename": bad.filename}, status_code=bad.status, headers=headers)
