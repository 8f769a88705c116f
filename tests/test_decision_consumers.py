"""The one decision step through every consumer: a calibrated checkpoint with a stored label-count policy
gives the same labels and scores in predict.py (dygraph and a static backend), deploy/predictor/infer.py,
Paddle Serving's pipeline, SimpleServing and Triton; calibrating changes probabilities, not labels."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tritonclient.http as httpclient
from test_triton_serving import running_triton

from backends import create_backend
from exporting import load_export, load_export_tokenizer
from http_json import post

import pipeline_io
from conftest import LABELS, offline_predictions, run_main, running_simple_server

pytestmark = pytest.mark.slow
POLICY = ["--min_labels", "1", "--max_labels", "2", "--top_k", "3"]


def copy_checkpoint(trained, destination):
    shutil.copytree(trained[0], destination, ignore=shutil.ignore_patterns("export_cache*", "resume"))
    return destination


def predict_rows(checkpoint, dataset, output, *options) -> list[list[str]]:
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", dataset, "--params_path", checkpoint,
                      "--output_file", output, *options)
    assert result.returncode == 0, result.stderr[-3000:]
    return [line.split("\t") for line in output.read_text(encoding="utf-8").splitlines()[1:]]


def names(column: str) -> list[str]:
    return column.split(", ") if column else []


@pytest.fixture(scope="module")
def decided(trained, keyword_data, tmp_path_factory):
    """A copy of the trained checkpoint calibrated on dev with a stored policy, and its export."""
    root = tmp_path_factory.mktemp("decided")
    checkpoint = copy_checkpoint(trained, root / "checkpoint")
    result = run_main("calibrate.py", "--device", "cpu", "--params_path", checkpoint, "--dataset_dir", keyword_data,
                      *POLICY)
    assert result.returncode == 0, result.stderr[-3000:]
    exported = run_main("export_model.py", "--params_path", checkpoint, "--output_path", root / "export",
                        "--dataset_dir", keyword_data)
    assert exported.returncode == 0, exported.stderr[-3000:]
    return checkpoint, root / "export", result.stderr


def test_calibration_changes_probabilities_not_labels(trained, keyword_data, tmp_path):
    checkpoint = copy_checkpoint(trained, tmp_path / "checkpoint")
    result = run_main("calibrate.py", "--device", "cpu", "--params_path", checkpoint, "--dataset_dir", keyword_data)
    assert result.returncode == 0, result.stderr[-3000:]
    ece = [float(x) for x in result.stderr.split("expected calibration error ")[1].split(",")[0].split(" -> ")]
    assert ece[1] < ece[0]
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    assert config["multi_label_decision"]["calibration"]["method"] == "platt"
    before = predict_rows(trained[0], keyword_data, tmp_path / "before.txt", "--output_probs")
    after = predict_rows(checkpoint, keyword_data, tmp_path / "after.txt", "--output_probs")
    assert [row[:2] for row in after] == [row[:2] for row in before]
    assert [row[2] for row in after] != [row[2] for row in before]
    removed = run_main("calibrate.py", "--device", "cpu", "--params_path", checkpoint, "--dataset_dir", keyword_data,
                       "--calibration", "none")
    assert removed.returncode == 0
    again = predict_rows(checkpoint, keyword_data, tmp_path / "again.txt", "--output_probs")
    assert [row[:2] for row in again] == [row[:2] for row in before]
    assert all(json.loads(a[2]) == pytest.approx(json.loads(b[2]), abs=2e-4) for a, b in zip(again, before))


def test_policies_on_the_command_line_and_stored(trained, decided, keyword_data, tmp_path):
    plain = predict_rows(trained[0], keyword_data, tmp_path / "plain.txt")
    assert any(not row[1] for row in plain) and any(len(names(row[1])) > 2 for row in plain)
    bounded = predict_rows(trained[0], keyword_data, tmp_path / "bounded.txt", *POLICY)
    stored = predict_rows(decided[0], keyword_data, tmp_path / "stored.txt")
    for rows in (bounded, stored):
        assert all(1 <= len(names(row[1])) <= 2 for row in rows)
        tops = [json.loads(row[2]) for row in rows]
        assert all(len(top) == 3 and [p for _, p in top] == sorted((p for _, p in top), reverse=True) for top in tops)
    # a text with labels to spare keeps its two most probable; one without gets its most probable
    for plain_row, row in zip(plain, bounded):
        chosen, top = names(row[1]), [name for name, _ in json.loads(row[2])]
        if len(names(plain_row[1])) > 2 or not plain_row[1]:
            assert set(chosen) == set(top[:len(chosen)])
    overridden = predict_rows(decided[0], keyword_data, tmp_path / "over.txt", "--max_labels", "0", "--min_labels",
                              "0", "--top_k", "0")
    assert len(overridden[0]) == 2 and any(len(names(row[1])) > 2 for row in overridden)


def test_every_consumer_gives_the_same_labels_and_scores(decided, keyword_data, tmp_path):
    checkpoint, export_dir, _ = decided
    rows = predict_rows(checkpoint, keyword_data, tmp_path / "dygraph.txt")
    texts = [row[0] for row in rows]
    expected = [names(row[1]) for row in rows]
    expected_top = [json.loads(row[2]) for row in rows]
    assert [names(row[1]) for row in predict_rows(checkpoint, keyword_data, tmp_path / "ort.txt", "--backend",
                                                  "onnxruntime")] == expected
    infer = run_main("deploy/predictor/infer.py", "--device", "cpu", "--model_path_prefix", export_dir / "float32",
                     "--dataset_dir", keyword_data, "--output_file", tmp_path / "infer.txt")
    assert infer.returncode == 0, infer.stderr[-3000:]
    infer_rows = [line.split("\t") for line in (tmp_path / "infer.txt").read_text(encoding="utf-8").splitlines()[1:]]
    assert [names(row[1]) for row in infer_rows] == expected and [json.loads(r[2]) for r in infer_rows] == expected_top

    offline, probs = offline_predictions(export_dir, texts)
    assert offline == expected
    export = load_export(export_dir / "float32")
    feeds, rows = pipeline_io.preprocess(texts, export, load_export_tokenizer(export), 128)
    answer = pipeline_io.postprocess({"logits": create_backend(export, "onnxruntime", "fp32").run(feeds)}, export,
                                     rows)
    assert pipeline_io.decode_response(answer)[0] == expected
    assert [[item["label_name"] for item in top] for top in json.loads(answer["top_k"])] == \
        [[name for name, _ in top] for top in expected_top]

    with running_simple_server("server", export_dir, tmp_path / "server.log") as url:
        status, result = post(url, {"data": {"text": texts}})
        assert status == 200
        served = result["result"]
        assert served["label_names"] == expected
        assert served["confidence"] == [[pytest.approx(float(probs[i][LABELS.index(n)]), abs=1e-5) for n in row]
                                        for i, row in enumerate(expected)]
        assert [[(item["label_name"], round(item["score"], 4)) for item in top] for top in served["top_k"]] == \
            [[(name, pytest.approx(p, abs=2e-4)) for name, p in top] for top in expected_top]
        status, result = post(url, {"data": {"text": texts}, "parameters": {"max_labels": 1, "top_k": 0}})
        assert status == 200 and "top_k" not in result["result"]
        assert all(len(row) == 1 for row in result["result"]["label_names"])
        for parameters, reason in (({"top_k": "3"}, "parameter top_k must be an integer"),
                                   ({"top_k": 1.5}, "parameter top_k must be an integer"),
                                   ({"min_labels": -1}, "parameter min_labels must be an integer in [0,"),
                                   ({"min_labels": 3, "max_labels": 2}, "min_labels 3 is more than max_labels 2")):
            status, result = post(url, {"data": {"text": texts[:2]}, "parameters": parameters})
            assert status == 422 and reason in result["detail"], result
        assert post(url, {"data": {"text": texts[:1]}})[0] == 200  # the service goes on

    with running_triton(export_dir, tmp_path / "triton") as server:
        batch = texts[:64]  # the repository's max_batch_size
        inputs = httpclient.InferInput("INPUT", [len(batch), 1], "BYTES")
        inputs.set_data_from_numpy(np.array([[text.encode("utf-8")] for text in batch], dtype=np.object_))
        result = httpclient.InferenceServerClient(server["http"]).infer("seqcls", [inputs])
        triton_names = [row[0].decode("utf-8").split(",") if row[0] else [] for row in result.as_numpy("label_names")]
        assert triton_names == expected[:64]
        np.testing.assert_allclose(result.as_numpy("probs"), probs[:64], atol=1e-5)


@pytest.mark.parametrize("options, fragment", [
    (["--min_labels", "3", "--max_labels", "2"], "min_labels 3 is more than max_labels 2"),
    (["--min_labels", "-1"], "--min_labels: must be at least 0, got -1"),
    (["--top_k", "two"], "--top_k: an integer at least 0 is needed, got 'two'"),
])
def test_bad_policy_options_are_one_line(trained, keyword_data, tmp_path, options, fragment):
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", keyword_data, "--params_path", trained[0],
                      "--output_file", tmp_path / "out.txt", *options)
    assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr
