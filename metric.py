"""Multi-label metrics with one global or per-label decision threshold.

Keeps only per-label counts (true/false positives, false negatives), so memory does not grow
with the number of examples and every update is linear in its batch. Figures equal
scikit-learn's `precision_recall_fscore_support` / `accuracy_score` with `zero_division=0`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import paddle
from paddlenlp.utils.log import logger

# A label needs at least this many positive dev examples to get its own tuned threshold.
MIN_TUNING_SUPPORT = 5


def _safe_div(num, den):
    num, den = np.asarray(num, dtype="float64"), np.asarray(den, dtype="float64")
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _to_numpy(x) -> np.ndarray:
    return x.numpy() if isinstance(x, paddle.Tensor) else np.asarray(x)


class MetricReport(paddle.metric.Metric):
    """Micro/macro precision, recall and F1, subset accuracy and per-class figures."""

    def __init__(self, name: str = "MetricReport", average: str = "micro", thresholds=0.5,
                 label_names: Sequence[str] | None = None):
        super().__init__()
        self._name = name
        self.average = average
        self.thresholds = thresholds
        self.label_names = list(label_names) if label_names is not None else None
        self.reset()

    def reset(self) -> None:
        self.tp = self.fp = self.fn = self.support = None
        self.num_examples = 0
        self.exact_matches = 0

    def update(self, probs, labels) -> None:
        probs, labels = _to_numpy(probs), _to_numpy(labels) > 0.5
        preds = probs > np.asarray(self.thresholds, dtype=probs.dtype)
        counts = ((preds & labels).sum(0), (preds & ~labels).sum(0), (~preds & labels).sum(0), labels.sum(0))
        if self.tp is None:
            self.tp, self.fp, self.fn, self.support = (c.astype("int64") for c in counts)
        else:
            for total, batch in zip((self.tp, self.fp, self.fn, self.support), counts):
                total += batch
        self.num_examples += len(probs)
        self.exact_matches += int((preds == labels).all(1).sum())

    def figures(self) -> dict:
        """All figures as plain Python values (JSON-ready)."""
        if self.tp is None:
            raise ValueError("MetricReport has seen no examples")
        tp, fp, fn = self.tp, self.fp, self.fn
        precision, recall = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
        f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
        micro_p, micro_r = _safe_div(tp.sum(), (tp + fp).sum()), _safe_div(tp.sum(), (tp + fn).sum())
        return {
            "accuracy": float(_safe_div(self.exact_matches, self.num_examples)),
            "micro_precision": float(micro_p),
            "micro_recall": float(micro_r),
            "micro_f1": float(_safe_div(2 * tp.sum(), (2 * tp + fp + fn).sum())),
            "macro_precision": float(precision.mean()),
            "macro_recall": float(recall.mean()),
            "macro_f1": float(f1.mean()),
            "per_class": {
                "precision": precision.tolist(),
                "recall": recall.tolist(),
                "f1": f1.tolist(),
                "support": self.support.tolist(),
            },
            "num_examples": self.num_examples,
        }

    def accumulate(self) -> tuple[float, float]:
        figures = self.figures()
        return figures["micro_f1"], figures["macro_f1"]

    def report(self) -> None:
        """Log a per-class table like scikit-learn's classification_report."""
        figures = self.figures()
        per_class = figures["per_class"]
        names = self.label_names or [str(i) for i in range(len(per_class["f1"]))]
        width = max(12, *(len(n) * 2 for n in names))
        lines = [f"{'':{width}s} precision    recall  f1-score   support"]
        for i, name in enumerate(names):
            pad = width - len(name)  # CJK characters take two columns
            lines.append(f"{' ' * pad}{name} {per_class['precision'][i]:9.4f} {per_class['recall'][i]:9.4f} "
                         f"{per_class['f1'][i]:9.4f} {per_class['support'][i]:9d}")
        total = sum(per_class["support"])
        for avg in ("micro", "macro"):
            lines.append(f"{avg + ' avg':>{width}s} {figures[avg + '_precision']:9.4f} "
                         f"{figures[avg + '_recall']:9.4f} {figures[avg + '_f1']:9.4f} {total:9d}")
        logger.info("classification report:\n" + "\n".join(lines))

    def name(self) -> str:
        return self._name


def tune_thresholds(probs: np.ndarray, labels: np.ndarray, default: float,
                    min_support: int = MIN_TUNING_SUPPORT) -> np.ndarray:
    """Per-label thresholds that maximise each label's F1 on (dev) data.

    For each label the candidate cuts lie midway between consecutive sorted probabilities, so the
    rule `prob > threshold` reproduces the best cut exactly. Labels with fewer than `min_support`
    positives keep `default`: a threshold fitted to two examples would not generalise.
    """
    labels = labels > 0.5
    thresholds = np.full(probs.shape[1], default, dtype="float32")
    for j in range(probs.shape[1]):
        positives = int(labels[:, j].sum())
        if positives < min_support:
            continue
        order = np.argsort(-probs[:, j], kind="stable")
        sorted_probs, sorted_true = probs[order, j], labels[order, j]
        tp = np.cumsum(sorted_true)  # predicting the top k+1 as positive
        k = np.arange(1, len(order) + 1)
        f1 = 2 * tp / (k + positives)
        # only cut between distinct probabilities, otherwise the rule cannot separate them
        valid = np.append(sorted_probs[:-1] > sorted_probs[1:], True)
        best = int(np.argmax(np.where(valid, f1, -1)))
        below = sorted_probs[best + 1] if best + 1 < len(order) else 0.0
        thresholds[j] = (sorted_probs[best] + below) / 2
    return thresholds
