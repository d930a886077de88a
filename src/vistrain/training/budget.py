"""`--budget`: spend at most a given wall time, trying candidates from the cheapest up, and keep the one that
scores best on held-out training images.

The clock starts with the run, so the frozen features (the features step, before this) count. Then:
1. the frozen heads (`logistic`, `mlp`: seconds);
2. a logistic head on a larger backbone's frozen features (`larger_backbone.py`: one more feature pass, when it
   fits a share of the time left);
3. the fine-tuned candidates (`fine_tuning.py`), at the data's resolution (`resolution.py`): each is measured
   (two training steps of a copy, the activations or images it needs); while their setups and minimum epochs
   (`min_epochs`) each do not fit the time left together, the dearest is dropped; each of the others gets its minimum
   plus an equal part of what the minimums leave (a part it does not use passes to the next), as many epochs as
   fit it (at most `MAX_EPOCHS`), the plan shortened after every epoch when epochs run slower than measured.
   Which views of an image they train on is decided first, by validation (`candidates.label_keeping_views`);
4. the best fine-tuned candidate and the logistic head averaged (`combined.py`: no training, their held-out
   logits averaged);
5. the choice: the best selection metric on the held-out rows (`selection.py`), ties to the lower held-out loss;
   a logistic head chosen (either backbone's) is fitted again on every training image (seconds).
Everything a finished candidate leaves is kept in the checkpoint, with the plan, so `--resume` continues where a
killed run stopped and ends as it would have.
"""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from vistrain.backbones import Backbone, get_backbone
from vistrain.backbones.preprocess import Preprocess
from vistrain.core.errors import OptionError, quoted
from vistrain.core.messages import quiet, say, warn
from vistrain.data.samples import Dataset
from vistrain.model import tasks
from vistrain.model.heads import build_head
from vistrain.training.candidates import FROZEN_HEADS, Job, Outcome, frozen_head, label_keeping_views
from vistrain.training.combined import NAME as COMBINED, try_combined
from vistrain.training.engine import BestSoFar, EpochResult
from vistrain.training.features_step import FeatureSet
from vistrain.training.fine_tuning import MAX_EPOCHS, UpperStagesCandidate, WholeCandidate
from vistrain.training.larger_backbone import NAME as LARGER_BACKBONE, feature_set, settle, try_larger_backbone
from vistrain.training.options import TrainOptions
from vistrain.training.resolution import data_preprocess, median_side
from vistrain.training.selection import SELECTION_METRIC, better, inner_split
from vistrain.training.frozen import Run, Trained, train_head

FINE_TUNED = (UpperStagesCandidate, WholeCandidate)
CANDIDATES = (*FROZEN_HEADS, LARGER_BACKBONE, *(c.name for c in FINE_TUNED), COMBINED)
RESERVE_SECONDS, RESERVE_SHARE = 8.0, 0.03  # kept for scoring, writing the run and its report
MEASURE_SECONDS = 10.0  # with less left, a fine-tuned candidate is not even measured


@dataclass
class Clock:
    """The budget: `seconds` of wall time from `started` (this session's start), `spent_before` it (earlier
    sessions of a resumed run)."""

    seconds: float
    started: float
    spent_before: float = 0.0

    def spent(self) -> float:
        return self.spent_before + time.perf_counter() - self.started

    def left(self) -> float:
        """Seconds left for training (the reserve for the end already taken off)."""
        return self.seconds * (1 - RESERVE_SHARE) - RESERVE_SECONDS - self.spent()


def check_budget_options(options: TrainOptions) -> None:
    """What `budget` cannot be combined with, as an `OptionError`."""
    unknown = [name for name in options.candidates if name not in CANDIDATES]
    if unknown:
        raise OptionError(f"unknown candidate(s) {quoted(', '.join(unknown))}; {{candidates}}: {', '.join(CANDIDATES)}")
    if options.candidates and options.budget is None:
        raise OptionError("{candidates} chooses among what {budget} tries; give a {budget}")
    if options.budget is None:
        return
    if options.fine_tune:
        raise OptionError("{budget} decides itself what to fine-tune; drop {fine_tune}")
    if options.precision == "int8":
        raise OptionError("{budget} fine-tunes in fp32; drop {precision} int8")


