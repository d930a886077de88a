"""What `vistrain serve` lets one request hold, and how many images it decodes at once: the one place these defaults
live (the command line reads them from here; GET /health shows them)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Limits:
    """Limits on a request's uploads and on decoding, all requests together."""

    max_bytes: int = 20_000_000  # the whole request body; past it the request is refused (413), the rest unread
    max_files: int = 64  # files in one request
    max_pixels: int = 100_000_000  # all images of a request together, at their full size
    decode_threads: int = os.cpu_count() or 1  # images decoded at once
    max_queued: int = 32  # images waiting for a decoding thread; more are refused (503) rather than piling up

    def to_dict(self) -> dict:
        return asdict(self)
