"""`POST /predict`'s uploads, read within limits (`limits.py`).

The body is streamed and counted: past `max_bytes` the request is refused (413) at once, the rest unread; Starlette's
multipart parser takes the counted stream and spools each file to disk past 1 MiB. Images are decoded by a fixed
number of threads (`Decoders`), at most `max_queued` waiting for one (more: 503), and reduced while decoding to what
the model needs (`load_rgb`'s `reduce_to`); all images of a request together may have `max_pixels` pixels.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable, TypeVar

import torch
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from vistrain.data.images import TooManyPixels, UnreadableImage, load_rgb
from vistrain.deploy.limits import Limits

FIELD = "files"
R = TypeVar("R")


@dataclass
class BadUpload(Exception):
    """An upload refused with an HTTP status and the reason; `cut_off` when the rest of the body is not to be read
    (the connection is then closed)."""

    status: int
    filename: str
    reason: str
    cut_off: bool = False


async def _counted(stream: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    """`stream`'s chunks, until more than `max_bytes` have come: then BadUpload (413)."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > max_bytes:
            raise BadUpload(413, "", f"request body larger than the limit of {max_bytes:,} bytes", cut_off=True)
        yield chunk


@asynccontextmanager
async def uploaded_files(request: Request, limits: Limits) -> AsyncIterator[list[UploadFile]]:
    """The request's files under FIELD, read within `limits`; BadUpload for a body that is too large or has more
    than `max_files` files (413), or is not multipart form data (400). The files are closed on leaving.

    A body declared larger than `max_bytes` is refused unparsed: when it is declared at most twice `max_bytes`, once
    it has been read to its end and thrown away (so that clients which send everything before they read, such as
    Python's urllib, get the answer), else at once, cut off (the connection is closed), as a chunked body is when it
    passes the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        size = int(declared)
        if size <= 2 * limits.max_bytes:
            async for _ in request.stream():
                pass
        raise BadUpload(413, "", f"request body of {size:,} bytes is over the limit of {limits.max_bytes:,}",
                        cut_off=size > 2 * limits.max_bytes)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise BadUpload(400, "", f"send images as multipart/form-data under the field '{FIELD}'")
    body = _counted(request.stream(), limits.max_bytes)
    parser = MultiPartParser(request.headers, body, max_files=limits.max_files, max_fields=limits.max_files)
    try:
        form = await parser.parse()
    except MultiPartException as error:  # malformed, or stopped at the header of one file too many
        if not error.message.startswith("Too many files"):
            raise BadUpload(400, "", error.message) from None
        async for _ in body:  # read to its end (at most max_bytes) and thrown away, so that the client gets the answer
            pass
        raise BadUpload(413, "", f"more than {limits.max_files} files in one request") from None
    try:
        yield [item for item in form.getlist(FIELD) if isinstance(item, UploadFile)]
    finally:
        await form.close()


def decode_upload(upload: UploadFile, transform: Callable, reduce_to: int,
                  max_pixels: int) -> tuple[tuple[torch.Tensor, ...], int]:
    """(the model's inputs for an uploaded image, `transform`'s, and its pixels at full size); BadUpload when it is
    not a readable image (415) or has over `max_pixels` pixels (413)."""
    name = upload.filename or ""
    with tempfile.NamedTemporaryFile(prefix="vistrain-upload-") as file:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, file)
        file.flush()
        try:
            image = load_rgb(file.name, max_pixels, reduce_to)
        except TooManyPixels as error:
            raise BadUpload(413, name, f"{error} pixels left for this request's images") from None
        except UnreadableImage as error:
            raise BadUpload(415, name, str(error)) from None
    width, height = image.info["source_size"]
    return transform(image), width * height


class Decoders:
    """Runs decoding on `decode_threads` threads, with at most `max_queued` calls waiting for one; a call beyond that
    is refused at once (BadUpload 503) rather than piling up memory and latency."""

    def __init__(self, limits: Limits):
        self.threads, self.max_queued = limits.decode_threads, limits.max_queued
        self.pending = 0  # calls submitted and not finished (counted on the event loop's thread)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vistrain-decode")

    async def run(self, function: Callable[..., R], *args) -> R:
        if self.pending >= self.threads + self.max_queued:
            raise BadUpload(503, "", f"busy: {self.max_queued} images are waiting to be decoded; try again shortly")
        loop = asyncio.get_running_loop()
        self.pending += 1
        future = self._pool.submit(function, *args)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finished))
        return await asyncio.wrap_future(future)

    def _finished(self) -> None:
        self.pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