def budget_step(features: FeatureSet, dataset: Dataset, backbone: Backbone, options: TrainOptions, run: Run,
                 cache_dir: Path, device: torch.device = torch.device("cpu"), show_progress: bool = False) -> Trained:
    """Try the candidates within `options.budget` seconds (counted from the run's start) and return the chosen
    one as the training's result, with the leaderboard (`show_progress`: progress bars for the long steps)."""
    if run.context.active:
        raise OptionError("{budget} runs in one process, not under torchrun")
    state = run.checkpoint.state.setdefault("budget", {"spent": 0.0, "done": {}, "plans": {}})
    clock = Clock(options.budget, run.started, state["spent"])
    fit, held = inner_split(dataset.task, features.train[1], options.seed)
    job = Job(features, dataset, backbone, options, run, fit, held, cache_dir, device, show_progress)
    wanted = options.candidates or CANDIDATES
    outcomes: dict[str, Outcome] = {}

    def record(outcome: Outcome, tell: bool = True) -> None:
        outcomes[outcome.name] = outcome
        state["done"][outcome.name] = saved(outcome)
        state["spent"] = clock.spent()
        run.checkpoint.save()
        if tell:
            describe(run, outcome, dataset.task)

    for kind in (k for k in FROZEN_HEADS if k in wanted):
        if kind in state["done"]:
            record(restored(state["done"][kind], job))
        elif kind == "logistic" and (options.class_weight or options.sampler):
            record(Outcome(kind, FROZEN_HEADS[kind], note="not tried: it takes no class_weight or sampler"))
        elif clock.left() > 0 or not any(o.tried for o in outcomes.values()):  # one at least, whatever the time
            record(frozen_head(job, kind))
        else:
            record(Outcome(kind, FROZEN_HEADS[kind], note="not tried: the budget was spent"))
    preprocess = data_preprocess(backbone.preprocess, median_side(job.train_paths, options.seed))
    if LARGER_BACKBONE in state["done"]:
        record(restored(state["done"][LARGER_BACKBONE], job))
    elif LARGER_BACKBONE in wanted:
        record(try_larger_backbone(job, preprocess, clock.left))
    logistic, larger = outcomes.get("logistic"), outcomes.get(LARGER_BACKBONE)
    if logistic and larger and logistic.eligible and larger.eligible:  # not yet settled
        for outcome in settle(job, logistic, larger):
            record(outcome, tell=False)
            if outcome.ruled_out:
                say(f"candidate {outcome.name}: {outcome.note}")
    reference = logistic if logistic is not None and logistic.tried else None
    fine = [cls for cls in FINE_TUNED if cls.name in wanted]
    if fine:
        run_fine_tuned(job, [cls(job, preprocess) for cls in fine], reference, clock, state, record)
    if COMBINED in state["done"]:
        record(restored(state["done"][COMBINED], job))
    elif COMBINED in wanted:
        record(try_combined(job, [outcomes[cls.name] for cls in fine if cls.name in outcomes],
                            outcomes.get("logistic")))
    return choose(job, outcomes, clock, state)


