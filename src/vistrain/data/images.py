"""Read any image file as the 8-bit RGB picture a backbone expects.

Files are recognised by their content, never by their extension. Every Pillow mode becomes RGB:
transparency is composited onto white, 16-bit grey is scaled to 0-255, CMYK and palettes are
converted, and the EXIF orientation is applied.

Callers that resize afterwards may say to what shorter side (`reduce_to`): an image far larger than that is then
decoded at a smaller scale (JPEG: 1/2, 1/4 or 1/8 of each side) and resized right after decoding, before any other
copy, so that a huge image costs one decoded frame at most, never several full-size copies. Without `reduce_to` the
picture is exact.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from vistrain.core.files import RefusedFile, open_data_file

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")  # JPEG includes multi-picture (MPO) files
MAX_PIXELS = 100_000_000  # larger images are refused as possible decompression bombs
REDUCE_MARGIN = 4  # a reduced image keeps a shorter side of 4 x the `reduce_to` asked for (see `reduced_size`)
REDUCIBLE = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F")  # modes resizing averages as they are
T = TypeVar("T")


class UnreadableImage(Exception):
    """A file that cannot be used as an image; the message says why."""


class TooManyPixels(UnreadableImage):
    """An image over the pixel limit it was read with."""


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS, reduce_to: int | None = None) -> Image.Image:
    """Decode `path` into an upright 8-bit RGB image, or raise UnreadableImage with the reason.

    With `reduce_to`, an image whose shorter side is at least 2 x REDUCE_MARGIN x `reduce_to` comes back with a
    shorter side of REDUCE_MARGIN x `reduce_to` (see `reduced_size`). `image.info["source_size"]` is the
    (width, height) of the whole upright picture, reduced or not."""
    return _read(path, max_pixels, lambda image, file: decode(image, reduce_to))


def load_pixels(path: str | Path, max_pixels: int = MAX_PIXELS,
                reduce_to: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """`load_rgb`'s picture as an H x W x 3 uint8 array, with the whole upright picture's (width, height).

    A plain JPEG (YCbCr, upright, not reduced: every cats-vs-dogs photo) is decoded by libjpeg-turbo straight into
    the array (simplejpeg): the same pixels as Pillow's libjpeg-turbo gives (tested), in half the time, without
    Pillow's 4-byte pixels and the copy to 3. Anything else, or a JPEG simplejpeg will not decode exactly (a
    warning such as a truncated file), is decoded as `load_rgb` does."""
    def pixels(image: Image.Image, file: BinaryIO) -> tuple[np.ndarray, tuple[int, int]]:
        if (image.format == "JPEG" and image.mode == "RGB" and image.getexif().get(ExifTags.Base.Orientation, 1) == 1
                and (not reduce_to or reduced_size(image.size, reduce_to) == image.size)):
            file.seek(0)
            try:
                return simplejpeg.decode_jpeg(file.read(), colorspace="RGB", strict=True), image.size
            except ValueError:
                pass  # Pillow decides: a truncated file is unreadable, extraneous bytes are not
        picture = decode(image, reduce_to)
        return np.array(picture), picture.info["source_size"]

    return _read(path, max_pixels, pixels)


def load_rgb_and_digest(path: str | Path, max_pixels: int = MAX_PIXELS,
                        reduce_to: int | None = None) -> tuple[Image.Image, str]:
    """`load_rgb`'s picture and the SHA-256 of the file's bytes, which are read from the disk once (and held in
    memory while the picture is decoded), for readers that need both (`vistrain check`)."""
    def picture_and_digest(image: Image.Image, file: BinaryIO) -> tuple[Image.Image, str]:
        return decode(image, reduce_to), hashlib.sha256(file.getbuffer()).hexdigest()

    return _read(path, max_pixels, picture_and_digest, in_memory=True)


def _read(path: str | Path, max_pixels: int, use: Callable[[Image.Image, BinaryIO], T], in_memory: bool = False) -> T:
    """`use(the opened image, its file)` for the image file at `path`, refused as UnreadableImage with the reason when
    it is not a readable image within `max_pixels`; `in_memory`: the file is read whole first, and `use` gets its
    bytes as a BytesIO."""
    path = Path(path)
    try:
        with open_data_file(path) as opened, warnings.catch_warnings():
            if os.fstat(opened.fileno()).st_size == 0:
                raise UnreadableImage("empty file (0 bytes)")
            file = io.BytesIO(opened.read()) if in_memory else opened
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.init()  # register every format plugin, not only the common ones
            with Image.open(file, formats=FORMATS) as image:
                if image.width * image.height > max_pixels:
                    raise TooManyPixels(f"{image.width}x{image.height} pixels is over the limit of {max_pixels:,}")
                return use(image, file)
    except UnreadableImage:
        raise
    except RefusedFile as error:
        raise UnreadableImage(str(error)) from None
    except UnidentifiedImageError:
        raise UnreadableImage(f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage(f"refused as a possible decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"cannot decode: {error}") from None


def decode(image: Image.Image, reduce_to: int | None) -> Image.Image:
    """An opened image's pixels as upright RGB; with `reduce_to`, shrunk first where it is far larger than that.
    `info["source_size"]`: the whole upright picture's (width, height)."""
    width, height = image.size
    turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)  # quarter turns
    picture = _decoded(image, reduce_to)
    picture.info["source_size"] = (height, width) if turned else (width, height)
    return picture


