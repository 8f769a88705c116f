"""Export a trained checkpoint for deployment: static graph, ONNX model, tokenizer, labels, decision (thresholds, policy, calibration).

The output directory is self-contained: deploy/predictor/infer.py (and the servers) need nothing
else. Before returning, the exported graph is run through Paddle Inference and ONNX Runtime and
compared with the dygraph model; an export whose probabilities differ by more than 1e-4 is an
error, not a file.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
from pathlib import Path

from cli import POSITIVE_INT, SEQ_LENGTH, ArgumentParser
from exporting import EXPORT_PREFIX, META_FILE, deploy_input_names
from modeling import (
    check_max_seq_length,
    checkpoint_decision,
    load_model,
    load_tokenizer,
    resolve_label_list,
)
from parity import PARITY_SAMPLES, export_checked, parity_texts
from utils import DataError, logger, run_cli, set_device

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument('--multilingual', action='store_true', help='Whether is multilingual task')
parser.add_argument("--params_path", type=str, default='./checkpoint/', help="The path to model parameters to be loaded.")
parser.add_argument("--output_path", type=str, default='./export', help="The path of model parameter in static graph to be saved.")
parser.add_argument("--dataset_dir", type=str, default=None, help="Optional dataset directory: its dev file is used for the parity check, its label.txt for checkpoints that store no label list.")
parser.add_argument("--dev_file", type=str, default="dev.txt", help="Dev file name inside dataset_dir.")
parser.add_argument("--parity_samples", type=POSITIVE_INT, default=PARITY_SAMPLES, help="Number of texts in the export-time parity check.")
parser.add_argument("--max_seq_length", type=SEQ_LENGTH, default=128, help="Length of the parity-check model inputs (texts are truncated or windowed as the checkpoint reads them).")
# yapf: enable


def export(args: argparse.Namespace) -> None:
    if not Path(args.params_path).is_dir():
        raise DataError(f"--params_path {args.params_path} is not a checkpoint directory")
    set_device("cpu")
    model = load_model(args.params_path)
    model.eval()
    check_max_seq_length(args.max_seq_length, model.config.max_position_embeddings, args.params_path)
    tokenizer = load_tokenizer(args.params_path)
    label_file = Path(args.dataset_dir or args.params_path) / "label.txt"
    label_list = resolve_label_list(model, label_file)
    decision = checkpoint_decision(model)
    input_names = deploy_input_names(tokenizer, args.multilingual)
    texts, labels = parity_texts(tokenizer, label_list, args.dataset_dir, args.dev_file, args.parity_samples)
    export_checked(model, tokenizer, Path(args.output_path), EXPORT_PREFIX, label_list, decision, input_names,
                   texts, labels, args.max_seq_length)
    logger.info(f"Exported {len(label_list)}-label model to {args.output_path}/: {EXPORT_PREFIX}.* (Paddle Inference), "
                f"model.onnx, tokenizer, {META_FILE}; FP32 parity checked on {len(texts)} "
                f"{'dev' if labels is not None else 'random'} texts and one long document joined from them "
                f"(the parity table's F1 includes it, so it differs from train.py's dev F1)")


def main(argv: list[str] | None = None) -> None:
    export(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
