"""The text pipeline and the backend registry without a model: batching, windows and pooling,
decisions, the parity table, the FP32 tolerance, the build cache, lazy engine imports."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import exporting
from backends import BACKENDS, check_variant, variants
from exporting import cached
from parity import check_fp32_parity, parity_rows
from pipeline import EncodedRows, TextPipeline, chosen_label_ids, pool_rows, predicted_labels, sigmoid
from utils import DataError

from conftest import ROOT


def test_parity_rows_and_fp32_tolerance():
    reference = np.array([[0.9, 0.2], [0.4, 0.6]], dtype="float32")
    labels = np.array([[1, 0], [0, 1]], dtype="float32")
    shifted = reference + np.array([[0.0, 0.0], [0.2, 0.0]], dtype="float32")  # flips one decision of four
    rows = parity_rows(reference, {"onnxruntime int8": shifted, "paddle fp32": reference + 5e-5},
                       np.array([0.5, 0.5], dtype="float32"), labels)
    assert [r["variant"] for r in rows] == ["dygraph", "onnxruntime int8", "paddle fp32"]
    assert rows[0]["micro_f1"] == 1.0 and rows[1]["changed_decisions"] == 0.25
    assert rows[1]["max_abs_diff"] == pytest.approx(0.2) and rows[1]["micro_f1"] == pytest.approx(0.8)
    check_fp32_parity(rows)  # INT8 may differ; the FP32 row is within 1e-4
    rows[2]["max_abs_diff"] = 2e-4
    with pytest.raises(DataError, match=r"paddle fp32 max \|Δprob\| 2.00e-04 \(tolerance 0.0001\)"):
        check_fp32_parity(rows)


class RowSumBackend:
    """Returns each row's id sum, its largest id and its padded width, and records the batch shapes."""

    def __init__(self):
        self.shapes = []

    def run(self, feed):
        ids = feed["input_ids"]
        self.shapes.append(ids.shape)
        return np.stack([ids.sum(1), ids.max(1), np.full(len(ids), ids.shape[1])], axis=1).astype("float32")


class DigitTokenizer:
    """Stands in for a tokenizer: a text of digits becomes their ids (pad id 0)."""

    pad_token_id = 0

    def __call__(self, texts, max_length, truncation):
        return {"input_ids": [[int(c) for c in text][:max_length] for text in texts]}


def digit_texts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(map(str, rng.integers(1, 9, size=rng.integers(2, 30)))) for _ in range(count)]


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_pipeline_sorts_by_length_pads_per_batch_and_keeps_input_order(batch_size):
    pipeline = TextPipeline(DigitTokenizer(), ["input_ids"], batch_size=batch_size)
    texts = digit_texts(200)
    backend = RowSumBackend()
    logits = pipeline.outputs(backend, pipeline.encode(texts))
    assert logits[:, 0].tolist() == [sum(map(int, t)) for t in texts]
    total_width = sum(shape[0] * shape[1] for shape in backend.shapes)
    if batch_size > 1:  # sorted batches waste far less than padding every batch to the longest text
        assert total_width < 0.7 * 200 * max(len(t) for t in texts)
    assert total_width >= sum(len(t) for t in texts)
    assert all(shape[0] <= batch_size for shape in backend.shapes)


