"""Label new texts with a trained checkpoint.

Writes `text<TAB>label,label` lines in input order (the training format, so the output can be
read back as data). The input is streamed window by window, so files larger than memory work;
inside a window texts are batched by length for speed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils import (WINDOW_BATCHES, DataError, ReadStats, batched, checkpoint_thresholds, format_prediction,
                   iter_examples, load_model, load_tokenizer, logger, resolve_label_list, run_cli, set_device,
                   text_probs)

# yapf: disable
parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument('--device', default="gpu", help="Select which device to train model, defaults to gpu.")
parser.add_argument("--dataset_dir", required=True, type=str, help="Local dataset directory should include data.txt and label.txt")
parser.add_argument("--output_file", default="output.txt", type=str, help="Save prediction result")
parser.add_argument("--params_path", default="./checkpoint/", type=str, help="The path to model parameters to be loaded.")
parser.add_argument("--max_seq_length", default=128, type=int, help="The maximum total input sequence length after tokenization. Sequences longer than this will be truncated, sequences shorter will be padded.")
parser.add_argument("--batch_size", default=32, type=int, help="Batch size per GPU/CPU for training.")
parser.add_argument("--data_file", type=str, default="data.txt", help="Unlabeled data file name")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name (optional: checked against the labels stored in the checkpoint)")
parser.add_argument("--threshold", type=float, default=None, help="One global decision threshold instead of the thresholds stored in the checkpoint.")
parser.add_argument("--output_probs", action="store_true", help="Add a third column with every label's probability as JSON.")
# yapf: enable

def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def predict(args: argparse.Namespace) -> None:
    if args.batch_size < 1 or args.max_seq_length < 1:
        raise DataError("--batch_size and --max_seq_length must be at least 1")
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise DataError(f"--threshold must lie between 0 and 1, got {args.threshold}")
    set_device(args.device)
    dataset = Path(args.dataset_dir)
    data_path = dataset / args.data_file
    if Path(args.output_file).resolve() == data_path.resolve():
        raise DataError(f"--output_file {args.output_file} would overwrite the input {data_path}")
    if not Path(args.params_path).is_dir():
        raise DataError(f"--params_path {args.params_path} is not a checkpoint directory")
    model = load_model(args.params_path)
    tokenizer = load_tokenizer(args.params_path)
    label_list = resolve_label_list(model, dataset / args.label_file)
    thresholds = (np.full(len(label_list), args.threshold, dtype="float32") if args.threshold is not None
                  else checkpoint_thresholds(model))

    stats = ReadStats()
    examples = iter_examples(data_path, stats=stats)
    progress = tqdm(total=count_lines(data_path), desc="Predicting", unit="line", disable=None)
    with open(args.output_file, "w", encoding="utf-8") as out:
        for window in batched(examples, args.batch_size * WINDOW_BATCHES):
            probs = text_probs(model, tokenizer, [e.text for e in window], args.max_seq_length, args.batch_size)
            for example, example_probs in zip(window, probs):
                out.write(format_prediction(example.text, example_probs, thresholds, label_list,
                                            args.output_probs) + "\n")
            progress.update(window[-1].line_no - progress.n)
    progress.close()
    if stats.examples == 0:
        raise DataError(f"{data_path}: no texts to predict (the file has only blank lines)")
    logger.info(stats.summary(data_path))
    logger.info(f"Prediction results save in {args.output_file}.")


if __name__ == "__main__":
    run_cli(lambda: predict(parser.parse_args()))
