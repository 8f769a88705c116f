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
from decision import Decision
from exporting import cached
from parity import check_fp32_parity, parity_rows
from pipeline import LongText, TextPipeline, pool_rows, sigmoid, window_spans
from utils import DataError

from conftest import ROOT


def test_parity_rows_and_fp32_tolerance():
    reference = np.array([[0.9, 0.2], [0.4, 0.6]], dtype="float32")
    labels = np.array([[1, 0], [0, 1]], dtype="float32")
    shifted = reference + np.array([[0.0, 0.0], [0.2, 0.0]], dtype="float32")  # flips one decision of four
    rows = parity_rows(reference, {"onnxruntime int8": shifted, "paddle fp32": reference + 5e-5},
                       Decision(np.array([0.5, 0.5], dtype="float32")), labels)
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
    """Stands in for a tokenizer: a text of digits becomes their ids (pad id 0), with no special tokens."""

    pad_token_id = 0

    def tokenize(self, text):
        return [int(c) for c in text]

    def convert_tokens_to_ids(self, tokens):
        return tokens

    def num_special_tokens_to_add(self, pair):
        return 0

    def build_inputs_with_special_tokens(self, ids):
        return list(ids)

    def create_token_type_ids_from_sequences(self, ids):
        return [0] * len(ids)


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


def test_windows_cut_on_token_boundaries_share_the_overlap_and_end_at_the_text_end():
    assert window_spans(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert window_spans(11, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10), (8, 11)]  # the last one is shorter
    assert window_spans(11, 4, 0) == [(0, 4), (4, 8), (8, 11)]
    assert window_spans(4, 4, 2) == [(0, 4)] and window_spans(3, 4, 2) == [(0, 3)] and window_spans(0, 4, 2) == [(0, 0)]
    assert window_spans(11, 4, 2, max_windows=2) == [(0, 4), (2, 6)]
    for num_tokens in range(1, 60):
        for body, overlap in ((5, 0), (5, 4), (7, 3)):
            spans = window_spans(num_tokens, body, overlap)
            covered = set().union(*(range(a, b) for a, b in spans))
            assert covered == set(range(num_tokens)) and spans[-1][1] == num_tokens
            assert all(b - a <= body for a, b in spans)
            assert all(prev[1] - nxt[0] == overlap for prev, nxt in zip(spans, spans[1:]))


def test_window_mode_reads_every_token_and_pools_the_windows_back_per_text():
    texts = ["1234567", "12", "9" * 30]
    window = TextPipeline(DigitTokenizer(), ["input_ids"], max_seq_length=4, batch_size=2,
                          long_text=LongText("window", stride=2))
    rows = window.encode(texts)
    assert rows.features["input_ids"][:4] == [[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7], [1, 2]]
    assert rows.source.tolist() == [0, 0, 0, 1] + [2] * 14 and rows.num_texts == 3
    assert rows.text_lengths().tolist() == [11, 2, 4 * 13 + 4]
    backend = RowSumBackend()
    pooled = window.outputs(backend, rows)
    assert sum(shape[0] for shape in backend.shapes) == len(rows)  # the model saw every window
    assert pooled[:, 0].tolist() == [18, 3, 36]  # max over windows of the window sums
    rows_of, row_text = rows.text_rows([2, 0])
    assert rows_of.tolist() == list(range(4, 18)) + [0, 1, 2] and row_text.tolist() == [0] * 14 + [1] * 3
    assert window.length_summary(rows.counts) == ("Long texts (--long_text window, --max_seq_length 4, --window_stride 2, "
                                       "--window_pooling max): 3 texts read as 18 windows, 2 of them in more than one")
    capped = TextPipeline(DigitTokenizer(), ["input_ids"], 4, long_text=LongText("window", stride=2, max_windows=2))
    capped_rows = capped.encode(texts)
    assert capped_rows.source.tolist() == [0, 0, 1, 2, 2]
    assert capped.length_summary(capped_rows.counts).endswith("; 2 texts longer than --max_windows 2: their last 25 tokens in all "
                                            "(up to 24 from one text) not read")  # 1 of "1234567", 24 of "99...9"
    # one row per text: pooling is the identity, today's outputs exactly
    truncate = TextPipeline(DigitTokenizer(), ["input_ids"], 4)
    one_row = truncate.encode(texts)
    assert one_row.features["input_ids"] == [[1, 2, 3, 4], [1, 2], [9, 9, 9, 9]]
    outputs = RowSumBackend().run(truncate.pad(one_row, [0, 1, 2]))
    assert np.array_equal(pool_rows(outputs, np.arange(3), 3), outputs)
    assert truncate.length_summary(one_row.counts) == ("Long texts (--long_text truncate, --max_seq_length 4): 2 of 3 texts "
                                         "truncated, 29 tokens cut in all, up to 26 from one text (--long_text "
                                         "window reads them whole)")
    # the pipeline keeps no counts: each encoding carries its own, and a consumer adds them up
    assert truncate.length_summary(truncate.encode([]).counts).startswith(
        "Long texts (--long_text truncate, --max_seq_length 4): 0 of 0")
    both = truncate.encode(texts[:1]).counts + truncate.encode(texts[1:]).counts
    assert both == one_row.counts and not hasattr(truncate, "counts")


