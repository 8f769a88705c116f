"""deploy/paddle_serving/pipeline_io.py: the pipeline's request and response handling, round-tripped.

Paddle Serving itself does not install on Python 3.11 (README); its Op calls exactly these functions.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from backends import create_backend
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
