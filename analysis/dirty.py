"""Dirty data: training rows whose labels the model most disagrees with, for re-labelling.

Same command line and outputs as PaddleNLP's multi_label/analysis/dirty.py. The reference ranks
rows by representer-point weights of a softmax classifier. For a sigmoid (multi-label) classifier
the representer weight of row i and label c is proportional to the loss gradient at the logit,
alpha_ic = y_ic - p_ic: large when a gold label gets a low probability or a missing label a high
one. Rows are ranked, as in the reference, by (number of labels with |alpha| > dirty_threshold,
sum of |alpha|), highest first.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

from pathlib import Path

import numpy as np

from cli import POSITIVE_INT, UNIT_INTERVAL_OPEN, ArgumentParser
from data_io import format_labels, load_examples, multi_hot
from utils import logger, run_cli

from common import add_model_arguments, load_model, write_rows

# yapf: disable
parser = ArgumentParser(description=__doc__)
add_model_arguments(parser, batch_size=16, seed_help="Random seed.")
parser.add_argument("--dirty_num", type=POSITIVE_INT, default=100, help="Number of dirty data. default:100")
parser.add_argument("--dirty_file", type=str, default="train_dirty.txt", help="Path to save dirty data.")
parser.add_argument("--rest_file", type=str, default="train_dirty_rest.txt", help="The path of rest data.")
parser.add_argument("--train_file", type=str, default="train.txt", help="Train dataset file name")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name")
parser.add_argument("--dirty_threshold", type=UNIT_INTERVAL_OPEN, default=0.0, help="The threshold to select dirty data.")
# yapf: enable


def rank_dirty(labels: np.ndarray, probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Row order from most to least suspicious, and each row's sum of |representer weight|."""
    weights = np.abs(labels - probs)
    count, total = (weights > threshold).sum(axis=1), weights.sum(axis=1)
    order = np.lexsort((np.arange(len(labels)), -total, -count))  # ties keep file order
    return order, total


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    dataset = Path(args.dataset_dir)
    trained = load_model(args)
    train = load_examples(dataset / args.train_file, trained.labels)
    probs = trained.probs([e.text for e in train])
    order, total = rank_dirty(multi_hot(train, len(trained.labels)), probs, args.dirty_threshold)
    dirty = set(order[:args.dirty_num].tolist())
    rows = [(e.text, format_labels(e.labels, trained.labels)) for e in train]
    write_rows(dataset / args.dirty_file, [row for i, row in enumerate(rows) if i in dirty])
    write_rows(dataset / args.rest_file, [row for i, row in enumerate(rows) if i not in dirty])
    picked = total[sorted(dirty)]
    logger.info(f"{len(dirty)} dirty rows of {len(train)} saved in {dataset / args.dirty_file} (sum of |label - "
                f"probability| {picked.min():.3f} to {picked.max():.3f}; all rows: mean {total.mean():.3f})")
    logger.info(f"The other {len(train) - len(dirty)} rows saved in {dataset / args.rest_file}")


if __name__ == "__main__":
    run_cli(main)
