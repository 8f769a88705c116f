"""The command-line options of every script that runs a model: how long texts are read
(`--long_text`, `--window_*`, `--max_windows`) and how probabilities become labels (`--threshold`,
`--min_labels`, `--max_labels`, `--top_k`), each put over what the checkpoint or export stores.

Beside cli.py's conventions (which stay standard-library only); these options need the pipeline's
long-text settings and decision.py.
"""
from __future__ import annotations

import argparse
import dataclasses

from cli import NON_NEGATIVE_INT, POSITIVE_INT, PROBABILITY, ignored_option
from decision import Decision
from pipeline import DEFAULT_MAX_WINDOWS, LONG_TEXT_MODES, WINDOW_POOLINGS, LongText
from utils import DataError, logger


def add_long_text_arguments(parser: argparse.ArgumentParser, stored: bool = True) -> None:
    """The long-text options of every script that reads texts. With `stored` (every script that
    runs a trained model) an option left out takes the value stored with the checkpoint or export,
    so prediction reads texts as training did; train.py (`stored=False`) starts from the reference's
    truncation."""
    where = "the checkpoint's (or export's) setting, else " if stored else ""
    parser.add_argument("--long_text", choices=LONG_TEXT_MODES, default=None, help=f"truncate: read the first --max_seq_length tokens of a text (the reference); window: read all of it in overlapping windows and pool their logits. Default: {where}truncate.")
    parser.add_argument("--window_stride", type=NON_NEGATIVE_INT, default=None, help=f"With --long_text window: tokens shared by neighbouring windows. Default: {where}max_seq_length // 2.")
    parser.add_argument("--max_windows", type=POSITIVE_INT, default=None, help=f"With --long_text window: windows read per text at most (the tail beyond is not read, and counted in the log). Default: {where}{DEFAULT_MAX_WINDOWS}.")
    parser.add_argument("--window_pooling", choices=WINDOW_POOLINGS, default=None, help=f"With --long_text window: how the windows' logits make the text's (max: a label is present when any window shows it). Default: {where}max.")


def resolve_long_text(args: argparse.Namespace, stored: LongText, max_seq_length: int) -> LongText:
    """The stored settings with every long-text option given on the command line put over them."""
    given = {"mode": args.long_text, "stride": args.window_stride, "max_windows": args.max_windows,
             "pooling": args.window_pooling}
    settings = dataclasses.replace(stored, **{name: value for name, value in given.items() if value is not None})
    try:
        settings.check(max_seq_length)
    except ValueError as err:
        raise DataError(str(err)) from None
    if settings.mode != "window":  # what the windows are made of means nothing to a truncated text
        for name in ("window_stride", "max_windows", "window_pooling"):
            if getattr(args, name) is not None:
                logger.warning(ignored_option(name, getattr(args, name), "--long_text window (texts are truncated)"))
    return settings


def add_decision_arguments(parser: argparse.ArgumentParser, stored: bool = True, threshold: bool = True) -> None:
    """The label-decision options (decision.py) of every script that labels texts; one left out takes
    the checkpoint's (or export's) stored value. train.py (`stored=False`) stores what it is given, and
    has its own --threshold, as calibrate.py does (`threshold=False`). Their destinations are prefixed
    (`decision_top_k`) so a script's own `--top_k` cannot be read as one."""
    where = "the checkpoint's (or export's) setting, else " if stored else ""
    if stored and threshold:
        parser.add_argument("--threshold", type=PROBABILITY, default=None, help="One global decision threshold instead of the thresholds stored in the checkpoint (or export).")
    parser.add_argument("--min_labels", dest="decision_min_labels", type=NON_NEGATIVE_INT, default=None, help=f"Give every text at least this many labels: when fewer pass their thresholds, add the most probable others. Default: {where}0.")
    parser.add_argument("--max_labels", dest="decision_max_labels", type=NON_NEGATIVE_INT, default=None, help=f"Keep at most this many of the labels that pass, the most probable (0: no cap). Default: {where}0.")
    parser.add_argument("--top_k", dest="decision_top_k", type=NON_NEGATIVE_INT, default=None, help=f"Also output the k most probable labels with their probabilities, whether they pass or not (0: no such output). Default: {where}0.")


def resolve_decision(args: argparse.Namespace, stored: Decision) -> Decision:
    """The stored decision with every decision option given on the command line put over it (a script
    without these options uses the stored decision, or one --threshold)."""
    try:
        return stored.overridden(getattr(args, "threshold", None), getattr(args, "decision_min_labels", None),
                                 getattr(args, "decision_max_labels", None), getattr(args, "decision_top_k", None))
    except ValueError as err:
        raise DataError(f"--min_labels/--max_labels: {err}") from None
