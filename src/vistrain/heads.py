"""The new classification head trained on top of the frozen backbone's pooled features."""

from __future__ import annotations

from torch import nn

HEADS = ("mlp", "linear")


def build_head(kind: str, in_features: int, out_features: int, hidden: int = 256, dropout: float = 0.2) -> nn.Module:
    """`mlp`: dense -> ReLU -> dropout -> output, as in the course; `linear`: dropout -> output.

    Global pooling is the backbone's last step, so it is already applied to the features.
    """
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_features)
        )
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, out_features))
    raise ValueError(f"unknown head {kind!r}; choose one of {', '.join(HEADS)}")
