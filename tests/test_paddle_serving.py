"""deploy/paddle_serving/pipeline_io.py: the pipeline's request and response handling, round-tripped.

Paddle Serving itself does not install on Python 3.11 (README); its Op calls exactly these functions.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from backends import create_backend
from decision import Decision
from exporting import load_export, load_export_tokenizer
from serving import MAX_REQUEST_TEXTS
from utils import DataError

from conftest import ROOT, offline_predictions

spec = importlib.util.spec_from_file_location("pipeline_io", ROOT / "deploy/paddle_serving/pipeline_io.py")
pipeline_io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pipeline_io)


@pytest.mark.slow
def test_a_batch_round_trips_with_label_names_including_texts_without_labels(exported, capsys):
    export_dir, _ = exported
    export = load_export(export_dir / "float32")
    tokenizer = load_export_tokenizer(export)
    texts = ["足球比赛股票", "的了在是", "学校考试老师", ""]
    feed_dict = pipeline_io.encode_request(texts)  # what rpc_client.py / http_client.py send
    assert json.loads(feed_dict["sentence"]) == texts
    feeds, rows = pipeline_io.preprocess(pipeline_io.parse_request(feed_dict), export, tokenizer, 128)
    assert sorted(feeds) == ["input_ids", "token_type_ids"] and feeds["input_ids"].dtype == np.int64
    assert rows.source.tolist() == [0, 1, 2, 3] and rows.blank == [False, False, False, True]  # one row per text
    logits = create_backend(export, "paddle", "fp32").run(feeds)
    answer = pipeline_io.postprocess({"linear_75.tmp_1": logits}, export, rows)  # any fetch name
    assert all(isinstance(value, str) for value in answer.values())  # the pipeline sends strings
    labels, confidences = pipeline_io.decode_response(answer)
    names, _ = offline_predictions(export_dir, texts)
    ids = [[export.labels.index(name) for name in row] for row in names]
    assert labels == names and labels[3] == []  # the blank text gets no labels, as predict.py gives it
    assert eval(answer["label"]) == [",".join(map(str, row)) for row in ids]  # how the reference's clients read it
    assert eval(answer["label"])[:2] == [f"{export.labels.index('体育')},{export.labels.index('财经')}", ""]
    assert labels[0] == ["体育", "财经"] and labels[1] == [] and labels[2] == ["教育"]
    assert [len(c) for c in confidences] == [len(names) for names in labels]
    pipeline_io.print_labels(texts, answer, "data")
    assert capsys.readouterr().out.splitlines()[:6] == [
        "data:  足球比赛股票", "label:  体育,财经", "-" * 20, "data:  的了在是", "label:  ", "-" * 20]


@pytest.mark.parametrize("request_dict, reason", [
    ({"text": "[]"}, "the request has no 'sentence' key"),
    ({"sentence": "np.array([b'x'], dtype=object)"}, "'sentence' must be a JSON list of strings"),
    ({"sentence": "__import__('os').system('true')"}, "'sentence' must be a JSON list of strings"),
    ({"sentence": None}, "'sentence' must be a JSON list of strings"),
    ({"sentence": "[1]"}, "text[0] is int, not a string"),
    ({"sentence": "{}"}, "'text' must be a string or a non-empty list of strings"),
    ({"sentence": json.dumps(["a"] * (MAX_REQUEST_TEXTS + 1))}, "texts in one request; at most"),
])
def test_malformed_requests_are_refused_never_evaluated(request_dict, reason):
    with pytest.raises(DataError, match=reason.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        pipeline_io.parse_request(request_dict)


@pytest.mark.parametrize("parameters, reason", [
    ("min_labels=1", "'parameters' must be a JSON object"),
    ("[1]", "'parameters' must be a JSON object"),
    (json.dumps({"top_k": "2"}), "parameter top_k must be an integer"),
    (json.dumps({"min_labels": 3, "max_labels": 2}), "min_labels 3 is more than max_labels 2"),
])
def test_malformed_decision_parameters_are_refused(parameters, reason):
    stored = Decision(np.full(3, 0.5, dtype="float32"))
    with pytest.raises(DataError, match=reason):
        pipeline_io.parse_decision({"sentence": "[\"a\"]", "parameters": parameters}, stored)


@pytest.mark.slow
def test_a_request_may_override_the_exported_decision(exported):
    export_dir, _ = exported
    export = load_export(export_dir / "float32")
    tokenizer = load_export_tokenizer(export)
    texts = ["足球比赛股票", "的了在是"]
    request = {**pipeline_io.encode_request(texts), "parameters": json.dumps({"max_labels": 1, "min_labels": 1,
                                                                             "top_k": 2})}
    decision = pipeline_io.parse_decision(request, export.decision)
    feeds, rows = pipeline_io.preprocess(texts, export, tokenizer, 128, decision)
    answer = pipeline_io.postprocess({"logits": create_backend(export, "onnxruntime", "fp32").run(feeds)}, export,
                                     rows)
    labels, _ = pipeline_io.decode_response(answer)
    assert [len(row) for row in labels] == [1, 1]  # two labels pass for the first text, none for the second
    top = json.loads(answer["top_k"])
    assert [len(row) for row in top] == [2, 2] and labels[0] == [top[0][0]["label_name"]]
    assert pipeline_io.parse_decision(pipeline_io.encode_request(texts), export.decision) is export.decision
