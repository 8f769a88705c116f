"""The export's proof: an exported model must answer like the dygraph model it came from.

`write_checked_export` writes an export directory and then runs every FP32 backend on the same
texts as the dygraph model; an export whose probabilities differ by more than `FP32_TOLERANCE` is
deleted and reported, never deployed. The same table compares INT8/BF16/FP16 variants. Every export
is made this way: export_model.py's, few-shot's, and `cached_export`, the one predict.py makes of a
checkpoint for its static backends.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from backends import create_backend
from data_io import load_examples, multi_hot
from decision import Decision
from exporting import (
    EXPORT_PREFIX,
    META_FILE,
    ONNX_FILE,
    ExportInfo,
    convert_to_onnx,
    deploy_input_names,
    export_static_graph,
    load_export,
    write_meta,
)
from metric import MetricReport
from modeling import checkpoint_decision, checkpoint_long_text, model_input_names, plain_vocabulary, text_probs
from pipeline import ERNIE_M_INPUTS, TextPipeline
from utils import DataError, file_records, file_sha256, logger, records_problem, write_json

EXPORT_CACHE = "export_cache"  # predict.py's export of a checkpoint, inside the checkpoint directory
CACHE_STAMP = "source.json"  # in the cache: what it was made from, and its files' sizes and checksums
PARITY_SAMPLES = 256


def export_checked(model, tokenizer, output: Path, prefix_name: str, label_list: Sequence[str], decision: Decision,
                   input_names: Sequence[str], texts: Sequence[str], labels: np.ndarray | None,
                   max_seq_length: int) -> list[dict]:
    """Write a deployable directory of a sequence classifier and prove it answers like the dygraph model.

    The export reads long texts as the checkpoint does (truncated, or in windows pooled the same way),
    and the parity texts get one document several windows long, made of the others joined."""
    long_text = checkpoint_long_text(model)
    texts, labels = with_long_document(texts, labels, max_seq_length)
    reference = text_probs(model, tokenizer, texts, max_seq_length, decision=decision)  # before to_static rewrites forward
    return write_checked_export(
        lambda prefix: export_static_graph(model, prefix, input_names), reference, tokenizer, output, prefix_name,
        label_list, decision, input_names, texts, labels,
        make_pipeline=lambda exported: TextPipeline(tokenizer, exported.input_names, max_seq_length,
                                                    long_text=exported.long_text),
        extra_meta={"long_text": long_text.as_dict(), "max_position_embeddings": model.config.max_position_embeddings})


def probe_texts(tokenizer, count: int, seed: int = 0) -> list[str]:
    """Random texts from the vocabulary, of many lengths, when no dev file is given."""
    rng = random.Random(seed)
    pieces = plain_vocabulary(tokenizer) or ["a"]
    return ["".join(rng.choices(pieces, k=rng.randint(1, 120))) for _ in range(count)]


def parity_texts(tokenizer, label_list: Sequence[str], dataset_dir: str | os.PathLike | None, dev_file: str,
                 count: int) -> tuple[list[str], np.ndarray | None]:
    """Up to `count` texts of the dev file (with their labels), or random texts without a dataset."""
    if dataset_dir is None:
        return probe_texts(tokenizer, count), None
    examples = load_examples(Path(dataset_dir) / dev_file, label_list)
    examples = random.Random(0).sample(examples, min(count, len(examples)))
    return [e.text for e in examples], multi_hot(examples, len(label_list))


def cached_export(model, tokenizer, params_path: str | os.PathLike, label_list: Sequence[str], max_seq_length: int,
                  dataset_dir: str | os.PathLike) -> ExportInfo:
    """The checkpoint's export for a static backend, written once into `<params_path>/export_cache/` with
    the parity check of export_model.py, and reused while it is the export of these weights and config
    and its files are the ones written (sizes and checksums in its stamp): a truncated, overwritten or
    missing file, or a stamp of an earlier version, makes it export again instead of failing to load.

    Processes that start together (sharded labelling) export once: the others wait on a file lock and
    then find the export made. The dev file of `dataset_dir` is the parity data when it exists. A
    checkpoint directory where the cache cannot be written is one line (a good cache is still used).
    """
    params_path = Path(params_path)
    cache = params_path / EXPORT_CACHE
    source = checkpoint_identity(params_path)
    with export_cache_lock(params_path, cache, source):
        problem = cache_problem(cache, source)
        if problem is None:
            logger.info(f"Using the export of {params_path} cached in {cache}")
        else:
            if (cache / CACHE_STAMP).exists():
                logger.info(f"The export cached in {cache} is not used: {problem}; exporting again")
            logger.info(f"Exporting {params_path} once for the static backends into {cache}")
            export_to_cache(model, tokenizer, cache, label_list, max_seq_length, dataset_dir)
            files = sorted(str(path.relative_to(cache)) for path in cache.rglob("*") if path.is_file())
            write_json(cache / CACHE_STAMP, {"source": source, "files": file_records(cache, files)})
    return load_export(cache / EXPORT_PREFIX)


def checkpoint_identity(params_path: Path) -> dict:
    """What the export is made from: the weights (size and mtime: they are large) and config.json
    (labels, thresholds, long-text settings; small, so its checksum)."""
    weights = (params_path / "model_state.pdparams").stat()
    config = params_path / "config.json"
    return {"weights_size": weights.st_size, "weights_mtime_ns": weights.st_mtime_ns,
            "config_sha256": file_sha256(config) if config.is_file() else None}


def cache_problem(cache: Path, source: dict) -> str | None:
    """Why the cached export cannot be used (None: it can)."""
    try:
        stamp = json.loads((cache / CACHE_STAMP).read_bytes())
    except FileNotFoundError:
        return "it has no stamp"
    except (OSError, ValueError):
        return f"{CACHE_STAMP} is unreadable"
    if not isinstance(stamp, dict) or stamp.get("source") != source:
        return "it was made from other weights or another config"
    return records_problem(cache, stamp.get("files"))


@contextlib.contextmanager
def export_cache_lock(params_path: Path, cache: Path, source: dict) -> Iterator[None]:
    """Hold the cache's lock file; where it cannot be created (read-only checkpoint directory) a good
    cache is used without it, and a missing or damaged one is one line saying what to do."""
    lock_path = params_path / f"{EXPORT_CACHE}.lock"
    try:
        lock = open(lock_path, "a")
    except OSError as err:
        problem = cache_problem(cache, source)
        if problem is None:
            yield
            return
        raise DataError(f"cannot write the export cache of --params_path {params_path} ({lock_path}: "
                        f"{err.strerror}), and {cache} cannot be used ({problem}): make the checkpoint "
                        f"directory writable, or copy the checkpoint to a writable one") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def export_to_cache(model, tokenizer, cache: Path, label_list: Sequence[str], max_seq_length: int,
                    dataset_dir: str | os.PathLike) -> None:
    """A fresh export with its parity check, on the dev file when the dataset has one."""
    shutil.rmtree(cache, ignore_errors=True)
    dev_file = "dev.txt" if (Path(dataset_dir) / "dev.txt").is_file() else None
    texts, labels = parity_texts(tokenizer, label_list, dataset_dir if dev_file else None, dev_file or "",
                                 PARITY_SAMPLES)
    multilingual = model_input_names(tokenizer) == ERNIE_M_INPUTS
    export_checked(model, tokenizer, cache, EXPORT_PREFIX, label_list, checkpoint_decision(model),
                   deploy_input_names(tokenizer, multilingual), texts, labels, max_seq_length)


def with_long_document(texts: Sequence[str], labels: np.ndarray | None, max_seq_length: int
                       ) -> tuple[list[str], np.ndarray | None]:
    """`texts` plus one text of at least four windows' worth of characters, the texts joined in turn;
    its labels are theirs together."""
    joined = 0
    while joined < len(texts) and sum(len(text) for text in texts[:joined]) < 4 * max_seq_length:
        joined += 1
    document = "".join(texts[:joined])
    if labels is None:
        return [*texts, document], None
    return [*texts, document], np.vstack([labels, labels[:joined].max(0, keepdims=True)])


def write_checked_export(write_graph: Callable[[Path], None], reference: np.ndarray, tokenizer, output: Path,
                         prefix_name: str, label_list: Sequence[str], decision: Decision, input_names: Sequence[str],
                         texts: Sequence[str], labels: np.ndarray | None,
                         make_pipeline: Callable[[ExportInfo], TextPipeline], extra_meta: dict | None = None
                         ) -> list[dict]:
    """Static graph `<prefix_name>.*` (written by `write_graph`), model.onnx, tokenizer and metadata go
    to `output`; then both FP32 runtimes are compared with the dygraph probabilities `reference` of
    `texts` (both through `decision`'s calibration). A failing export is deleted (a model that answers differently must not be deployed) and
    reported as a DataError. Returns the parity rows.
    """
    output.mkdir(parents=True, exist_ok=True)
    prefix = output / prefix_name
    write_graph(prefix)
    convert_to_onnx(prefix, output / ONNX_FILE)
    tokenizer.save_pretrained(str(output))
    write_meta(output, prefix_name, label_list, decision, input_names, extra_meta)

    export = load_export(prefix)
    pipeline = make_pipeline(export)
    variants = {}
    for backend in ("onnxruntime", "paddle"):
        engine = create_backend(export, backend, "fp32", num_threads=os.cpu_count() or 1)
        variants[engine.label] = pipeline.probs(engine, texts, decision)
    rows = parity_rows(reference, variants, decision, labels)
    log_parity(rows)
    try:
        check_fp32_parity(rows)
    except DataError:
        for written in [*output.glob(f"{prefix_name}.*"), output / ONNX_FILE, output / META_FILE]:
            written.unlink(missing_ok=True)
        raise
    (output / "parity.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


FP32_TOLERANCE = 1e-4  # max |Δprob| allowed between an FP32 variant and the dygraph model


def parity_rows(reference: np.ndarray, variants: dict[str, np.ndarray], decision: Decision,
                labels: np.ndarray | None = None) -> list[dict]:
    """Per variant: max |Δprob| against the reference, share of label decisions that flip, and F1."""
    rows = []
    reference_labels = decision.chosen(reference)
    for name, probs in {"dygraph": reference, **variants}.items():
        row = {"variant": name, "max_abs_diff": float(np.abs(probs - reference).max()),
               "changed_decisions": float((decision.chosen(probs) != reference_labels).mean())}
        if labels is not None:
            metric = MetricReport(decision=decision)
            metric.update(probs, labels)
            row["micro_f1"], row["macro_f1"] = metric.accumulate()
        rows.append(row)
    return rows


def log_parity(rows: list[dict]) -> None:
    has_f1 = "micro_f1" in rows[0]
    header = f"{'variant':18s} {'max|Δprob|':>11s} {'flipped':>8s}"
    lines = [header + ("  micro F1  macro F1   ΔF1 (micro/macro)" if has_f1 else "")]
    for row in rows:
        line = f"{row['variant']:18s} {row['max_abs_diff']:11.2e} {row['changed_decisions']:8.2%}"
        if has_f1:
            delta_micro = 100 * (row["micro_f1"] - rows[0]["micro_f1"])
            delta_macro = 100 * (row["macro_f1"] - rows[0]["macro_f1"])
            line += (f"  {100 * row['micro_f1']:8.2f}  {100 * row['macro_f1']:8.2f}   "
                     f"{delta_micro:+.2f}/{delta_macro:+.2f}")
        lines.append(line)
    logger.info("parity against the dygraph model:\n" + "\n".join(lines))


def check_fp32_parity(rows: list[dict]) -> None:
    failed = [row for row in rows if row["variant"].endswith("fp32") and row["max_abs_diff"] > FP32_TOLERANCE]
    if failed:
        raise DataError("exported FP32 model differs from the dygraph model: " + ", ".join(
            f"{row['variant']} max |Δprob| {row['max_abs_diff']:.2e}" for row in failed)
            + f" (tolerance {FP32_TOLERANCE:g})")
