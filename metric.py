"""Multi-label metrics of the labels a decision (decision.py) or a threshold chooses.

Keeps only per-label counts (true/false positives, false negatives), so memory does not grow
with the number of examples and every update is linear in its batch. Figures equal
scikit-learn's `precision_recall_fscore_support` / `accuracy_score` with `zero_division=0`.
The counts stay in NumPy because scikit-learn measured 8x to over 100x slower (docs/benchmarks.md)
per evaluation (per-batch `multilabel_confusion_matrix` or one final `precision_recall_fscore_support`)
at both 20 and 5,000 labels.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import paddle
from paddlenlp.utils.log import logger

from decision import NO_CALIBRATION, Decision, calibration_error, fit_calibration

# A label needs at least this many positive dev examples to get its own tuned threshold.
MIN_TUNING_SUPPORT = 5
LISTED_LABELS = 30  # more labels than this are summarised in logs, listed in files
LOGGED_EACH = 10


def _safe_div(num, den):
    num, den = np.asarray(num, dtype="float64"), np.asarray(den, dtype="float64")
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _to_numpy(x) -> np.ndarray:
    return x.numpy() if isinstance(x, paddle.Tensor) else np.asarray(x)


class MetricReport(paddle.metric.Metric):
    """Micro/macro precision, recall and F1, subset accuracy and per-class figures."""

    def __init__(self, name: str = "MetricReport", average: str = "micro", decision: Decision | float = 0.5,
                 label_names: Sequence[str] | None = None):
        """`decision` decides the labels that are scored: a Decision, or thresholds (one for every label
        or one per label) alone."""
        super().__init__()
        self._name = name
        self.average = average
        self.decision = decision
        self.label_names = list(label_names) if label_names is not None else None
        self.reset()

    def reset(self) -> None:
        self.tp = self.fp = self.fn = self.support = None
        self.num_examples = 0
        self.exact_matches = 0

    def update(self, probs, labels) -> None:
        probs, labels = _to_numpy(probs), _to_numpy(labels) > 0.5
        decision = self.decision
        if not isinstance(decision, Decision):
            decision = Decision(np.broadcast_to(np.asarray(decision, dtype=probs.dtype), probs.shape[1:]))
        preds = decision.chosen(probs)
        counts = ((preds & labels).sum(0), (preds & ~labels).sum(0), (~preds & labels).sum(0), labels.sum(0))
        self.add_counts(counts, exact_matches=int((preds == labels).all(1).sum()), num_examples=len(probs))

    def add_counts(self, counts: tuple[np.ndarray, ...], exact_matches: int, num_examples: int) -> None:
        """Accumulate one batch's per-label (tp, fp, fn, support) and its exactly matched rows."""
        if self.tp is None:
            self.tp, self.fp, self.fn, self.support = (c.astype("int64") for c in counts)
        else:
            for total, batch in zip((self.tp, self.fp, self.fn, self.support), counts):
                total += batch
        self.num_examples += num_examples
        self.exact_matches += exact_matches

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
        """Log a per-class table like scikit-learn's classification_report (with many labels, only
        the most frequent and the worst; see `labels_to_log`)."""
        figures = self.figures()
        per_class = figures["per_class"]
        names = self.label_names or [str(i) for i in range(len(per_class["f1"]))]
        shown = labels_to_log(per_class)
        width = max(12, *(len(names[i]) * 2 for i in shown))
        lines = [f"{'':{width}s} precision    recall  f1-score   support"]
        if len(shown) < len(names):
            lines.insert(0, shortened_list_note(len(names)))
        for i in shown:
            name = names[i]
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


def labels_to_log(per_class: dict) -> list[int]:
    """Label ids for a log: all of them up to LISTED_LABELS, else the LOGGED_EACH most frequent and the
    LOGGED_EACH with the lowest F1 among those with support (a log line per label of thousands helps
    nobody; the files written beside have every label)."""
    support, f1 = np.asarray(per_class["support"]), np.asarray(per_class["f1"])
    if len(support) <= LISTED_LABELS:
        return list(range(len(support)))
    frequent = np.argsort(-support, kind="stable")[:LOGGED_EACH]
    with_support = np.flatnonzero(support > 0)
    worst = with_support[np.argsort(f1[with_support], kind="stable")][:LOGGED_EACH]
    return list(dict.fromkeys([*frequent.tolist(), *worst.tolist()]))


def shortened_list_note(num_labels: int) -> str:
    """The line that says a per-label log shows `labels_to_log`'s choice, not every label."""
    return f"{num_labels} labels: the {LOGGED_EACH} most frequent and the {LOGGED_EACH} worst by F1 below"


