"""deploy/predictor/infer.py: the reference command line, a copied export alone, parity, clear errors."""
from __future__ import annotations

import re
import shutil

import pytest

from conftest import run_main

pytestmark = pytest.mark.slow
INFER = "deploy/predictor/infer.py"


def infer(export_dir, dataset, *args):
    return run_main(INFER, "--model_path_prefix", export_dir / "float32", "--dataset_dir", dataset,
                    "--device", "cpu", *args)


def test_copied_export_alone_predicts_like_predict_py(exported, trained, keyword_data, tmp_path):
    moved = tmp_path / "elsewhere" / "export"
    shutil.copytree(exported[0], moved)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(keyword_data / "data.txt", data / "data.txt")  # no label.txt: the export's labels are used
    out = tmp_path / "infer.txt"
    result = infer(moved, data, "--output_file", out, "--backend", "paddle")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Read data.txt: 100 examples" in result.stderr
    reference = tmp_path / "predict.txt"
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", data, "--params_path", trained[0],
                      "--output_file", reference)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_text(encoding="utf-8") == reference.read_text(encoding="utf-8")
    # without --output_file every prediction is logged as in the reference
    result = infer(moved, data)
    assert result.returncode == 0, result.stderr[-3000:]
    first = reference.read_text(encoding="utf-8").splitlines()[1].split("\t")  # after predict.py's header
    # the reference's printer joins names with a bare comma, its predict.py with comma and space
    assert f"input data: {first[0]}" in result.stderr and f"labels: {first[1].replace(', ', ',')}" in result.stderr
    assert result.stderr.count("----------------------------") == 100


def test_perf_logs_the_reference_lines(exported, keyword_data):
    result = infer(exported[0], keyword_data, "--perf", "--perf_dataset", "test", "--use_quantize")
    assert result.returncode == 0, result.stderr[-3000:]
    micro, macro = map(float, re.search(r"micro f1: (\d+\.\d\d), macro f1: (\d+\.\d\d)", result.stderr).groups())
    assert micro > 80 and macro > 50
    assert re.search(r"sample nums: 100, time: \d+\.\d\d, latency: \d+\.\d\d ms", result.stderr)


def test_check_parity_reports_every_variant(exported, trained, keyword_data):
    result = infer(exported[0], keyword_data, "--check_parity", "--params_path", trained[0])
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stderr[result.stderr.index("parity against the dygraph model"):]
    for variant in ("onnxruntime fp32", "onnxruntime int8", "paddle fp32", "paddle bf16", "openvino fp32",
                    "openvino bf16", "openvino int8"):
        row = re.search(rf"{variant} +(\S+) +(\S+)%", table)
        assert row, variant
        if variant.endswith("fp32"):
            assert float(row.group(1)) <= 1e-4 and float(row.group(2)) == 0.0


def test_export_without_metadata_uses_label_file(exported, keyword_data, tmp_path):
    """An export written by the reference export_model.py: labels from label.txt, thresholds 0.5."""
    bare = tmp_path / "export"
    bare.mkdir()
    for name in ("float32.json", "float32.pdiparams", "model.onnx"):
        shutil.copy(exported[0] / name, bare / name)
    result = infer(bare, keyword_data, "--model_name_or_path", exported[0], "--output_file", tmp_path / "o.txt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((tmp_path / "o.txt").read_text(encoding="utf-8").splitlines()) == 1 + 100
    empty = tmp_path / "no_labels"
    empty.mkdir()
    shutil.copy(keyword_data / "data.txt", empty / "data.txt")
    result = infer(bare, empty, "--model_name_or_path", exported[0])
    assert result.returncode == 2
    assert "has no export_meta.json" in result.stderr and "label.txt" in result.stderr
    # the positions of an export that does not record them: the tokenizer's saved input length
    result = infer(bare, keyword_data, "--model_name_or_path", exported[0], "--max_seq_length", "1024")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--max_seq_length 1024" in result.stderr and f"512 positions of the model in {bare}" in result.stderr


def assert_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert all(fragment in result.stderr for fragment in fragments) and "Traceback" not in result.stderr, \
        result.stderr[-3000:]


def test_bad_inputs_give_clear_errors(exported, keyword_data, tmp_path):
    assert_error(infer(tmp_path / "nowhere", keyword_data),
                 "no float32.json or float32.pdmodel with float32.pdiparams")
    data = tmp_path / "data"
    data.mkdir()
    (data / "label.txt").write_text("体育\n科技\n财经\n娱乐\n教育\n", encoding="utf-8")
    (data / "data.txt").write_text("\n\n", encoding="utf-8")
    assert_error(infer(exported[0], data),
                 "line 2 is '科技'", "label 1 is '财经'")
    shutil.copy(keyword_data / "label.txt", data / "label.txt")
    assert_error(infer(exported[0], data), "data.txt", "no texts to predict")
    assert_error(infer(exported[0], keyword_data, "--use_bf16"),
                 "--backend onnxruntime with bf16 on cpu", "--backend paddle on cpu, --backend openvino on cpu")
    assert_error(infer(exported[0], keyword_data, "--use_fp16", "--use_quantize"),
                 "choose at most one of --use_fp16, --use_quantize and --use_bf16")
    assert_error(infer(exported[0], keyword_data, "--multilingual"), "--multilingual was given but")
    assert_error(infer(exported[0], keyword_data, "--check_parity", "--params_path", tmp_path / "none"),
                 "--check_parity needs the trained checkpoint")
    # the reference's default device is gpu; on a machine without one the error says what to do
    assert_error(run_main(INFER, "--model_path_prefix", exported[0] / "float32", "--dataset_dir", keyword_data),
               "use --device cpu")
