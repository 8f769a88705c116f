"""Label new texts with a trained checkpoint.

Writes what the reference writes: the header `text<TAB>label`, then one `text<TAB>name, name` row per
input line, in input order (the suite's reader reads it back as data). The input is streamed window
by window, so files larger than memory work; inside a window texts are batched by length for speed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cli import POSITIVE_INT, PROBABILITY, SEQ_LENGTH, ArgumentParser
from data_io import write_predictions
from modeling import add_long_text_arguments, load_trained
from utils import logger, run_cli

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument('--device', default="gpu", help="Select which device runs the model, defaults to gpu.")
parser.add_argument("--dataset_dir", required=True, type=str, help="Local dataset directory should include data.txt and label.txt")
parser.add_argument("--output_file", default="output.txt", type=str, help="Save prediction result")
parser.add_argument("--params_path", default="./checkpoint/", type=str, help="The path to model parameters to be loaded.")
parser.add_argument("--max_seq_length", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization. Sequences longer than this will be truncated, sequences shorter will be padded.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Texts per forward pass of the model.")
parser.add_argument("--data_file", type=str, default="data.txt", help="Unlabeled data file name")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name (optional: checked against the labels stored in the checkpoint)")
parser.add_argument("--threshold", type=PROBABILITY, default=None, help="One global decision threshold instead of the thresholds stored in the checkpoint.")
parser.add_argument("--output_probs", action="store_true", help="Add a third column with every label's probability as JSON.")
add_long_text_arguments(parser)
# yapf: enable

def predict(args: argparse.Namespace) -> None:
    trained = load_trained(args)
    runner = trained.runner()
    write_predictions(Path(args.dataset_dir) / args.data_file, args.output_file,
                      lambda texts: trained.pipeline.probs(runner, texts), trained.thresholds, trained.labels,
                      args.batch_size, args.output_probs)
    logger.info(trained.pipeline.length_summary())
    logger.info(f"Prediction results save in {args.output_file}.")


def main(argv: list[str] | None = None) -> None:
    predict(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
