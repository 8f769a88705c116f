"""Cosine similarity of text-label pairs with a trained encoder.

Same command line as PaddleNLP's retrieval_based/predict.py: `--text_pair_file` holds
`text<TAB>label` lines (several comma-joined labels give one pair each). The reference printed only
the first 7 similarities; this prints one per pair, in file order.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse

import numpy as np

from cli import NON_NEGATIVE_INT, POSITIVE_INT, SEQ_LENGTH, ArgumentParser
from retrieval import read_text_pairs
from semantic_index import embed, embedding_pipeline, load_semantic_model
from utils import run_cli, set_device

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--text_pair_file", type=str, required=True, help="The full path of input file (text<TAB>label).")
parser.add_argument("--params_path", type=str, required=True, help="The trained encoder: model_best/model_state.pdparams (or its directory).")
parser.add_argument("--max_seq_length", default=64, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization. Sequences longer than that will be truncated.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Batch size per GPU/CPU for embedding.")
parser.add_argument("--output_emb_size", default=None, type=NON_NEGATIVE_INT, help="The projection width; read from the checkpoint when it stores one.")
parser.add_argument('--device', choices=['cpu', 'gpu'], default="gpu", help="Select which device to run the model on, defaults to gpu.")
parser.add_argument("--pad_to_max_seq_len", action="store_true", help="Kept for the reference's command line: batches are padded to their longest text, which gives the same embeddings.")
parser.add_argument("--model_name_or_path", default='rocketqa-zh-dureader-query-encoder', type=str, help="The encoder the .pdparams belongs to (a checkpoint saved by train.py carries its own).")
# yapf: enable


def pair_similarities(args: argparse.Namespace) -> np.ndarray:
    set_device(args.device)
    pairs = read_text_pairs(args.text_pair_file)
    model, tokenizer = load_semantic_model(args.params_path, args.model_name_or_path, args.output_emb_size)
    pipeline = embedding_pipeline(tokenizer, args.max_seq_length, args.batch_size)
    texts = embed(model, pipeline, [text for text, _ in pairs])
    labels = embed(model, pipeline, [label for _, label in pairs])
    similarities = (texts * labels).sum(axis=1)
    for similarity in similarities:
        print(similarity)
    return similarities


def main(argv: list[str] | None = None) -> None:
    pair_similarities(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
