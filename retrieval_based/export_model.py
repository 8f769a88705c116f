"""Export the trained encoder to a static graph for Paddle Inference, checked against the dygraph model.

Same command line as PaddleNLP's retrieval_based/export_model.py; the deployed files keep the
reference's names (`<output_path>/inference.get_pooled_embedding.*`), with the tokenizer and
semantic_index.json beside them. The projection width comes from the checkpoint. Before returning,
the export embeds probe texts through Paddle Inference; embeddings more than 1e-4 away from the
dygraph model's are an error, and the export is removed.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
from pathlib import Path

import numpy as np

from cli import NON_NEGATIVE_INT, ArgumentParser
from parity import probe_texts
from semantic_index import (
    EXPORT_PREFIX,
    embed,
    embedding_pipeline,
    encoder_fingerprint,
    export_encoder,
    load_encoder_export,
    load_semantic_model,
)
from utils import DataError, logger, run_cli, set_device

PARITY_TOLERANCE = 1e-4

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--params_path", type=str, required=True, help="The trained encoder: model_best/model_state.pdparams (or its directory).")
parser.add_argument("--output_path", type=str, default='./output', help="The directory of the exported model.")
parser.add_argument("--output_emb_size", default=None, type=NON_NEGATIVE_INT, help="The projection width; read from the checkpoint when it stores one.")
parser.add_argument("--model_name_or_path", default='rocketqa-zh-dureader-query-encoder', type=str, help="The encoder the .pdparams belongs to (a checkpoint saved by train.py carries its own).")
# yapf: enable


def export(args: argparse.Namespace) -> None:
    set_device("cpu")
    model, tokenizer = load_semantic_model(args.params_path, args.model_name_or_path, args.output_emb_size)
    output = Path(args.output_path)
    texts = probe_texts(tokenizer, 32)
    pipeline = embedding_pipeline(tokenizer, 128, 16)
    expected = embed(model, pipeline, texts)  # before the export turns the model's forward into a static program
    export_encoder(model, tokenizer, output, encoder_fingerprint(args.params_path))
    exported = load_encoder_export(output, "cpu")
    difference = float(np.abs(pipeline.outputs(exported.engine, pipeline.encode(texts)) - expected).max())
    if difference > PARITY_TOLERANCE:
        for path in output.glob(EXPORT_PREFIX + ".*"):
            path.unlink()
        raise DataError(f"the exported encoder's embeddings differ from the dygraph model's by {difference:.2e} "
                        f"(more than {PARITY_TOLERANCE}); nothing was exported")
    logger.info(f"Exported the {model.embedding_size}-dimensional encoder to {output}/{EXPORT_PREFIX}.* with its "
                f"tokenizer; embeddings of {len(texts)} probe texts within {difference:.1e} of the dygraph model")


def main(argv: list[str] | None = None) -> None:
    export(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
