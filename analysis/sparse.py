"""Sparse data: dev examples the training set covers poorly, and training or unlabelled texts to add.

Same command line and outputs as PaddleNLP's multi_label/analysis/sparse.py. A dev example is
"sparse" when its `rationale_num_sparse` most similar training examples (cosine of the classifier
features) are still far away; its support data are the closest candidates above
`support_threshold`, taken round-robin so that every sparse example gets some. Support data are
augmented training rows (default), duplicated rows, or unlabelled texts to annotate (`--annotate`).
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
from pathlib import Path

import numpy as np

from cli import POSITIVE_INT, ArgumentParser, bounded
from data_io import format_labels, iter_examples, load_examples
from modeling import plain_vocabulary
from utils import logger, run_cli

from augment import AUG_TYPES, build_augmenter, read_custom_dictionary
from common import add_model_arguments, load_model, top_k_similar, write_rows

# yapf: disable
parser = ArgumentParser(description=__doc__)
add_model_arguments(parser, batch_size=16, seed_help="Random seed of the augmentation that --annotate uses.")
parser.add_argument("--aug_strategy", choices=["duplicate", "substitute", "insert", "delete", "swap"], default='substitute', help="Select data augmentation strategy")
parser.add_argument("--aug_type", choices=list(AUG_TYPES), default="random", help="Words for substitute/insert: random (model vocabulary, offline; the reference used synonym, which needs PaddleNLP's downloads), custom, synonym, homonym, mlm")
parser.add_argument("--custom_file", type=str, default=None, help="JSON dictionary {word: [replacements]} for --aug_type custom.")
parser.add_argument("--annotate", action='store_true', help="Select unlabeled data for annotation")
parser.add_argument("--rationale_num_sparse", type=POSITIVE_INT, default=3, help="Number of rationales per example for sparse data.")
parser.add_argument("--rationale_num_support", type=POSITIVE_INT, default=6, help="Number of rationales per example for support data.")
parser.add_argument("--sparse_num", type=POSITIVE_INT, default=100, help="Number of sparse data.")
parser.add_argument("--support_threshold", type=bounded(float, -1, 1, high_open=True), default=0.7, help="The threshold to select support data: a cosine similarity.")
parser.add_argument("--support_num", type=POSITIVE_INT, default=100, help="Number of support data.")
parser.add_argument("--train_file", type=str, default="train.txt", help="Train dataset file name")
parser.add_argument("--dev_file", type=str, default="dev.txt", help="Dev dataset file name")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name")
parser.add_argument("--unlabeled_file", type=str, default="data.txt", help="Unlabeled data filename")
parser.add_argument("--sparse_file", type=str, default="sparse.txt", help="Sparse data file name.")
parser.add_argument("--support_file", type=str, default="support.txt", help="support data file name.")
# yapf: enable


def select_support(index: np.ndarray, scores: np.ndarray, threshold: float, wanted: int) -> dict[int, float]:
    """Round-robin over neighbour ranks: each sparse example's r-th neighbour above the threshold, once.

    Returns {candidate index: the similarity it was chosen with}, in selection order.
    """
    chosen: dict[int, float] = {}
    for rank in range(index.shape[1]):
        for row in range(index.shape[0]):
            candidate = int(index[row, rank])
            if scores[row, rank] > threshold and candidate not in chosen:
                chosen[candidate] = float(scores[row, rank])
                if len(chosen) == wanted:
                    return chosen
    return chosen


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    dataset = Path(args.dataset_dir)
    trained = load_model(args)
    train = load_examples(dataset / args.train_file, trained.labels)
    dev = load_examples(dataset / args.dev_file, trained.labels)
    train_features = trained.features([e.text for e in train])

    _, dev_scores = top_k_similar(trained.features([e.text for e in dev]), train_features, args.rationale_num_sparse)
    coverage = dev_scores.mean(axis=1)
    sparse_rows = np.argsort(coverage, kind="stable")[:args.sparse_num]
    sparse = [dev[i] for i in sparse_rows]
    write_rows(dataset / args.sparse_file, [(e.text, format_labels(e.labels, trained.labels)) for e in sparse])
    logger.info(f"Sparse data saved in {dataset / args.sparse_file}: the {len(sparse)} of {len(dev)} dev examples "
                f"whose {args.rationale_num_sparse} nearest training examples are least similar")
    logger.info("Average score in sparse data: %.4f (all dev data: %.4f)" % (coverage[sparse_rows].mean(),
                                                                              coverage.mean()))

    if args.annotate:
        candidates = [(e.text, "") for e in iter_examples(dataset / args.unlabeled_file)]
        candidate_features = trained.features([text for text, _ in candidates])
    else:
        candidates = [(e.text, format_labels(e.labels, trained.labels)) for e in train]
        candidate_features = train_features
    index, scores = top_k_similar(trained.features([e.text for e in sparse]), candidate_features, args.rationale_num_support)
    chosen = select_support(index, scores, args.support_threshold, args.support_num)
    if len(chosen) < args.support_num:
        logger.warning(f"Only {len(chosen)} support data have a similarity above --support_threshold "
                       f"{args.support_threshold} among the {args.rationale_num_support} nearest candidates of each "
                       f"sparse example (--support_num {args.support_num}); lower the threshold or raise "
                       f"--rationale_num_support for more")
    rows = [candidates[i] for i in chosen]
    if not args.annotate and args.aug_strategy != "duplicate":
        rows = augment_rows(rows, args, trained.tokenizer)
    write_rows(dataset / args.support_file, rows)
    logger.info(f"support data saved in {dataset / args.support_file}: {len(rows)} "
                f"{'texts to annotate' if args.annotate else args.aug_strategy + ' rows'}")
    if chosen:
        logger.info("support average scores: %.4f" % np.mean(list(chosen.values())))


def augment_rows(rows: list[tuple[str, str]], args: argparse.Namespace, tokenizer) -> list[tuple[str, str]]:
    """One augmented copy of each support row; rows that cannot be changed are kept as they are."""
    custom = read_custom_dictionary(args.custom_file) if args.aug_type == "custom" else None
    augmenter = build_augmenter(args.aug_strategy, args.aug_type, 1, 0.1, plain_vocabulary(tokenizer), custom,
                                args.seed)
    augmented, unchanged = [], 0
    for text, labels in rows:
        new = augmenter.augment(text)
        unchanged += not new
        augmented.append((new[0] if new else text, labels))
    if unchanged:
        logger.info(f"{unchanged} support rows could not be augmented and are written unchanged")
    return augmented


if __name__ == "__main__":
    run_cli(main)
