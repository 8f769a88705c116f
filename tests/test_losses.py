"""losses.py: every registered loss against its formula on a small tensor, and the registry's errors."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from losses import LOSSES, get_loss
from utils import DataError

LOGITS = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]], dtype="float32")
TARGETS = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.3]], dtype="float32")  # 0.3: a soft (teacher) target


def bce_formula(logits: np.ndarray, targets: np.ndarray) -> float:
    probs = 1 / (1 + np.exp(-logits.astype("float64")))
    return float(np.mean(-(targets * np.log(probs) + (1 - targets) * np.log(1 - probs))))


FORMULAS = {"bce": bce_formula}


def test_every_registered_loss_has_a_formula_check():
    assert set(LOSSES) == set(FORMULAS)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_equals_its_formula(name):
    value = float(get_loss(name)(paddle.to_tensor(LOGITS), paddle.to_tensor(TARGETS)))
    assert value == pytest.approx(FORMULAS[name](LOGITS, TARGETS), rel=1e-6)


def test_unknown_loss_names_the_registered_ones():
    with pytest.raises(DataError, match="unknown loss 'focal'; registered losses: bce"):
        get_loss("focal")
