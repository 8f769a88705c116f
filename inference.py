"""Exported models: the export directory, its runtime backends and their cached variants.

`export_model.py` writes a self-contained directory (static graph, ONNX model with stable tensor
names, tokenizer, labels and thresholds); everything that serves a model (deploy/predictor, the
servers, pruned models) loads it through `load_export` and runs it through one `Backend`. Derived
models (INT8, FP16) are built once and cached next to the export, never redone at start-up.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import nncf
import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import paddle
import paddle2onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16
from scipy.special import expit

from metric import MetricReport
from utils import (WINDOW_BATCHES, DataError, batched, check_label_list, load_tokenizer, logger, read_label_list,
                   text_probs)

EXPORT_PREFIX = "float32"
ONNX_FILE = "model.onnx"
META_FILE = "export_meta.json"
OUTPUT_NAME = "logits"
ERNIE_INPUTS = ("input_ids", "token_type_ids")
ERNIE_M_INPUTS = ("input_ids",)

# Cached derived models, next to model.onnx.
ONNX_INT8_FILE = "int8_model.onnx"
ONNX_FP16_FILE = "fp16_model.onnx"
OPENVINO_INT8_FILE = "openvino_int8.xml"
CALIBRATION_SIZE = 300  # texts used to calibrate OpenVINO INT8 activations

# (backend, precision) pairs that exist, per device.
VARIANTS = {
    "cpu": [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("paddle", "fp32"), ("paddle", "bf16"),
            ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")],
    "gpu": [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("paddle", "fp32"), ("paddle", "fp16")],
}


# ------------------------------------------------------------------------------ export directory


@dataclass
class ExportInfo:
    """What an export directory holds; `labels` and `thresholds` are in model output order."""

    directory: Path
    model_prefix: Path
    labels: list[str]
    thresholds: np.ndarray
    input_names: list[str]


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


def convert_to_onnx(prefix: Path, onnx_file: Path) -> None:
    """paddle2onnx, then rename the graph output to `logits` so configs never name `fetch_name_0`."""
    graph_file, params_file = paddle_model_files(prefix)
    with tempfile.TemporaryDirectory() as tmp:
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


def write_meta(directory: Path, prefix_name: str, labels: Sequence[str], thresholds, input_names,
               extra: dict | None = None) -> None:
    """export_meta.json; `extra` holds what one kind of model needs besides (few-shot: its template)."""
    meta = {"model_prefix": prefix_name, "onnx": ONNX_FILE, "input_names": list(input_names),
            "output_name": OUTPUT_NAME, "labels": list(labels), "thresholds": [float(t) for t in thresholds],
            **(extra or {})}
    (directory / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def deploy_input_names(tokenizer, multilingual: bool = False) -> tuple[str, ...]:
    """The exported graph's inputs: ERNIE-M tokenizers make no token_type_ids, so neither does its graph."""
    if not multilingual and "token_type_ids" not in tokenizer("测试"):
        logger.info("The tokenizer produces no token_type_ids (ERNIE-M): exporting input_ids only, as --multilingual")
        return ERNIE_M_INPUTS
    return ERNIE_M_INPUTS if multilingual else ERNIE_INPUTS


def export_checked(model, tokenizer, output: Path, prefix_name: str, label_list: Sequence[str], thresholds,
                   input_names: Sequence[str], texts: Sequence[str], labels: np.ndarray | None,
                   max_seq_length: int) -> list[dict]:
    """Write a deployable directory of a sequence classifier and prove it answers like the dygraph model."""
    reference = text_probs(model, tokenizer, texts, max_seq_length)  # before to_static rewrites forward
    return write_checked_export(
        lambda prefix: export_static_graph(model, prefix, input_names), reference, tokenizer, output, prefix_name,
        label_list, thresholds, input_names, texts, labels,
        make_pipeline=lambda exported: TextPipeline(exported, tokenizer, max_seq_length))


