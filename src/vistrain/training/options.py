"""Everything a training run can be told, with its default: the one place defaults live (the command line reads
them from here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainOptions:
    """The settings of a training run; the defaults follow the course."""

    backbone: str = "efficientnet_lite0"
    task: str = "auto"
    head: str = "mlp"
    hidden: int = 256
    dropout: float = 0.2
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.001
    val_fraction: float = 0.2
    seed: int = 0
    label_depth: int = 1  # the folder level that names the class: 1 = the top-level folders
    class_weight: str | None = None  # "balanced": loss weights against class imbalance
    sampler: str | None = None  # "balanced": draw batches so that classes come up equally often
    augment_views: int = 0  # augmented versions of each training image whose features are cached and trained on
    fine_tune: int = 0  # then unfreeze the backbone's last this many blocks and train them with the head
    fine_tune_epochs: int = 5
    fine_tune_lr: float | None = None  # the backbone's, while fine-tuning [default: learning_rate / 10]
    patience: int = 3  # fine-tuning stops after this many epochs without a lower validation loss
    precision: str = "auto"  # int8 (the backbone quantised on the training images, features/int8.py) where the CPU
    # has int8 dot products and the backbone stays frozen, else fp32 (features/cpu.py); a run records the one chosen
    feature_stages: tuple[int, ...] = ()  # also pool these stages of the backbone (features from several depths)

    @property
    def backbone_lr(self) -> float:
        return self.fine_tune_lr or self.learning_rate / 10


DEFAULTS = TrainOptions()
