"""PaddleNLP SimpleServer for an export directory: POST /models/cls_multi_label.

Start it from this directory as in the reference, with the settings in the environment:

    paddlenlp server server:app --host 0.0.0.0 --port 8189
    DEVICE=cpu EXPORT_DIR=../../export paddlenlp server server:app --host 0.0.0.0 --port 8189

or as a script, with the suite's options:

    python server.py --device cpu --export_dir ../../export --host 0.0.0.0 --port 8189

The model runs on GPU 0 by default, as in the reference (`--device`/`DEVICE`, `--device_id`/`DEVICE_ID`);
on a Paddle build without GPU support the server says so and stops. The export directory is
../../export unless `--export_dir`/`EXPORT_DIR` names another (any directory written by export_model.py
or prune.py). Responses carry the reference's fields (`label`: label ids, `confidence`: their
probabilities) plus `label_names`, and `probs` (every label's probability) when the request's
parameters say `"return_probs": true`, and `top_k` (the k most probable labels with their scores)
when they say `"top_k": k`. The export's decision (per-label thresholds, label-count policy,
calibration) decides; a request may send `prob_limit` (one threshold for every label), `min_labels`,
`max_labels` and `top_k` over it. A blank text (empty or white space) gets no labels and null `probs`,
as predict.py writes an empty row for a blank line. Bad requests get HTTP 422 with the reason; a text
longer than `--max_text_chars`/`MAX_TEXT_CHARS` (100,000 characters) or a body larger than
`--max_request_bytes`/`MAX_REQUEST_BYTES` (10 MiB, checked before the body is parsed) gets 413.
Requests are answered concurrently, their model batches taking turns (serving.answer_concurrently),
so a short request is not held up behind a long one.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse

import numpy as np
import uvicorn
from paddlenlp.server import BaseModelHandler, BasePostHandler

from cli import ArgumentParser
from pipeline import TextPipeline, blank_texts
from serving import (
    add_simple_server_arguments,
    app_from_environment,
    label_response,
    refusal,
    request_decision,
    request_parameter,
    simple_server,
    texts_of_request,
    with_blank_texts,
)
from utils import DataError, run_cli

parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
add_simple_server_arguments(parser, "../../export", "Directory written by export_model.py or prune.py.", 8189)


class MultiLabelModelHandler(BaseModelHandler):
    """Tokenize (long texts as the export reads them), batch by length and run the export, exactly as
    deploy/predictor does."""

    @classmethod
    def process(cls, predictor, tokenizer, data, parameters):
        try:
            texts = texts_of_request(data, predictor.max_text_chars)
            max_seq_len = request_parameter(parameters, "max_seq_len", 128, int, 3, predictor.export.max_positions or 2048)
            batch_size = request_parameter(parameters, "batch_size", 32, int, 1, 1024)
            decision = request_decision(parameters, predictor.export.decision)
            if not isinstance(parameters.get("return_probs", False), bool):
                raise DataError(f"parameter return_probs must be true or false, got {parameters['return_probs']!r}")
        except DataError as err:
            raise refusal(err) from None
        pipeline = TextPipeline(tokenizer, predictor.export.input_names, max_seq_len, batch_size,
                                predictor.export.long_text)
        labels = predictor.export.labels
        blank = blank_texts(texts)
        texts = [text for text, is_blank in zip(texts, blank) if not is_blank]
        logits = (pipeline.outputs(predictor.backend, pipeline.encode(texts)) if texts
                  else np.zeros((0, len(labels)), dtype="float32"))
        return {"logits": logits, "labels": labels, "decision": decision, "blank": blank}


class MultiLabelPostHandler(BasePostHandler):
    """The reference's answer (label ids and their probabilities per text, an empty list when no label
    is chosen) plus label names, every label's probability with `return_probs`, the k most probable
    labels with `top_k`. A blank text gets no labels (and null probabilities), as predict.py gives a
    blank line an empty row."""

    @classmethod
    def process(cls, data, parameters):
        response = label_response(data["logits"], data["labels"], data["decision"],
                                  with_probs=parameters.get("return_probs", False))
        return with_blank_texts(response, data["blank"])


def build_app(settings: argparse.Namespace):
    return simple_server("models/cls_multi_label", settings, MultiLabelModelHandler, MultiLabelPostHandler)


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    uvicorn.run(build_app(args), host=args.host, port=args.port)


if __name__ == "__main__":
    run_cli(main)
else:  # imported by `paddlenlp server server:app`
    app = app_from_environment(parser, build_app)
