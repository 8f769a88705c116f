"""MetricReport equals scikit-learn; threshold tuning finds each label's best cut."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from metric import MetricReport, tune_thresholds


def random_case(seed: int, n: int = 300, c: int = 7):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < rng.random(c) * 0.5).astype("float32")
    labels[:, -1] = 0  # a label absent from the data counts as F1 0 in the macro average
    probs = np.clip(labels * 0.4 + rng.random((n, c)) * 0.6, 0, 1).astype("float32")
    return probs, labels


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("per_label", [False, True])
def test_equals_sklearn(seed, per_label):
    probs, labels = random_case(seed)
    thresholds = np.random.default_rng(seed).uniform(0.2, 0.8, probs.shape[1]) if per_label else 0.5
    preds = probs > thresholds
    metric = MetricReport(decision=thresholds)
    for start in range(0, len(probs), 64):  # batched updates
        metric.update(probs[start:start + 64], labels[start:start + 64])
    figures = metric.figures()
    for avg in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(labels, preds, average=avg, zero_division=0)
        assert figures[f"{avg}_precision"] == pytest.approx(p)
        assert figures[f"{avg}_recall"] == pytest.approx(r)
        assert figures[f"{avg}_f1"] == pytest.approx(f)
    assert metric.accumulate() == (pytest.approx(f1_score(labels, preds, average="micro", zero_division=0)),
                                   pytest.approx(f1_score(labels, preds, average="macro", zero_division=0)))
    p, r, f, s = precision_recall_fscore_support(labels, preds, average=None, zero_division=0)
    assert np.allclose(figures["per_class"]["f1"], f) and figures["per_class"]["support"] == s.tolist()
    assert np.allclose(figures["per_class"]["precision"], p) and np.allclose(figures["per_class"]["recall"], r)
    assert figures["accuracy"] == pytest.approx(accuracy_score(labels, preds))


def test_strict_greater_than_rule_and_reset():
    metric = MetricReport(decision=0.5)
    metric.update(np.array([[0.5, 0.51]]), np.array([[1, 1]]))
    assert metric.figures()["per_class"]["recall"] == [0.0, 1.0]
    metric.reset()
    with pytest.raises(ValueError):
        metric.figures()


def objective(probs, labels, thresholds) -> float:
    """(micro F1 + macro F1) / 2 by MetricReport (itself checked against scikit-learn above; 3,000 evaluations
    per case make scikit-learn's validation the slowest part of the suite)."""
    metric = MetricReport(decision=thresholds)
    metric.update(probs, labels)
    return sum(metric.accumulate()) / 2


@pytest.mark.parametrize("seed", range(3))
def test_tuned_thresholds_are_a_coordinate_optimum_of_micro_plus_macro(seed):
    probs, labels = random_case(seed, n=200)
    labels[:4, 0], labels[4:, 0] = 1, 0  # label 0: too little support to tune
    tuned = tune_thresholds(probs, labels, default=0.5, min_support=5)
    best = objective(probs, labels, tuned)
    assert best > objective(probs, labels, np.full(probs.shape[1], 0.5)) + 0.01
    assert tuned[0] == 0.5 and tuned[-1] == 0.5  # labels 0 and 6 have fewer than 5 positives
    for j in range(1, probs.shape[1] - 1):  # no single label's threshold can do better
        for t in np.concatenate([[0.0], np.unique(probs[:, j])]):
            trial = tuned.copy()
            trial[j] = t
            assert objective(probs, labels, trial) <= best + 1e-9


def test_tuning_cuts_between_adjacent_floats():
    low = np.float32(0.3)
    high = np.nextafter(low, np.float32(1))
    probs = np.array([[high], [low], [0.1], [0.1], [0.1], [0.1]], dtype="float32")
    labels = np.array([[1], [0], [0], [0], [0], [0]], dtype="float32")
    tuned = tune_thresholds(probs, labels, default=0.2, min_support=1)  # 0.2 predicts high and low
    assert list(probs[:, 0] > tuned[0]) == [True, False, False, False, False, False]


def test_report_logs_every_class(caplog):
    metric = MetricReport(decision=0.5, label_names=["离婚", "子女"])
    metric.update(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[1, 0], [0, 0]]))
    metric.report()
    assert "离婚    1.0000    1.0000    1.0000         1" in caplog.text
    assert "macro avg    0.5000    0.5000    0.5000         1" in caplog.text
