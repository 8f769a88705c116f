"""What goes in and out of the Paddle Serving pipeline, as plain functions (tested without Paddle Serving).

Requests carry the texts as a JSON list of strings under the key `sentence` (the reference sent
the repr of a numpy array and eval()ed it on the server: remote code execution). Responses carry
the reference's `label` (label ids) plus `confidence` and `label_names` as JSON, with the labels and
decision of the export (decision.py); an optional `parameters` key (a JSON object) may override the
decision as SimpleServing's request parameters do (`prob_limit`, `min_labels`, `max_labels`, `top_k`).
"""
from __future__ import annotations

import json
from typing import NamedTuple, Sequence

import numpy as np

from decision import Decision
from exporting import ExportInfo
from pipeline import TextPipeline, blank_texts, pool_rows
from serving import label_response, request_decision, request_texts, with_blank_texts
from utils import DataError

INPUT_KEY = "sentence"
PARAMETERS_KEY = "parameters"
EXAMPLES = ["原告与被告婚后育有一子", "双方分居至今，原告要求离婚"]


def client_texts(input_file: str | None) -> list[str]:
    """The clients' texts: the non-blank lines of input_file, or two examples."""
    if input_file is None:
        return EXAMPLES
    with open(input_file, encoding="utf-8-sig") as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]


def encode_request(texts: Sequence[str]) -> dict[str, str]:
    """The client's feed: {"sentence": '["text", ...]'}."""
    return {INPUT_KEY: json.dumps(list(texts), ensure_ascii=False)}


def parse_request(input_dict: dict) -> list[str]:
    """The texts of a request, or a DataError saying what is wrong with it."""
    if INPUT_KEY not in input_dict:
        raise DataError(f"the request has no '{INPUT_KEY}' key")
    try:
        value = json.loads(input_dict[INPUT_KEY])
    except (TypeError, json.JSONDecodeError):
        raise DataError(f"'{INPUT_KEY}' must be a JSON list of strings") from None
    return request_texts(value)


def parse_decision(input_dict: dict, stored: Decision) -> Decision:
    """The export's decision with the request's optional `parameters` (a JSON object string, as every
    value of the feed is a string: `prob_limit`, `min_labels`, `max_labels`, `top_k`) put over it, or
    a DataError saying what is wrong with them."""
    if PARAMETERS_KEY not in input_dict:
        return stored
    try:
        parameters = json.loads(input_dict[PARAMETERS_KEY])
    except (TypeError, json.JSONDecodeError):
        parameters = None
    if not isinstance(parameters, dict):
        raise DataError(f"'{PARAMETERS_KEY}' must be a JSON object")
    return request_decision(parameters, stored)


class RequestRows(NamedTuple):
    """What `postprocess` needs of a request besides the logits: the text of each row, which texts are
    blank (they get no labels, as predict.py gives a blank line an empty row), and the decision."""

    source: np.ndarray
    blank: list[bool]
    decision: Decision


def preprocess(texts: Sequence[str], export: ExportInfo, tokenizer, max_seq_length: int,
               decision: Decision | None = None) -> tuple[dict[str, np.ndarray], RequestRows]:
    """int64 feeds named after the export's inputs, padded to the longest row of the request (texts
    read as the export reads long texts), and the request's rows, for `postprocess` (which decides with
    `decision`, by default the export's)."""
    pipeline = TextPipeline(tokenizer, export.input_names, max_seq_length, long_text=export.long_text)
    rows = pipeline.encode(texts)
    return pipeline.pad(rows, list(range(len(rows)))), RequestRows(rows.source, blank_texts(texts),
                                                                   decision or export.decision)


def postprocess(fetch_dict: dict[str, np.ndarray], export: ExportInfo, rows: RequestRows) -> dict[str, str]:
    """The model's only output, pooled per text -> the reference's `label` (per text, its label ids
    joined by commas: '["0,3", ""]', which the reference's clients eval()) plus `confidence`
    ('[[p, ...], ...]', the chosen labels' probabilities) and `label_names` ('[["name", ...], ...]')."""
    (logits,) = fetch_dict.values()
    logits = pool_rows(np.asarray(logits), rows.source, len(rows.blank), export.long_text.pooling)
    kept = np.flatnonzero(~np.asarray(rows.blank, dtype=bool))
    response = with_blank_texts(label_response(logits[kept], export.labels, rows.decision), rows.blank)
    values = {"label": json.dumps([",".join(map(str, ids)) for ids in response["label"]]),
              "confidence": json.dumps(response["confidence"]),
              "label_names": json.dumps(response["label_names"], ensure_ascii=False)}
    if "top_k" in response:  # the request's or the export's top_k
        values["top_k"] = json.dumps(response["top_k"], ensure_ascii=False)
    return values


def decode_response(values: dict[str, str]) -> tuple[list[list[str]], list[list[float]]]:
    """Label names and their probabilities per text."""
    return json.loads(values["label_names"]), json.loads(values["confidence"])


def print_labels(texts: Sequence[str], values: dict[str, str], text_key: str) -> None:
    """The clients' output, as in the reference: `<text_key>:  text`, `label:  names`, a rule."""
    labels, _ = decode_response(values)
    for text, names in zip(texts, labels):
        print(f"{text_key}: ", text)
        print("label: ", ",".join(names))
        print("-" * 20)
