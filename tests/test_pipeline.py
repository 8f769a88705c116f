"""inference.py without a model: the parity table, the FP32 tolerance, batching, the build cache."""
from __future__ import annotations

from types import SimpleNamespace

import inference
import numpy as np
import pytest

from backends import check_variant
from exporting import ExportInfo, cached
from parity import check_fp32_parity, parity_rows
from pipeline import TextPipeline
from utils import DataError


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
    """Returns each row's id sum and its padded width, and records the batch shapes."""

    def __init__(self):
        self.shapes = []

    def run(self, feed):
        ids = feed["input_ids"]
        self.shapes.append(ids.shape)
        return np.stack([ids.sum(1), np.full(len(ids), ids.shape[1])], axis=1).astype("float32")


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_pipeline_sorts_by_length_pads_per_batch_and_keeps_input_order(batch_size):
    export = ExportInfo(None, None, ["a", "b"], np.array([0.5, 0.5]), ["input_ids"])
    pipeline = TextPipeline(export, SimpleNamespace(pad_token_id=0), batch_size=batch_size)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 9, size=rng.integers(1, 30)).tolist() for _ in range(200)]
    backend = RowSumBackend()
    logits = pipeline.logits(backend, {"input_ids": sequences})
    assert logits[:, 0].tolist() == [sum(s) for s in sequences]
    total_width = sum(shape[0] * shape[1] for shape in backend.shapes)
    if batch_size > 1:  # sorted batches waste far less than padding every batch to the longest text
        assert total_width < 0.7 * 200 * max(len(s) for s in sequences)
    assert total_width >= sum(len(s) for s in sequences)
    unsorted = pipeline.logits(RowSumBackend(), {"input_ids": sequences}, sort_by_length=False)
    assert np.array_equal(unsorted[:, 0], logits[:, 0])


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
    monkeypatch.setattr(inference.os, "access", lambda *_: False)
    with pytest.raises(DataError, match="is read-only, so the INT8 model cannot be built there"):
        cached(target, source, build, "INT8 model")


@pytest.mark.parametrize("backend, precision, device, hint", [
    ("onnxruntime", "bf16", "cpu", "bf16 runs on CPU with --backend openvino or paddle"),
    ("paddle", "int8", "cpu", "INT8 runs on CPU with --backend onnxruntime or openvino"),
    ("onnxruntime", "fp16", "cpu", "FP16 needs --device gpu"),
    ("openvino", "fp32", "gpu", "OpenVINO runs on the CPU; on NVIDIA GPUs use --backend onnxruntime or paddle"),
])
def test_unavailable_variants_name_the_alternatives(backend, precision, device, hint):
    with pytest.raises(DataError) as error:
        check_variant(backend, precision, device)
    assert f"--backend {backend} with {precision} on {device} is not available: {hint}." in str(error.value)
    assert f"Available on {device}: --backend onnxruntime (fp32)" in str(error.value)
    for backend_ok, precision_ok in inference.VARIANTS[device]:
        check_variant(backend_ok, precision_ok, device)