class TwoWindowPipeline(TextPipeline):
    """A fake encoder that cuts every text into two windows (rows) of about half its length."""

    def encode(self, texts):
        whole = super().encode(texts).features["input_ids"]
        halves = [part for ids in whole for part in (ids[:len(ids) // 2], ids[len(ids) // 2:])]
        return EncodedRows({"input_ids": halves}, np.repeat(np.arange(len(texts)), 2), len(texts))


def test_windows_are_pooled_back_per_text_and_identity_pooling_is_todays_output():
    texts = digit_texts(150, seed=1)
    one_row = TextPipeline(DigitTokenizer(), ["input_ids"], batch_size=4)
    two_rows = TwoWindowPipeline(DigitTokenizer(), ["input_ids"], batch_size=4)
    encoded = two_rows.encode(texts)
    assert len(encoded) == 2 * len(texts) and encoded.num_texts == len(texts)
    backend = RowSumBackend()
    pooled = two_rows.outputs(backend, encoded)
    assert sum(shape[0] for shape in backend.shapes) == 2 * len(texts)  # the model saw every window
    whole = one_row.outputs(RowSumBackend(), one_row.encode(texts))
    assert pooled.shape == whole.shape == (len(texts), 3)
    # max over a text's windows: its largest id is the whole text's, its window sums are each at most the total
    assert np.array_equal(pooled[:, 1], whole[:, 1])
    assert (pooled[:, 0] <= whole[:, 0]).all() and (pooled[:, 0] >= whole[:, 0] / 2).all()
    # one row per text: pooling is the identity, today's outputs exactly
    rows = RowSumBackend().run(one_row.pad(one_row.encode(texts), list(range(len(texts)))))
    assert np.array_equal(pool_rows(rows, np.arange(len(texts)), len(texts)), rows)


def test_no_texts_give_no_outputs_without_running_the_model():
    backend = RowSumBackend()
    pipeline = TextPipeline(DigitTokenizer(), ["input_ids"])
    assert pipeline.outputs(backend, pipeline.encode([])).shape[0] == 0 and backend.shapes == []


def test_pooling_refuses_a_text_without_rows():
    with pytest.raises(ValueError, match="text 1 has no encoded row"):
        pool_rows(np.zeros((2, 3)), np.array([0, 2]), 3)


def test_decisions_are_strictly_above_each_labels_threshold():
    probs = np.array([[0.9, 0.5, 0.2], [0.1, 0.51, 0.7]])
    thresholds = np.array([0.5, 0.5, 0.7])
    assert chosen_label_ids(probs, thresholds) == [[0], [1]]
    ids, names, confidences = predicted_labels(probs, ["a", "b", "c"], thresholds)
    assert ids == [[0], [1]] and names == [["a"], ["b"]] and confidences == [[0.9], [0.51]]
    assert sigmoid(np.array([0.0], dtype="float32"))[0] == 0.5


def test_cached_builds_once_atomically_and_refuses_a_read_only_directory(tmp_path, monkeypatch):
    source, target = tmp_path / "model.onnx", tmp_path / "int8_model.onnx"
    source.write_text("model")
    builds = []

    def build(out):
        builds.append(out)
        out.write_text("int8")

    assert cached(target, source, build, "INT8 model") == target
    assert cached(target, source, build, "INT8 model") == target
    assert len(builds) == 1 and builds[0].parent != tmp_path and target.read_text() == "int8"

    def crash(out):
        out.write_text("half")
        raise RuntimeError("killed")

    target.unlink()
    with pytest.raises(RuntimeError):
        cached(target, source, crash, "INT8 model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # nothing half-written is left
    monkeypatch.setattr(exporting.os, "access", lambda *_: False)
    with pytest.raises(DataError, match="is read-only, so the INT8 model cannot be built there"):
        cached(target, source, build, "INT8 model")


@pytest.mark.parametrize("backend, precision, device, hint", [
    ("onnxruntime", "bf16", "cpu", "bf16 runs with --backend paddle on cpu, --backend openvino on cpu"),
    ("paddle", "int8", "cpu", "int8 runs with --backend onnxruntime on cpu, --backend openvino on cpu"),
    ("onnxruntime", "fp16", "cpu", "fp16 runs with --backend onnxruntime on gpu, --backend paddle on gpu"),
    ("openvino", "fp32", "gpu", "fp32 runs with --backend onnxruntime on cpu, --backend onnxruntime on gpu, "
                                "--backend paddle on cpu, --backend paddle on gpu, --backend openvino on cpu"),
])
def test_unavailable_variants_name_the_alternatives(backend, precision, device, hint):
    with pytest.raises(DataError) as error:
        check_variant(backend, precision, device)
    assert f"--backend {backend} with {precision} on {device} is not available: {hint}." in str(error.value)
    assert f"Available on {device}: --backend onnxruntime (fp32)" in str(error.value)


def test_registry_lists_exactly_the_available_triples_and_names_alternatives_for_an_unknown_backend():
    triples = {(name, precision, device) for device in ("cpu", "gpu") for name, precision in variants(device)}
    assert triples == {
        ("onnxruntime", "fp32", "cpu"), ("onnxruntime", "int8", "cpu"), ("paddle", "fp32", "cpu"),
        ("paddle", "bf16", "cpu"), ("openvino", "fp32", "cpu"), ("openvino", "bf16", "cpu"),
        ("openvino", "int8", "cpu"), ("onnxruntime", "fp32", "gpu"), ("onnxruntime", "fp16", "gpu"),
        ("paddle", "fp32", "gpu"), ("paddle", "fp16", "gpu")}
    assert list(BACKENDS) == ["onnxruntime", "paddle", "openvino"]
    for name, precision, device in triples:
        check_variant(name, precision, device)
    with pytest.raises(DataError, match="unknown backend 'tensorrt'; registered backends: onnxruntime, paddle, openvino"):
        check_variant("tensorrt", "fp32", "gpu")


def test_scripts_that_run_no_export_load_no_export_engine():
    """Importing the training and prediction scripts (what `--help` costs) loads no ONNX/OpenVINO stack."""
    code = ("import sys, train, predict, scratch_model; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'openvino', 'nncf', 'paddle2onnx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
