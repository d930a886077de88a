"""Fine-tuning that pays on a CPU: a recipe (AdamW, warm-up then cosine decay, discriminative learning rates,
label smoothing, BatchNorm trained only with batches large enough, the best epoch kept) applied to inputs held as
tensors — the cached activations of the backbone's frozen lower stages (`UpperStages` trains the rest), or the
images themselves decoded once at a small resolution (the whole backbone trains).

Each epoch sees every training image once, in one of the views found to keep labels (flips, quarter turns; see
`vistrain.training.candidates`), drawn at random; pixels are also shifted at random. Training runs in the epoch
loop every phase shares (`engine.fit`): checkpointed every epoch, resumed exactly after an interruption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from vistrain.core.device import autocast
from vistrain.features.activations import Activations, view_pixels
from vistrain.features.transforms import PixelNormalize
from vistrain.model import tasks
from vistrain.training.engine import BestSoFar, EpochResult, Phase, fit

MIN_BATCHNORM_BATCH = 16  # smaller batches keep BatchNorm's statistics as they are


class UpperStages(nn.Module):
    """The part of a timm EfficientNet feature extractor after its cut: `blocks[cut:]`, `conv_head`, `bn2` and the
    pooling, the same modules as `model`'s (training them trains `model`): lower-stage activations -> features."""

    def __init__(self, model: nn.Module, cut: int):
        super().__init__()
        self.blocks = nn.Sequential(*model.blocks[cut:])
        self.conv_head, self.bn2, self.pool = model.conv_head, model.bn2, model.global_pool

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn2(self.conv_head(self.blocks(activations))))


class Tuned(nn.Module):
    """A trainable feature part, then the head: inputs -> logits. In training mode its BatchNorm layers learn
    their statistics from the batches, unless batches are smaller than `MIN_BATCHNORM_BATCH` (their statistics
    would be noise): then they keep the pretrained ones and learn only their scale and shift."""

    def __init__(self, features: nn.Module, head: nn.Module, batch_size: int):
        super().__init__()
        self.features, self.head = features, head
        self.batchnorm_statistics = batch_size >= MIN_BATCHNORM_BATCH

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(inputs))

    def train(self, mode: bool = True) -> "Tuned":
        super().train(mode)
        if not self.batchnorm_statistics:
            for module in self.features.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