def write_checked_export(write_graph: Callable[[Path], None], reference: np.ndarray, tokenizer, output: Path,
                         prefix_name: str, label_list: Sequence[str], thresholds, input_names: Sequence[str],
                         texts: Sequence[str], labels: np.ndarray | None,
                         make_pipeline: Callable[[ExportInfo], "TextPipeline"], extra_meta: dict | None = None
                         ) -> list[dict]:
    """Static graph `<prefix_name>.*` (written by `write_graph`), model.onnx, tokenizer and metadata go
    to `output`; then both FP32 runtimes are compared with the dygraph probabilities `reference` of
    `texts`. A failing export is deleted (a model that answers differently must not be deployed) and
    reported as a DataError. Returns the parity rows.
    """
    output.mkdir(parents=True, exist_ok=True)
    prefix = output / prefix_name
    write_graph(prefix)
    convert_to_onnx(prefix, output / ONNX_FILE)
    tokenizer.save_pretrained(str(output))
    write_meta(output, prefix_name, label_list, thresholds, input_names, extra_meta)

    pipeline = make_pipeline(load_export(prefix))
    variants = {}
    for backend in ("onnxruntime", "paddle"):
        engine = create_backend(pipeline.export, backend, "fp32", num_threads=os.cpu_count() or 1)
        variants[engine.label] = pipeline.probs(engine, texts)
    rows = parity_rows(reference, variants, np.asarray(thresholds, dtype="float32"), labels)
    log_parity(rows)
    try:
        check_fp32_parity(rows)
    except DataError:
        for written in [*output.glob(f"{prefix_name}.*"), output / ONNX_FILE, output / META_FILE]:
            written.unlink(missing_ok=True)
        raise
    (output / "parity.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


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
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        labels = meta["labels"]
        if file_labels is not None:
            check_label_list(label_file, file_labels, labels)
        return ExportInfo(directory, prefix, labels, np.asarray(meta["thresholds"], dtype="float32"),
                          meta["input_names"])
    if file_labels is None:
        raise DataError(f"{directory} has no {META_FILE} (not written by this project's export_model.py), so "
                        f"its labels are unknown: pass a dataset directory with label.txt")
    input_names = [i.name for i in onnx.load(str(ensure_onnx(prefix, directory)), load_external_data=False).graph.input]
    return ExportInfo(directory, prefix, file_labels, np.full(len(file_labels), 0.5, dtype="float32"), input_names)


def ensure_onnx(prefix: Path, directory: Path) -> Path:
    """model.onnx of the export; converted once for exports that lack it (reference exports, pruning)."""
    graph_file, _ = paddle_model_files(prefix)
    return cached(directory / ONNX_FILE, graph_file, lambda out: convert_to_onnx(prefix, out), "ONNX model")


def cached(target: Path, source: Path, build: Callable[[Path], None], what: str) -> Path:
    """Build `target` from `source` unless a file newer than the source is already there."""
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        logger.info(f"Using cached {what}: {target}")
        return target
    if not os.access(target.parent, os.W_OK):
        raise DataError(f"{target.parent} is read-only, so the {what} cannot be built there: run this once where "
                        f"the export directory is writable (the file is reused afterwards)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # never leave a half-written file behind
        partial = Path(tmp, target.name)
        build(partial)
        for built in Path(tmp).iterdir():
            built.replace(target.parent / built.name)
    logger.info(f"Built {what} in {time.perf_counter() - start:.1f} s: {target}")
    return target


def quantize_onnx_int8(source: Path, target: Path) -> None:
    """Dynamic INT8 (weights per tensor, activations at run time): no calibration data needed."""
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the quantizer logs one INFO line per tensor
    try:
        prepared = target.with_name("prepared.onnx")
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
        prepared.unlink()
    finally:
        quiet.setLevel(level)


def convert_onnx_fp16(source: Path, target: Path) -> None:
    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))


# ------------------------------------------------------------------------------------ backends


class Backend:
    """One loaded model variant: `run(feed)` maps input arrays to logits [batch, labels]."""

    name = "backend"
    precision = "fp32"

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, onnx_file: Path, device: str, device_id: int, num_threads: int, precision: str):
        self.precision = precision
        options = ort.SessionOptions()
        if device == "gpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise DataError("ONNX Runtime has no CUDA provider: uninstall onnxruntime and install "
                                "onnxruntime-gpu (keep only one of the two), or use --device cpu")
            providers = [("CUDAExecutionProvider", {"device_id": device_id})]
        else:
            options.intra_op_num_threads = num_threads
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(onnx_file), options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feed):
        return self.session.run([OUTPUT_NAME], {name: feed[name] for name in self.input_names})[0]


class PaddleInferenceBackend(Backend):
    name = "paddle"

    def __init__(self, prefix: Path, device: str, device_id: int, num_threads: int, precision: str):
        graph_file, params_file = paddle_model_files(prefix)
        self.precision = precision
        config = paddle.inference.Config(str(graph_file), str(params_file))
        if device == "gpu":
            gpu_precision = (paddle.inference.PrecisionType.Half if precision == "fp16"
                             else paddle.inference.PrecisionType.Float32)
            config.enable_use_gpu(100, device_id, gpu_precision)
        else:
            config.disable_gpu()
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(32)  # one compiled kernel set per input shape, bounded
            if precision == "bf16":
                config.enable_mkldnn_bfloat16()
            config.set_cpu_math_library_num_threads(num_threads)
        config.disable_glog_info()
        self.predictor = paddle.inference.create_predictor(config)
        self.input_names = self.predictor.get_input_names()

    def run(self, feed):
        for name in self.input_names:
            self.predictor.get_input_handle(name).copy_from_cpu(feed[name])
        self.predictor.run()
        return self.predictor.get_output_handle(self.predictor.get_output_names()[0]).copy_to_cpu()


