"""Street View House Numbers in the cropped-digits format, as published: `train_32x32.mat`, `test_32x32.mat`.

Each is a MATLAB 5.0 MAT-file holding `X`, 32 x 32 x 3 x N uint8 RGB images, and `y`, N x 1 labels 1-10 where 10
stands for the digit 0 (http://ufldl.stanford.edu/housenumbers/, non-commercial use only). A file is converted
once into PNG class folders `0`-`9` in the cache, keyed by the file's SHA-256,

    <cache>/datasets/svhn-<sha256[:16]>/<digit>/<the image's position in the file, from 1>.png

and that folder is then read like any tree of class folders (the feature cache, keyed by file content, keeps the
features). Each PNG is written atomically and the marker last: a conversion cut short is redone.

Nothing is loaded blindly: the header must say MATLAB 5.0 (a 7.3 file is HDF5), the variables' classes and shapes
are read first (`scipy.io.whosmat`) and anything but the layout above is refused, as is a declared size over
MAX_MAT_BYTES, before a pixel is read; then only X and y are loaded, as plain numeric arrays.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path
from functools import partial
from typing import BinaryIO, Callable, TypeVar

import numpy as np

from vistrain.core.files import (RefusedFile, default_cache_dir, make_folder, open_data_file, sha256_file,
                                 write_atomic, write_json)
from vistrain.core.messages import say
from vistrain.data.samples import DataError

T = TypeVar("T")
SVHN_PAGE = "http://ufldl.stanford.edu/housenumbers/"
MAX_MAT_BYTES = 2 * 2**30  # the file, and X as declared (extra_32x32.mat: 531,131 images, 1.6 GB)
IMAGE_SHAPE = (32, 32, 3)
V5_HEADER = b"MATLAB 5.0 MAT-file"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # a MATLAB 7.3 file is HDF5, at offset 512 after its own text header
NUMERIC = ("double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
COMPLETE = ".complete.json"  # hidden: not an image of the folder
LAYOUT = f"SVHN's cropped digits ({SVHN_PAGE}): X, 32 x 32 x 3 x N uint8, and y, N x 1, labels 1-10"


def is_mat(source: Path) -> bool:
    """Whether a data source is a MATLAB file (by its name; what it holds is checked when it is read)."""
    return source.suffix.lower() == ".mat" and source.is_file()


def read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(X, 32 x 32 x 3 x N uint8, and the digits 0-9, N ints) of an SVHN .mat; a DataError naming the file and
    what is wrong for anything else."""
    from scipy.io import loadmat

    try:
        with open_data_file(path, MAX_MAT_BYTES) as file:
            check_header(path, file.read(520))
            file.seek(0)
            check_variables(path, file)
            file.seek(0)
            loaded = _parse(path, lambda: loadmat(file, variable_names=("X", "y"), squeeze_me=False,
                                                  mat_dtype=False, chars_as_strings=False, simplify_cells=False))
    except RefusedFile as error:
        raise DataError(f"{path}: {error}") from None
    images, labels = loaded["X"], loaded["y"].ravel()  # as declared: loadmat reads the headers whosmat read
    bad = np.flatnonzero(~(np.isfinite(labels) & (labels == np.round(labels)) & (labels >= 1) & (labels <= 10)))
    if bad.size:
        raise DataError(f"{path}: the label of image {bad[0] + 1} is {labels[bad[0]]:g} ({bad.size:,} label(s) not a "
                        f"whole number 1-10); not {LAYOUT}")
    return images, labels.astype(np.int64) % 10


def check_header(path: Path, head: bytes) -> None:
    """Refuse a MATLAB 7.3 (HDF5) file, or anything but a MATLAB 5.0 MAT-file, by its first bytes."""
    if head.startswith(b"MATLAB 7.3") or HDF5_SIGNATURE in (head[:8], head[512:520]):
        raise DataError(f"{path} is a MATLAB 7.3 (HDF5) file; SVHN's files are MATLAB 5.0 MAT-files, as "
                        f"published at {SVHN_PAGE}")
    if not head.startswith(V5_HEADER):
        raise DataError(f"{path} is not a MATLAB 5.0 MAT-file (it starts with {head[:20]!r}); expected {LAYOUT}")


