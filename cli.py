"""The command-line conventions of every script: one-line argument errors and ranged numeric types.

Standard library only, so the serving clients use it without importing Paddle.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable


class OneLineErrors:
    """The suite's error style for any argparse parser: one line naming the bad option, exit status 2,
    no usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class ArgumentParser(OneLineErrors, argparse.ArgumentParser):
    """argparse with the suite's error style."""


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
PORT = bounded(int, 1, 65535)
MINUS_ONE_OR_MORE = bounded(int, -1)  # -1: "not set", as paddlenlp has it for steps and degrees
UNIT_INTERVAL_OPEN = bounded(float, 0, 1, high_open=True)  # a ratio, a dropout, an Adam beta


def given_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The options whose value differs from their default: those the user asked for (an option given with
    its default value cannot be told apart, and needs no warning either)."""
    return [name for name, value in vars(args).items() if value != parser.get_default(name)]


def ignored_option(name: str, value, acts_with: str) -> str:
    """The warning for an option that does nothing in the chosen setting: said once, instead of being
    dropped without a word while the user believes it works."""
    return f"--{name} {value} is ignored: it acts only with {acts_with}"


def ignored_options(args: argparse.Namespace, parser: argparse.ArgumentParser,
                    acts_with: dict[str, tuple[bool, str]]) -> list[str]:
    """The warnings for the options given a value that the chosen setting never reads; `acts_with` maps an
    option to (whether the setting reads it, the setting it acts with)."""
    return [ignored_option(name, getattr(args, name), acts_with[name][1])
            for name in given_options(args, parser) if not acts_with.get(name, (True, ""))[0]]


def true_or_false(text: str) -> bool:
    """The reference's `type=eval` True/False options, without eval (which runs any text given)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