class OpenVinoBackend(Backend):
    """OpenVINO on CPU: uses AVX-512 BF16 / VNNI (and AMX where present) for bf16 and int8."""

    name = "openvino"

    def __init__(self, model_file: Path, num_threads: int, precision: str):
        self.precision = precision
        hint = "bf16" if precision == "bf16" else "f32"  # int8 models keep their other ops in f32
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(model_file)), "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": num_threads, "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]

    def run(self, feed):
        return self.request.infer({name: feed[name] for name in self.input_names})[0].copy()


def quantize_openvino_int8(source: Path, target: Path, calibration_feeds: list[dict]) -> None:
    """Static INT8 with NNCF (transformer preset: smooth-quant, attention kept accurate)."""
    nncf_logger = logging.getLogger("nncf")
    nncf_logger.setLevel(logging.WARNING)
    model = ov.Core().read_model(str(source))
    with contextlib.redirect_stdout(sys.stderr):  # NNCF draws progress bars on stdout, which is for results
        quantized = nncf.quantize(model, nncf.Dataset(calibration_feeds), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(calibration_feeds))
    ov.save_model(quantized, str(target))


def check_variant(backend: str, precision: str, device: str) -> None:
    if (backend, precision) in VARIANTS[device]:
        return
    options = ", ".join(f"--backend {b} ({p})" for b, p in VARIANTS[device])
    hints = {"bf16": "bf16 runs on CPU with --backend openvino or paddle",
             "fp16": "FP16 needs --device gpu", "int8": "INT8 runs on CPU with --backend onnxruntime or openvino",
             "fp32": "OpenVINO runs on the CPU; on NVIDIA GPUs use --backend onnxruntime or paddle"}
    raise DataError(f"--backend {backend} with {precision} on {device} is not available: {hints[precision]}. "
                    f"Available on {device}: {options}")


def create_backend(export: ExportInfo, backend: str, precision: str, device: str = "cpu", device_id: int = 0,
                   num_threads: int = 1, calibration_feeds: Callable[[], list[dict]] | None = None) -> Backend:
    """Load one variant of the export, building (once) the derived model it needs."""
    check_variant(backend, precision, device)
    logger.info(f">>> [InferBackend] Creating Engine ({backend} {precision} on {device}) ...")
    if backend == "paddle":
        engine = PaddleInferenceBackend(export.model_prefix, device, device_id, num_threads, precision)
    else:
        onnx_file = ensure_onnx(export.model_prefix, export.directory)
        if backend == "onnxruntime":
            if precision == "int8":
                onnx_file = cached(export.directory / ONNX_INT8_FILE, onnx_file,
                                   lambda out: quantize_onnx_int8(onnx_file, out), "ONNX Runtime INT8 model")
            elif precision == "fp16":
                onnx_file = cached(export.directory / ONNX_FP16_FILE, onnx_file,
                                   lambda out: convert_onnx_fp16(onnx_file, out), "ONNX FP16 model")
            engine = OnnxRuntimeBackend(onnx_file, device, device_id, num_threads, precision)
        else:
            model_file = onnx_file
            if precision == "int8":
                if calibration_feeds is None:
                    raise DataError("OpenVINO INT8 needs calibration texts to build its model the first time")
                model_file = cached(export.directory / OPENVINO_INT8_FILE, onnx_file,
                                    lambda out: quantize_openvino_int8(onnx_file, out, calibration_feeds()),
                                    "OpenVINO INT8 model")
            engine = OpenVinoBackend(model_file, num_threads, precision)
    logger.info(">>> [InferBackend] Engine Created ...")
    return engine


# ---------------------------------------------------------------------------- text -> labels