def check_variables(path: Path, file: BinaryIO) -> None:
    """Refuse anything but SVHN's X and y, or an X over MAX_MAT_BYTES, by the variables' declared classes and
    shapes (nothing is loaded)."""
    from scipy.io import whosmat

    declared = {name: (tuple(shape), kind) for name, shape, kind in _parse(path, lambda: whosmat(file))}
    if "X" not in declared or "y" not in declared:
        raise DataError(f"{path} holds {', '.join(sorted(declared)) or 'no variables'}; expected {LAYOUT}")
    (shape, kind), (label_shape, label_kind) = declared["X"], declared["y"]
    if kind != "uint8":
        raise DataError(f"{path}: X is a {kind} array; expected {LAYOUT}")
    if len(shape) != 4 or shape[:3] != IMAGE_SHAPE or shape[3] < 1:
        raise DataError(f"{path}: X is {' x '.join(map(str, shape))}; expected {LAYOUT}")
    if math.prod(shape) > MAX_MAT_BYTES:
        raise DataError(f"{path}: X declares {shape[3]:,} images ({math.prod(shape) / 2**30:,.1f} GiB), over the "
                        f"limit of {MAX_MAT_BYTES / 2**30:,.0f} GiB")
    if label_kind not in NUMERIC:
        raise DataError(f"{path}: y is a {label_kind} array; expected {LAYOUT}")
    if label_shape != (shape[3], 1):
        raise DataError(f"{path}: y is {' x '.join(map(str, label_shape))} for {shape[3]:,} images; expected {LAYOUT}")


def _parse(path: Path, read: Callable[[], T]) -> T:
    """`read()`, with what scipy raises on a damaged or truncated file as a DataError naming it."""
    from scipy.io.matlab import MatReadError

    try:
        return read()
    except (MatReadError, NotImplementedError, OSError, ValueError, TypeError, IndexError, KeyError, EOFError,
            OverflowError, struct.error, zlib.error) as error:
        raise DataError(f"{path} cannot be read as a MATLAB 5.0 file, damaged or truncated "
                        f"({type(error).__name__}: {error})") from None


def svhn_folder(path: Path, cache_dir: Path | None = None) -> tuple[Path, int]:
    """(the class folders of an SVHN .mat in the cache, its number of images), converting it now unless a complete
    conversion of the same bytes is there (see the module)."""
    try:
        digest = sha256_file(path, MAX_MAT_BYTES)
    except RefusedFile as error:
        raise DataError(f"{path}: {error}") from None
    folder = make_folder((cache_dir or default_cache_dir()) / "datasets" / f"svhn-{digest[:16]}", "the dataset cache")
    count = converted(folder / COMPLETE, digest)
    if count is not None:
        return folder, count
    images, digits = read_svhn(path)
    say(f"converting {path.name}: {len(digits):,} images to PNG class folders in {folder} (once)")
    write_pngs(folder, images, digits)
    write_json(folder / COMPLETE, {"source": path.name, "sha256": digest, "images": len(digits),
                                   "per_digit": np.bincount(digits, minlength=10).tolist()})
    return folder, len(digits)


def converted(marker: Path, digest: str) -> int | None:
    """The number of images of a complete conversion of the file with SHA-256 `digest`, or None."""
    try:
        done = json.loads(marker.read_bytes())
    except (OSError, ValueError):
        return None
    complete = isinstance(done, dict) and done.get("sha256") == digest and type(done.get("images")) is int
    return done["images"] if complete else None


def write_pngs(folder: Path, images: np.ndarray, digits: np.ndarray) -> None:
    """FOLDER/<digit>/<position, from 1>.png for every image (X's last axis), each written atomically."""
    from PIL import Image

    width = len(str(len(digits)))
    for digit in np.unique(digits):
        make_folder(folder / str(digit), "the dataset cache")
    for i, digit in enumerate(digits):
        image = Image.fromarray(np.ascontiguousarray(images[..., i]), "RGB")
        write_atomic(folder / str(digit) / f"{i + 1:0{width}d}.png", partial(image.save, format="PNG"))
