"""Fine-tuning, the course's freeze-then-unfreeze: once the head has trained on frozen features, unfreeze the
backbone's last blocks and train them with the head, end to end on the images, augmented on the fly.

Slow on a CPU (every epoch runs the whole backbone forward and its unfrozen part backward on every training
image); a CUDA GPU is used when there is one.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from torch import nn

from vistrain.backbones import Backbone
from vistrain.distributed import Context
from vistrain.engine import EpochResult, evaluate, train_one_epoch, training_loader
from vistrain.features import file_digest
from vistrain.images import load_rgb
from vistrain.preprocess import Preprocess
from vistrain.run_dir import RunError
from vistrain.transforms import Augmentation, eval_transform, train_transform

BACKBONE_WEIGHTS = "backbone.safetensors"  # a fine-tuned run's backbone: the feature extractor's whole state dict
AFTER_BLOCKS = ("conv_head", "bn2")  # timm EfficientNet: the 1x1 convolution and BatchNorm after the last block


def unfreeze_last_blocks(model: nn.Module, n: int) -> list[str]:
    """Freeze the whole backbone `model` except its last `n` stages of `model.blocks` (timm EfficientNet) and
    the conv_head and bn2 after them; returns the names of the unfrozen modules."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        raise ValueError(f"--fine-tune needs a backbone whose stages are model.blocks; {type(model).__name__} has none")
    if not 1 <= n <= len(blocks):
        raise ValueError(f"--fine-tune {n}: the backbone has {len(blocks)} blocks; choose 1 to {len(blocks)}")
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

    def __init__(self, paths: list[Path], targets: torch.Tensor, transform: Callable):
        self.paths, self.targets, self.transform = paths, targets, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(load_rgb(self.paths[index])), self.targets[index]


@torch.no_grad()
def evaluate_images(model: nn.Module, loader: torch.utils.data.DataLoader, task: str,
                    weights: torch.Tensor | None = None,
                    device: torch.device = torch.device("cpu")) -> tuple[float, float, torch.Tensor]:
    """(mean loss, score, outputs) of a whole model on a loader of (image, target) batches."""
    model.eval()
    logits, targets = zip(*[(model(images.to(device)).cpu(), batch_targets) for images, batch_targets in loader])
    return evaluate(nn.Identity(), torch.cat(logits), torch.cat(targets), task, weights)  # the loss of the logits


@dataclass
class FineTuneResult:
    history: list[EpochResult]  # epochs numbered from 1 within fine-tuning
    best_epoch: int  # lowest validation loss; backbone and head end with its weights
    val_outputs: torch.Tensor  # the best epoch's validation outputs (see `tasks.outputs`)
    unfrozen: list[str]
    images_per_second: float | None  # training passes (loading, augmentation, forward, backward), this session


def device_for(context: Context) -> torch.device:
    """The CUDA GPU when there is one (under torchrun, the process's own), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if context.active else 0)
    return torch.device("cpu")


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
    weights: torch.Tensor | None = None,
    sample_weights: torch.Tensor | None = None,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
    resume_from: dict | None = None,
    on_checkpoint: Callable[[dict], None] = lambda state: None,
    context: Context = Context(),
) -> FineTuneResult:
    """Train the last `blocks` blocks of `backbone` (a feature extractor; see `unfreeze_last_blocks`) and `head`
    together with Adam (learning rates `backbone_lr` and `head_lr`) on (image paths, targets): training images
    augmented (`train_transform`), validation images not (`eval_transform`). Stops after `patience` epochs
    without a lower validation loss, and ends with the best epoch's weights. Checkpoints, resumes and runs
    under torchrun like `engine.fit`."""
    device = device_for(context)
    model = FineTuned(backbone, head).to(device)
    unfrozen = unfreeze_last_blocks(backbone, blocks)
    optimizer = torch.optim.Adam([
        {"params": [p for p in backbone.parameters() if p.requires_grad], "lr": backbone_lr},
        {"params": list(head.parameters()), "lr": head_lr},
    ])
    generator = torch.Generator().manual_seed(seed)
    workers = max(1, min(4, (os.cpu_count() or 2) // 2))  # decoding and augmenting processes
    loader = training_loader(LabelledImages(*train, train_transform(preprocess, Augmentation())), batch_size,
                             generator, sample_weights, context, workers)
    val_loader = torch.utils.data.DataLoader(LabelledImages(*val, eval_transform(preprocess)), batch_size=batch_size,
                                             num_workers=workers)
    trainer = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if context.active else model
    train_weights = weights.to(device) if weights is not None else None
    state = {"history": [], "best_loss": float("inf"), "best_epoch": 0, "best_model": None, "best_outputs": None,
             "stale": 0}
    if resume_from:
        state = resume_from
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
    history = [EpochResult(*row) for row in state["history"]]
    seen, seconds = 0, 0.0
    for epoch in range(len(history) + 1, epochs + 1):
        if state["stale"] >= patience:
            break
        if context.active:
            loader.sampler.set_epoch(epoch)
        started = time.perf_counter()
        train_loss, train_score = train_one_epoch(trainer, loader, task, optimizer, train_weights, device)
        seconds += time.perf_counter() - started
        seen += len(loader.sampler)
        val_loss, val_score, outputs = evaluate_images(model, val_loader, task, weights, device)
        history.append(EpochResult(epoch, train_loss, train_score, val_loss, val_score))
        on_epoch(history[-1])
        if val_loss < state["best_loss"]:
            state.update(best_loss=val_loss, best_epoch=epoch, best_model=copy.deepcopy(model.state_dict()),
                         best_outputs=outputs, stale=0)
        else:
            state["stale"] += 1
        state.update(model=model.state_dict(), optimizer=optimizer.state_dict(), generator=generator.get_state(),
                     torch_rng=torch.get_rng_state(), history=[list(astuple(r)) for r in history])
        on_checkpoint(state)
    model.load_state_dict(state["best_model"])
    model.cpu().eval()
    return FineTuneResult(history, state["best_epoch"], state["best_outputs"], unfrozen,
                          seen / seconds if seen else None)


def fine_tuned_backbone(base: Backbone, run: Path, sha256: str) -> Backbone:
    """`base` with the weights a fine-tuned run saved in RUN/backbone.safetensors (checked against `sha256`).
    Its `build` gives the feature extractor (no ImageNet classifier) and its `weights` name the file's
    SHA-256, so the feature cache keeps its features apart from the pretrained backbone's."""
    path = run / BACKBONE_WEIGHTS
    if not path.is_file():
        raise RunError(f"{run} was fine-tuned but has no {BACKBONE_WEIGHTS}")
    if file_digest(path) != sha256:
        raise RunError(f"{path} is not the file this run saved (its SHA-256 differs from config.json's)")

    def build() -> nn.Module:
        model = base.build()
        model.reset_classifier(0)
        model.load_state_dict(load_file(path))
        return model.eval()

    return replace(base, build=build, weights=f"{base.weights}, fine-tuned sha256:{sha256}")
