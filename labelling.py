"""Labelling a text file: the stages overlapped, the lines split among processes, an interrupted run resumed.

predict.py and deploy/predictor/infer.py write their output through `label_file`. While the model
runs one window of texts, a thread reads and tokenizes the next (the native tokenizer and the engines
release the GIL); a queue of `QUEUE_WINDOWS` bounds what waits, so memory stays flat on any file.

Under `paddle.distributed.launch` (one or more machines) the input's lines are cut into parts, each
process labels its share into `<output>.parts/`, and rank 0 joins the parts in input order into
the output. A part counts as done only once its rows are flushed to disk, renamed into place and its
record (`part-N.json`, with the options that produced it) written; with `--resume` the parts that are
done with the same options are kept and the rest are labelled again. A single process with `--resume`
writes parts too, so a killed run continues where it stopped.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
from tqdm import tqdm

from data_io import PREDICTION_HEADER, Example, ReadStats, count_lines, format_predictions, iter_examples
from decision import Decision
from pipeline import WINDOW_BATCHES, Runner, TextPipeline
from utils import DataError, batched, logger, write_text_atomic

QUEUE_WINDOWS = 2  # tokenized windows waiting for the model
PART_LINES = 50_000  # the most input lines in one part (fewer when the processes would otherwise idle)
PARTS_SUFFIX = ".parts"
POLL_SECONDS = 0.5

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class Labeller:
    """What labels texts: the pipeline, the model it feeds, and how a probability becomes a label."""

    pipeline: TextPipeline
    runner: Runner
    decision: Decision
    labels: list[str]
    output_probs: bool = False

    def rows(self, texts: list[str], logits: np.ndarray) -> list[str]:
        return format_predictions(texts, self.decision.probabilities(logits), self.decision, self.labels,
                                  self.output_probs)


@dataclass(frozen=True)
class Part:
    """Input lines [first_line, end_line) (1-based; end_line None: to the end of the file)."""

    index: int
    first_line: int
    end_line: int | None


def ahead(items: Iterator[Item], work: Callable[[Item], Result], depth: int = QUEUE_WINDOWS
          ) -> Iterator[tuple[Item, Result]]:
    """(item, work(item)) in input order, with `work` done in a thread up to `depth` items ahead of the
    consumer; an exception in the thread is raised here, and leaving early stops the thread."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    finished = object()

    def hand_over(value) -> bool:
        while not stop.is_set():
            try:
                results.put(value, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand_over((item, work(item))):
                    return
            hand_over(finished)
        except BaseException as err:  # handed to the consumer, which raises it
            hand_over(err)

    thread = threading.Thread(target=produce, name="read-and-tokenize", daemon=True)
    thread.start()
    try:
        while (value := results.get()) is not finished:
            if isinstance(value, BaseException):
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def part_windows(data_path: Path, batch_size: int, stats: ReadStats, part: Part) -> Iterator[list[Example]]:
    """The part's lines (blank ones as empty texts) in windows of the pipeline's bucketing size."""
    inside = iter_examples(data_path, stats=stats, keep_blank=True, lines=(part.first_line, part.end_line))
    yield from batched(inside, batch_size * WINDOW_BATCHES)


def write_rows(labeller: Labeller, data_path: Path, out, part: Part, batch_size: int, progress: tqdm) -> ReadStats:
    """Label the part's lines into `out`: one row per line (a blank line gives an empty row)."""
    stats = ReadStats()
    pipeline = labeller.pipeline

    def encode(window: list[Example]):
        texts = [example.text for example in window if example.text]
        return texts, pipeline.encode(texts) if texts else None

    for window, (texts, encoded) in ahead(part_windows(data_path, batch_size, stats, part), encode):
        rows = iter(labeller.rows(texts, pipeline.outputs(labeller.runner, encoded)) if texts else [])
        out.write("".join((next(rows) if example.text else "") + "\n" for example in window))
        progress.update(window[-1].line_no - part.first_line + 1 - progress.n)
    return stats


def plan_parts(total_lines: int, world_size: int, part_lines: int = PART_LINES) -> list[Part]:
    """Consecutive parts of at most `part_lines` lines, at least one per process when there are enough
    lines; the last one runs to the end of the file (whatever its line count)."""
    size = max(1, min(part_lines, -(-total_lines // world_size)))
    count = max(1, -(-total_lines // size))
    return [Part(i, 1 + i * size, None if i == count - 1 else 1 + (i + 1) * size) for i in range(count)]


def label_file(labeller: Labeller, data_path: Path, output_file: str | os.PathLike, batch_size: int,
               options: dict, resume: bool = False, rank: int = 0, world_size: int = 1,
               part_lines: int = PART_LINES) -> None:
    """Label `data_path` into `output_file` as the reference's predict.py does: the header
    `text<TAB>label`, then one row per input line, so row N + 1 belongs to line N.

    `options` are whatever changes the rows (checkpoint, thresholds, lengths ...): a part written with
    other options is never reused.
    """
    output_file = Path(output_file)
    if output_file.resolve() == Path(data_path).resolve():
        raise DataError(f"--output_file {output_file} would overwrite the input {data_path}")
    if not Path(data_path).is_file():
        raise DataError(f"File not found: {data_path}")
    total_lines = count_lines(data_path)
    if world_size == 1 and not resume:
        progress = tqdm(total=total_lines, desc="Predicting", unit="line", disable=None)
        with open(output_file, "w", encoding="utf-8") as out:
            out.write(PREDICTION_HEADER + "\n")
            stats = write_rows(labeller, data_path, out, Part(0, 1, None), batch_size, progress)
        progress.close()
        check_texts(stats.examples, data_path)
        logger.info(stats.summary(data_path, blank_lines="kept as empty rows"))
        return
    parts_dir = output_file.with_name(output_file.name + PARTS_SUFFIX)
    parts_dir.mkdir(parents=True, exist_ok=True)
    parts = plan_parts(total_lines, world_size, part_lines)
    source = input_identity(data_path)
    mine = parts[rank::world_size]
    logger.info(f"Rank {rank} of {world_size}: {len(mine)} of {len(parts)} parts of {data_path} "
                f"({total_lines} lines) into {parts_dir}")
    for part in mine:
        record = {"options": options, "input": source, "part": asdict(part)}
        if resume and done_record(parts_dir, part, record) is not None:
            logger.info(f"Part {part.index}: lines {describe(part)} already labelled, kept (--resume)")
            continue
        write_part(labeller, data_path, parts_dir, part, record, batch_size, total_lines)
    if rank == 0:
        join_parts(parts_dir, parts, output_file, data_path, {"options": options, "input": source})


def describe(part: Part) -> str:
    return f"{part.first_line}-{'end' if part.end_line is None else part.end_line - 1}"


def input_identity(data_path: Path) -> dict:
    """What identifies the input file's content without reading it all: path, size and mtime."""
    status = Path(data_path).stat()
    return {"path": str(Path(data_path).resolve()), "size": status.st_size, "mtime_ns": status.st_mtime_ns}


def record_path(parts_dir: Path, part: Part) -> Path:
    return parts_dir / f"part-{part.index:05d}.json"


def rows_path(parts_dir: Path, part: Part) -> Path:
    return parts_dir / f"part-{part.index:05d}.txt"


def done_record(parts_dir: Path, part: Part, expected: dict) -> dict | None:
    """The record of a part that is done (its rows are on disk) with the `expected` entries, or None."""
    path = record_path(parts_dir, part)
    if not path.is_file() or not rows_path(parts_dir, part).is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record if all(record.get(key) == value for key, value in expected.items()) else None


def write_part(labeller: Labeller, data_path: Path, parts_dir: Path, part: Part, record: dict, batch_size: int,
               total_lines: int) -> None:
    """The part's rows, flushed to disk before they are renamed into place and its record is written."""
    record_path(parts_dir, part).unlink(missing_ok=True)
    partial = rows_path(parts_dir, part).with_suffix(".partial")
    lines = (total_lines + 1 if part.end_line is None else part.end_line) - part.first_line
    progress = tqdm(total=lines, desc=f"Part {part.index}", unit="line", disable=None)
    with open(partial, "w", encoding="utf-8") as out:
        stats = write_rows(labeller, data_path, out, part, batch_size, progress)
        out.flush()
        os.fsync(out.fileno())
    progress.close()
    os.replace(partial, rows_path(parts_dir, part))
    write_text_atomic(record_path(parts_dir, part), json.dumps(record | {"examples": stats.examples}, ensure_ascii=False))
    logger.info(f"Part {part.index}: lines {describe(part)} labelled; "
                f"{stats.summary(data_path, blank_lines='kept as empty rows')}")


def join_parts(parts_dir: Path, parts: list[Part], output_file: Path, data_path: Path, expected: dict) -> None:
    """Rank 0: wait until every part is done with these options, then write the output from them in
    input order and remove the parts."""
    waiting_logged = False
    while True:
        records = [done_record(parts_dir, part, expected | {"part": asdict(part)}) for part in parts]
        missing = [part.index for part, record in zip(parts, records) if record is None]
        if not missing:
            break
        if not waiting_logged:
            logger.info(f"Waiting for {len(missing)} parts from the other processes (first: part {missing[0]})")
            waiting_logged = True
        time.sleep(POLL_SECONDS)
    check_texts(sum(record["examples"] for record in records), data_path)
    partial = output_file.with_name(output_file.name + ".partial")
    with open(partial, "w", encoding="utf-8") as out:
        out.write(PREDICTION_HEADER + "\n")
        for part in parts:
            with open(rows_path(parts_dir, part), encoding="utf-8") as rows:
                shutil.copyfileobj(rows, out)
    os.replace(partial, output_file)
    for part in parts:
        record_path(parts_dir, part).unlink()
        rows_path(parts_dir, part).unlink()
    with contextlib.suppress(OSError):  # files of another run's processes may still arrive; leave those
        parts_dir.rmdir()
    logger.info(f"Joined {len(parts)} parts into {output_file}")


def check_texts(examples: int, data_path: Path) -> None:
    if examples == 0:
        raise DataError(f"{data_path}: no texts to predict (the file has only blank lines)")
