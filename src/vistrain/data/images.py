"""Read any image file as the 8-bit RGB picture a backbone expects.

Files are recognised by their content, never by their extension. Every Pillow mode becomes RGB:
transparency is composited onto white, 16-bit grey is scaled to 0-255, CMYK and palettes are
converted, and the EXIF orientation is applied.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vistrain.core.files import RefusedFile, open_data_file

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")  # JPEG includes multi-picture (MPO) files
MAX_PIXELS = 100_000_000  # larger images are refused as possible decompression bombs


class UnreadableImage(Exception):
    """A file that cannot be used as an image; the message says why."""


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode `path` into an upright 8-bit RGB image, or raise UnreadableImage with the reason."""
    path = Path(path)
    try:
        with open_data_file(path) as file, warnings.catch_warnings():
            if os.fstat(file.fileno()).st_size == 0:
                raise UnreadableImage("empty file (0 bytes)")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.init()  # register every format plugin, not only the common ones
            with Image.open(file, formats=FORMATS) as image:
                if image.width * image.height > max_pixels:
                    raise UnreadableImage(
                        f"{image.width}x{image.height} pixels is over the limit of {max_pixels:,}"
                    )
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
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
