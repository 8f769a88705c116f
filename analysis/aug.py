"""Augment a training file: write new `text<TAB>labels` rows made from each row (labels unchanged).

Same command line as PaddleNLP's multi_label/analysis/aug.py. The output holds only the new rows;
concatenate it with the training file to train on both. `random` and `custom` types and the
delete/swap strategies run offline (analysis/augment.py).
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
from pathlib import Path

from tqdm import tqdm

from cli import POSITIVE_INT, SEED, ArgumentParser, bounded
from data_io import format_labels, load_examples, read_label_list
from modeling import load_tokenizer, plain_vocabulary
from utils import DataError, logger, run_cli, set_device

from augment import AUG_TYPES, STRATEGIES, build_augmenter, read_custom_dictionary
from common import write_rows

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--train_path", type=str, default="../data/train.txt", help="Train dataset file name")
parser.add_argument("--aug_path", type=str, default="../data/aug.txt", help="Aug dataset file name")
parser.add_argument("--aug_strategy", choices=list(STRATEGIES), default='substitute', help="Select data augmentation strategy")
parser.add_argument("--aug_type", choices=list(AUG_TYPES), default='synonym', help="Select data augmentation type for substitute and insert: synonym/homonym/mlm need PaddleNLP's downloads; random and custom run offline")
parser.add_argument("--create_n", type=POSITIVE_INT, default=2, help="Number of augmented sequences.")
parser.add_argument("--aug_percent", type=bounded(float, 0, 1, low_open=True), default=0.1, help="Percentage of augmented words in sequences.")
parser.add_argument('--device', default="gpu", help="Device of the masked language model of --aug_type mlm; the other types use no model.")
parser.add_argument("--label_file", type=str, default=None, help="Label file (default: label.txt next to train_path).")
parser.add_argument("--params_path", type=str, default="../checkpoint/", help="Model directory whose vocabulary --aug_type random draws words from.")
parser.add_argument("--custom_file", type=str, default=None, help="JSON dictionary {word: [replacements]} for --aug_type custom.")
parser.add_argument("--seed", type=SEED, default=3, help="Random seed of the augmentation.")
# yapf: enable


def vocabulary(args: argparse.Namespace) -> list[str]:
    if args.aug_type != "random" or args.aug_strategy in ("delete", "swap"):
        return []
    return plain_vocabulary(load_tokenizer(args.params_path))


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    train_path, aug_path = Path(args.train_path), Path(args.aug_path)
    if aug_path.resolve() == train_path.resolve():
        raise DataError(f"--aug_path {aug_path} would overwrite the training file")
    label_list = read_label_list(args.label_file or train_path.with_name("label.txt"))
    custom = read_custom_dictionary(args.custom_file) if args.aug_type == "custom" else None
    if args.aug_type == "mlm" and args.aug_strategy in ("substitute", "insert"):
        set_device(args.device)
    augmenter = build_augmenter(args.aug_strategy, args.aug_type, args.create_n, args.aug_percent,
                                vocabulary(args), custom, args.seed)
    examples = load_examples(train_path, label_list)
    rows, unchanged = [], 0
    for example in tqdm(examples, desc="Augmenting", unit="row", disable=None):
        new_texts = augmenter.augment(example.text)
        unchanged += not new_texts
        rows += [(text, format_labels(example.labels, label_list)) for text in new_texts]
    write_rows(aug_path, rows)
    method = args.aug_strategy if args.aug_strategy in ("delete", "swap") else f"{args.aug_strategy} {args.aug_type}"
    logger.info(f"{len(rows)} augmented rows from {len(examples)} rows ({method}) saved in {aug_path}; "
                f"{unchanged} rows gave no new text (too short, or no dictionary word in them)")


if __name__ == "__main__":
    run_cli(main)
