"""Linear models on cached features, fitted in closed form by scikit-learn: what the `logistic` head is made of and
what `audit` predicts every image with.

Features are standardised (mean and standard deviation of the training rows, the deviation floored so that a
feature almost constant in a few images cannot blow up in another); classes and labels get a logistic regression
whose strength C is chosen by an inner cross-validation on log loss; regression targets a ridge regression whose
alpha is chosen by leave-one-out. Many small fits: BLAS threads are held to one (`threadpool_limits`), which on a
busy machine is ten times faster than letting them contend.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from vistrain.data.samples import SINGLE_LABEL

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 1.0)  # logistic regression strengths tried by the inner cross-validation
ALPHAS = np.logspace(-1, 6, 15)  # ridge regression strengths
OFFSET_GRID = np.round(np.arange(-2.0, 2.01, 0.2), 2)


@dataclass
class Scaling:
    """Per-feature mean and (floored) standard deviation of the training rows."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Scaling":
        std = x.std(0)
        return cls(x.mean(0), np.maximum(std, 0.1 * np.median(std) + 1e-12))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


@dataclass
class LinearFit:
    """Weights (outputs x features) and bias for standardised features; `strength` is C (logistic) or alpha
    (ridge); `offsets`, added to a multi-class bias, are the decision rule tuned for macro F1."""

    scaling: Scaling
    weight: np.ndarray
    bias: np.ndarray
    strength: float
    offsets: np.ndarray | None = None


def _logistic(strength: float) -> LogisticRegression:
    return LogisticRegression(C=strength, max_iter=1000)


def _fit_rows(x: np.ndarray, targets: np.ndarray, task: str, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) on already standardised x: one row for binary (the second class's logit), one per class or
    label, or one per regression target."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if task == "regression":
            model = RidgeCV(alphas=ALPHAS).fit(x, targets)
            return np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_)
        if task in SINGLE_LABEL:
            model = _logistic(strength).fit(x, targets)
            return model.coef_, model.intercept_
        rows, biases = [], []
        for j in range(targets.shape[1]):
            y = targets[:, j]
            if len(np.unique(y)) < 2:  # a label always (or never) present in these rows: a constant
                rows.append(np.zeros(x.shape[1]))
                biases.append(20.0 if y[0] > 0.5 else -20.0)
                continue
            model = _logistic(strength).fit(x, y)
            rows.append(model.coef_[0])
            biases.append(model.intercept_[0])
        return np.array(rows), np.array(biases)


def _outputs(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, task: str) -> np.ndarray:
    """What `tasks.outputs` gives for these logits: probabilities (binary as two columns) or values."""
    logits = x @ weight.T + bias
    if task == "regression":
        return logits
    if task == "multilabel" or logits.shape[1] == 1:  # labels, or two classes as the second one's logit
        p = 1 / (1 + np.exp(-np.clip(logits, -50, 50)))
        return p if task == "multilabel" else np.hstack([1 - p, p])
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def choose_strength(x: np.ndarray, targets: np.ndarray, task: str, seed: int) -> float:
    """The C of C_GRID with the lowest 3-fold log loss (multi-label: on its first label with both values); 0.1
    when there are too few images of a class to tell."""
    y = targets if task in SINGLE_LABEL else next(
        (targets[:, j].astype(int) for j in range(targets.shape[1]) if len(np.unique(targets[:, j])) == 2), None)
    if y is None or np.bincount(y).min() < 3:
        return 0.1
    losses = dict.fromkeys(C_GRID, 0.0)
    for train, held in StratifiedKFold(3, shuffle=True, random_state=seed).split(x, y):
        scaling = Scaling.fit(x[train])
        for c in C_GRID:
            weight, bias = _fit_rows(scaling(x[train]), y[train], "multiclass", c)
            p = _outputs(scaling(x[held]), weight, bias, "multiclass")  # every class is in every training fold
            losses[c] -= np.log(np.clip(p[np.arange(len(held)), y[held]], 1e-12, 1)).sum()
    return min(losses, key=losses.get)


def fit_linear(x: np.ndarray, targets: np.ndarray, task: str, seed: int = 0, strength: float | None = None,
               tune_offsets: bool = False) -> LinearFit:
    """A linear model of `targets` on features `x` (regression targets as given: the caller standardises them);
    C chosen by cross-validation unless `strength` is given;
    `tune_offsets` (multi-class): the decision offsets that maximise the macro F1 of cross-validated predictions."""
    with threadpool_limits(1):
        if strength is None and task != "regression":
            strength = choose_strength(x, targets, task, seed)
        scaling = Scaling.fit(x)
        weight, bias = _fit_rows(scaling(x), targets, task, strength or 0.0)
        offsets = None
        if tune_offsets and task == "multiclass":
            _, cross_validated = out_of_sample(x, targets, task, 5, seed, strength)
            offsets = decision_offsets(cross_validated, targets)
    return LinearFit(scaling, weight, bias, float(strength or 0.0), offsets)


def out_of_sample(x: np.ndarray, targets: np.ndarray, task: str, folds: int, seed: int,
                  strength: float | None = None) -> tuple[int, np.ndarray]:
    """(folds used, outputs): each image's class or label probabilities, or values, from a model trained on the
    other folds (stratified for single-label tasks). Fewer folds when a class has fewer images than `folds`."""
    with threadpool_limits(1):
        if task in SINGLE_LABEL:
            folds = max(2, min(folds, int(np.bincount(targets).min()) if len(targets) else 0))
            splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, targets)
        else:
            folds = max(2, min(folds, len(targets)))
            splits = KFold(folds, shuffle=True, random_state=seed).split(x)
        n_outputs = int(targets.max()) + 1 if task in SINGLE_LABEL else targets.shape[1]
        outputs = np.zeros((len(x), n_outputs))
        if strength is None and task != "regression":
            strength = choose_strength(x, targets, task, seed)
        for train, held in splits:
            scaling = Scaling.fit(x[train])
            if task in SINGLE_LABEL:
                model = _logistic(strength).fit(scaling(x[train]), targets[train])
                outputs[np.ix_(held, model.classes_)] = model.predict_proba(scaling(x[held]))
            else:
                weight, bias = _fit_rows(scaling(x[train]), targets[train], task, strength or 0.0)
                outputs[held] = _outputs(scaling(x[held]), weight, bias, task)
    return folds, outputs


def decision_offsets(probabilities: np.ndarray, targets: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Per-class offsets added to the log-probabilities (the first class's stays 0) that maximise macro F1 of
    these predictions, by coordinate ascent over OFFSET_GRID; ties keep the offset nearest 0."""
    logs = np.log(np.clip(probabilities, 1e-12, 1))
    offsets = np.zeros(probabilities.shape[1])

    def macro_f1(candidate: np.ndarray) -> float:
        return f1_score(targets, (logs + candidate).argmax(1), average="macro", zero_division=0)

    for _ in range(rounds):
        for k in range(1, len(offsets)):
            scores = []
            for value in OFFSET_GRID:
                trial = offsets.copy()
                trial[k] = value
                scores.append((macro_f1(trial), -abs(value), value))
            offsets[k] = max(scores)[2]
    return offsets
