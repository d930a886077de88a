"""A trained run loaded once, to predict whatever a user holds: image files, folders, PIL images or numpy arrays
(`vistrain.load(run).predict(images)`), each prediction with its class names and probabilities.

An image given in memory is predicted as the same image saved as a PNG file would be: it is written losslessly to a
temporary PNG and read back by the same code as every file (decoding, resizing, the feature cache), so that the two
can never differ.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
from PIL import Image

from vistrain.core.device import ignore, resolve_device
from vistrain.data.images import to_rgb
from vistrain.data.samples import DataError, Skipped
from vistrain.model.predictor import Predictor, expand_paths

AnImage = Union[str, Path, Image.Image, np.ndarray]
PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")  # what Pillow writes to a PNG as it is


@dataclass(frozen=True)
class Prediction:
    """What the model says of one image. Classes are named as the run shows them (their names, if it has any)."""

    label: str  # the class; multi-label: the labels at or over their thresholds, joined by ";"; regression: the values
    probability: float | None  # single-label: the label's probability; otherwise None
    probabilities: dict[str, float]  # each class's (multi-label: each label's) probability; regression: {}
    values: dict[str, float]  # regression: each target's value; otherwise {}
    uncertain: bool = False  # single-label, with a threshold: the probability is below it
    path: Path | None = None  # the file it was read from; None for an image given in memory


class Predictions(list):
    """The predictions of the readable images, in the order given (a folder: its files, sorted), and `skipped`:
    the files that could not be read, each with the reason."""

    def __init__(self, predictions: Sequence[Prediction], skipped: Sequence[Skipped]):
        super().__init__(predictions)
        self.skipped = list(skipped)


class Model:
    """A trained run, loaded once (`vistrain.load`, `Model.from_run`): its backbone, head and preprocessing, ready to
    predict."""

    def __init__(self, run: str | Path, predictor: Predictor, cache_dir: Path | None = None):
        self.run = Path(run)
        self.predictor = predictor
        self.cache_dir = cache_dir

    @classmethod
    def from_run(cls, run: str | Path, *, device: str = "auto", cache_dir: Path | None = None,
                 on_halve: Callable[[int], None] = ignore) -> "Model":
        """The trained model in RUN (a complete run directory), its backbone on `device` ("auto", "cpu" or "cuda";
        `on_halve` is told when a batch had to be cut to fit its memory); features are cached in `cache_dir`
        [default: $VISTRAIN_CACHE or ~/.cache/vistrain]."""
        return cls(run, Predictor.from_run(run, resolve_device(device), on_halve), cache_dir)

    @property
    def task(self) -> str:
        """binary, multiclass, multilabel or regression."""
        return self.predictor.task

    @property
    def classes(self) -> list[str]:
        """The classes (labels, targets) as predictions name them."""
        return list(self.predictor.labels)

    def predict(self, images: AnImage | Sequence[AnImage], *, tta: bool = False, threshold: float | None = None,
                show_progress: bool = False) -> Prediction | Predictions:
        """One image (a file, a PIL image, an HxW or HxWxC array: uint8, or floats in [0, 1]) -> its `Prediction`;
        a list of them, a folder or an NxHxWxC array -> `Predictions`, one per readable image. `tta`: average each
        image's and its mirror's outputs; `threshold`: single-label, mark predictions below it uncertain;
        multi-label, one threshold for every label instead of the tuned ones."""
        self.predictor.check_threshold(threshold)
        one = isinstance(images, (str, Path, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim < 4)
        single = one and not (isinstance(images, (str, Path)) and Path(images).is_dir())
        items = [images] if one else list(images)
        with tempfile.TemporaryDirectory(prefix="vistrain-images-") as scratch:
            files, given, links = self._files(items, Path(scratch))
            predictions, skipped = self._predict(files, given, tta, threshold, show_progress) if files else ([], [])
        skipped = links + skipped
        if single:
            if skipped:
                raise DataError(f"{skipped[0].path} cannot be predicted: {skipped[0].reason}")
            return predictions[0]
        return Predictions(predictions, skipped)

    def _predict(self, files: list[Path], given: dict[Path, Path | None], tta: bool, threshold: float | None,
                 show_progress: bool) -> tuple[list[Prediction], list[Skipped]]:
        """The predictions of the readable `files` and the unreadable ones, named as they were given."""
        result = self.predictor.predict(files, self.cache_dir, show_progress, tta)
        rows = self.predictor.describe(result.outputs, threshold, len(self.predictor.labels))
        predictions = [self._prediction(row, outputs, given[path])
                       for path, row, outputs in zip(result.paths, rows, result.outputs)]
        return predictions, [Skipped(given[s.path] or Path(f"<image {items_index(s.path)} in memory>"), s.reason)
                             for s in result.skipped]

    def _files(self, items: list[AnImage], scratch: Path) -> tuple[list[Path], dict[Path, Path | None],
                                                                       list[Skipped]]:
        """The files to predict (in-memory images written to `scratch` as PNGs), what each was given as (a file:
        itself; an image in memory: None), and the skipped links and names of folders."""
        files: list[Path] = []
        given: dict[Path, Path | None] = {}
        links: list[Skipped] = []
        for index, item in enumerate(items):
            if isinstance(item, (str, Path)):
                found, skipped = expand_paths([item])
                files += found
                links += skipped
                given.update({path: path for path in found})
            else:
                path = scratch / f"{index}.png"
                save_png(item, path)
                files.append(path)
                given[path] = None
        return files, given, links

    def _prediction(self, row: dict, outputs: np.ndarray, path: Path | None) -> Prediction:
        named = {name: float(value) for name, value in zip(self.predictor.labels, outputs)}
        regression = self.task == "regression"
        return Prediction(row["class"], row["probability"], {} if regression else named, named if regression else {},
                          row["uncertain"], path)


def items_index(png: Path) -> int:
    """The position among the images given of an image given in memory, from its temporary PNG's name."""
    return int(png.stem)


def save_png(image: Image.Image | np.ndarray, path: Path) -> None:
    """An image given in memory, written losslessly as a PNG (a mode PNG cannot hold: as RGB, as reading converts
    it)."""
    if isinstance(image, np.ndarray):
        image = array_image(image)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"an image is a path, a PIL image or a numpy array, not {type(image).__name__}")
    (image if image.mode in PNG_MODES else to_rgb(image)).save(path, format="PNG")


def array_image(pixels: np.ndarray) -> Image.Image:
    """An HxW (grey), HxWx1, HxWx3 (RGB) or HxWx4 (RGBA) array of uint8, or of floats in [0, 1], as a PIL image."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise ValueError(f"an image array is HxW, HxWx1, HxWx3 or HxWx4, not of shape {pixels.shape}")
    if pixels.dtype.kind == "f":
        if not (np.isfinite(pixels).all() and pixels.min(initial=0) >= 0 and pixels.max(initial=0) <= 1):
            raise ValueError("an image array of floats holds values in [0, 1]")
        pixels = np.round(pixels * 255).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise ValueError(f"an image array is uint8, or floats in [0, 1], not {pixels.dtype}")
    return Image.fromarray(np.ascontiguousarray(pixels))
