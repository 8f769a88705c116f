"""deploy/simple_serving: a real SimpleServer on 127.0.0.1, queried over HTTP like a user would."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from http_json import post
from serving import MAX_REQUEST_BYTES, MAX_REQUEST_TEXTS, MAX_TEXT_CHARS

from conftest import (
    LABELS,
    WINDOW,
    free_port,
    offline_predictions,
    predict_py_labels,
    run_main,
    run_script,
    running_simple_server,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server_log(tmp_path_factory):
    return tmp_path_factory.mktemp("simple_serving") / "server.log"


@pytest.fixture(scope="module")
def server(exported, server_log):
    """`paddlenlp server server:app` serving the exported test model, with the default caps."""
    export_dir, _ = exported
    with running_simple_server("server", export_dir, server_log) as url:
        yield url, export_dir


def test_server_labels_a_batch_like_the_offline_predictor(server, keyword_data):
    url, export_dir = server
    texts = [line.split("\t")[0] for line in (keyword_data / "dev.txt").read_text(encoding="utf-8").splitlines()]
    texts += ["", "的了在是"]  # an empty text and one without any keyword (no label predicted)
    status, answer = post(url, {"data": {"text": texts}, "parameters": {"batch_size": 8}})
    assert status == 200
    expected, probs = offline_predictions(export_dir, texts)
    expected[-2] = []  # the empty text has nothing to label: no labels, as predict.py's empty row
    result = answer["result"]
    assert set(result) == {"label", "confidence", "label_names"}
    assert result["label_names"] == expected
    assert result["label"] == [[LABELS.index(name) for name in names] for names in expected]  # ids, as in the reference
    assert [] in expected and any(len(names) > 1 for names in expected)
    assert result["confidence"] == [[pytest.approx(float(probs[i][j]), abs=1e-5) for j in ids]
                                    for i, ids in enumerate(result["label"])]
    status, answer = post(url, {"data": {"text": texts[:3]}, "parameters": {"return_probs": True}})
    assert status == 200
    assert np.allclose(answer["result"]["probs"], probs[:3], atol=1e-5)


def test_blank_texts_get_no_labels_as_predict_py_gives_them_an_empty_row(server):
    url, _ = server
    status, answer = post(url, {"data": {"text": ["", "足球比赛", " \u3000 "]}, "parameters": {"return_probs": True}})
    assert status == 200
    result = answer["result"]
    assert result["label"][0] == result["label"][2] == [] and result["label_names"][2] == []
    assert result["confidence"][0] == [] and result["probs"][0] is None and result["probs"][2] is None
    assert len(result["probs"][1]) == len(LABELS)
    status, answer = post(url, {"data": {"text": ""}, "parameters": {"prob_limit": 0.0}})
    assert status == 200 and answer["result"] == {"label": [[]], "confidence": [[]], "label_names": [[]]}


def test_a_reference_client_request_gets_label_ids(server):
    """The request the reference's client.py sends, answered as the reference answers it."""
    url, _ = server
    status, answer = post(url, {"data": {"text": ["学校考试老师", "足球比赛"]},
                                "parameters": {"max_seq_len": 128, "batch_size": 1, "prob_limit": 0.5}})
    assert status == 200
    assert answer["result"]["label"] == [[LABELS.index("教育")], [LABELS.index("体育")]]


def test_prob_limit_replaces_the_exported_thresholds(server):
    url, _ = server
    status, answer = post(url, {"data": {"text": "足球比赛股票"}, "parameters": {"prob_limit": 0.0}})
    assert status == 200
    assert len(answer["result"]["label"][0]) == 5  # every label is above 0


@pytest.mark.parametrize("body, reason", [
    ({"data": {"text": [1, "a"]}}, "text[0] is int, not a string"),
    ({"data": {"text": []}}, "'text' must be a string or a non-empty list of strings"),
    ({"data": {"text": ["a"] * (MAX_REQUEST_TEXTS + 1)}}, f"{MAX_REQUEST_TEXTS + 1} texts in one request; at most"),
    ({"data": {"sentence": "a"}}, "the request's 'data' must be an object with a 'text' field"),
    ({"data": {"text": "a"}, "parameters": {"max_seq_len": "long"}}, "parameter max_seq_len must be an integer"),
    ({"data": {"text": "a"}, "parameters": {"prob_limit": 2}}, "parameter prob_limit must be a number in [0, 1]"),
    ({"data": {"text": "a"}, "parameters": {"return_probs": "yes"}}, "parameter return_probs must be true or false"),
])
def test_malformed_requests_get_422_and_the_server_keeps_serving(server, body, reason):
    url, _ = server
    status, answer = post(url, body)
    assert status == 422 and reason in answer["detail"]
    status, answer = post(url, {"data": {"text": ["学校考试"]}})
    assert status == 200 and answer["result"]["label_names"] == [["教育"]]


