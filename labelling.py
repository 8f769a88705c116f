"""Labelling a text file: the stages overlapped, the lines split among processes, an interrupted run resumed.

predict.py and deploy/predictor/infer.py write their output through `label_file`. While the model
runs one window of texts, a thread reads and tokenizes the next (the native tokenizer and the engines
release the GIL); a queue of `QUEUE_WINDOWS` bounds what waits, so memory stays flat on any file.

Under `paddle.distributed.launch` (one or more machines) the input's lines are cut into parts, each
process labels its share into `<output>.parts/`, and rank 0 joins the parts in input order into
the output. A part counts as done only once its rows are flushed to disk, renamed into place and its
record (`part-N.json`: the options, the input file and a checksum of the part's input lines that
produced it, and the count, size and checksum of its rows) written. With `--resume` a part is kept only
when all of that still holds, and the join verifies every part again: a part truncated by a kill or a
crash of the disk, or made from input lines that were edited since, is labelled again (one log line),
never joined. A single process with `--resume` writes parts too, so a killed run continues where it
stopped. Without parts the output is written atomically: a kill leaves the old output or the new one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, TypeVar

import numpy as np
from tqdm import tqdm

from data_io import PREDICTION_HEADER, Example, ReadStats, count_lines, format_predictions, iter_examples
from decision import Decision
from pipeline import WINDOW_BATCHES, LengthCounts, Runner, TextPipeline
from utils import DataError, atomic_output, batched, file_sha256, logger, write_text_atomic

QUEUE_WINDOWS = 2  # tokenized windows waiting for the model
PART_LINES = 50_000  # the most input lines in one part (fewer when the processes would otherwise idle)
PARTS_SUFFIX = ".parts"
POLL_SECONDS = 0.5

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class Labeller:
    """What labels texts: the pipeline, the model it feeds, and how a probability becomes a label;
    `lengths` sums what reading the labelled texts cut or windowed (the pipeline keeps no counts, so
    texts it encodes for anything else, such as INT8 calibration, are not among them)."""

    pipeline: TextPipeline
    runner: Runner
    decision: Decision
    labels: list[str]
    output_probs: bool = False
    lengths: LengthCounts = field(default_factory=LengthCounts)

    def rows(self, texts: list[str], logits: np.ndarray) -> list[str]:
        return format_predictions(texts, self.decision.probabilities(logits), self.decision, self.labels,
                                  self.output_probs)

    def length_summary(self) -> str:
        """The log line of what reading the texts labelled so far cut or windowed."""
        return self.pipeline.length_summary(self.lengths)


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
        if texts:
            labeller.lengths += encoded.counts
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
    `text<TAB>label`, then one row per input line, so row N + 1 belongs to line N (a blank line, which
    has no text to label, gives an empty row: the rows stay aligned with the lines).

    `options` are whatever changes the rows (checkpoint, thresholds, lengths ...): a part written with
    other options is never reused. The output replaces an earlier one only once it is complete, and its
    directory is created when missing (with or without parts).
    """
    output_file = Path(output_file)
    if output_file.resolve() == Path(data_path).resolve():
        raise DataError(f"--output_file {output_file} would overwrite the input {data_path}")
    if not Path(data_path).is_file():
        raise DataError(f"File not found: {data_path}")
    make_directory(output_file.parent, output_file)
    total_lines = count_lines(data_path)
    if world_size == 1 and not resume:
        label_whole_file(labeller, data_path, output_file, batch_size, total_lines)
        return
    parts = plan_parts(total_lines, world_size, part_lines)
    run = PartedRun(output_file.with_name(output_file.name + PARTS_SUFFIX), parts, Path(data_path), total_lines,
                    {"options": options, "input": input_identity(data_path)}, input_digests(data_path, parts))
    make_directory(run.parts_dir, output_file)
    mine = parts[rank::world_size]
    logger.info(f"Rank {rank} of {world_size}: {len(mine)} of {len(parts)} parts of {data_path} "
                f"({total_lines} lines) into {run.parts_dir}")
    for part in mine:
        if resume and run.kept(part):
            logger.info(f"Part {part.index}: lines {describe(part)} already labelled, kept (--resume)")
            continue
        write_part(labeller, run, part, batch_size)
    if rank == 0:
        relabel = (lambda part: write_part(labeller, run, part, batch_size)) if world_size == 1 else None
        join_parts(run, output_file, relabel)