def _decoded(image: Image.Image, reduce_to: int | None) -> Image.Image:
    size = reduced_size(image.size, reduce_to) if reduce_to else image.size
    if size == image.size:
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))
    drafted = image.draft(None, size)  # JPEG: decoded at 1/2, 1/4 or 1/8 scale, never below `size`; others: None
    extent = drafted[1] if drafted else (0, 0, *image.size)  # the whole picture, in decoded pixels
    image.load()
    exif = image.getexif()  # read from the file's own place for it (TIFF: its tags), which a new image lacks
    if image.mode.startswith("I;16"):
        image = image.convert("I")  # 16-bit grey: averaged as 32-bit, scaled to 8 bits by to_rgb
    elif image.mode not in REDUCIBLE:
        image = to_rgb(image)  # palettes, 1-bit and the rest cannot be averaged as they are
    small = image.resize(size, Image.Resampling.BICUBIC, box=extent, reducing_gap=3.0)  # reduce(), then bicubic
    if exif:
        small.info["exif"] = exif.tobytes()
    return to_rgb(ImageOps.exif_transpose(small))


def reduced_size(size: tuple[int, int], reduce_to: int) -> tuple[int, int]:
    """`size` when its shorter side is under 2 x REDUCE_MARGIN x `reduce_to`, else REDUCE_MARGIN times the size
    that resizing the shorter side to `reduce_to` gives (the longer side rounded down, as `resize_shorter_side`
    does), so that resizing the reduced image gives the same size, and the same geometry, as resizing the original."""
    short, long = min(size), max(size)
    if short < 2 * REDUCE_MARGIN * reduce_to:
        return size
    reduced = (REDUCE_MARGIN * reduce_to, REDUCE_MARGIN * int(reduce_to * long / short))
    return reduced if size[0] <= size[1] else (reduced[1], reduced[0])


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert an image of any Pillow mode to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_grey_to_uint8(np.asarray(image))).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Scale integer grey (16-bit range, as PNG and TIFF store it) or float grey (0-1 or 0-255) to 0-255."""
    values = pixels.astype(np.float64)
    if pixels.dtype.kind != "f":
        values = values / 257.0  # 65535 -> 255
    elif values.max(initial=0) <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def jpeg_thumbnail(path: Path, side: int, quality: int) -> bytes:
    """The image at `path` as a JPEG at most `side` pixels wide and high, reduced while it is decoded; raises
    UnreadableImage or OSError when it cannot be read."""
    image = load_rgb(path, reduce_to=side)
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
