"""The export directory: what export_model.py, prune.py and few-shot write for deployment, and how
every deployment reads it.

An export holds the static graph (`<prefix>.json` + `.pdiparams`), `model.onnx` with stable tensor
names (`logits` out), the tokenizer and `export_meta.json` (labels, thresholds and the rest of the decision in output order,
input names, how long texts are read, the model's position count). Exports of the reference, which
have no metadata, are read too. ONNX tooling is imported only when a conversion actually runs.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import paddle

from data_io import read_label_list
from decision import CONFIG_KEY as DECISION_KEY
from decision import Decision
from modeling import check_label_list, load_tokenizer, model_input_names, stored_long_text
from pipeline import ERNIE_INPUTS, ERNIE_M_INPUTS, LongText
from utils import DataError, file_records, logger, read_json_object, records_problem, write_json

EXPORT_PREFIX = "float32"
ONNX_FILE = "model.onnx"
META_FILE = "export_meta.json"
EXPORT_REMEDY = "run export_model.py again"
OUTPUT_NAME = "logits"
BUILT_SUFFIX = ".built.json"  # beside a derived model: size and checksum of each file its build wrote


@dataclass
class ExportInfo:
    """What an export directory holds; `labels` and the decision's thresholds are in model output order;
    `max_positions` is None when the export does not say (reference exports)."""

    directory: Path
    model_prefix: Path
    labels: list[str]
    decision: Decision
    input_names: list[str]
    long_text: LongText = LongText()
    max_positions: int | None = None


def paddle_model_files(prefix: str | os.PathLike) -> tuple[Path, Path]:
    """The static graph (`.json` from Paddle 3 / PIR, `.pdmodel` before) and its parameters."""
    prefix = Path(prefix)
    params = prefix.with_name(prefix.name + ".pdiparams")
    for suffix in (".json", ".pdmodel"):
        graph = prefix.with_name(prefix.name + suffix)
        if graph.is_file() and params.is_file():
            return graph, params
    raise DataError(f"--model_path_prefix {prefix}: no {prefix.name}.json or {prefix.name}.pdmodel with "
                    f"{prefix.name}.pdiparams in {prefix.parent}/ (run export_model.py first)")


def export_static_graph(model, prefix: Path, input_names: Sequence[str]) -> None:
    """paddle.jit.save of the model's forward with dynamic [batch, length] int64 inputs."""
    spec = [paddle.static.InputSpec([None, None], "int64", name) for name in input_names]
    static_model = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
    paddle.jit.save(static_model, str(prefix))


@contextlib.contextmanager
def console_output_to_log(tool: str) -> Iterator[None]:
    """Keep what a tool prints to the process's stdout/stderr off the console: paddle2onnx and its
    constant folding print progress and temporary paths from C++ and Python, which used to end up in
    users' logs and documents. If the tool fails, its output is logged as an error; otherwise only a
    debug line counts it (paddlenlp's logger shows debug lines by default)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as capture, open(capture.fileno(), "w", closefd=False) as text:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield
            failed = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            capture.seek(0)
            printed = capture.read().decode("utf-8", errors="replace").strip()
            if failed and printed:
                logger.error(f"{tool} printed:\n{printed}")
            elif printed:
                logger.debug(f"{tool}: {len(printed.splitlines())} lines of console output not shown")


def convert_to_onnx(prefix: Path, onnx_file: Path) -> None:
    """paddle2onnx, then rename the graph output to `logits` so configs never name `fetch_name_0`."""
    import onnx
    import paddle2onnx

    graph_file, params_file = paddle_model_files(prefix)
    with tempfile.TemporaryDirectory() as tmp, console_output_to_log("paddle2onnx"):
        raw = Path(tmp, "raw.onnx")
        paddle2onnx.export(str(graph_file), str(params_file), str(raw), opset_version=13,
                           enable_onnx_checker=True)
        model = onnx.load(str(raw))
    old_name = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old_name else name for name in node.output]
        node.input[:] = [OUTPUT_NAME if name == old_name else name for name in node.input]
    model.graph.output[0].name = OUTPUT_NAME
    onnx.save(model, str(onnx_file))


def write_meta(directory: Path, prefix_name: str, labels: Sequence[str], decision: Decision, input_names,
               extra: dict | None = None) -> None:
    """export_meta.json; `extra` holds what one kind of model needs besides (few-shot: its template)."""
    meta = {"model_prefix": prefix_name, "onnx": ONNX_FILE, "input_names": list(input_names),
            "output_name": OUTPUT_NAME, "labels": list(labels),
            "thresholds": [float(t) for t in decision.thresholds], DECISION_KEY: decision.settings(), **(extra or {})}
    write_json(directory / META_FILE, meta)


def deploy_input_names(tokenizer, multilingual: bool = False) -> tuple[str, ...]:
    """The exported graph's inputs: ERNIE-M tokenizers make no token_type_ids, so neither does its graph."""
    if not multilingual and model_input_names(tokenizer) == ERNIE_M_INPUTS:
        logger.info("The tokenizer produces no token_type_ids (ERNIE-M): exporting input_ids only, as --multilingual")
        return ERNIE_M_INPUTS
    return ERNIE_M_INPUTS if multilingual else ERNIE_INPUTS


