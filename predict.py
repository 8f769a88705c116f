"""Label new texts with a trained checkpoint.

Writes what the reference writes: the header `text<TAB>label`, then one `text<TAB>name, name` row per
input line, in input order (the suite's reader reads it back as data). The input is streamed window
by window, so files larger than memory work; inside a window texts are batched by length for speed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cli import POSITIVE_INT, PROBABILITY, SEQ_LENGTH, ArgumentParser
from data_io import write_predictions
from modeling import (
    DygraphRunner,
    add_long_text_arguments,
    check_max_seq_length,
    checkpoint_long_text,
    checkpoint_thresholds,
    dygraph_pipeline,
    load_model,
    load_tokenizer,
    resolve_label_list,
    resolve_long_text,
)
from utils import DataError, logger, run_cli, set_device

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
    set_device(args.device)
    dataset = Path(args.dataset_dir)
    data_path = dataset / args.data_file
    if not Path(args.params_path).is_dir():
        raise DataError(f"--params_path {args.params_path} is not a checkpoint directory")
    model = load_model(args.params_path)
    model.eval()
    check_max_seq_length(args.max_seq_length, model.config.max_position_embeddings, args.params_path)
    tokenizer = load_tokenizer(args.params_path)
    label_list = resolve_label_list(model, dataset / args.label_file)
    thresholds = (np.full(len(label_list), args.threshold, dtype="float32") if args.threshold is not None
                  else checkpoint_thresholds(model))
    long_text = resolve_long_text(args, checkpoint_long_text(model), args.max_seq_length)
    pipeline = dygraph_pipeline(tokenizer, args.max_seq_length, args.batch_size, long_text)
    runner = DygraphRunner(model, tokenizer.pad_token_id)

    write_predictions(data_path, args.output_file, lambda texts: pipeline.probs(runner, texts), thresholds,
                      label_list, args.batch_size, args.output_probs)
    logger.info(pipeline.length_summary())
    logger.info(f"Prediction results save in {args.output_file}.")


def main(argv: list[str] | None = None) -> None:
    predict(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
