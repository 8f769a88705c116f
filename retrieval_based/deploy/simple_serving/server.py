"""PaddleNLP SimpleServer for the exported encoder: POST /models/semantic_index answers embeddings.

Start it from this directory, with the settings in the environment:

    DEVICE=cpu EXPORT_DIR=../../output paddlenlp server server:app --host 0.0.0.0 --port 8190

or as a script, with the same options as deploy/simple_serving/server.py of the classifier:

    python server.py --device cpu --export_dir ../../output --host 0.0.0.0 --port 8190

It serves what the reference's Paddle Serving pipeline (deploy/python/web_service.py) served: the
L2-normalised embedding of each text, for run_system.py (`--server_url`) or any client that searches
its own index. The export directory is ../../output unless `--export_dir`/`EXPORT_DIR` names another
(any directory written by retrieval_based/export_model.py). A request is
`{"data": {"text": [...]}, "parameters": {"max_seq_len": 128, "batch_size": 32}}`; the answer's
`result` has `embedding` (one list of floats per text, in request order) and `encoder`, the
fingerprint an index built with this encoder stores, so a client can refuse an index of another
model. Bad requests get HTTP 422 with the reason, a text or a body over the size caps 413 (`--max_text_chars`/
`MAX_TEXT_CHARS`, `--max_request_bytes`/`MAX_REQUEST_BYTES`, as for the classifier's server); requests
are answered concurrently, their model batches taking turns. The model runs on GPU 0 by default (`--device`/
`DEVICE`, `--device_id`/`DEVICE_ID`); on a Paddle build without GPU support the server says so and stops.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse

import uvicorn
from paddlenlp.server import BaseModelHandler, BasePostHandler

from cli import ArgumentParser
from serving import (
    add_simple_server_arguments,
    app_from_environment,
    refusal,
    request_parameter,
    simple_server,
    texts_of_request,
)
from utils import DataError, run_cli

ROUTE = "models/semantic_index"

parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
add_simple_server_arguments(parser, "../../output", "Directory written by retrieval_based/export_model.py.", 8190)


class EmbeddingHandler(BaseModelHandler):
    """Tokenize, batch by length and run the exported encoder, as feature_extract.py does."""

    @classmethod
    def process(cls, predictor, tokenizer, data, parameters):
        try:
            texts = texts_of_request(data, predictor.max_text_chars)
            max_seq_len = request_parameter(parameters, "max_seq_len", 128, int, 3, 2048)
            batch_size = request_parameter(parameters, "batch_size", 32, int, 1, 1024)
        except DataError as err:
            raise refusal(err) from None
        return {"embedding": predictor.export.embed(texts, max_seq_len, batch_size, predictor.backend), "encoder": predictor.export.encoder}


class EmbeddingPostHandler(BasePostHandler):
    @classmethod
    def process(cls, data, parameters):
        return {"embedding": data["embedding"].tolist(), "encoder": data["encoder"]}


def build_app(settings: argparse.Namespace):
    return simple_server(ROUTE, settings, EmbeddingHandler, EmbeddingPostHandler)


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    uvicorn.run(build_app(args), host=args.host, port=args.port)


if __name__ == "__main__":
    run_cli(main)
else:  # imported by `paddlenlp server server:app`
    app = app_from_environment(parser, build_app)