def run_fine_tuned(job: Job, candidates: list, reference: Outcome | None, clock: Clock, state: dict,
                   record: Callable[[Outcome], None]) -> None:
    """Measure, plan and run the fine-tuned candidates (see the module's docstring). `reference`: the logistic
    head on the fit rows, which tests the views."""
    pending = []
    for candidate in candidates:
        plan = state["plans"].get(candidate.name)
        if candidate.name in state["done"]:
            record(restored(state["done"][candidate.name], job))
        elif plan:
            pending.append((candidate, (plan["setup"], plan["epoch"])))
        elif candidate.refusal() or clock.left() < MEASURE_SECONDS:
            record(Outcome(candidate.name, candidate.changed, note="not tried: " + (
                candidate.refusal() or f"{max(0.0, clock.left()):.0f} s were left")))
        else:
            epoch = candidate.measure()
            pending.append((candidate, (candidate.setup_seconds(["identity"]), epoch)))
    if not pending:
        return
    needs = {c.name: setup + c.min_epochs * epoch for c, (setup, epoch) in pending}
    unplanned = [item for item in pending if item[0].name not in state["plans"]]  # a resumed one stays
    while unplanned and sum(needs[c.name] for c, _ in pending) > clock.left():  # the dearest goes first
        dearest = max(unplanned, key=lambda item: needs[item[0].name])
        unplanned.remove(dearest)
        pending.remove(dearest)
        candidate, (setup, epoch) = dearest
        record(Outcome(candidate.name, candidate.changed, note=(
            f"not tried: {candidate.min_epochs} epochs need about {needs[candidate.name]:.0f} s (setup {setup:.0f} s, "
            f"{epoch:.0f} s an epoch); {max(0.0, clock.left()):.0f} s were left")))
    if pending and reference is not None and "views" not in state:
        started = time.perf_counter()
        state["views"], state["view_scores"], per_pass = label_keeping_views(job, reference.head)
        for candidate, _ in pending:
            if isinstance(candidate, UpperStagesCandidate):
                candidate.calibrate(per_pass, job.backbone.preprocess)
        say(f"views that keep labels (held-out {SELECTION_METRIC[job.task].replace('_', ' ')} of the frozen head: "
            + ", ".join(f"{view} {score:.3f}" for view, score in state["view_scores"].items())
            + f"): {', '.join(state['views'])} ({time.perf_counter() - started:.1f} s)")
    for position, (candidate, (setup, epoch)) in enumerate(pending):
        later = sum(needs[c.name] for c, _ in pending[position + 1:])
        need = needs[candidate.name]  # its minimum, plus an equal part of what the minimums leave
        share = need + (clock.left() - later - need) / (len(pending) - position)
        plan = state["plans"].get(candidate.name) or make_plan(candidate, state.get("views", ["identity"]), setup,
                                                               epoch, share)
        if plan["epochs"] < candidate.min_epochs:
            least = plan["setup"] + candidate.min_epochs * epoch
            record(Outcome(candidate.name, candidate.changed, note=(
                f"not tried: {candidate.min_epochs} epochs need about {least:.0f} s (setup {plan['setup']:.0f} s, "
                f"{epoch:.0f} s an epoch); {max(0.0, share):.0f} s were left for it")))
            continue
        state["plans"][candidate.name] = plan
        job.run.checkpoint.save()
        say(f"{candidate.name}: {plan['epochs']} epochs planned at {candidate.preprocess.input_size} px (about "
            f"{plan['epoch']:.0f} s each after {plan['setup']:.0f} s of setup), views {', '.join(plan['views'])}")
        ends = time.perf_counter() + share

        def save(state: dict, name: str = candidate.name) -> None:
            state["spent"] = clock.spent()
            job.run.checkpoint.save_phase(name, state)

        record(candidate.run(plan["views"], plan["epochs"], lambda: min(ends - time.perf_counter(), clock.left()),
                             on_epoch=lambda r, name=candidate.name: (say(
                                 f"{name} epoch {r.epoch}/{plan['epochs']}  loss {r.train_loss:.4f}  held-out loss "
                                 f"{r.val_loss:.4f}  held-out {tasks.SCORE_NAMES[job.task]} {r.val_score:.4f}"),
                                 job.run.on_epoch(r)),
                             on_checkpoint=save))


