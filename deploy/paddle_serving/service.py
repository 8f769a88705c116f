"""Paddle Serving pipeline service `seq_cls` for an export directory.

    python service.py --export_dir ../../export --max_seq_length 128 [--model_name ernie-3.0-medium-zh]

Paddle Serving 0.9 needs Python <= 3.9 and Paddle 2.x (see README.md); the request and response
handling lives in pipeline_io.py and is tested with this project's Python.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse

from paddle_serving_server.web_service import Op, WebService

from cli import SEQ_LENGTH, ArgumentParser
from exporting import ExportInfo, export_prefix_in, load_export, load_export_tokenizer
from modeling import check_max_seq_length, tokenizer_positions
from native_tokenizer import tokenize_on_calling_threads
from utils import DataError, run_cli

from pipeline_io import parse_decision, parse_request, postprocess, preprocess

parser = ArgumentParser(description=__doc__)
parser.add_argument("--export_dir", default="../../export", help="Directory written by export_model.py.")
parser.add_argument("--max_seq_length", type=SEQ_LENGTH, default=128, help="Length of the model inputs (longer texts are truncated, or read in windows as the export says).")
parser.add_argument("--model_name", default=None, help="The tokenizer (a model name or directory, as in the reference's command); by default the one saved in the export.")


class SeqClsOp(Op):
    """The request's rows go to the model; the text of each row (windows of a long text) and which
    texts are blank wait here, under the request's data_id, until its logits come back. `main` sets the export it serves."""

    export: ExportInfo
    tokenizer: object
    max_seq_length: int
    row_texts: dict = {}

    def preprocess(self, input_dicts, data_id, log_id):
        (_, input_dict), = input_dicts.items()
        try:
            texts = parse_request(input_dict)
            decision = parse_decision(input_dict, self.export.decision)
        except DataError as err:  # an error answer for this request; the service keeps serving
            return {}, True, 400, str(err)
        feed, self.row_texts[data_id] = preprocess(texts, self.export, self.tokenizer, self.max_seq_length, decision)
        return feed, False, None, ""

    def postprocess(self, input_dicts, fetch_dict, data_id, log_id):
        return postprocess(fetch_dict, self.export, self.row_texts.pop(data_id)), None, ""


class SeqClsService(WebService):
    def get_pipeline_response(self, read_op):
        return SeqClsOp(name="seq_cls", input_ops=[read_op])


def serve(args: argparse.Namespace) -> None:
    export = load_export(export_prefix_in(args.export_dir))
    tokenizer = load_export_tokenizer(export, args.model_name)
    check_max_seq_length(args.max_seq_length, export.max_positions or tokenizer_positions(tokenizer), export.directory)
    SeqClsOp.export, SeqClsOp.tokenizer, SeqClsOp.max_seq_length = export, tokenizer, args.max_seq_length
    tokenize_on_calling_threads()
    service = SeqClsService(name="seq_cls")
    service.prepare_pipeline_config("config.yml")
    service.run_service()


def main(argv: list[str] | None = None) -> None:
    serve(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