class Inputs:
    """What a tuned model takes, for some images: `training(indices, generator)` (a random view of each, pixels
    shifted) and `plain(indices)` (as validation sees them), both float32 tensors."""

    def __init__(self, count: int):
        self.count = count

    def training(self, indices: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def plain(self, indices: np.ndarray) -> torch.Tensor:
        raise NotImplementedError


class ActivationInputs(Inputs):
    """Cached lower-stage activations (`features.activations`), one cache per view."""

    def __init__(self, activations: Activations):
        super().__init__(len(next(iter(activations.rows.values()))))
        self.activations = activations

    def training(self, indices: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        views = torch.randint(len(self.activations.views), (len(indices),), generator=generator).numpy()
        return self.activations.batch(indices, views).contiguous(memory_format=torch.channels_last)

    def plain(self, indices: np.ndarray) -> torch.Tensor:
        return self.activations.batch(indices).contiguous(memory_format=torch.channels_last)


class PixelInputs(Inputs):
    """Images decoded once, resized and cropped (uint8 N x 3 x H x W), normalised for the backbone; in training
    shown in a random one of `views` and shifted by up to `shift` of their size (edges repeated)."""

    def __init__(self, pixels: torch.Tensor, normalize: PixelNormalize, views: list[str], shift: float = 0.125):
        super().__init__(len(pixels))
        self.pixels, self.normalize, self.views, self.shift = pixels, normalize, views, shift

    def training(self, indices: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        pixels = self.pixels[torch.from_numpy(np.asarray(indices))]
        chosen = torch.randint(len(self.views), (len(indices),), generator=generator)
        pixels = torch.stack([view_pixels(p[None], self.views[v])[0] for p, v in zip(pixels, chosen.tolist())])
        size = pixels.shape[-1]
        pad = int(round(self.shift * size))
        if pad:
            padded = nn.functional.pad(pixels.float(), (pad,) * 4, mode="replicate")
            offsets = torch.randint(2 * pad + 1, (len(indices), 2), generator=generator).tolist()
            pixels = torch.stack([p[:, y : y + size, x : x + size] for p, (y, x) in zip(padded, offsets)])
        return self.normalize(pixels).contiguous(memory_format=torch.channels_last)

    def plain(self, indices: np.ndarray) -> torch.Tensor:
        return self.normalize(self.pixels[torch.from_numpy(np.asarray(indices))]).contiguous(
            memory_format=torch.channels_last)


class _Batches(torch.utils.data.Dataset):
    """(inputs, targets) batches of training images: each image once per epoch, shuffled by the generator, which
    also draws the augmentation (so a checkpoint's generator state resumes both)."""

    def __init__(self, inputs: Inputs, targets: torch.Tensor, generator: torch.Generator):
        self.inputs, self.targets, self.generator = inputs, targets, generator

    def __len__(self) -> int:
        return len(self.targets)

    def __getitems__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = np.asarray(positions)
        return self.inputs.training(chosen, self.generator), self.targets[torch.from_numpy(chosen)]


def batches(inputs: Inputs, targets: torch.Tensor, batch_size: int,
            generator: torch.Generator) -> torch.utils.data.DataLoader:
    """Shuffled training batches of every image of `inputs` (`targets`: theirs)."""
    dataset = _Batches(inputs, targets, generator)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, generator=generator,
                                       sampler=torch.utils.data.RandomSampler(dataset, generator=generator),
                                       collate_fn=lambda batch: batch)


@torch.no_grad()
def predict_inputs(model: nn.Module, inputs: Inputs, batch_size: int = 128,
                   device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """The model's logits for every image of `inputs`, as validation sees them (in mixed precision on CUDA)."""
    model.eval()
    logits = []
    for start in range(0, inputs.count, batch_size):
        with autocast(device):
            logits.append(model(inputs.plain(np.arange(start, min(start + batch_size, inputs.count))).to(device))
                          .float().cpu())
    return torch.cat(logits)


@dataclass
class Recipe:
    """How a tuned model trains: AdamW at `learning_rate` for the head, `features_lr` for the layers before it
    (a tuple: one per parameter group, earliest first), warm-up over the first `warmup` share of the steps then
    cosine decay to 0, weight decay, label smoothing (single-label tasks)."""

    epochs: int
    batch_size: int = 64
    learning_rate: float = 3e-3
    features_lr: tuple[float, ...] = (1e-3,)
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup: float = 0.15
    patience: int | None = None


def warmup_cosine(total_steps: Callable[[], int], warmup: float) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear warm-up, then cosine decay to 0 at `total_steps()` (read at
    every step, so a plan shortened by the budget decays sooner)."""

    def factor(step: int) -> float:
        total = max(1, total_steps())
        ramp = max(1, int(warmup * total))
        if step < ramp:
            return (step + 1) / ramp
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - ramp) / max(1, total - ramp))))

    return factor


def tune(model: Tuned, groups: list[list[nn.Parameter]], train: tuple[Inputs, torch.Tensor],
         held: tuple[Inputs, torch.Tensor], task: str, recipe: Recipe, seed: int, name: str,
         deadline: Callable[[], float] | None = None, on_epoch: Callable[[EpochResult], None] = lambda r: None,
         resume_from: dict | None = None, on_checkpoint: Callable[[dict], None] = lambda state: None,
         device: torch.device = torch.device("cpu"),
         most_epochs: int | None = None) -> tuple[list[EpochResult], BestSoFar, Phase, list[torch.Tensor]]:
    """Train `model` on `train` (inputs and their targets) with `recipe`, scored each epoch on `held` (never
    trained on); `groups` are the feature part's parameter groups, earliest first, one per `recipe.features_lr`.
    Ends with the weights of the epoch with the lowest held-out loss; returns the history, that best epoch, the
    phase (its images per second) and every epoch's held-out logits (kept in the checkpoint with the rest).
    `deadline()`: seconds left for this phase, and `most_epochs` what the first epoch's time may raise
    `recipe.epochs` to (see `engine.fit`)."""
    torch.manual_seed(seed)
    model.to(device)
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": lr} for params, lr in zip(groups, recipe.features_lr)]
        + [{"params": list(model.head.parameters()), "lr": recipe.learning_rate}], weight_decay=recipe.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    loader = batches(train[0], train[1], recipe.batch_size, generator)
    held_inputs, held_targets = held
    held_logits: list[torch.Tensor] = list((resume_from or {}).get("held_logits", []))

    def validate() -> tuple[float, float, torch.Tensor]:
        held_logits.append(predict_inputs(model, held_inputs, device=device))
        return tasks.score_logits(task, held_logits[-1], held_targets)

    phase = Phase(name, model, model, loader, validate, optimizer, generator, recipe.epochs,
                  recipe.patience, label_smoothing=recipe.label_smoothing if task in tasks.SINGLE_LABEL else 0.0,
                  deadline=deadline, most_epochs=most_epochs)
    phase.scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(lambda: phase.epochs * len(loader), recipe.warmup))
    best = BestSoFar()
    history = fit(phase, task, best, device=device, on_epoch=on_epoch, resume_from=resume_from,
                  on_checkpoint=lambda state: on_checkpoint({**state, "held_logits": held_logits}))
    model.load_state_dict(best.weights)
    return history, best, phase, held_logits
