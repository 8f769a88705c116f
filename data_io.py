"""Data files and output formats: `label.txt`, `text<TAB>label,label` files and prediction lines.

Every script reads its data through this module, so the file format, the checks on it and the
label ids are the same everywhere, and nothing is dropped without being counted.
"""
from __future__ import annotations

import difflib
import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from decision import Decision
from pipeline import WINDOW_BATCHES
from utils import DataError, batched, logger

PREDICTION_HEADER = "text\tlabel"  # first line of predict.py's output, as in the reference


def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without line ending); accepts a BOM and CRLF line endings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"File not found: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline=None) as handle:
            for line_no, line in enumerate(handle, start=1):
                yield line_no, line.rstrip("\n")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None


def read_label_entries(path: str | os.PathLike) -> list[tuple[int, str]]:
    """(line number, stripped line) of every label line; trailing blank lines are allowed."""
    entries: list[tuple[int, str]] = []
    blank_line = 0
    for line_no, line in read_lines(path):
        entry = line.strip()
        if not entry:
            blank_line = blank_line or line_no
            continue
        if blank_line:
            raise DataError(f"{path}:{blank_line}: blank label name (every line of the label file must name a label)")
        entries.append((line_no, entry))
    if not entries:
        raise DataError(f"{path}: the label file is empty")
    return entries


def check_unique_labels(path: str | os.PathLike, names: Iterable[tuple[int, str]]) -> None:
    """Refuse a label named twice; `names` are (line number, label name)."""
    seen: dict[str, int] = {}
    for line_no, name in names:
        if name in seen:
            raise DataError(f"{path}:{line_no}: duplicate label {name!r} (first on line {seen[name]})")
        seen[name] = line_no


def read_label_list(path: str | os.PathLike) -> list[str]:
    """Read label.txt: one name per line, line order = class id."""
    entries = read_label_entries(path)
    check_unique_labels(path, entries)
    return [name for _, name in entries]


@dataclass
class Example:
    """One line of a data file: its text and the ids of its labels (empty: no label)."""

    text: str
    labels: list[int]
    line_no: int


@dataclass
class ReadStats:
    """What a read saw, so that nothing is dropped without being counted."""

    examples: int = 0
    unlabelled: int = 0
    blank: int = 0
    label_columns_ignored: int = 0
    header: bool = False

    def summary(self, path: str | os.PathLike, blank_lines: str = "skipped") -> str:
        parts = [f"{self.examples} examples"]
        if self.header:
            parts.append("header line skipped")
        if self.unlabelled:
            parts.append(f"{self.unlabelled} without labels")
        if self.blank:
            parts.append(f"{self.blank} blank lines {blank_lines}")
        if self.label_columns_ignored:
            parts.append(f"label column ignored on {self.label_columns_ignored} lines")
        return f"Read {Path(path).name}: " + ", ".join(parts)


def _unknown_label_message(path, line_no: int, label: str, label2id: dict[str, int]) -> str:
    close = difflib.get_close_matches(label, list(label2id), n=1, cutoff=0.0)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{path}:{line_no}: unknown label {label!r} (not in the label file){hint}"


def iter_examples(
    path: str | os.PathLike,
    label2id: dict[str, int] | None = None,
    stats: ReadStats | None = None,
    keep_blank: bool = False,
    lines: tuple[int, int | None] = (1, None),
) -> Iterator[Example]:
    """Stream the examples of a `text<TAB>label,label` file.

    With `label2id=None` (prediction input) only the text is used: a second column, if present,
    is ignored and counted. A line without TAB (or ending in TAB) is an example with no labels.
    A first line `text<TAB>label` is predict.py's header and is skipped, so its output reads back
    as data. Blank lines are counted and skipped, or with `keep_blank` yielded as empty examples
    (prediction keeps one output row per input line). `lines` = [first, end) limits the read to those
    line numbers (end None: to the end of the file).
    """
    stats = stats if stats is not None else ReadStats()
    first_line, end_line = lines
    for line_no, raw in read_lines(path):
        if line_no < first_line:
            continue
        if end_line is not None and line_no >= end_line:
            return
        line = raw.rstrip()
        if not line.strip():
            stats.blank += 1
            if keep_blank:
                yield Example(text="", labels=[], line_no=line_no)
            continue
        if line_no == 1 and line == PREDICTION_HEADER and "label" not in (label2id or {}):
            stats.header = True
            continue
        columns = line.split("\t")
        if len(columns) > 2:
            raise DataError(
                f"{path}:{line_no}: more than one TAB in the line (format is text<TAB>label,label; "
                f"texts must not contain TAB): {raw!r}"
            )
        text = columns[0].strip()
        if not text:
            raise DataError(f"{path}:{line_no}: empty text before the TAB: {raw!r}")
        labels: list[int] = []
        if len(columns) == 2 and label2id is None:
            stats.label_columns_ignored += 1
        elif len(columns) == 2:
            for item in columns[1].split(","):
                name = item.strip()
                if not name:
                    raise DataError(f"{path}:{line_no}: empty label in {columns[1]!r}")
                if name not in label2id:
                    raise DataError(_unknown_label_message(path, line_no, name, label2id))
                if label2id[name] not in labels:
                    labels.append(label2id[name])
        stats.examples += 1
        stats.unlabelled += not labels and label2id is not None
        yield Example(text=text, labels=labels, line_no=line_no)


