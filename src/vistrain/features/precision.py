"""The arithmetic features are computed in, by name and identity: used by every layer that computes, caches or
records features, so that none of them needs the int8 machinery (`int8.py`) to name a precision. Plain Python
(no numpy, no torch): the command line offers these names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vistrain.core.files import sha256_text

PRECISIONS = ("fp32", "int8")
AUTO = "auto"  # int8 where the CPU has int8 dot products, else fp32 (cpu.resolve_precision)
FIRST_CONVS_KEPT = 3  # convolutions int8.py leaves in fp32 at the start of the network (part of `Precision.key`)


@dataclass(frozen=True)
class Precision:
    """The arithmetic features are computed in: fp32, or int8 with ranges from `calibration`, the (path, SHA-256)
    of the training images that set them."""

    name: str = "fp32"
    calibration: tuple[tuple[str, str], ...] = ()
    saved_models: Path | None = field(default=None, compare=False)  # a run's int8 models (int8.saved_model)

    def __post_init__(self) -> None:
        if self.name not in PRECISIONS:
            raise ValueError(f"unknown precision {self.name!r}; precisions: {', '.join(PRECISIONS)}")
        if (self.name == "int8") != bool(self.calibration):
            raise ValueError("int8 features need calibration images, and only they do")

    @property
    def key(self) -> str:
        """The int8 model's identity: its calibration images' digests, sorted, and the convolutions left in fp32."""
        digests = sorted({digest for _, digest in self.calibration})
        return sha256_text(json.dumps([digests, FIRST_CONVS_KEPT]))

    def identity(self) -> dict | None:
        """What distinguishes these features in a feature-cache key; None for fp32, the key of earlier versions."""
        return {"precision": self.name, "calibration": self.key} if self.name != "fp32" else None


FP32 = Precision()
