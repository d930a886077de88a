"""The `combined` candidate: the best fine-tuned candidate and the frozen logistic head, their logits averaged.

Two models that err differently average to a better one (on the elpv cells' validation: upper stages 0.888, the
logistic head 0.865, both averaged 0.897). Both are already trained on the fit rows and have scored the held rows,
so trying the average costs no training: its held-out logits are the mean of theirs (multi-class: with decision
offsets cross-fitted again, `candidates.finish`). Chosen, it is one model: the two backbones side by side (the
fine-tuned one, then the pretrained one: `backbones.concatenated`, recorded as `efficientnet_lite0+efficientnet_lite0`)
and one linear head over both features, whose logits are the two heads' mean — so predict, export and serve run it
as any fine-tuned run, at the cost of two backbone passes an image.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from vistrain.backbones import get_backbone
from vistrain.backbones.concatenated import Concatenated
from vistrain.model.heads import Standardize, build_head
from vistrain.training.candidates import Job, Outcome, finish, last_linear

NAME = "combined"
CHANGED = "the best fine-tuned candidate and the frozen logistic head, their logits averaged (two backbone passes)"


def try_combined(job: Job, fine_tuned: list[Outcome], logistic: Outcome | None) -> Outcome:
    """The average of the fine-tuned candidate with the best held-out score (among those at the backbone's own
    preprocessing: both parts take one input) and the logistic head, scored like any candidate; or why not."""
    def refused(why: str) -> Outcome:
        return Outcome(NAME, CHANGED, note="not tried: " + why)

    if job.task == "regression":
        return refused("it averages classifiers' logits; regression values are not averaged")
    if logistic is None or not logistic.tried:
        return refused("the logistic head was not trained")
    same_input = [o for o in fine_tuned if o.eligible and o.preprocess == job.backbone.preprocess]
    if not same_input:
        return refused(f"no fine-tuned candidate was trained at the backbone's {job.backbone.preprocess.input_size} px")
    started = time.perf_counter()
    best = max(same_input, key=lambda o: (o.selection, -o.selection_loss))
    model = Concatenated([best.backbone, job.backbone.build_feature_extractor()]).eval()
    outcome = Outcome(NAME, CHANGED, head=averaged_head(best.head, logistic.head), head_kind="linear",
                      backbone=model, preprocess=best.preprocess, best_epoch=best.best_epoch,
                      feature_backbone=get_backbone(f"{job.backbone.name}+{job.backbone.name}"),
                      note=f"{best.name} and logistic",
                      settings={**best.settings, "candidate": NAME, "parts": [best.name, "logistic"]})
    outcome = finish(job, outcome, (best.held_logits + logistic.held_logits) / 2,
                     (best.val_logits + logistic.val_logits) / 2)
    outcome.seconds = time.perf_counter() - started
    return outcome


def averaged_head(linear: nn.Sequential, logistic: nn.Sequential) -> nn.Sequential:
    """A linear head on [features of the first backbone, features of the second] whose logits are the mean of
    `linear`'s (on the first) and `logistic`'s (standardise -> linear, on the second)."""
    first, second = last_linear(linear), last_linear(logistic)
    standardize = next(m for m in logistic if isinstance(m, Standardize))
    head = build_head("linear", first.in_features + second.in_features, first.out_features)
    with torch.no_grad():
        head[-1].weight.copy_(torch.cat([first.weight, second.weight / standardize.std], dim=1) / 2)
        head[-1].bias.copy_((first.bias + second.bias - second.weight @ (standardize.mean / standardize.std)) / 2)
    return head.eval()