def make_plan(candidate, views: list[str], setup: float, epoch: float, share: float) -> dict:
    """Views, setup seconds and epochs for a candidate in `share` seconds: an upper-stage candidate trains on as
    many of `views` as it can compute in 40% of its share (each view is a pass of the lower stages), and every
    candidate runs as many epochs as fit, up to MAX_EPOCHS."""
    used = list(views)
    if isinstance(candidate, UpperStagesCandidate):
        while len(used) > 1 and candidate.setup_seconds(used) > 0.4 * share:
            used.pop()
        setup = candidate.setup_seconds(used)
    return {"setup": setup, "epoch": epoch, "views": used,
            "epochs": int(min(MAX_EPOCHS, max(0.0, (share - setup) // epoch)))}


def choose(job: Job, outcomes: dict[str, Outcome], clock: Clock, state: dict) -> Trained:
    """The tried candidate with the best selection metric (ties: the lower held-out loss), as a `Trained`: a
    logistic head fitted again on every training image; the history of every candidate, numbered across them;
    what config.json records, with the views found to keep labels (`state`: the budget's checkpoint state)."""
    task = job.task
    best: Outcome | None = None
    for outcome in outcomes.values():
        if outcome.eligible and better(task, outcome.selection, outcome.selection_loss,
                                    None if best is None else (best.selection, best.selection_loss)):
            best = outcome
    if best is None:
        raise OptionError("no candidate could be trained within the budget (see the lines above); give a longer "
                          "{budget}, or let {candidates} include a frozen head (logistic, mlp)")
    if best.head_kind == "logistic" and best.backbone is None:
        best = refit_logistic(job, best)
    outcomes = {name: outcomes[name] for name in CANDIDATES if name in outcomes}  # the leaderboard's order
    history, phases, offset, chosen_epoch = [], [], 0, 1
    for outcome in outcomes.values():
        if outcome.name == best.name:
            chosen_epoch = offset + best.best_epoch
        history += [replace(r, epoch=offset + r.epoch) for r in outcome.history]
        phases += [outcome.name] * len(outcome.history)
        offset += len(outcome.history)
    metric = SELECTION_METRIC[task]
    leaderboard = [(best if o.name == best.name else o).row(metric, o.name == best.name) for o in outcomes.values()]
    record = {"seconds": job.options.budget, "chosen": best.name, "selection_metric": metric,
              "held_out_images": len(job.held), "spent_choosing": round(clock.spent(), 1),
              **{key: state[key] for key in ("views", "view_scores") if key in state},
              "rule": "the best selection metric on training images held out from every candidate's training "
                      "(ties: the lower held-out loss); validation images are never used to choose"}
    settings = dict(best.settings, improved=True) if best.backbone is not None else {}
    return Trained(best.head, history, phases,
                   BestSoFar(best.val_loss, best.name, chosen_epoch, None, best.val_outputs), backbone=best.backbone,
                   fine_tune=settings, head_fit=best.head_fit, head_kind=best.head_kind, preprocess=best.preprocess,
                   feature_backbone=best.feature_backbone, leaderboard=leaderboard, budget=record)


def refit_logistic(job: Job, outcome: Outcome) -> Outcome:
    """A logistic head fitted again on every training image (closed form: seconds), on the frozen features it
    was trained on (a larger backbone's from the cache, when a resumed run no longer holds them)."""
    started = time.perf_counter()
    backbone = outcome.feature_backbone or job.backbone
    features = outcome.features or (feature_set(job, backbone) if outcome.feature_backbone else job.features)
    trained = train_head(features, job.dataset, backbone, replace(job.options, head="logistic"), job.run,
                         name="logistic-refit", say=quiet)
    val_outputs = trained.best.outputs
    return replace(outcome, head=trained.head, head_fit=trained.head_fit, val_outputs=val_outputs,
                   val_loss=trained.best.loss, validation=job.score(val_outputs.numpy(), "val"),
                   seconds=outcome.seconds + time.perf_counter() - started,
                   note="; ".join(filter(None, (
                       outcome.note, f"fitted again on all {len(job.features.train[1])} training images once chosen"))))


def describe(run: Run, outcome: Outcome, task: str) -> None:
    metric = SELECTION_METRIC[task].replace("_", " ")
    if outcome.tried:
        say(f"candidate {outcome.name}: held-out {metric} {outcome.selection:.4f}, validation "
            f"{outcome.validation:.4f} ({outcome.seconds:.1f} s)")
    else:
        warn(f"candidate {outcome.name}: {outcome.note}")


def saved(outcome: Outcome) -> dict:
    """What the checkpoint keeps of a finished candidate (tensors, numbers, strings, lists: weights_only)."""
    return {"row": {key: getattr(outcome, key) for key in (
                "name", "changed", "seconds", "selection", "selection_loss", "validation", "note", "ruled_out",
                "head_kind", "head_fit", "val_loss", "best_epoch", "settings")},
            "held_logits": outcome.held_logits, "val_logits": outcome.val_logits,
            "history": [list(astuple(r)) for r in outcome.history],
            "head": outcome.head.state_dict() if outcome.head is not None else None,
            "backbone": outcome.backbone.state_dict() if outcome.backbone is not None else None,
            "preprocess": outcome.preprocess.to_dict() if outcome.preprocess is not None else None,
            "feature_backbone": outcome.feature_backbone.name if outcome.feature_backbone is not None else None,
            "val_outputs": outcome.val_outputs}


def restored(record: dict, job: Job) -> Outcome:
    """A finished candidate from the checkpoint (see `saved`)."""
    outcome = Outcome(**record["row"], history=[EpochResult(*row) for row in record["history"]],
                      val_outputs=record["val_outputs"], held_logits=record["held_logits"],
                      val_logits=record["val_logits"],
                      preprocess=Preprocess.from_dict(record["preprocess"]) if record["preprocess"] else None,
                      feature_backbone=get_backbone(record["feature_backbone"]) if record.get("feature_backbone")
                      else None)
    if record["head"] is not None:
        outcome.head = build_head(outcome.head_kind, (outcome.feature_backbone or job.backbone).feature_dim,
                                  tasks.output_units(job.task, len(job.dataset.classes)), job.options.hidden,
                                  job.options.dropout, rescale=job.task == "regression")
        outcome.head.load_state_dict(record["head"])
        outcome.head.eval()
    if record["backbone"] is not None:
        outcome.backbone = (outcome.feature_backbone or job.backbone).build_feature_extractor()
        outcome.backbone.load_state_dict(record["backbone"])
    return outcome
