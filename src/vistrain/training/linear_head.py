"""The `logistic` head: a logistic regression (ridge regression for regression targets) on standardised features,
fitted in closed form, its strength chosen by cross-validation on the training images only; for multi-class,
decision offsets tuned for macro F1 on cross-validated predictions are added to its bias. Then it is an ordinary
torch head (`Standardize` -> `Linear`): predict, export, serve and fine-tuning take it as they take the others."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vistrain.model.linear import fit_linear
from vistrain.model.tasks import score_logits
from vistrain.training.engine import BestSoFar, EpochResult


def fit_logistic_head(head: nn.Sequential, train: tuple[torch.Tensor, torch.Tensor],
                      val: tuple[torch.Tensor, torch.Tensor], task: str, seed: int,
                      best: BestSoFar, stage: str = "frozen") -> tuple[list[EpochResult], dict]:
    """Fit `head` (see `heads.build_head("logistic")`) on the training features; returns its history (one epoch:
    the fit) and what config.json records of it (the strength, the offsets)."""
    x, targets = train[0].numpy().astype(np.float64), train[1]
    if task == "regression":  # in the units of the head's Rescale, which maps predictions back
        targets = (targets - head[-1].mean) / head[-1].std
    fit = fit_linear(x, targets.numpy(), task, seed, tune_offsets=task == "multiclass")
    standardize, linear = head[0], head[1]
    standardize.mean.copy_(torch.from_numpy(fit.scaling.mean))
    standardize.std.copy_(torch.from_numpy(fit.scaling.std))
    bias = fit.bias + (fit.offsets if fit.offsets is not None else 0)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(fit.weight))
        linear.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float64)))
    head.eval()  # a regression head's Rescale, fitted to the training targets, maps ridge's standardised values back
    with torch.no_grad():
        train_loss, train_score, _ = score_logits(task, head(train[0]), train[1])
        val_loss, val_score, outputs = score_logits(task, head(val[0]), val[1])
    history = [EpochResult(1, train_loss, train_score, val_loss, val_score)]
    best.update(val_loss, stage, 1, head, outputs)
    details = {"strength": fit.strength, "strength_rule": "3-fold cross-validated log loss on the training images"}
    if fit.offsets is not None:
        details["decision_offsets"] = [round(float(v), 2) for v in fit.offsets]
    return history, details

