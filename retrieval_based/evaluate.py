"""Score a recall file: multi-label micro and macro F1 of the labels whose recall score passes --threshold.

Same command line and the two printed lines as PaddleNLP's retrieval_based/evaluate.py. The F1 are
the suite's (a text x label matrix): the reference flattened it, so its "Micro F1" was the accuracy
over all text-label cells and its "Macro F1" the mean of a "0" class and a "1" class; its published
99.31 / 78.21 are not comparable with these numbers.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse

from cli import PROBABILITY, ArgumentParser
from data_io import load_examples, multi_hot, read_label_list
from metric import MetricReport
from retrieval import label_scores, read_recall_file
from utils import run_cli

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--label_path", type=str, default='data/label.txt', help="The label file.")
parser.add_argument("--recall_result_file", type=str, default='./recall_result_dir/recall_result.txt', help="The recall result file (recall.py's).")
parser.add_argument("--similar_text_pair", type=str, default='data/dev.txt', help="The dev file with the gold labels (text<TAB>label,label).")
parser.add_argument("--threshold", default=0.5, type=PROBABILITY, help="A label is predicted when its recall score is above this.")
# yapf: enable


def evaluate(args: argparse.Namespace) -> tuple[float, float]:
    labels = read_label_list(args.label_path)
    examples = load_examples(args.similar_text_pair, labels)
    result, mode = read_recall_file(args.recall_result_file, [example.text for example in examples])
    metric = MetricReport(decision=args.threshold, label_names=labels)
    metric.update(label_scores(result, labels, mode), multi_hot(examples, len(labels)))
    micro_f1, macro_f1 = metric.accumulate()
    print("Micro fl score: {}".format(micro_f1 * 100))
    print("Macro f1 score: {}".format(macro_f1 * 100))
    return micro_f1, macro_f1


def main(argv: list[str] | None = None) -> None:
    evaluate(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
