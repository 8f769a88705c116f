"""Evaluate a trained model per class and collect its bad cases.

Same command line and log lines as PaddleNLP's multi_label/analysis/evaluate.py; writes
`bad_case.txt` (Text<TAB>Label<TAB>Prediction) into the dataset directory, and next to it
`metrics.json` (every figure, the CAIL score and the thresholds used), `per_label.csv` and
`per_label_f1.png` (F1 against support per label).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from cli import PROBABILITY, ArgumentParser
from data_io import Example, format_labels, load_examples, multi_hot
from metric import LISTED_LABELS, MetricReport, labels_to_log, shortened_list_note
from modeling import TrainedModel, load_trained
from pipeline import chosen_label_ids
from utils import logger, run_cli

from common import BAD_CASE_HEADER, add_model_arguments

# yapf: disable
parser = ArgumentParser(description=__doc__)
add_model_arguments(parser, batch_size=32, seed_help=None)
parser.add_argument("--train_file", type=str, default=None, help="Also evaluate this training file (e.g. train.txt) to compare fit and generalisation per class.")
parser.add_argument("--dev_file", type=str, default="dev.txt", help="Dev dataset file name")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name")
parser.add_argument("--bad_case_file", type=str, default="bad_case.txt", help="Bad case saving file name")
parser.add_argument("--threshold", type=PROBABILITY, default=None, help="One global decision threshold instead of the thresholds stored in the checkpoint.")
# yapf: enable


def evaluate_file(trained: TrainedModel, path: Path, split: str, args: argparse.Namespace
                  ) -> tuple[list[Example], np.ndarray, MetricReport]:
    """Predict one labelled file and log the reference's report for it."""
    examples = load_examples(path, trained.labels)
    probs = trained.probs([e.text for e in examples])
    metric = MetricReport(thresholds=trained.thresholds, label_names=trained.labels)
    metric.update(probs, multi_hot(examples, len(trained.labels)))
    log_report(metric.figures(), trained.labels, split)
    return examples, probs, metric


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


def write_bad_cases(path: Path, examples: list[Example], probs: np.ndarray, trained: TrainedModel) -> int:
    """Every example whose predicted label set differs from the gold one."""
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        out.write(BAD_CASE_HEADER + "\n")
        for example, predicted in zip(examples, chosen_label_ids(probs, trained.thresholds)):
            gold = sorted(set(example.labels))
            if predicted != gold:
                out.write(f"{example.text}\t{format_labels(gold, trained.labels)}\t"
                          f"{format_labels(predicted, trained.labels)}\n")
                count += 1
    return count


def write_per_label(directory: Path, reports: dict[str, dict], labels: list[str]) -> None:
    """per_label.csv (one row per label and split) and a chart of dev F1 against dev support."""
    with open(directory / "per_label.csv", "w", encoding="utf-8", newline="") as handle:
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
    figure.savefig(directory / "per_label_f1.png", dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    dataset = Path(args.dataset_dir)
    trained = load_trained(args)
    reports = {}
    if args.train_file:
        reports["train"] = evaluate_file(trained, dataset / args.train_file, "train", args)[2].figures()
    examples, probs, metric = evaluate_file(trained, dataset / args.dev_file, "dev", args)
    reports["dev"] = metric.figures()
    for figures in reports.values():
        figures["cail_score"] = (figures["micro_f1"] + figures["macro_f1"]) / 2
    metrics = {"labels": trained.labels, "thresholds": [float(t) for t in trained.thresholds], **reports}
    (dataset / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    write_per_label(dataset, reports, trained.labels)
    bad_case_path = dataset / args.bad_case_file
    count = write_bad_cases(bad_case_path, examples, probs, trained)
    logger.info(f"Bad case in dev dataset saved in {bad_case_path} ({count} of {len(examples)} examples)")
    logger.info(f"metrics.json, per_label.csv and per_label_f1.png saved in {dataset}")


if __name__ == "__main__":
    run_cli(main)
