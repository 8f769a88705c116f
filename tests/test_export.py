"""export_model.py, exporting.py, backends.py and parity.py: self-contained exports, parity with dygraph,
cached variants."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

import backends
import export_model
import parity
from backends import create_backend
from data_io import iter_examples
from exporting import load_export, load_export_tokenizer
from modeling import load_model, load_tokenizer, text_probs
from pipeline import TextPipeline
from utils import DataError

from conftest import LABELS, run_main

pytestmark = pytest.mark.slow


def dev_texts(keyword_data) -> list[str]:
    return [e.text for e in iter_examples(keyword_data / "dev.txt")]


def test_export_directory_is_self_contained(exported, trained):
    output, log = exported
    names = {p.name for p in output.iterdir()}
    assert {"float32.json", "float32.pdiparams", "model.onnx", "export_meta.json", "vocab.txt",
            "tokenizer_config.json", "parity.json"} <= names
    meta = json.loads((output / "export_meta.json").read_text(encoding="utf-8"))
    stored = json.loads((trained[0] / "config.json").read_text(encoding="utf-8"))
    assert meta["labels"] == LABELS
    assert meta["thresholds"] == pytest.approx(stored["multi_label_thresholds"])
    assert meta["input_names"] == ["input_ids", "token_type_ids"] and meta["output_name"] == "logits"
    graph = onnx.load(str(output / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "token_type_ids"]
    assert [o.name for o in graph.output] == ["logits"]
    rows = {row["variant"]: row for row in json.loads((output / "parity.json").read_text(encoding="utf-8"))}
    assert set(rows) == {"dygraph", "onnxruntime fp32", "paddle fp32"}
    assert all(row["max_abs_diff"] <= 1e-4 for row in rows.values())
    assert rows["onnxruntime fp32"]["micro_f1"] == rows["dygraph"]["micro_f1"] > 0.8
    assert "FP32 parity checked on 100 dev texts and one long document" in log  # why its F1 is not train.py's


@pytest.mark.parametrize("backend", ["onnxruntime", "paddle", "openvino"])
def test_fp32_backends_equal_dygraph(exported, trained, keyword_data, backend):
    output, _ = exported
    texts = dev_texts(keyword_data)
    reference = text_probs(load_model(str(trained[0])), load_tokenizer(str(trained[0])), texts, 128)
    export = load_export(output / "float32")
    pipeline = TextPipeline(load_export_tokenizer(export), export.input_names, 128, batch_size=7)
    probs = pipeline.probs(create_backend(export, backend, "fp32", num_threads=2), texts)
    assert np.abs(probs - reference).max() < 1e-4


def test_int8_is_built_once_then_reused_and_rebuilt_when_the_model_changes(exported, keyword_data, tmp_path,
                                                                           monkeypatch):
    output = tmp_path / "export"
    shutil.copytree(exported[0], output)
    export = load_export(output / "float32")
    pipeline = TextPipeline(load_export_tokenizer(export), export.input_names, 128)
    texts = dev_texts(keyword_data)
    fp32 = pipeline.probs(create_backend(export, "onnxruntime", "fp32"), texts)
    int8 = pipeline.probs(create_backend(export, "onnxruntime", "int8"), texts)
    int8_file = output / "int8_model.onnx"
    assert int8_file.stat().st_size < (output / "model.onnx").stat().st_size
    assert np.abs(int8 - fp32).max() < 0.1 and ((int8 > 0.5) != (fp32 > 0.5)).mean() < 0.02
    built_at = int8_file.stat().st_mtime_ns

    def must_not_run(*_):
        raise AssertionError("the cached INT8 model was rebuilt")

    monkeypatch.setattr(backends, "quantize_onnx_int8", must_not_run)
    create_backend(export, "onnxruntime", "int8")
    assert int8_file.stat().st_mtime_ns == built_at
    future = built_at / 1e9 + 10
    os.utime(output / "model.onnx", (future, future))  # a re-export makes the cache stale
    with pytest.raises(AssertionError, match="rebuilt"):
        create_backend(export, "onnxruntime", "int8")
    assert sorted(p.name for p in output.iterdir() if p.name.startswith("tmp")) == []  # no half-written files


def test_openvino_int8_and_bf16_keep_the_decisions(exported, keyword_data, tmp_path):
    output = tmp_path / "export"
    shutil.copytree(exported[0], output, ignore=shutil.ignore_patterns("openvino_int8.*"))  # built by other tests
    export = load_export(output / "float32")
    pipeline = TextPipeline(load_export_tokenizer(export), export.input_names, 128)
    texts = dev_texts(keyword_data)
    calls = []

    def calibration():
        calls.append(1)
        return pipeline.feeds(pipeline.encode(texts[:40]))

    fp32 = pipeline.probs(create_backend(export, "openvino", "fp32"), texts)
    for precision in ("int8", "bf16", "int8"):
        probs = pipeline.probs(create_backend(export, "openvino", precision, calibration_feeds=calibration), texts)
        assert ((probs > 0.5) != (fp32 > 0.5)).mean() < 0.02
    assert calls == [1]  # calibrated once, the second int8 load used the cache
    assert (output / "openvino_int8.xml").is_file() and (output / "openvino_int8.bin").is_file()


def test_fp16_model_for_gpu_keeps_int64_inputs_and_float_logits(exported, tmp_path):
    target = tmp_path / "fp16_model.onnx"
    backends.convert_onnx_fp16(exported[0] / "model.onnx", target)
    model = onnx.load(str(target))
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.INT64}
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert onnx.TensorProto.FLOAT16 in {t.data_type for t in model.graph.initializer}


def test_ernie_m_exports_only_input_ids_and_predicts(ernie_m_trained, keyword_data, tmp_path):
    output = tmp_path / "export"
    result = run_main("export_model.py", "--params_path", ernie_m_trained, "--output_path", output, "--multilingual")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FP32 parity checked on 256 random texts" in result.stderr
    assert [i.name for i in onnx.load(str(output / "model.onnx")).graph.input] == ["input_ids"]
    inferred = tmp_path / "inferred"  # without --multilingual the tokenizer tells that there are no token types
    result = run_main("export_model.py", "--params_path", ernie_m_trained, "--output_path", inferred)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exporting input_ids only, as --multilingual" in result.stderr
    assert [i.name for i in onnx.load(str(inferred / "model.onnx")).graph.input] == ["input_ids"]
    predictions = tmp_path / "infer.txt"
    result = run_main("deploy/predictor/infer.py", "--model_path_prefix", output / "float32", "--dataset_dir",
                      keyword_data, "--device", "cpu", "--multilingual", "--output_file", predictions)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = tmp_path / "predict.txt"
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", keyword_data, "--params_path",
                      ernie_m_trained, "--output_file", reference)
    assert result.returncode == 0, result.stderr[-3000:]
    assert predictions.read_text(encoding="utf-8") == reference.read_text(encoding="utf-8")


def test_export_errors(trained, tmp_path):
    result = run_main("export_model.py", "--params_path", tmp_path / "missing", "--output_path", tmp_path / "e")
    assert result.returncode == 2
    assert f"--params_path {tmp_path / 'missing'} is not a checkpoint directory" in result.stderr
    foreign = tmp_path / "foreign"  # a checkpoint trained elsewhere: no stored label list
    shutil.copytree(trained[0], foreign)
    config = json.loads((foreign / "config.json").read_text(encoding="utf-8"))
    del config["multi_label_names"]
    (foreign / "config.json").write_text(json.dumps(config), encoding="utf-8")
    result = run_main("export_model.py", "--params_path", foreign, "--output_path", tmp_path / "e")
    assert result.returncode == 2
    assert "label.txt" in result.stderr and "Traceback" not in result.stderr


def test_failed_parity_leaves_no_deployable_model(trained, tmp_path, monkeypatch):
    real_rows = parity.parity_rows

    def corrupted(*args):
        rows = real_rows(*args)
        rows[1]["max_abs_diff"] = 0.5  # as if the ONNX graph answered differently
        return rows

    monkeypatch.setattr(parity, "parity_rows", corrupted)
    output = tmp_path / "export"
    args = export_model.parser.parse_args(["--params_path", str(trained[0]), "--output_path", str(output),
                                           "--parity_samples", "8"])
    with pytest.raises(DataError, match=r"differs from the dygraph model: onnxruntime fp32 max \|Δprob\| 5.00e-01"):
        export_model.export(args)
    assert not list(output.glob("float32.*")) and not (output / "model.onnx").exists()
    assert not (output / "export_meta.json").exists()


def test_onnx_conversion_prints_nothing_to_the_console(exported, tmp_path):
    """What reaches a user's terminal is the thing tested, so this runs in a process of its own."""
    export_dir, _ = exported
    code = (f"import exporting; from pathlib import Path; "
            f"exporting.convert_to_onnx(Path({str(export_dir / 'float32')!r}), Path({str(tmp_path / 'm.onnx')!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "m.onnx").is_file()
    for marker in ("[Paddle2ONNX]", "Folding Constants", "/tmp/tmp", "raw.onnx"):
        assert marker not in result.stdout and marker not in result.stderr
    assert "paddle2onnx: " in result.stderr and "lines of console output not shown" in result.stderr