def label_whole_file(labeller: Labeller, data_path: Path, output_file: Path, batch_size: int,
                     total_lines: int) -> None:
    """One process without parts: the rows go straight into the output, which replaces an earlier
    output only when complete, so a kill never leaves a truncated file where a good one was."""
    progress = tqdm(total=total_lines, desc="Predicting", unit="line", disable=None)
    with atomic_output(output_file) as out:
        out.write(PREDICTION_HEADER + "\n")
        stats = write_rows(labeller, data_path, out, Part(0, 1, None), batch_size, progress)
        check_texts(stats.examples, data_path)
    progress.close()
    logger.info(stats.summary(data_path, blank_lines="kept as empty rows"))


def make_directory(directory: Path, output_file: Path) -> None:
    """Create `directory` if missing; one line naming it when that is impossible (a file in the way,
    no permission), not a traceback."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"--output_file {output_file}: cannot create the directory {directory}: "
                        f"{err.strerror}") from None


def describe(part: Part) -> str:
    return f"{part.first_line}-{'end' if part.end_line is None else part.end_line - 1}"


def input_identity(data_path: Path) -> dict:
    """What identifies the input file cheaply: path, size and mtime (the parts' line digests catch what
    these miss, such as a same-size edit whose mtime was restored)."""
    status = Path(data_path).stat()
    return {"path": str(Path(data_path).resolve()), "size": status.st_size, "mtime_ns": status.st_mtime_ns}


def input_digests(data_path: Path, parts: list[Part]) -> list[str]:
    """sha256 of each part's input lines (their bytes), in one pass over the file: what a part's rows
    were made from, so an edited input invalidates exactly the parts whose lines changed."""
    digests = [hashlib.sha256() for _ in parts]
    index = 0
    with open(data_path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            while index + 1 < len(parts) and line_no >= parts[index + 1].first_line:
                index += 1
            digests[index].update(line)
    return [digest.hexdigest() for digest in digests]


class RowsWriter:
    """Rows written to a binary file as UTF-8, counted and hashed on the way, so the part's record can
    say what a complete copy of its rows holds."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.rows = 0
        self.size = 0

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self.handle.write(data)
        self.digest.update(data)
        self.rows += text.count("\n")
        self.size += len(data)

    def summary(self) -> dict:
        return {"rows": self.rows, "rows_bytes": self.size, "rows_sha256": self.digest.hexdigest()}


@dataclass
class PartedRun:
    """The parts of one labelling run beside its output, and what a part on disk must show to be used:
    the options, input file and input lines it was labelled from, and all of its rows (the size and
    checksum its record says; the record keeps their count too, for people)."""

    parts_dir: Path
    parts: list[Part]
    data_path: Path
    total_lines: int
    source: dict  # options and input identity, the same for every part
    digests: list[str]  # sha256 of each part's input lines

    def expected(self, part: Part) -> dict:
        return self.source | {"part": asdict(part), "input_sha256": self.digests[part.index]}

    def lines(self, part: Part) -> int:
        return (self.total_lines + 1 if part.end_line is None else part.end_line) - part.first_line

    def record(self, part: Part) -> dict | None:
        """The part's record, or None when it is missing or not a record (a damaged file)."""
        try:
            record = json.loads(record_path(self.parts_dir, part).read_bytes())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def problem(self, part: Part, checksum: bool = True) -> str | None:
        """Why the part on disk cannot be used, or None when it can; without `checksum` only what is
        cheap to see (record, file size), for polling. The rows are checked against what the writer
        recorded, not against the part's line count: a header line at the top of the input gets no row."""
        record = self.record(part)
        if record is None:
            return "its record is missing or unreadable"
        if any(record.get(key) != value for key, value in self.expected(part).items()):
            return "it was labelled with other options or from other input lines"
        rows = rows_path(self.parts_dir, part)
        size = rows.stat().st_size if rows.is_file() else None
        if size != record.get("rows_bytes"):
            return f"its rows file has {size} bytes, its record says {record.get('rows_bytes')}"
        if checksum and file_sha256(rows) != record.get("rows_sha256"):
            return "its rows do not match their checksum"
        return None

    def kept(self, part: Part) -> bool:
        """Whether a finished part can be kept (--resume); one log line when a finished one cannot."""
        problem = self.problem(part)
        if problem is not None and record_path(self.parts_dir, part).exists():
            logger.info(f"Part {part.index}: lines {describe(part)} not kept: {problem}; labelling it again")
        return problem is None


