"""Fine-tuning, the course's freeze-then-unfreeze: once the head has trained on frozen features, unfreeze the
backbone's last blocks and train them with the head, end to end on the images, augmented on the fly.

Slow on a CPU (every epoch runs the whole backbone forward and its unfrozen part backward on every training
image); on a CUDA GPU (`--device`, `vistrain.core.device`) it runs in mixed precision, in pieces of a batch when one
does not fit.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vistrain.backbones.preprocess import Preprocess
from vistrain.core.device import HalvingBatches, autocast, ignore
from vistrain.core.errors import OptionError
from vistrain.data.images import load_rgb
from vistrain.features.transforms import Augmentation, eval_transform, train_transform
from vistrain.model.tasks import score_logits
from vistrain.training.distributed import Context
from vistrain.training.engine import BestSoFar, EpochResult, Phase, fit, training_loader

PHASE = "fine-tune"
AFTER_BLOCKS = ("conv_head", "bn2")  # timm EfficientNet: the 1x1 convolution and BatchNorm after the last block


def unfreeze_last_blocks(model: nn.Module, n: int) -> list[str]:
    """Freeze the whole backbone `model` except its last `n` stages of `model.blocks` (timm EfficientNet) and
    the conv_head and bn2 after them; returns the names of the unfrozen modules."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        raise OptionError(f"{{fine_tune}} needs a backbone whose stages are model.blocks; {type(model).__name__} has none")
    if not 1 <= n <= len(blocks):
        raise OptionError(f"{{fine_tune}} {n}: the backbone has {len(blocks)} blocks; choose 1 to {len(blocks)}")
    model.requires_grad_(False)
    names = [f"blocks.{i}" for i in range(len(blocks) - n, len(blocks))]
    names += [a for a in AFTER_BLOCKS if hasattr(model, a)]
    for name in names:
        model.get_submodule(name).requires_grad_(True)
    return names


class FineTuned(nn.Module):
    """Backbone then head: images -> logits. In training mode the BatchNorm layers of the frozen parts stay in
    eval mode, so their running statistics are the pretrained ones."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def train(self, mode: bool = True) -> "FineTuned":
        super().train(mode)
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters()):
                module.eval()
        return self


class LabelledImages(torch.utils.data.Dataset):
    """(transformed image, target) pairs."""

    def __init__(self, paths: list[Path], targets: torch.Tensor, transform: Callable, reduce_to: int):
        self.paths, self.targets, self.transform, self.reduce_to = paths, targets, transform, reduce_to

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(load_rgb(self.paths[index], reduce_to=self.reduce_to)), self.targets[index]


@torch.no_grad()
def evaluate_images(model: nn.Module, loader: torch.utils.data.DataLoader, task: str,
                    weights: torch.Tensor | None = None, device: torch.device = torch.device("cpu"),
                    batches: HalvingBatches | None = None) -> tuple[float, float, torch.Tensor]:
    """(mean loss, score, outputs) of a whole model on a loader of (image, target) batches, run on `device` (in
    mixed precision on CUDA; in pieces that fit its memory, `batches`)."""
    model.eval()
    batches = batches or HalvingBatches()

    def forward(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device)
        with autocast(device):
            return batches.run(len(images), lambda pieces: torch.cat([model(images[p]).float().cpu() for p in pieces]))

    logits, targets = zip(*[(forward(images), batch_targets) for images, batch_targets in loader])
    return score_logits(task, torch.cat(logits), torch.cat(targets), weights)


@dataclass
class FineTuneResult:
    history: list[EpochResult]  # epochs numbered from 1 within fine-tuning
    unfrozen: list[str]
    images_per_second: float | None  # training passes (loading, augmentation, forward, backward), this session
    improved: bool  # whether a fine-tune epoch beat the best before it; if not, backbone and head are unchanged


def fine_tune(
    backbone: nn.Module,
    head: nn.Module,
    train: tuple[list[Path], torch.Tensor],
    val: tuple[list[Path], torch.Tensor],
    task: str,
    preprocess: Preprocess,
    blocks: int,
    epochs: int,
    batch_size: int,
    head_lr: float,
    backbone_lr: float,
    patience: int,
    seed: int,
    best: BestSoFar | None = None,
    weights: torch.Tensor | None = None,
    sample_weights: torch.Tensor | None = None,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
    resume_from: dict | None = None,
    on_checkpoint: Callable[[dict], None] = lambda state: None,
    context: Context = Context(),
    device: torch.device = torch.device("cpu"),
    on_halve: Callable[[int], None] = ignore,
) -> FineTuneResult:
    """Train the last `blocks` blocks of `backbone` (a feature extractor; see `unfreeze_last_blocks`) and `head`
    together with Adam (learning rates `backbone_lr` and `head_lr`) on (image paths, targets): training images
    augmented (`train_transform`), validation images not (`eval_transform`). Stops after `patience` epochs
    without a lower validation loss than `best` (the frozen head's, when it follows `fit` of the head), and ends
    with the weights of the best fine-tune epoch, or, when none beat `best`, with the weights it started from.
    Checkpoints, resumes and runs under torchrun like `engine.fit`; runs on `device` (`core.device.resolve_device`),
    telling `on_halve` when a batch had to be cut into smaller pieces to fit its memory."""
    best = best or BestSoFar()
    model = FineTuned(backbone, head).to(device)
    unfrozen = unfreeze_last_blocks(backbone, blocks)
    optimizer = torch.optim.Adam([
        {"params": [p for p in backbone.parameters() if p.requires_grad], "lr": backbone_lr},
        {"params": list(head.parameters()), "lr": head_lr},
    ])
    generator = torch.Generator().manual_seed(seed)
    workers = max(1, min(4, (os.cpu_count() or 2) // 2))  # decoding and augmenting processes
    size = preprocess.resize_size
    loader = training_loader(LabelledImages(*train, train_transform(preprocess, Augmentation()), size), batch_size,
                             generator, sample_weights, context, workers)
    val_loader = torch.utils.data.DataLoader(LabelledImages(*val, eval_transform(preprocess), size),
                                             batch_size=batch_size, num_workers=workers)
    trainer = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if context.active else model
    batches = HalvingBatches(on_halve)
    phase = Phase(PHASE, model, trainer, loader,
                  lambda: evaluate_images(model, val_loader, task, weights, device, batches),
                  optimizer, generator, epochs, patience, batches)
    starting_point = copy.deepcopy(model.state_dict())
    history = fit(phase, task, best, weights.to(device) if weights is not None else None, device, context,
                  on_epoch, resume_from, on_checkpoint)
    improved = best.phase == PHASE
    model.load_state_dict(best.weights if improved else starting_point)
    model.cpu().eval()
    return FineTuneResult(history, unfrozen, phase.images_per_second, improved)
