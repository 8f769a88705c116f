"""The registry of training losses: a name -> a function of (logits, targets) -> scalar loss.

Training, the evaluation loss logged on dev, pruning's importance scores and distillation all take
their loss from here, so a new loss changes every one of them at once. Targets are multi-hot
[batch, labels] floats; soft targets (a teacher's probabilities) are allowed.
"""
from __future__ import annotations

from typing import Callable

import paddle
import paddle.nn.functional as F

from utils import DataError

LossFunction = Callable[[paddle.Tensor, paddle.Tensor], paddle.Tensor]


def binary_cross_entropy(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
    """Mean over texts and labels of the per-label sigmoid cross-entropy: each label is its own
    yes/no question, as in the reference (BCEWithLogitsLoss)."""
    return F.binary_cross_entropy_with_logits(logits, paddle.cast(targets, logits.dtype))


LOSSES: dict[str, LossFunction] = {
    "bce": binary_cross_entropy,
}


def get_loss(name: str) -> LossFunction:
    if name not in LOSSES:
        raise DataError(f"unknown loss {name!r}; registered losses: {', '.join(LOSSES)}")
    return LOSSES[name]
