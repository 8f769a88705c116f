"""predict.py: order, streaming windows, round trip, probabilities, label-file checks."""
from __future__ import annotations

import json
import shutil

import pytest

from data_io import load_examples, read_label_list

from conftest import run_main

pytestmark = pytest.mark.slow


def test_order_blank_lines_windows_and_round_trip(trained, keyword_data, tmp_path):
    save_dir, _ = trained
    texts = [line.split("\t")[0] for line in (keyword_data / "dev.txt").read_text(encoding="utf-8").splitlines()]
    data = tmp_path / "data"
    data.mkdir()
    # blank lines and a BOM; batch size 1 makes windows of 64 texts, so 100 texts span two windows
    (data / "data.txt").write_text("\ufeff" + "\n".join(texts[:50]) + "\n\n\n" + "\n".join(texts[50:]) + "\n",
                                   encoding="utf-8")
    out = tmp_path / "out.txt"
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", data, "--params_path", save_dir,
                      "--output_file", out, "--batch_size", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Read data.txt: 100 examples, 2 blank lines kept as empty rows" in result.stderr
    assert f"Prediction results save in {out}." in result.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    # the reference's header, then row N + 1 belongs to input line N: blank lines give empty rows
    assert lines[0] == "text\tlabel" and len(lines) == 1 + 102
    assert [line.split("\t")[0] for line in lines[1:]] == texts[:50] + ["", ""] + texts[50:]
    assert lines[51] == lines[52] == ""
    labels = read_label_list(keyword_data / "label.txt")
    names = [line.split("\t")[1] for line in lines[1:] if line]
    assert any(", " in n for n in names) and all("," not in n.replace(", ", "") for n in names)  # `a, b`
    examples = load_examples(out, labels)  # the output reads back as training data, header skipped
    assert [e.text for e in examples] == texts
    assert any(len(e.labels) > 1 for e in examples) and any(not e.labels for e in examples)
    # the same predictions with a large batch: batching and sorting do not change results
    out_big = tmp_path / "out_big.txt"
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", data, "--params_path", save_dir,
                      "--output_file", out_big, "--batch_size", "32")
    assert out_big.read_text(encoding="utf-8").splitlines() == lines


def test_output_probs_and_threshold_override(trained, keyword_data, tmp_path):
    save_dir, _ = trained
    out = tmp_path / "out.txt"
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", keyword_data, "--params_path", save_dir,
                      "--output_file", out, "--output_probs", "--threshold", "0.999999")
    assert result.returncode == 0, result.stderr[-2000:]
    labels = read_label_list(keyword_data / "label.txt")
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "text\tlabel"
    for line in lines[1:]:
        text, predicted, probs_json = line.split("\t")
        probs = json.loads(probs_json)
        assert list(probs) == labels and all(0.0 <= p <= 1.0 for p in probs.values())
        assert (predicted.split(", ") if predicted else []) == [n for n, p in probs.items() if p > 0.999999]


def test_disagreeing_label_file_is_refused(trained, keyword_data, tmp_path):
    save_dir, _ = trained
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.txt").write_text("足球比赛\n", encoding="utf-8")
    (data / "label.txt").write_text("体育\n科技\n财经\n娱乐\n教育\n", encoding="utf-8")
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", data, "--params_path", save_dir)
    assert result.returncode == 2
    assert (f"{data / 'label.txt'} disagrees with the checkpoint (line 2 is '科技' but the checkpoint's label 1 "
            f"is '财经')") in result.stderr
    (data / "label.txt").unlink()  # without a label file the checkpoint's own list is used
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", data, "--params_path", save_dir,
                      "--output_file", tmp_path / "o.txt")
    assert result.returncode == 0, result.stderr[-2000:]


def test_int8_log_counts_the_labelled_texts_not_the_calibration_texts(trained, keyword_data, tmp_path):
    """OpenVINO INT8 tokenizes 300 training texts to calibrate its first build; the long-text log line
    counts the lines of the input only."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(trained[0], checkpoint, ignore=shutil.ignore_patterns("export_cache"))  # INT8 built here
    data = tmp_path / "data"
    data.mkdir()
    texts = [line.split("\t")[0] for line in (keyword_data / "dev.txt").read_text(encoding="utf-8").splitlines()]
    (data / "data.txt").write_text("\n".join(texts[:40]) + "\n", encoding="utf-8")
    for name in ("label.txt", "train.txt"):
        shutil.copy(keyword_data / name, data / name)
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", data, "--params_path", checkpoint,
                      "--output_file", tmp_path / "out.txt", "--backend", "openvino", "--precision", "int8")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "of 40 texts truncated" in result.stderr