def load_examples(path: str | os.PathLike, label_list: Sequence[str] | None) -> list[Example]:
    """Read a whole data file, log what was read, and refuse a file with no example."""
    label2id = None if label_list is None else {name: i for i, name in enumerate(label_list)}
    stats = ReadStats()
    examples = list(iter_examples(path, label2id, stats))
    if not examples:
        raise DataError(f"{path}: no examples (the file has only blank lines)")
    logger.info(stats.summary(path))
    return examples


def iter_corpus(path: str | os.PathLike) -> Iterator[str]:
    """The texts of an unlabelled file or corpus, one per line: plain or gzip (`.gz`), a TAB label
    column and predict.py's header ignored, blank lines skipped. UTF-8 is checked line by line, so a
    fault names its line (a corpus is often too large to look for it by hand)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"File not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8").rstrip("\r\n")
                except UnicodeDecodeError as err:
                    raise DataError(f"{path}:{line_no}: not valid UTF-8 ({err.reason} at byte {err.start} of the line)"
                                    ) from None
                text = line.split("\t")[0].strip()
                if text and not (line_no == 1 and line == PREDICTION_HEADER):
                    yield text
    except (OSError, EOFError) as err:  # a damaged or cut .gz
        raise DataError(f"{path}: cannot be read ({type(err).__name__}: {err})") from None


def format_labels(label_ids: Iterable[int], label_list: Sequence[str]) -> str:
    """The label column of the data format: names joined by a bare comma."""
    return ",".join(label_list[i] for i in label_ids)


def format_predictions(texts: Sequence[str], probs: np.ndarray, decision: Decision, label_list: Sequence[str],
                       output_probs: bool = False) -> list[str]:
    """Output rows as the reference writes them: `text<TAB>name, name` (names joined by comma and space,
    which the reader accepts as data too), plus every label's probability as JSON with `output_probs`,
    plus, when the decision has a `top_k`, its k most probable labels as a JSON list of [name, probability].
    The decisions are taken for all rows at once: per row they cost more than the model of a small
    checkpoint."""
    probs = np.asarray(probs).reshape(len(texts), len(label_list))
    rows, columns = np.nonzero(decision.chosen(probs))
    names = [label_list[column] for column in columns.tolist()]
    bounds = np.searchsorted(rows, np.arange(len(texts) + 1)).tolist()  # row i's names: names[bounds[i]:bounds[i + 1]]
    lines = [f"{text}\t{', '.join(names[start:end])}" for text, start, end in zip(texts, bounds, bounds[1:])]
    if output_probs:
        lines = [line + "\t" + json.dumps({n: round(float(p), 4) for n, p in zip(label_list, row)},
                                          ensure_ascii=False) for line, row in zip(lines, probs)]
    if decision.top_k:
        top_ids, top_probs = decision.top(probs)
        lines = [line + "\t" + json.dumps([[label_list[i], round(float(p), 4)] for i, p in zip(ids, row)],
                                          ensure_ascii=False) for line, ids, row in zip(lines, top_ids, top_probs)]
    return lines


def multi_hot(examples: Sequence[Example], num_labels: int) -> np.ndarray:
    """The examples' labels as an (examples x labels) 0/1 matrix."""
    return label_matrix([example.labels for example in examples], num_labels)


def label_matrix(label_ids: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    """Label ids per text as a (texts x labels) 0/1 matrix."""
    matrix = np.zeros((len(label_ids), num_labels), dtype="float32")
    for row, ids in enumerate(label_ids):
        matrix[row, ids] = 1
    return matrix


def count_lines(path: str | os.PathLike) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def text_windows(data_path: Path, batch_size: int, stats: ReadStats, keep_blank: bool = False
                 ) -> Iterator[list[Example]]:
    """The texts of a prediction input in windows of `batch_size * WINDOW_BATCHES` lines, the pipeline's
    own bucketing window, so a file larger than memory works and batching is as good as on the whole;
    a file without any text is refused once it has been read."""
    yield from batched(iter_examples(data_path, stats=stats, keep_blank=keep_blank), batch_size * WINDOW_BATCHES)
    if stats.examples == 0:
        raise DataError(f"{data_path}: no texts to predict (the file has only blank lines)")