def record_path(parts_dir: Path, part: Part) -> Path:
    return parts_dir / f"part-{part.index:05d}.json"


def rows_path(parts_dir: Path, part: Part) -> Path:
    return parts_dir / f"part-{part.index:05d}.txt"


def write_part(labeller: Labeller, run: PartedRun, part: Part, batch_size: int) -> None:
    """The part's rows, flushed to disk before they are renamed into place and its record (with the
    rows' count, size and checksum) is written."""
    record_path(run.parts_dir, part).unlink(missing_ok=True)
    partial = rows_path(run.parts_dir, part).with_suffix(".partial")
    progress = tqdm(total=run.lines(part), desc=f"Part {part.index}", unit="line", disable=None)
    with open(partial, "wb") as handle:
        out = RowsWriter(handle)
        stats = write_rows(labeller, run.data_path, out, part, batch_size, progress)
        handle.flush()
        os.fsync(handle.fileno())
    progress.close()
    os.replace(partial, rows_path(run.parts_dir, part))
    record = run.expected(part) | {"examples": stats.examples} | out.summary()
    write_text_atomic(record_path(run.parts_dir, part), json.dumps(record, ensure_ascii=False))
    logger.info(f"Part {part.index}: lines {describe(part)} labelled; "
                f"{stats.summary(run.data_path, blank_lines='kept as empty rows')}")


def join_parts(run: PartedRun, output_file: Path, relabel: Callable[[Part], None] | None) -> None:
    """Rank 0: wait until every part is done, verify each against its record, then write the output
    from them in input order (atomically) and remove the parts.

    A part that does not verify is never joined: one process labels it again itself (`relabel`); with
    several, another rank might be rewriting it right now, so the run stops and says to resume."""
    if relabel is None:  # one process has written or checked every part itself: nothing to wait for
        wait_for_parts(run)
    for part in run.parts:
        problem = run.problem(part)
        if problem is None:
            continue
        if relabel is None:
            raise DataError(f"{rows_path(run.parts_dir, part)}: part {part.index} (lines {describe(part)}) cannot "
                            f"be joined: {problem}; run the same command with --resume to label it again")
        logger.info(f"Part {part.index}: lines {describe(part)} not kept: {problem}; labelling it again")
        relabel(part)
    check_texts(sum(run.record(part)["examples"] for part in run.parts), run.data_path)
    with atomic_output(output_file, "wb") as out:
        out.write((PREDICTION_HEADER + "\n").encode("utf-8"))
        for part in run.parts:
            with open(rows_path(run.parts_dir, part), "rb") as rows:
                shutil.copyfileobj(rows, out)
    for part in run.parts:
        record_path(run.parts_dir, part).unlink()
        rows_path(run.parts_dir, part).unlink()
    with contextlib.suppress(OSError):  # files of another run's processes may still arrive; leave those
        run.parts_dir.rmdir()
    logger.info(f"Joined {len(run.parts)} parts into {output_file}")


def wait_for_parts(run: PartedRun) -> None:
    """Until every part looks done (record and size: cheap enough to poll)."""
    waiting_logged = False
    while missing := [part.index for part in run.parts if run.problem(part, checksum=False) is not None]:
        if not waiting_logged:
            logger.info(f"Waiting for {len(missing)} parts from the other processes (first: part {missing[0]})")
            waiting_logged = True
        time.sleep(POLL_SECONDS)


def check_texts(examples: int, data_path: Path) -> None:
    if examples == 0:
        raise DataError(f"{data_path}: no texts to predict (the file has only blank lines)")
