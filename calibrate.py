"""Calibrate a trained checkpoint on a labelled dev file, in place: per-label Platt (or temperature)
scaling of its logits, so its probabilities can be read as rates ("route texts under 0.7 to a
person"). What `train.py --calibrate` does after training, for a checkpoint that exists already.

The thresholds move with the calibration, so every label predict.py, the exports and the servers
give stays the same; with `--tune_thresholds` they are tuned again on the dev file first. The
label-count options given (`--min_labels`, `--max_labels`, `--top_k`) are stored too, as every later
command's default. Only the checkpoint's config.json changes (written atomically); the weights are
not touched. `--calibration none` removes a calibration.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
from pathlib import Path

from cli import POSITIVE_INT, PROBABILITY, SEQ_LENGTH, ArgumentParser
from data_io import load_examples, multi_hot
from decision import CALIBRATION_METHODS, NO_CALIBRATION
from metric import fit_decision_on_dev
from modeling import load_trained, store_decision
from script_options import add_decision_arguments, add_long_text_arguments
from utils import logger, run_cli, set_device

# yapf: disable
parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--device", default="gpu", help="Select which device runs the model, defaults to gpu.")
parser.add_argument("--params_path", default="./checkpoint/", type=str, help="The checkpoint to calibrate (a directory written by train.py or prune.py).")
parser.add_argument("--dataset_dir", required=True, type=str, help="Local dataset directory with the dev file and label.txt.")
parser.add_argument("--dev_file", type=str, default="dev.txt", help="Labelled file the calibration is fitted on.")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name (optional: checked against the labels stored in the checkpoint)")
parser.add_argument("--calibration", choices=[*CALIBRATION_METHODS, NO_CALIBRATION], default="platt", help="platt (per-label scale and bias of the logit), temperature (per-label scale only) or none (remove a stored calibration).")
parser.add_argument("--tune_thresholds", action="store_true", help="Also tune the per-label thresholds on the dev file, starting from --threshold.")
parser.add_argument("--threshold", type=PROBABILITY, default=0.5, help="With --tune_thresholds: the global threshold tuning starts from (and rare labels keep).")
parser.add_argument("--max_seq_length", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Texts per forward pass of the model.")
add_long_text_arguments(parser)
add_decision_arguments(parser, threshold=False)
# yapf: enable


def calibrate(args: argparse.Namespace) -> dict:
    """Fit the calibration on the dev file and store the new decision in the checkpoint's config.json."""
    set_device(args.device)
    trained = load_trained(argparse.Namespace(**{**vars(args), "threshold": None}))
    examples = load_examples(Path(args.dataset_dir) / args.dev_file, trained.labels)
    logits = trained.logits([example.text for example in examples])
    decision, results = fit_decision_on_dev(trained.decision, logits, multi_hot(examples, len(trained.labels)),
                                            trained.labels, args.threshold if args.tune_thresholds else None,
                                            args.calibration)
    config_file = store_decision(args.params_path, decision)
    logger.info(f"Decision (calibration: {args.calibration}, min_labels {decision.min_labels}, max_labels "
                f"{decision.max_labels or 'none'}, top_k {decision.top_k}) saved in {config_file}")
    return results


def main(argv: list[str] | None = None) -> dict:
    return calibrate(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
