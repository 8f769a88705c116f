"""Evaluate a trained model per class and collect its bad cases.

Same command line and log lines as PaddleNLP's multi_label/analysis/evaluate.py; writes
`bad_case.txt` (Text<TAB>Label<TAB>Prediction) into the dataset directory, and next to it
`metrics.json` (every figure, the CAIL score, the decision used, and how well the probabilities are
calibrated: expected calibration error and Brier score of the model's sigmoid and, for a calibrated
checkpoint, of its calibrated probabilities), `per_label.csv`, `per_label_f1.png` (F1 against support
per label) and `reliability.png` (the reliability diagram of the dev probabilities).
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from cli import ArgumentParser
from data_io import Example, format_labels, load_examples, multi_hot
from decision import Decision, calibration_error
from metric import LISTED_LABELS, MetricReport, labels_to_log, shortened_list_note
from modeling import TrainedModel, load_trained
from script_options import add_decision_arguments
from utils import atomic_output, logger, run_cli, set_device, write_json

from common import BAD_CASE_HEADER, add_model_arguments

# yapf: disable
parser = ArgumentParser(description=__doc__)
add_model_arguments(parser, batch_size=32, seed_help=None)
parser.add_argument("--train_file", type=str, default=None, help="Also evaluate this training file (e.g. train.txt) to compare fit and generalisation per class.")
parser.add_argument("--dev_file", type=str, default="dev.txt", help="Dev dataset file name")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name")
parser.add_argument("--bad_case_file", type=str, default="bad_case.txt", help="Bad case saving file name")
add_decision_arguments(parser)
# yapf: enable


def evaluate_file(trained: TrainedModel, path: Path, split: str
                  ) -> tuple[list[Example], np.ndarray, MetricReport]:
    """Predict one labelled file and log the reference's report for it; returns the examples, the
    model's logits and the metric."""
    examples = load_examples(path, trained.labels)
    logits = trained.logits([e.text for e in examples])
    metric = MetricReport(decision=trained.decision, label_names=trained.labels)
    metric.update(trained.decision.probabilities(logits), multi_hot(examples, len(trained.labels)))
    log_report(metric.figures(), trained.labels, split)
    return examples, logits, metric


def calibration_report(decision: Decision, logits: np.ndarray, targets: np.ndarray) -> dict[str, dict]:
    """ECE, Brier score and reliability curve of the sigmoid probabilities and, when the decision is
    calibrated, of the calibrated ones; each logged in one line."""
    kinds = {"sigmoid": decision.calibrated(None)}
    if decision.calibration is not None:
        kinds[f"calibrated ({decision.calibration.method})"] = decision
    figures = {}
    for name, kind in kinds.items():
        figures[name] = calibration_error(kind.probabilities(logits), targets)
        logger.info(f"Calibration of the {name} probabilities: expected calibration error "
                    f"{figures[name]['ece']:.4f}, Brier score {figures[name]['brier']:.5f}")
    return figures


def plot_reliability(path: Path, figures: dict[str, dict]) -> None:
    """The reliability diagram: observed positive rate against mean probability per bin, per kind."""
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, kind in figures.items():
        curve = kind["reliability"]
        axes.plot([b["mean_probability"] for b in curve], [b["observed_rate"] for b in curve], marker="o",
                  label=f"{name}: ECE {kind['ece']:.3f}")
    axes.set_xlabel("mean predicted probability (15 bins, every text and label)")
    axes.set_ylabel("observed positive rate")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left")
    figure.tight_layout()
    with atomic_output(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)


def log_report(figures: dict, labels: list[str], split: str) -> None:
    size = figures["num_examples"]
    logger.info("-----Evaluate model-------")
    logger.info(f"{split.capitalize()} dataset size: {size}")
    logger.info(f"Accuracy in {split} dataset: {figures['accuracy'] * 100:.2f}%")
    for avg in ("micro", "macro"):
        logger.info(f"{avg.capitalize()} avg in {split} dataset: precision: {figures[avg + '_precision'] * 100:.2f} | "
                    f"recall: {figures[avg + '_recall'] * 100:.2f} | F1 score {figures[avg + '_f1'] * 100:.2f}")
    per_class = figures["per_class"]
    shown = labels_to_log(per_class)
    if len(shown) < len(labels):
        logger.info(shortened_list_note(len(labels)) + ", every label in per_label.csv")
    for i in shown:
        name = labels[i]
        support = per_class["support"][i]
        logger.info(f"Class name: {name}")
        logger.info(f"Evaluation examples in {split} dataset: {support}({support / size * 100:.1f}%) | "
                    f"precision: {per_class['precision'][i] * 100:.2f} | recall: {per_class['recall'][i] * 100:.2f} | "
                    f"F1 score {per_class['f1'][i] * 100:.2f}")
        logger.info("----------------------------")


