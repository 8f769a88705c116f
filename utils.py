"""What every script shares around its work: the logger, user-facing errors, seeds, devices, files of
settings and results.

The data format lives in `data_io`, models and checkpoints in `modeling`, the text pipeline in
`pipeline`, training in `training`; this module holds only the plumbing of a command-line run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import paddle
from paddlenlp.utils.log import logger  # the one logger of every script, as in the reference


class DataError(Exception):
    """A problem with the user's input: reported as one clear line and exit status 2."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's main so that bad input ends with a message and exit 2, never a traceback."""
    try:
        main()
    except DataError as err:
        logger.error(str(err))
        sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the suite's error style: one line naming the bad option, exit status 2, no usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def bounded(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False) -> Callable[[str], int | float]:
    """An argparse `type` that takes `kind` values within the bounds (open or closed) and names the range
    it expects otherwise, so an out-of-range option stops the script before any work instead of
    training with a negative learning rate or truncating every text to nothing."""
    if low is not None and high is not None:
        expected = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        expected = f"greater than {low}" if low_open else f"at least {low}"
    else:
        expected = f"less than {high}" if high_open else f"at most {high}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{'an integer' if kind is int else 'a number'} {expected} is needed, "
                                             f"got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
        return value

    parse.kind, parse.bounds = kind, (low, high, low_open, high_open)  # for the option table of the tests
    return parse


POSITIVE_INT = bounded(int, 1)
NON_NEGATIVE_INT = bounded(int, 0)
POSITIVE_FLOAT = bounded(float, 0, low_open=True)
NON_NEGATIVE_FLOAT = bounded(float, 0)
PROBABILITY = bounded(float, 0, 1, low_open=True, high_open=True)  # a decision threshold
SEED = bounded(int, 0, 2**32 - 1)  # NumPy's seed range
SEQ_LENGTH = bounded(int, 3)  # [CLS], one token, [SEP]: anything shorter drops every text


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def set_device(device: str) -> None:
    """Select the device; on CPU give each local process an equal share of the cores."""
    try:
        paddle.set_device(device)
    except ValueError as err:
        raise DataError(f"--device {device}: {err} (use --device cpu on a machine without GPU)") from None
    if paddle.get_device() == "cpu":
        local_procs = int(os.environ.get("PADDLE_LOCAL_SIZE", os.environ.get("PADDLE_TRAINERS_NUM", "1")))
        paddle.base.core.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_procs)))


def write_settings(args, save_dir: str | os.PathLike) -> None:
    """setting.txt of the resolved arguments, in the reference's layout."""
    lines = ["------------------ start ------------------"]
    lines += [f"{name} : {value}" for name, value in sorted(vars(args).items())]
    lines.append("------------------- end -------------------")
    Path(save_dir, "setting.txt").write_text("\n".join(lines), encoding="utf-8")


def write_json(path: str | os.PathLike, value) -> None:
    """A JSON file for people and programs: UTF-8, labels unescaped, indented."""
    Path(path).write_text(json.dumps(value, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