@pytest.mark.parametrize("body, reason", [
    ({"data": {"text": ["学校考试", "a" * (MAX_TEXT_CHARS + 1)]}},
     f"text[1] has {MAX_TEXT_CHARS + 1} characters; at most {MAX_TEXT_CHARS} (--max_text_chars"),
    ({"data": {"text": ["a" * MAX_TEXT_CHARS] * (MAX_REQUEST_BYTES // MAX_TEXT_CHARS + 1)}},
     f"bytes; at most {MAX_REQUEST_BYTES} (--max_request_bytes"),
])
def test_texts_and_requests_over_the_size_caps_get_413_and_the_server_keeps_serving(server, body, reason):
    url, _ = server
    status, answer = post(url, body)
    assert status == 413 and reason in answer["detail"]
    status, answer = post(url, {"data": {"text": ["学校考试"]}})
    assert status == 200 and answer["result"]["label_names"] == [["教育"]]


def requests_handled(log) -> int:
    """How many requests the server has started to work on (SimpleServer logs one line per request)."""
    return log.read_text(errors="replace").count("The predictor id")


def test_a_one_text_request_is_answered_while_a_long_one_is_in_progress(server, server_log, keyword_data):
    """The long request's 256 texts run as 256 batches; the one-text request, sent once the server
    works on the long one, is answered first, and both answers are those each request gets alone."""
    url, export_dir = server
    dev = [line.split("\t")[0] for line in (keyword_data / "dev.txt").read_text(encoding="utf-8").splitlines()]
    long_body = {"data": {"text": [(text * 200)[:2000] for text in (dev * 3)[:256]]},
                 "parameters": {"batch_size": 1, "max_seq_len": 512, "return_probs": True}}
    short_body = {"data": {"text": ["学校考试"]}, "parameters": {"return_probs": True}}
    answered = []
    before = requests_handled(server_log)
    long = threading.Thread(target=lambda: answered.append(("long", *post(url, long_body, timeout=600))))
    long.start()
    while requests_handled(server_log) == before:  # the long request is being worked on
        time.sleep(0.05)
    answered.append(("short", *post(url, short_body)))
    long.join()
    assert [name for name, _, _ in answered] == ["short", "long"]
    assert all(status == 200 for _, status, _ in answered)
    assert answered[0][2] == post(url, short_body)[1] and answered[1][2] == post(url, long_body, timeout=600)[1]
    expected, probs = offline_predictions(export_dir, long_body["data"]["text"], 512)
    assert answered[1][2]["result"]["label_names"] == expected
    assert np.allclose(answered[1][2]["result"]["probs"], probs, atol=1e-5)


def test_invalid_json_and_unknown_fields_are_refused(server):
    url, _ = server
    assert post(url, b"not json")[0] == 422
    assert post(url, {"data": {"text": "a"}, "extra": 1})[0] == 422
    assert post(url, {"data": {"text": ["学校考试"]}})[0] == 200


def test_client_prints_label_names(server, tmp_path):
    url, export_dir = server
    (tmp_path / "texts.txt").write_text("学校考试\n足球比赛和股票\n", encoding="utf-8")
    result = run_script("deploy/simple_serving/client.py", "--url", url, "--input_file", tmp_path / "texts.txt")
    assert result.returncode == 0, result.stderr
    labels = [line[len("label: "):] for line in result.stdout.splitlines() if line.startswith("label: ")]
    assert labels == [",".join(names) for names in offline_predictions(export_dir, ["学校考试", "足球比赛和股票"])[0]]
    result = run_script("deploy/simple_serving/client.py", "--url", url.replace("cls_multi_label", "nothing"))
    assert result.returncode == 1 and "error: HTTP 404" in result.stderr
    nobody = url.replace(url.split(":")[2].split("/")[0], str(free_port()))
    result = run_script("deploy/simple_serving/client.py", "--url", nobody, "--wait", "2")
    assert result.returncode == 1 and "cannot reach" in result.stderr and "waited 2 s" in result.stderr


def test_the_reference_default_gpu_on_a_cpu_build_is_one_clear_error(exported):
    """The server runs on GPU 0 by default, as the reference's does; without a GPU build it says what to do."""
    export_dir, _ = exported
    result = run_script("deploy/simple_serving/server.py", "--export_dir", export_dir, "--port", free_port())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no GPU support" in result.stderr and "--device cpu" in result.stderr


def test_the_reference_ernie_m_entry_point_serves_an_ernie_m_export(ernie_m_trained, keyword_data, tmp_path):
    export_dir = tmp_path / "export"
    result = run_main("export_model.py", "--params_path", ernie_m_trained, "--output_path", export_dir,
                      "--multilingual")
    assert result.returncode == 0, result.stderr[-2000:]
    texts = [line.split("\t")[0] for line in (keyword_data / "dev.txt").read_text(encoding="utf-8").splitlines()][:20]
    with running_simple_server("ernie_m_server", export_dir, tmp_path / "server.log") as url:
        status, answer = post(url, {"data": {"text": texts}})
    assert status == 200
    assert answer["result"]["label_names"] == offline_predictions(export_dir, texts)[0]


def test_documents_read_in_windows_are_labelled_like_predict_py(window_exported, window_checkpoint, documents,
                                                               tmp_path):
    expected = predict_py_labels(window_checkpoint[0], documents, "test.txt", tmp_path / "predict.txt",
                                 "--max_seq_length", WINDOW)
    texts = [line.split("\t")[0] for line in (documents / "test.txt").read_text(encoding="utf-8").splitlines()]
    with running_simple_server("server", window_exported, tmp_path / "server.log") as url:
        status, answer = post(url, {"data": {"text": texts}, "parameters": {"max_seq_len": WINDOW, "batch_size": 16}})
        assert status == 200, answer
        assert answer["result"]["label_names"] == expected and sum(map(bool, expected)) > 40
        status, answer = post(url, {"data": {"text": texts[:1]}, "parameters": {"max_seq_len": 1024}})
        assert status == 422 and "max_seq_len" in str(answer) and "got 1024" in str(answer)
