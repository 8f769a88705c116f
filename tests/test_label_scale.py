"""Thousands of labels through every stage: a generated 2,000-label keyword set goes train (weighted
loss, repeat-factor sampling, tuned thresholds) -> predict -> evaluate -> export -> infer with finite
numbers, logs that summarise instead of listing every label, and files that list them all."""
from __future__ import annotations

import csv
import json

import numpy as np
import paddle
import pytest

from http_json import post
from metric import tune_thresholds

from conftest import predict_py_labels, run_main, running_simple_server

NUM_LABELS = 2000


@pytest.fixture(scope="module")
def many_labels(tmp_path_factory):
    root = tmp_path_factory.mktemp("label_scale")
    data = root / "data"
    result = run_main("data/generate.py", "--num_labels", NUM_LABELS, "--output_dir", data, "--train_lines", "400",
                      "--dev_lines", "120", "--zipf", "1.0")
    assert result.returncode == 0, result.stderr
    seen = {label for line in (data / "train.txt").read_text(encoding="utf-8").splitlines()
            for label in line.split("\t")[1].split(",")}
    assert 100 < len(seen) < NUM_LABELS  # most labels never occur in train.txt, as in real data
    model = root / "scratch"
    assert run_main("scratch_model.py", "--dataset_dir", data, "--output_dir", model).returncode == 0
    save_dir = root / "checkpoint"
    result = run_main("train.py", "--device", "cpu", "--dataset_dir", data, "--model_name", model, "--save_dir",
                      save_dir, "--epochs", "2", "--batch_size", "32", "--learning_rate", "1e-3", "--loss",
                      "bce_pos_weight", "--sampling", "repeat_factor", "--tune_thresholds", "--logging_steps", "50")
    assert result.returncode == 0, result.stderr[-3000:]
    return data, save_dir, seen, result.stderr


def test_training_with_unseen_labels_stays_finite(many_labels):
    data, save_dir, seen, log = many_labels
    assert "Positive weights (auto): min " in log and "max 10.00" in log  # unseen labels clipped, not inf
    assert "Repeat-factor sampling (threshold 0.01)" in log
    results = json.loads((save_dir / "results.json").read_text(encoding="utf-8"))
    assert np.isfinite(results["best_dev"]["micro_f1"]) and np.isfinite(results["tuned_dev"]["macro_f1"])
    config = json.loads((save_dir / "config.json").read_text(encoding="utf-8"))
    assert len(config["multi_label_thresholds"]) == NUM_LABELS
    assert np.all(np.isfinite(config["multi_label_thresholds"]))
    state = paddle.load(str(save_dir / "model_state.pdparams"))
    assert np.all(np.isfinite(state["classifier.bias"].numpy())) and np.all(np.isfinite(state["classifier.weight"].numpy()))
    assert "labels tuned (min" in log  # the thresholds are summarised, not listed
    assert max(len(line) for line in log.splitlines()) < 1000


@pytest.fixture(scope="module")
def many_labels_export(many_labels, tmp_path_factory):
    data, save_dir, _, _ = many_labels
    export = tmp_path_factory.mktemp("label_scale_export") / "export"
    result = run_main("export_model.py", "--params_path", save_dir, "--output_path", export, "--dataset_dir", data)
    assert result.returncode == 0, result.stderr[-3000:]
    return export


def test_predict_evaluate_export_infer_on_thousands_of_labels(many_labels, many_labels_export, tmp_path):
    data, save_dir, _, _ = many_labels
    export = many_labels_export
    texts = (data / "data.txt").read_text(encoding="utf-8").splitlines()
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", data, "--params_path", save_dir,
                      "--output_file", tmp_path / "out.txt", "--output_probs")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()
    assert len(rows) == len(texts) + 1 and len(json.loads(rows[1].split("\t")[2])) == NUM_LABELS

    result = run_main("analysis/evaluate.py", "--device", "cpu", "--dataset_dir", data, "--params_path", save_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{NUM_LABELS} labels: the 10 most frequent and the 10 worst by F1 below" in result.stderr
    assert 10 <= result.stderr.count("Class name: ") <= 20
    with open(data / "per_label.csv", encoding="utf-8") as handle:
        assert sum(row["split"] == "dev" for row in csv.DictReader(handle)) == NUM_LABELS
    assert (data / "per_label_f1.png").stat().st_size > 0

    result = run_main("deploy/predictor/infer.py", "--device", "cpu", "--model_path_prefix", export / "float32",
                      "--dataset_dir", data, "--output_file", tmp_path / "infer.txt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "infer.txt").read_text(encoding="utf-8").splitlines() == \
        rows[:1] + [row.rsplit("\t", 1)[0] for row in rows[1:]]  # predict.py's rows without the probabilities


@pytest.mark.slow
def test_simple_serving_lists_positive_labels_and_all_scores_on_request(many_labels, many_labels_export, tmp_path):
    data, save_dir, _, _ = many_labels
    expected = predict_py_labels(save_dir, data, "data.txt", tmp_path / "predict.txt")
    texts = (data / "data.txt").read_text(encoding="utf-8").splitlines()[:50]
    with running_simple_server("server", many_labels_export, tmp_path / "server.log") as url:
        status, answer = post(url, {"data": {"text": texts}})
        assert status == 200 and set(answer["result"]) == {"label", "confidence", "label_names"}
        assert answer["result"]["label_names"] == expected[:50] and sum(map(bool, expected[:50])) > 10
        assert len(json.dumps(answer)) < 200 * len(texts)  # positive labels only, not 2,000 scores per text
        status, answer = post(url, {"data": {"text": texts[:3]}, "parameters": {"return_probs": True}})
        assert status == 200 and [len(row) for row in answer["result"]["probs"]] == [NUM_LABELS] * 3


def test_threshold_tuning_on_thousands_of_labels_keeps_untunable_labels():
    rng = np.random.default_rng(0)
    labels = np.zeros((300, NUM_LABELS), dtype="float32")
    labels[:, :50] = rng.random((300, 50)) < 0.2  # 50 labels with support; the rest never occur
    probs = (labels * 0.3 + rng.random(labels.shape) * 0.7).astype("float32")  # overlapping at 0.5
    thresholds = tune_thresholds(probs, labels, 0.5)
    assert thresholds.shape == (NUM_LABELS,) and np.all(np.isfinite(thresholds))
    assert np.all(thresholds[50:] == 0.5) and np.any(thresholds[:50] != 0.5)


def test_positive_weight_file_errors_name_the_file(keyword_data, scratch_model, tmp_path):
    weights = tmp_path / "weights.txt"
    for content, message in (("1.0\n2.0\n", "2 weights for the"), ("1\n" * 4 + "x\n", "could not convert"),
                             ("1\n" * 4 + "-2\n", "weights must be positive numbers")):
        weights.write_text(content, encoding="utf-8")
        result = run_main("train.py", "--device", "cpu", "--dataset_dir", keyword_data, "--model_name", scratch_model,
                          "--save_dir", tmp_path / "out", "--loss", "bce_pos_weight", "--pos_weight", weights)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f"--pos_weight {weights}" in result.stderr and message in result.stderr, result.stderr[-500:]