def load_export(model_path_prefix: str | os.PathLike, label_file: str | os.PathLike | None = None) -> ExportInfo:
    """Read an export; `label_file`, when it exists, must agree with the stored labels.

    Exports made by the reference export_model.py have no metadata: their labels then come from
    `label_file` (required) and every threshold is 0.5.
    """
    prefix = Path(model_path_prefix)
    paddle_model_files(prefix)
    directory = prefix.parent
    meta_file = directory / META_FILE
    file_labels = read_label_list(label_file) if label_file is not None and Path(label_file).is_file() else None
    if meta_file.is_file():
        meta = read_json_object(meta_file, EXPORT_REMEDY)
        labels = meta["labels"]
        if file_labels is not None:
            check_label_list(label_file, file_labels, labels)
        return ExportInfo(directory, prefix, labels, stored_decision(meta, meta_file),
                          meta["input_names"], stored_long_text(meta.get("long_text")),
                          meta.get("max_position_embeddings"))
    if file_labels is None:
        raise DataError(f"{directory} has no {META_FILE} (not written by this project's export_model.py), so "
                        f"its labels are unknown: pass a dataset directory with label.txt")
    import onnx

    input_names = [i.name for i in onnx.load(str(ensure_onnx(prefix, directory)), load_external_data=False).graph.input]
    return ExportInfo(directory, prefix, file_labels, Decision.stored(None, None, len(file_labels)), input_names)


def stored_decision(meta: dict, meta_file: Path) -> Decision:
    """The export's decision (exports written before the policy settings existed have thresholds only)."""
    try:
        return Decision.stored(meta["thresholds"], meta.get(DECISION_KEY), len(meta["labels"]))
    except ValueError as err:
        raise DataError(f"{meta_file}: {DECISION_KEY}: {err}") from None


def ensure_onnx(prefix: Path, directory: Path) -> Path:
    """model.onnx of the export; converted once for exports that lack it (reference exports, pruning)."""
    graph_file, _ = paddle_model_files(prefix)
    return cached(directory / ONNX_FILE, graph_file, lambda out: convert_to_onnx(prefix, out), "ONNX model")


def cached(target: Path, source: Path, build: Callable[[Path], None], what: str) -> Path:
    """Build `target` from `source` unless a good copy is already there: newer than the source and, when
    it was built by this version, still the files its build wrote (a truncated or overwritten model is
    built again rather than failing to load)."""
    problem = built_problem(target, source)
    if problem is None:
        logger.info(f"Using cached {what}: {target}")
        return target
    if target.exists():
        logger.info(f"Cached {what} {target} is not used: {problem}; building it again")
    if not os.access(target.parent, os.W_OK):
        raise DataError(f"{target.parent} is read-only, so the {what} cannot be built there: run this once where "
                        f"the export directory is writable (the file is reused afterwards)")
    start = time.perf_counter()
    built_record_path(target).unlink(missing_ok=True)  # the record of an earlier build says nothing now
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # never leave a half-written file behind
        build(Path(tmp, target.name))
        names = [built.name for built in Path(tmp).iterdir()]
        records = file_records(Path(tmp), names)
        for name in names:
            Path(tmp, name).replace(target.parent / name)
    write_json(built_record_path(target), {"files": records})
    logger.info(f"Built {what} in {time.perf_counter() - start:.1f} s: {target}")
    return target


def built_record_path(target: Path) -> Path:
    return target.with_name(target.name + BUILT_SUFFIX)


def built_problem(target: Path, source: Path) -> str | None:
    """Why the cached `target` cannot be used, or None. A target without a record of its build (made by
    an earlier version) is judged by its age alone, as it was then."""
    if not target.is_file():
        return "it is missing"
    if target.stat().st_mtime < source.stat().st_mtime:
        return f"it is older than {source.name}"
    record_file = built_record_path(target)
    if not record_file.is_file():
        return None
    try:
        records = json.loads(record_file.read_bytes())["files"]
    except (OSError, ValueError, TypeError, KeyError):
        return f"{record_file.name} is unreadable"
    return records_problem(target.parent, records)


def export_prefix_in(directory: str | os.PathLike) -> Path:
    """The model prefix of an export directory (float32, pruned_model, or a reference export's name)."""
    directory = Path(directory)
    meta_file = directory / META_FILE
    if meta_file.is_file():
        return directory / read_json_object(meta_file, EXPORT_REMEDY)["model_prefix"]
    params = sorted(directory.glob("*.pdiparams"))
    if not params:
        raise DataError(f"{directory} holds no exported model (*.pdiparams); run export_model.py first")
    return params[0].with_suffix("")


def load_export_tokenizer(export: ExportInfo, override: str | None = None):
    """The tokenizer saved in the export, unless the user names another one."""
    return load_tokenizer(override or str(export.directory))
