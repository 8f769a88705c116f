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
`max_labels` and `top_k` over it. Bad requests get HTTP 422 with the reason.
"""
from __future__ import annotations

import argparse

import uvicorn
from fastapi import HTTPException
from paddlenlp.server import BaseModelHandler, BasePostHandler

import compat  # noqa: F401  (SimpleServer's model loader, patched for Paddle 3 exports)
from cli import ArgumentParser
from pipeline import TextPipeline
from serving import (
    add_simple_server_arguments,
    app_from_environment,
    label_response,
    request_decision,
    request_parameter,
    simple_server,
    texts_of_request,
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
            texts = texts_of_request(data)
            max_seq_len = request_parameter(parameters, "max_seq_len", 128, int, 3, predictor.export.max_positions or 2048)
            batch_size = request_parameter(parameters, "batch_size", 32, int, 1, 1024)
            decision = request_decision(parameters, predictor.export.decision)
            if not isinstance(parameters.get("return_probs", False), bool):
                raise DataError(f"parameter return_probs must be true or false, got {parameters['return_probs']!r}")
        except DataError as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        pipeline = TextPipeline(tokenizer, predictor.export.input_names, max_seq_len, batch_size,
                                predictor.export.long_text)
        logits = pipeline.outputs(predictor.backend, pipeline.encode(texts))
        return {"logits": logits, "labels": predictor.export.labels, "decision": decision}


class MultiLabelPostHandler(BasePostHandler):
    """The reference's answer (label ids and their probabilities per text, an empty list when no label
    is chosen) plus label names, every label's probability with `return_probs`, the k most probable
    labels with `top_k`."""

    @classmethod
    def process(cls, data, parameters):
        return label_response(data["logits"], data["labels"], data["decision"],
                              with_probs=parameters.get("return_probs", False))


def build_app(settings: argparse.Namespace):
    return simple_server("models/cls_multi_label", settings, MultiLabelModelHandler, MultiLabelPostHandler)


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    uvicorn.run(build_app(args), host=args.host, port=args.port)


if __name__ == "__main__":
    run_cli(main)
else:  # imported by `paddlenlp server server:app`
    app = app_from_environment(parser, build_app)