def write_bad_cases(path: Path, examples: list[Example], logits: np.ndarray, trained: TrainedModel) -> int:
    """Every example whose predicted label set differs from the gold one."""
    count = 0
    predictions = trained.decision.label_ids(trained.decision.probabilities(logits))
    with atomic_output(path) as out:
        out.write(BAD_CASE_HEADER + "\n")
        for example, predicted in zip(examples, predictions):
            gold = sorted(set(example.labels))
            if predicted != gold:
                out.write(f"{example.text}\t{format_labels(gold, trained.labels)}\t"
                          f"{format_labels(predicted, trained.labels)}\n")
                count += 1
    return count


def write_per_label(directory: Path, reports: dict[str, dict], labels: list[str]) -> None:
    """per_label.csv (one row per label and split) and a chart of dev F1 against dev support."""
    with atomic_output(directory / "per_label.csv") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "label_id", "label", "support", "precision", "recall", "f1"])
        for split, figures in reports.items():
            per_class = figures["per_class"]
            for i, name in enumerate(labels):
                writer.writerow([split, i, name, per_class["support"][i], *(round(per_class[k][i], 6) for k in
                                                                          ("precision", "recall", "f1"))])
    dev = reports["dev"]["per_class"]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    support = np.maximum(dev["support"], 1)
    annotated = len(labels) <= LISTED_LABELS  # thousands of labels: points only, the ids would cover them
    axes.scatter(support, dev["f1"], s=25 if annotated else 6, alpha=1.0 if annotated else 0.3)
    for i in range(len(labels) if annotated else 0):  # ids, not names: no CJK font needed (names in per_label.csv)
        axes.annotate(str(i), (support[i], dev["f1"][i]), textcoords="offset points", xytext=(4, 3), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("dev support (examples with the label, log scale)")
    axes.set_ylabel("dev F1")
    axes.set_ylim(-0.05, 1.05)
    axes.set_title("Per-label F1 against support" + (" (point = label id, see per_label.csv)" if annotated else ""))
    figure.tight_layout()
    with atomic_output(directory / "per_label_f1.png", "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    dataset = Path(args.dataset_dir)
    set_device(args.device)
    trained = load_trained(args)
    reports = {}
    if args.train_file:
        reports["train"] = evaluate_file(trained, dataset / args.train_file, "train")[2].figures()
    examples, logits, metric = evaluate_file(trained, dataset / args.dev_file, "dev")
    reports["dev"] = metric.figures()
    for figures in reports.values():
        figures["cail_score"] = (figures["micro_f1"] + figures["macro_f1"]) / 2
    calibration = calibration_report(trained.decision, logits, multi_hot(examples, len(trained.labels)))
    metrics = {"labels": trained.labels, "thresholds": [float(t) for t in trained.decision.thresholds],
               "decision": trained.decision.settings(), **reports, "dev_calibration": calibration}
    write_json(dataset / "metrics.json", metrics)
    write_per_label(dataset, reports, trained.labels)
    plot_reliability(dataset / "reliability.png", calibration)
    bad_case_path = dataset / args.bad_case_file
    count = write_bad_cases(bad_case_path, examples, logits, trained)
    logger.info(f"Bad case in dev dataset saved in {bad_case_path} ({count} of {len(examples)} examples)")
    for name, content in (("metrics.json", "Metrics"), ("per_label.csv", "Per-label support, precision, recall, F1"),
                          ("per_label_f1.png", "Per-label F1 against support"), ("reliability.png", "Reliability diagram")):
        logger.info(f"{content} saved in {dataset / name}")


if __name__ == "__main__":
    run_cli(main)