class TextPipeline:
    """Texts to model feeds and back: tokenize, batch by length, pad per batch, logits in input order.

    Texts are sorted by length inside windows of WINDOW_BATCHES batches, so each batch is padded
    only to its own longest text; results always come back in input order. One pipeline serves
    any number of backends of the same export (the parity check runs them all on one encoding).
    """

    def __init__(self, export: ExportInfo, tokenizer, max_seq_length: int = 128, batch_size: int = 32):
        self.export = export
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> dict[str, list[list[int]]]:
        """Token ids per input name, unpadded."""
        encoded = self.tokenizer(list(texts), max_length=self.max_seq_length, truncation=True)
        return {name: encoded[name] for name in self.export.input_names}

    def pad(self, encoded: dict[str, list[list[int]]], rows: Sequence[int]) -> dict[str, np.ndarray]:
        length = max(len(encoded["input_ids"][row]) for row in rows)
        feed = {}
        for name, sequences in encoded.items():
            pad_value = self.tokenizer.pad_token_id if name == "input_ids" else 0
            array = np.full((len(rows), length), pad_value, dtype="int64")
            for i, row in enumerate(rows):
                array[i, :len(sequences[row])] = sequences[row]
            feed[name] = array
        return feed

    def batches(self, encoded: dict[str, list[list[int]]], sort_by_length: bool = True) -> list[list[int]]:
        """Row indices per batch."""
        lengths = np.asarray([len(ids) for ids in encoded["input_ids"]])
        if not sort_by_length:
            return list(batched(range(len(lengths)), self.batch_size))
        window = self.batch_size * WINDOW_BATCHES
        rows = []
        for start in range(0, len(lengths), window):
            order = start + np.argsort(-lengths[start:start + window], kind="stable")
            rows += list(batched(order.tolist(), self.batch_size))
        return rows

    def feeds(self, encoded: dict[str, list[list[int]]]) -> list[dict[str, np.ndarray]]:
        return [self.pad(encoded, rows) for rows in self.batches(encoded)]

    def logits(self, backend: Backend, encoded: dict[str, list[list[int]]], sort_by_length: bool = True
               ) -> np.ndarray:
        """Logits in input order."""
        out = np.zeros((len(encoded["input_ids"]), len(self.export.labels)), dtype="float32")
        for rows in self.batches(encoded, sort_by_length):
            out[rows] = backend.run(self.pad(encoded, rows))
        return out

    def probs(self, backend: Backend, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.export.labels)), dtype="float32")
        return expit(self.logits(backend, self.encode(texts)))


def load_export_tokenizer(export: ExportInfo, override: str | None = None):
    """The tokenizer saved in the export, unless the user names another one."""
    return load_tokenizer(override or str(export.directory))


# ------------------------------------------------------------------------------------ serving

MAX_REQUEST_TEXTS = 256  # texts one serving request may carry


def request_texts(value, max_texts: int = MAX_REQUEST_TEXTS) -> list[str]:
    """The texts of a serving request (a string or a list of strings), or a DataError saying why not."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise DataError("'text' must be a string or a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"text[{i}] is {type(text).__name__}, not a string")
    if len(texts) > max_texts:
        raise DataError(f"{len(texts)} texts in one request; at most {max_texts}")
    return texts


def predicted_labels(probs: np.ndarray, labels: Sequence[str], thresholds) -> tuple[list[list[str]], list[list[float]]]:
    """Per row: the names of the labels above their threshold and their probabilities (maybe none)."""
    chosen = np.asarray(probs) > np.asarray(thresholds)
    names = [[labels[j] for j in np.flatnonzero(row)] for row in chosen]
    confidences = [[round(float(p), 6) for p in prob_row[row]] for prob_row, row in zip(np.asarray(probs), chosen)]
    return names, confidences


def export_prefix_in(directory: str | os.PathLike) -> Path:
    """The model prefix of an export directory (float32, pruned_model, or a reference export's name)."""
    directory = Path(directory)
    meta_file = directory / META_FILE
    if meta_file.is_file():
        return directory / json.loads(meta_file.read_text(encoding="utf-8"))["model_prefix"]
    params = sorted(directory.glob("*.pdiparams"))
    if not params:
        raise DataError(f"{directory} holds no exported model (*.pdiparams); run export_model.py first")
    return params[0].with_suffix("")


# ------------------------------------------------------------------------------- parity check

FP32_TOLERANCE = 1e-4  # max |Δprob| allowed between an FP32 variant and the dygraph model


def parity_rows(reference: np.ndarray, variants: dict[str, np.ndarray], thresholds: np.ndarray,
                labels: np.ndarray | None = None) -> list[dict]:
    """Per variant: max |Δprob| against the reference, share of label decisions that flip, and F1."""
    rows = []
    for name, probs in {"dygraph": reference, **variants}.items():
        row = {"variant": name, "max_abs_diff": float(np.abs(probs - reference).max()),
               "changed_decisions": float(((probs > thresholds) != (reference > thresholds)).mean())}
        if labels is not None:
            metric = MetricReport(thresholds=thresholds)
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
