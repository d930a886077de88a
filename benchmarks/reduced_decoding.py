"""Measure what reducing large images while decoding (`load_rgb(..., reduce_to=...)`) does to features and predictions.

Each set is decoded exactly and reduced, then goes through EfficientNet-Lite0 (ONNX Runtime) and the head of a run
trained on cats-vs-dogs: (1) the 500 cats-vs-dogs validation photos as they are (none is large enough to be reduced:
they must come out identical); (2) `--large` of them upscaled (bicubic) to a shorter side of 2,400 and saved as
JPEG (quality 92), like camera photos of the same scenes; (3) `--large` mosaics of 7 x 7 photos (2,800 x 2,100, PNG),
with detail at every scale. For scale, two rows compare the exact path on set (2) with what is accepted elsewhere:
the same files saved once more as JPEG, and resized by Pillow as examples/onnx_predict.py does. Prints a Markdown
table: images reduced, largest |difference| of a feature, largest relative L2 difference of a feature vector,
smallest cosine similarity, mean |difference| of the 224 x 224 input pixels (grey levels), largest |difference| of
a class probability, and how many images keep their class. Without --run, first trains one (5 epochs).

    python benchmarks/reduced_decoding.py [--run RUN] [--data PATH] [--large 50]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vistrain.backbones import get_backbone
from vistrain.data.images import load_rgb, reduced_size
from vistrain.features.extract import feature_function
from vistrain.features.transforms import eval_transform
from vistrain.model.predictor import Predictor

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"
BACKBONE = get_backbone("efficientnet_lite0")
PREPROCESS = BACKBONE.preprocess


def upscaled(path: Path, out: Path) -> Path:
    image = Image.open(path).convert("RGB")
    scale = 2400 / min(image.size)
    image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC).save(
        out, quality=92)
    return out


def mosaic(paths: list[Path], out: Path, tiles: int = 7) -> Path:
    canvas = Image.new("RGB", (400 * tiles, 300 * tiles))
    for i, path in enumerate(paths[: tiles * tiles]):
        canvas.paste(Image.open(path).convert("RGB").resize((400, 300)), (i % tiles * 400, i // tiles * 300))
    canvas.save(out)
    return out


def reduced(path: Path) -> torch.Tensor:
    return eval_transform(PREPROCESS, output="uint8")(load_rgb(path, reduce_to=PREPROCESS.resize_size))


def resized_by_pillow(path: Path) -> torch.Tensor:
    """As examples/onnx_predict.py prepares an image: decoded exactly, resized by Pillow instead of torch."""
    image = load_rgb(path)
    size, short = PREPROCESS.input_size, PREPROCESS.resize_size
    new = (short, int(short * image.height / image.width)) if image.width <= image.height else \
        (int(short * image.width / image.height), short)
    image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    return torch.from_numpy(np.asarray(image.crop((left, top, left + size, top + size))).copy()).permute(2, 0, 1)


def compare(paths: list[Path], features, head, other=reduced) -> str:
    """One table row's figures for `paths`: decoded exactly, and as `other` prepares them."""
    transform = eval_transform(PREPROCESS, output="uint8")
    large = sum(reduced_size(Image.open(p).size, PREPROCESS.resize_size) != Image.open(p).size for p in paths)
    exact_rows, reduced_rows, pixel_differences = [], [], []
    for start in range(0, len(paths), 32):
        batch = paths[start : start + 32]
        exact = torch.stack([transform(load_rgb(p)) for p in batch])
        small = torch.stack([other(p) for p in batch])
        pixel_differences.append((exact.int() - small.int()).abs().float().mean())
        exact_rows.append(features(exact))
        reduced_rows.append(features(small))
    a, b = np.concatenate(exact_rows), np.concatenate(reduced_rows)
    relative = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    p, q = head(a), head(b)
    return (f"{f'{large} of {len(paths)}' if other is reduced else '-'} | {np.abs(a - b).max():.2e} | "
            f"{relative.max():.2e} | {cosine.min():.6f} | {float(np.mean(pixel_differences)):.3f} | "
            f"{np.abs(p - q).max():.1e} | {(p.argmax(1) == q.argmax(1)).sum()} of {len(paths)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="A run trained on cats-vs-dogs [default: train one first].")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--large", type=int, default=50, help="How many upscaled photos and mosaics.")
    args = parser.parse_args()
    photos = sorted((args.data / "val").glob("*/*.jpg"))
    features = feature_function(BACKBONE, PREPROCESS)
    with tempfile.TemporaryDirectory() as scratch:
        if args.run is None:
            from vistrain.api import train
            from vistrain.training.options import TrainOptions

            args.run = Path(scratch) / "run"
            train(args.data, out=args.run, options=TrainOptions(epochs=5))
        head = Predictor.from_run(args.run).outputs

        def saved_again(path: Path) -> torch.Tensor:
            Image.open(path).save(Path(scratch) / "again.jpg", quality=92)
            return eval_transform(PREPROCESS, output="uint8")(load_rgb(Path(scratch) / "again.jpg"))

        print("| images | reduced | max abs feature difference | max relative L2 | min cosine | "
              "mean input difference | max probability difference | same class |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| cats-vs-dogs val photos | {compare(photos, features, head)} |", flush=True)
        big = [upscaled(p, Path(scratch) / f"up{i}.jpg") for i, p in enumerate(photos[:: len(photos) // args.large])]
        print(f"| the same, upscaled to 2,400 px (JPEG) | {compare(big, features, head)} |", flush=True)
        print(f"| for scale: those saved again (JPEG 92), not reduced | "
              f"{compare(big, features, head, saved_again)} |", flush=True)
        print(f"| for scale: those resized by Pillow (examples/onnx_predict.py), not reduced | "
              f"{compare(big, features, head, resized_by_pillow)} |", flush=True)
        rng = np.random.default_rng(0)
        tiles = [mosaic([photos[j] for j in rng.choice(len(photos), 49)], Path(scratch) / f"m{i}.png")
                 for i in range(args.large)]
        print(f"| 7 x 7 mosaics, 2,800 x 2,100 (PNG) | {compare(tiles, features, head)} |", flush=True)


if __name__ == "__main__":
    main()
