"""losses.py: every registered loss against its formula on a small tensor, finite at extreme logits,
and the registry's errors; the positive weights and repeat-factor sampling against their formulas."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import pytest

from losses import LOSSES, LossSettings, get_loss, label_log_odds, positive_weights
from training import TrainBatches, repeat_factors, repeated_rows
from utils import DataError

LOGITS = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]], dtype="float32")
TARGETS = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.3]], dtype="float32")  # 0.3: a soft (teacher) target
HARD_TARGETS = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype="float32")
SETTINGS = LossSettings(pos_weight=np.array([1.0, 3.0, 10.0], dtype="float32"), focal_gamma=2.0,
                        asl_gamma_neg=4.0, asl_gamma_pos=1.0, asl_clip=0.05, label_counts=np.array([40, 5, 0]),
                        num_texts=100, db_neg_scale=2.0, db_bias_scale=0.05)


def probabilities(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-logits.astype("float64")))


def bce_formula(logits, targets):
    p = probabilities(logits)
    return float(np.mean(-(targets * np.log(p) + (1 - targets) * np.log(1 - p))))


def pos_weight_formula(logits, targets):
    p = probabilities(logits)
    return float(np.mean(-(SETTINGS.pos_weight * targets * np.log(p) + (1 - targets) * np.log(1 - p))))


def focal_formula(logits, targets):
    p, gamma = probabilities(logits), SETTINGS.focal_gamma
    return float(np.mean(-(targets * (1 - p) ** gamma * np.log(p) + (1 - targets) * p ** gamma * np.log(1 - p))))


def asl_formula(logits, targets):
    p = probabilities(logits)
    shifted = np.maximum(p - SETTINGS.asl_clip, 0)
    positive = (1 - p) ** SETTINGS.asl_gamma_pos * np.log(p)
    negative = shifted ** SETTINGS.asl_gamma_neg * np.log(1 - shifted)
    return float(np.mean(-(targets * positive + (1 - targets) * negative)))


def db_formula(logits, targets):
    """Wu et al. 2020 (without their constant 1/2), written per text and label in float64."""
    counts, total, scale, gamma = SETTINGS.label_counts, SETTINGS.num_texts, SETTINGS.db_neg_scale, SETTINGS.focal_gamma
    inverse = 1 / np.maximum(counts, 1)
    prior = np.clip(counts / total, 1e-4, 1 - 1e-4)
    nu = -SETTINGS.db_bias_scale * np.log(prior / (1 - prior))  # the class-specific bias of the paper
    value = 0.0
    for text_logits, text_targets in zip(logits.astype("float64"), targets):
        labelled = text_targets > 0.5
        for label, (z, y) in enumerate(zip(text_logits, text_targets)):
            ratio = inverse[label] / inverse[labelled].sum() if labelled.any() else np.inf
            weight = SETTINGS.db_map_alpha + 1 / (1 + np.exp(-SETTINGS.db_map_beta * (ratio - SETTINGS.db_map_mu)))
            shifted = z - nu[label] / scale
            p, p_negative = probabilities(shifted), probabilities(scale * shifted)
            value += weight * (-y * (1 - p) ** gamma * np.log(p)
                               - (1 - y) * p_negative ** gamma * np.log(1 - p_negative) / scale)
    return float(value / logits.size)


def zlpr_formula(logits, targets):
    per_text = [np.log(1 + np.exp(s[y == 0]).sum()) + np.log(1 + np.exp(-s[y == 1]).sum())
                for s, y in zip(logits.astype("float64"), targets)]
    return float(np.mean(per_text))


FORMULAS = {"bce": (bce_formula, TARGETS), "bce_pos_weight": (pos_weight_formula, TARGETS),
            "focal": (focal_formula, TARGETS), "asl": (asl_formula, TARGETS), "db": (db_formula, TARGETS),
            "zlpr": (zlpr_formula, HARD_TARGETS)}


def test_every_registered_loss_has_a_formula_check():
    assert set(LOSSES) == set(FORMULAS)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_equals_its_formula(name):
    formula, targets = FORMULAS[name]
    value = float(get_loss(name, SETTINGS)(paddle.to_tensor(LOGITS), paddle.to_tensor(targets)))
    assert value == pytest.approx(formula(LOGITS, targets), rel=1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_extreme_logits_give_finite_values_and_gradients(name):
    """Logits of +-100, right and wrong: float32 sigmoid saturates to exactly 0 and 1 there."""
    logits = paddle.to_tensor(np.array([[100.0, -100.0, 100.0, -100.0, 0.0]], dtype="float32"), stop_gradient=False)
    targets = paddle.to_tensor(np.array([[1.0, 0.0, 0.0, 1.0, 1.0]], dtype="float32"))
    settings = LossSettings(pos_weight=np.full(5, 2.0, dtype="float32"), asl_gamma_pos=1.0,
                            label_counts=np.array([3, 0, 1, 9, 10]), num_texts=10)
    loss = get_loss(name, settings)(logits, targets)
    loss.backward()
    assert np.isfinite(float(loss)) and np.all(np.isfinite(logits.grad.numpy())), (float(loss), logits.grad.numpy())
    assert float(loss) > 1.0  # the two wrong answers at 100 cost something
    grad = logits.grad.numpy()[0]
    assert grad[3] < 0  # the missed positive is pulled up
    # and the wrong negative down, except by asl: its shifted probability log(1 - p + clip) has the
    # derivative p(1 - p) / (1 - p + clip), about e^-100 at a logit of 100, exactly as in the paper
    assert grad[2] > 0 or name == "asl"


def test_zlpr_decides_at_logit_zero():
    """The loss falls as positives rise above 0 and negatives fall below, so sigmoid > 0.5 is its rule."""
    loss = get_loss("zlpr")
    targets = paddle.to_tensor([[1.0, 0.0]])
    values = [float(loss(paddle.to_tensor([[margin, -margin]]), targets)) for margin in (-2.0, 0.0, 2.0, 8.0)]
    assert values == sorted(values, reverse=True)
    assert values[1] == pytest.approx(2 * np.log(2))  # both at the boundary


def test_db_weights_a_texts_rarest_label_most_and_a_text_without_labels_fully():
    """The rebalancing weight alone (gamma 0, no shift, no negative scaling): the per-element loss over
    its BCE is alpha + sigmoid(beta * (r - mu))."""
    settings = LossSettings(label_counts=np.array([90, 10, 0]), num_texts=100, focal_gamma=0.0, db_bias_scale=0.0,
                            db_neg_scale=1.0)
    loss = get_loss("db", settings)
    targets = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype="float32")
    logits = np.zeros((2, 3), dtype="float32")
    per_element = [float(loss(paddle.to_tensor(logits[[row], :]), paddle.to_tensor(targets[[row], :]))) * 3 / np.log(2)
                   for row in (0, 1)]
    ratios = np.array([1 / 90, 1 / 10, 1.0]) / (1 / 90 + 1 / 10)
    expected = 0.1 + 1 / (1 + np.exp(-10 * (ratios - 0.05)))
    assert per_element[0] == pytest.approx(expected.sum(), rel=1e-5)
    assert per_element[1] == pytest.approx(3 * 1.1, rel=1e-5)  # no labels: the largest weight, for every label
    assert expected[1] > expected[0]  # the text's rare label weighs more than its frequent one


def test_label_log_odds_is_finite_for_absent_and_universal_labels():
    values = label_log_odds(np.array([0.0, 0.5, 1.0]))
    assert values.tolist() == pytest.approx([np.log(1e-4 / (1 - 1e-4)), 0.0, np.log((1 - 1e-4) / 1e-4)], rel=1e-5)


def test_positive_weights_formula_and_clip():
    counts = np.array([50, 1, 0, 100])  # 100 texts: frequent, rare, absent, in every text
    weights = positive_weights(counts, 100, max_weight=10.0)
    assert weights.tolist() == pytest.approx([1.0, np.sqrt(99), 10.0, 1.0])
    assert np.all(np.isfinite(weights))


def test_registry_errors():
    with pytest.raises(DataError, match="unknown loss 'dice'; registered losses: bce, bce_pos_weight, focal, asl, db, zlpr"):
        get_loss("dice")
    with pytest.raises(DataError, match="bce_pos_weight needs per-label weights"):
        get_loss("bce_pos_weight")
    with pytest.raises(DataError, match="db needs the label counts"):
        get_loss("db")


def test_repeat_factors_formula():
    targets = np.zeros((100, 4), dtype="float32")
    targets[:50, 0] = 1  # share 0.5
    targets[50:51, 1] = 1  # share 0.01
    targets[51, 2] = targets[0, 2] = 1  # share 0.02; text 0 has a frequent and a rarer label
    targets[52:60, 3] = 1  # share 0.08: above the threshold
    factors = repeat_factors(targets, threshold=0.04)
    assert factors[1] == 1.0 and factors[99] == 1.0  # frequent label only; no labels
    assert factors[50] == pytest.approx(np.sqrt(0.04 / 0.01))  # 2
    assert factors[0] == factors[51] == pytest.approx(np.sqrt(0.04 / 0.02))  # the rarer label decides
    assert factors[52] == 1.0  # sqrt(0.04 / 0.08) < 1 is raised to 1


def test_repeat_sampling_that_changes_nothing_says_which_threshold_would(caplog):
    from training import text_repeats

    targets = np.zeros((1000, 3), dtype="float32")
    targets[:500, 0], targets[500:, 1], targets[:20, 2] = 1, 1, 1  # the rarest label in 2% of the texts
    assert np.all(text_repeats(targets, 0.01) == 1.0)  # train.py's default --repeat_threshold
    assert "2.00%" in caplog.text and "--repeat_threshold 0.2" in caplog.text and "about 3 times" in caplog.text
    caplog.clear()
    assert text_repeats(targets, 0.2)[:20] == pytest.approx(np.sqrt(10))
    assert "adds less than 1%" not in caplog.text
    assert np.all(text_repeats(np.zeros((10, 3), dtype="float32"), 0.2) == 1.0)  # no label to suggest for
    caplog.clear()
    assert np.all(text_repeats(targets[:, :2], 0.01) == 1.0)  # both labels in half of the texts
    assert "50.00%" in caplog.text and "No label is rare enough" in caplog.text


def test_repeated_rows_match_the_factors_and_keep_the_epoch_size():
    factors = np.array([1.0, 1.0, 2.5, 4.0, 1.0, 1.5])
    counts = np.zeros(len(factors))
    epochs = 4000
    for epoch in range(epochs):
        rows = repeated_rows(factors, np.random.default_rng(epoch))
        assert len(rows) == 11  # round(sum) every epoch
        per_epoch = np.bincount(rows, minlength=len(factors))
        assert np.all((per_epoch == np.floor(factors)) | (per_epoch == np.ceil(factors)))
        counts += per_epoch
    assert counts / epochs == pytest.approx(factors, abs=0.03)


def test_repeat_sampling_shards_equally_over_processes():
    lengths = np.arange(40) % 7 + 3
    repeats = np.where(np.arange(40) < 5, 3.0, 1.0)
    shards = [TrainBatches(lengths, 4, lambda batch: batch, seed=1, num_replicas=2, rank=rank, repeats=repeats)
              for rank in (0, 1)]
    first, second = (shard.indices() for shard in shards)
    assert len(first) == len(second) == len(shards[0]) == 7  # 50 rows, 13 batches, padded to 14 over 2 ranks
    rows = [row for batch in first + second for row in batch]
    assert np.bincount(rows, minlength=40)[:5].sum() >= 15  # the five rare texts three times each


def test_train_gives_db_the_label_counts_of_the_training_texts():
    """train.py's settings for --loss db: counts and text total from the training targets, so a label
    absent from train.txt still gets a finite shift and weight."""
    import train

    args = train.parser.parse_args(["--dataset_dir", "data", "--loss", "db", "--db_neg_scale", "3",
                                    "--db_bias_scale", "0.1"])
    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype="float32")
    settings = train.loss_settings(args, targets, Path("label.txt"))
    assert settings.label_counts.tolist() == [3, 1, 0] and settings.num_texts == 4
    assert (settings.db_neg_scale, settings.db_bias_scale) == (3.0, 0.1)
    logits = paddle.to_tensor(np.array([[5.0, -5.0, 0.0]] * 4, dtype="float32"), stop_gradient=False)
    loss = get_loss("db", settings)(logits, paddle.to_tensor(targets))
    loss.backward()
    assert np.isfinite(float(loss)) and np.all(np.isfinite(logits.grad.numpy()))
