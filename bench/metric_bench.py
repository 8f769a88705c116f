"""Should MetricReport count with scikit-learn? Times the options side by side to decide.

Usage: python bench/metric_bench.py [--labels 20 5000] [--rows 4000] [--batch_size 32] [--repeats 5]

metric.py's MetricReport accumulates per-label true/false positives, false negatives, support and
exact matches with a few NumPy reductions per batch. This script measures, on random data (fixed
seed), one full evaluation (every batch of --rows rows, then the figures) three ways:

  numpy       the current MetricReport.update per batch + figures();
  sklearn-mcm the same streaming class, but each update takes its per-label counts from
              sklearn.metrics.multilabel_confusion_matrix and its exact matches from accuracy_score;
  sklearn-prfs (not streaming) collects every batch's predictions, then computes the figures once
              with precision_recall_fscore_support (average=None, micro, macro; zero_division=0) and
              accuracy_score.

All three must give the same figures (micro/macro P/R/F1, accuracy, per-class F1) to 1e-12 before
anything is timed. The methods are timed in one process, interleaved over --repeats repetitions
(the order rotates every repetition); the table gives the median milliseconds per evaluation and
the ratio to NumPy. Inputs are NumPy arrays, so the model and Paddle tensors are not part of the cost.
Absolute times depend on the machine; read the ratios.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import sklearn
from sklearn.metrics import accuracy_score, multilabel_confusion_matrix, precision_recall_fscore_support

from metric import MetricReport

ROOT = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--labels", type=int, nargs="+", default=[20, 5000], help="label counts to benchmark")
parser.add_argument("--rows", type=int, default=4000, help="evaluation rows per full evaluation")
parser.add_argument("--batch_size", type=int, default=32, help="rows per update, as in an evaluation loop")
parser.add_argument("--labels_per_row", type=float, default=2.0, help="mean number of positive labels per row")
parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per method (median reported)")
parser.add_argument("--global_threshold", action="store_true", help="one threshold 0.5 instead of one per label")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", default=str(ROOT / "bench/out/metric_bench.md"), help="Markdown table written here")

TOLERANCE = 1e-12


class SklearnMetricReport(MetricReport):
    """MetricReport whose streaming counts come from scikit-learn (the candidate replacement)."""

    def update(self, probs, labels) -> None:
        probs, labels = np.asarray(probs), np.asarray(labels) > 0.5
        preds = probs > np.asarray(self.decision, dtype=probs.dtype)
        mcm = multilabel_confusion_matrix(labels, preds)  # (labels, 2, 2): [[tn, fp], [fn, tp]]
        counts = (mcm[:, 1, 1], mcm[:, 0, 1], mcm[:, 1, 0], mcm[:, 1, 1] + mcm[:, 1, 0])
        self.add_counts(counts, int(accuracy_score(labels, preds, normalize=False)), len(probs))


def make_data(num_rows: int, num_labels: int, labels_per_row: float, global_threshold: bool, seed: int):
    """Random multi-hot labels, probabilities that lean towards them, and thresholds."""
    rng = np.random.default_rng(seed)
    rates = np.clip(rng.random(num_labels) * 2 * labels_per_row / num_labels, 0, 1)
    labels = (rng.random((num_rows, num_labels)) < rates).astype("float32")
    probs = np.clip(labels * 0.4 + rng.random((num_rows, num_labels), dtype="float32") * 0.6, 0, 1)
    thresholds = 0.5 if global_threshold else rng.uniform(0.2, 0.8, num_labels).astype("float32")
    return probs.astype("float32"), labels, thresholds


def batches(probs: np.ndarray, labels: np.ndarray, batch_size: int):
    for start in range(0, len(probs), batch_size):
        yield probs[start:start + batch_size], labels[start:start + batch_size]


def streaming(metric_cls, probs, labels, thresholds, batch_size: int) -> dict:
    metric = metric_cls(decision=thresholds)
    for batch_probs, batch_labels in batches(probs, labels, batch_size):
        metric.update(batch_probs, batch_labels)
    return metric.figures()


def run_numpy(probs, labels, thresholds, batch_size: int) -> dict:
    return streaming(MetricReport, probs, labels, thresholds, batch_size)


def run_sklearn_mcm(probs, labels, thresholds, batch_size: int) -> dict:
    return streaming(SklearnMetricReport, probs, labels, thresholds, batch_size)


def run_sklearn_prfs(probs, labels, thresholds, batch_size: int) -> dict:
    """Collect the predictions batch by batch (as an evaluation loop must), then score them once."""
    all_preds, all_labels = [], []
    threshold_array = np.asarray(thresholds, dtype=probs.dtype)
    for batch_probs, batch_labels in batches(probs, labels, batch_size):
        all_preds.append(batch_probs > threshold_array)
        all_labels.append(batch_labels > 0.5)
    preds, truth = np.concatenate(all_preds), np.concatenate(all_labels)
    figures = {"accuracy": float(accuracy_score(truth, preds))}
    for avg in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(truth, preds, average=avg, zero_division=0)
        figures.update({f"{avg}_precision": float(p), f"{avg}_recall": float(r), f"{avg}_f1": float(f)})
    p, r, f, s = precision_recall_fscore_support(truth, preds, average=None, zero_division=0)
    figures["per_class"] = {"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(), "support": s.tolist()}
    return figures


METHODS = {"numpy": run_numpy, "sklearn-mcm": run_sklearn_mcm, "sklearn-prfs": run_sklearn_prfs}
SCALARS = ("accuracy", "micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1")


def check_same(reference: dict, other: dict, name: str) -> None:
    """Raise (even under python -O) unless `other` has `reference`'s figures to TOLERANCE."""
    problems = [key for key in SCALARS if not abs(reference[key] - other[key]) <= TOLERANCE]
    ref_f1, other_f1 = np.asarray(reference["per_class"]["f1"]), np.asarray(other["per_class"]["f1"])
    if ref_f1.shape != other_f1.shape or not np.abs(ref_f1 - other_f1).max() <= TOLERANCE:
        problems.append("per-class f1")
    if reference["per_class"]["support"] != other["per_class"]["support"]:
        problems.append("per-class support")
    if problems:
        raise AssertionError(f"{name} differs from numpy in: {', '.join(problems)}")