def tune_thresholds(probs: np.ndarray, labels: np.ndarray, default: float,
                    min_support: int = MIN_TUNING_SUPPORT, max_rounds: int = 10) -> np.ndarray:
    """Per-label thresholds that maximise (micro F1 + macro F1) / 2 on (dev) data.

    Maximising each label's own F1 in isolation floods rare labels with false positives (on the
    divorce set a label with 6 dev positives got threshold 0.006) and cost 7 points of micro F1.
    Instead, coordinate ascent: one label at a time, every cut between its sorted probabilities is
    scored with the other labels fixed, until no label changes. Labels with fewer than
    `min_support` positives keep `default`: a threshold fitted to a handful would not generalise.
    Running totals make one round linear in labels x examples, so thousands of labels tune in seconds.
    """
    labels = labels > 0.5
    num_examples, num_labels = probs.shape
    thresholds = np.full(num_labels, default, dtype="float32")
    preds = probs > thresholds
    tp, fp, fn = (preds & labels).sum(0), (preds & ~labels).sum(0), (~preds & labels).sum(0)
    label_f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    tp_total, fp_total, fn_total, f1_total = int(tp.sum()), int(fp.sum()), int(fn.sum()), float(label_f1.sum())
    tunable = np.flatnonzero(labels.sum(0) >= min_support)
    orders = np.argsort(-probs[:, tunable], axis=0, kind="stable")  # once: time stays labels x examples
    positions = np.arange(num_examples + 1)
    for _ in range(max_rounds):
        changed = False
        for column, j in enumerate(tunable):
            order = orders[:, column]
            sorted_probs = probs[order, j]
            tp_k = np.concatenate([[0], np.cumsum(labels[order, j])])  # predict the top k as positive
            fp_k, fn_k = positions - tp_k, tp_k[-1] - tp_k
            tp_rest, fp_rest, fn_rest = tp_total - tp[j], fp_total - fp[j], fn_total - fn[j]
            micro = _safe_div(2 * (tp_rest + tp_k), 2 * (tp_rest + tp_k) + fp_rest + fp_k + fn_rest + fn_k)
            macro = (f1_total - label_f1[j] + _safe_div(2 * tp_k, 2 * tp_k + fp_k + fn_k)) / num_labels
            # a cut is only possible between distinct probabilities (the rule is prob > threshold)
            cuttable = np.concatenate([[True], sorted_probs[:-1] > sorted_probs[1:], [True]])
            score = np.where(cuttable, (micro + macro) / 2, -1.0)
            current = int((probs[:, j] > thresholds[j]).sum())
            best = int(np.argmax(score))
            if score[best] <= score[current] + 1e-12:
                continue
            upper = sorted_probs[best - 1] if best > 0 else 1.0
            lower = sorted_probs[best] if best < num_examples else 0.0
            middle = np.float32((float(upper) + float(lower)) / 2)
            thresholds[j] = middle if lower <= middle < upper else lower  # adjacent floats: cut at lower
            tp_total, fp_total, fn_total = tp_rest + tp_k[best], fp_rest + fp_k[best], fn_rest + fn_k[best]
            tp[j], fp[j], fn[j] = tp_k[best], fp_k[best], fn_k[best]
            new_f1 = float(_safe_div(2 * tp[j], 2 * tp[j] + fp[j] + fn[j]))
            f1_total += new_f1 - label_f1[j]
            label_f1[j] = new_f1
            changed = True
        if not changed:
            break
    return thresholds


def fit_decision_on_dev(decision: Decision, logits: np.ndarray, targets: np.ndarray, label_list: Sequence[str],
                        tune_from: float | None = None, calibration_method: str | None = None) -> tuple[Decision, dict]:
    """The decision refitted on dev logits: per-label thresholds tuned from the global `tune_from` (on
    the uncalibrated scale, as they always were), then a new calibration of `calibration_method`
    (thresholds move with it, so the labels stay those of the thresholds; "none" removes a calibration,
    None keeps the stored one). Logs and returns the dev figures: F1 before/after tuning, ECE and Brier
    score before/after calibration."""
    results: dict = {}
    raw = decision.calibrated(None)
    raw_probs = raw.probabilities(logits)
    if tune_from is not None:
        tuned = tune_thresholds(raw_probs, targets, tune_from)
        results["tuned_dev"] = report_thresholds(raw_probs, targets, np.full(len(label_list), tune_from), tuned,
                                                 label_list)
        raw = dataclasses.replace(raw, thresholds=tuned)
    calibration = None if calibration_method == NO_CALIBRATION else decision.calibration
    fitting = calibration_method not in (None, NO_CALIBRATION)
    if fitting:
        calibration, unfitted = fit_calibration(logits, targets, calibration_method)
        if unfitted:
            names = ", ".join(label_list[i] for i in unfitted[:LOGGED_EACH])
            logger.info(f"Calibration: {len(unfitted)} labels have no positive or no negative dev example and keep "
                        f"their probabilities uncalibrated: {names}{' ...' if len(unfitted) > LOGGED_EACH else ''}")
    decision = raw.calibrated(calibration)
    if fitting:
        before, after = calibration_error(raw_probs, targets), calibration_error(decision.probabilities(logits), targets)
        logger.info(f"dev calibration ({calibration_method}): expected calibration error {before['ece']:.4f} -> "
                    f"{after['ece']:.4f}, Brier score {before['brier']:.5f} -> {after['brier']:.5f}")
        results["calibration_dev"] = {"method": calibration_method, "unfitted_labels": len(unfitted),
                                      "ece_before": before["ece"], "ece_after": after["ece"],
                                      "brier_before": before["brier"], "brier_after": after["brier"]}
    results["thresholds"] = [float(t) for t in decision.thresholds]
    return decision, results


def report_thresholds(probs, labels, global_thresholds, tuned, label_list) -> dict:
    """Log dev F1 with the global and the tuned thresholds; returns the tuned figures."""
    for name, values in (("global", global_thresholds), ("tuned", tuned)):
        metric = MetricReport(decision=values)
        metric.update(probs, labels)
        micro_f1, macro_f1 = metric.accumulate()
        logger.info(f"dev with {name} thresholds: micro f1 score: {micro_f1:.5f}, macro f1 score: {macro_f1:.5f}")
    if len(label_list) <= LISTED_LABELS:
        logger.info("thresholds: " + ", ".join(f"{n}={t:.3f}" for n, t in zip(label_list, tuned)))
    else:
        moved = tuned != global_thresholds
        logger.info(f"thresholds: {int(moved.sum())} of {len(label_list)} labels tuned (min {tuned.min():.3f}, "
                    f"median {np.median(tuned):.3f}, max {tuned.max():.3f}); every label's in config.json")
    return {"micro_f1": micro_f1, "macro_f1": macro_f1}