def test_pooling_equals_its_formula():
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(6, 3)).astype("float64") * 5
    source = np.array([0, 0, 0, 1, 2, 2])
    groups = [outputs[source == text] for text in range(3)]
    assert np.allclose(pool_rows(outputs, source, 3, "max"), [g.max(0) for g in groups])
    assert np.allclose(pool_rows(outputs, source, 3, "mean"), [g.mean(0) for g in groups])
    assert np.allclose(pool_rows(outputs, source, 3, "logsumexp"), [np.log(np.exp(g).mean(0)) for g in groups])
    huge = np.array([[1000.0], [990.0]])  # no overflow
    assert np.allclose(pool_rows(huge, np.array([0, 0]), 1, "logsumexp"), [[1000 + np.log((1 + np.exp(-10)) / 2)]])


@pytest.mark.parametrize("settings, max_seq_length, message", [
    (LongText("window", stride=2), 4, r"--window_stride 2: the tokens shared by two windows must be at least 0 and "
                                      r"fewer than the 2 text tokens"),
    (LongText("window", stride=126), 128, "--window_stride 126"),
    (LongText("window", max_windows=0), 128, "--max_windows 0: a text needs at least 1 window"),
    (LongText("pages"), 128, "--long_text 'pages': choose from truncate, window"),
    (LongText("window", pooling="sum"), 128, "--window_pooling 'sum'"),
    (LongText(), 2, "--max_seq_length 2 leaves no room"),
])
def test_long_text_settings_are_checked(settings, max_seq_length, message):
    with pytest.raises(ValueError, match=message):
        settings.check(max_seq_length)


def test_no_texts_give_no_outputs_without_running_the_model():
    backend = RowSumBackend()
    pipeline = TextPipeline(DigitTokenizer(), ["input_ids"])
    assert pipeline.outputs(backend, pipeline.encode([])).shape[0] == 0 and backend.shapes == []


def test_pooling_refuses_a_text_without_rows():
    with pytest.raises(ValueError, match="text 1 has no encoded row"):
        pool_rows(np.zeros((2, 3)), np.array([0, 2]), 3)


def test_sigmoid_of_zero_is_one_half():
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


@pytest.mark.slow  # a new interpreter: the process boundary is what it tests
def test_scripts_that_run_no_export_load_no_export_engine():
    """Importing the training and prediction scripts (what `--help` costs) loads no ONNX/OpenVINO stack."""
    code = ("import sys, train, predict, scratch_model; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'openvino', 'nncf', 'paddle2onnx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