def bench(num_labels: int, args) -> dict[str, float]:
    """Median milliseconds per full evaluation for every method, after checking they agree."""
    probs, labels, thresholds = make_data(args.rows, num_labels, args.labels_per_row, args.global_threshold,
                                          args.seed)
    results = {name: run(probs, labels, thresholds, args.batch_size) for name, run in METHODS.items()}  # warm-up
    for name, figures in results.items():
        check_same(results["numpy"], figures, name)
    names = list(METHODS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(args.repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate the order
            start = time.perf_counter()
            METHODS[name](probs, labels, thresholds, args.batch_size)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def table(medians: dict[int, dict[str, float]], args) -> str:
    threshold = "one global threshold (0.5)" if args.global_threshold else "one threshold per label"
    lines = [f"{args.rows} rows, {args.batch_size} rows per update, {threshold}, ~{args.labels_per_row:g} positive "
             f"labels per row, median of {args.repeats} interleaved repetitions, seed {args.seed}; "
             f"numpy {np.__version__}, scikit-learn {sklearn.__version__}.",
             "",
             "| labels | method | median ms per evaluation | ratio to numpy |",
             "|---:|---|---:|---:|"]
    for num_labels, by_method in medians.items():
        for name, ms in by_method.items():
            lines.append(f"| {num_labels} | {name} | {ms:.1f} | {ms / by_method['numpy']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(args) -> None:
    medians = {num_labels: bench(num_labels, args) for num_labels in args.labels}
    text = table(medians, args)
    print(text, end="")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main(parser.parse_args())
