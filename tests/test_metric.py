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
    metric = MetricReport(thresholds=thresholds)
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
    metric = MetricReport(thresholds=0.5)
    metric.update(np.array([[0.5, 0.51]]), np.array([[1, 1]]))
    assert metric.figures()["per_class"]["recall"] == [0.0, 1.0]
    metric.reset()
    with pytest.raises(ValueError):
        metric.figures()


@pytest.mark.parametrize("seed", range(3))
def test_tuned_thresholds_reach_the_best_f1_of_every_label(seed):
    probs, labels = random_case(seed)
    tuned = tune_thresholds(probs, labels, default=0.5, min_support=5)
    _, _, tuned_f1, _ = precision_recall_fscore_support(labels, probs > tuned, average=None, zero_division=0)
    for j in range(probs.shape[1]):
        best = max(f1_score(labels[:, j], probs[:, j] > t, zero_division=0) for t in np.unique(probs[:, j]))
        if labels[:, j].sum() >= 5:
            assert tuned_f1[j] == pytest.approx(best)
        else:  # too little support: keeps the global value
            assert tuned[j] == 0.5


def test_report_logs_every_class(caplog):
    metric = MetricReport(thresholds=0.5, label_names=["离婚", "子女"])
    metric.update(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[1, 0], [0, 0]]))
    metric.report()
    assert "离婚    1.0000    1.0000    1.0000         1" in caplog.text
    assert "macro avg    0.5000    0.5000    0.5000         1" in caplog.text
