"""Index the corpus with a trained encoder and recall the nearest entries of each dev text.

Same command line and recall file as PaddleNLP's retrieval_based/recall.py. The index is hnswlib in
memory (the reference), a persistent hnswlib directory (`--index_path`) or a Milvus collection
(`--milvus_uri`: a local path runs Milvus Lite, http://host:19530 a Milvus server); re-running
replaces the corpus entries instead of adding duplicates.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import tempfile
from pathlib import Path

from cli import NON_NEGATIVE_INT, POSITIVE_INT, SEQ_LENGTH, ArgumentParser
from data_io import load_examples, read_label_list
from retrieval import (
    RECALL_MODES,
    build_index,
    check_label_names,
    label_corpus,
    recall,
    text_corpus,
    write_recall_file,
)
from semantic_index import embedding_pipeline, encoder_fingerprint, load_semantic_model
from utils import DataError, logger, run_cli, set_device
from vector_index import MILVUS_COLLECTION, IndexInfo, add_milvus_credential_options, milvus_credentials, open_index

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--corpus_file", type=str, required=True, help="The label file: the corpus of --recall_mode label and the label vocabulary.")
parser.add_argument("--similar_text_pair_file", type=str, required=True, help="The texts to recall for (text<TAB>label,label or text alone per line).")
parser.add_argument("--recall_result_dir", type=str, default='recall_result', help="The directory of the recall result file.")
parser.add_argument("--recall_result_file", type=str, default='recall_result_file', help="The recall result file.")
parser.add_argument("--params_path", type=str, required=True, help="The trained encoder: model_best/model_state.pdparams (or its directory).")
parser.add_argument("--max_seq_length", default=64, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization. Sequences longer than that will be truncated.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Batch size per GPU/CPU for embedding.")
parser.add_argument("--output_emb_size", default=None, type=NON_NEGATIVE_INT, help="The projection width; read from the checkpoint when it stores one.")
parser.add_argument("--recall_num", default=10, type=POSITIVE_INT, help="Number of nearest corpus entries recalled per text.")
parser.add_argument("--hnsw_m", default=100, type=POSITIVE_INT, help="hnswlib's (or Milvus HNSW's) M.")
parser.add_argument("--hnsw_ef", default=100, type=POSITIVE_INT, help="hnswlib's (or Milvus HNSW's) ef, at construction and search.")
parser.add_argument("--hnsw_max_elements", default=1000000, type=POSITIVE_INT, help="The most entries the hnswlib index holds.")
parser.add_argument('--device', choices=['cpu', 'gpu'], default="gpu", help="Select which device to run the model on, defaults to gpu.")
parser.add_argument("--model_name_or_path", default='rocketqa-zh-dureader-query-encoder', type=str, help="The encoder the .pdparams belongs to (a checkpoint saved by train.py carries its own).")
parser.add_argument("--recall_mode", default="label", choices=RECALL_MODES, help="label: index the label names; text: index the labelled texts of --train_set_file.")
parser.add_argument("--train_set_file", type=str, default=None, help="The labelled texts indexed by --recall_mode text.")
parser.add_argument("--index_path", type=str, default=None, help="Keep the hnswlib index in this directory (built or updated, then reused).")
parser.add_argument("--milvus_uri", type=str, default=None, help="Index in Milvus instead: a local path (Milvus Lite) or http://host:19530.")
parser.add_argument("--collection_name", type=str, default=MILVUS_COLLECTION, help="The Milvus collection.")
add_milvus_credential_options(parser)
parser.add_argument("--prune_index", action="store_true", help="Remove the entries of a reused index (--index_path, --milvus_uri) that the corpus no longer has; without it they are counted in a warning.")
# yapf: enable


def corpus(args: argparse.Namespace, labels: list[str], pipeline):
    if args.recall_mode == "label":
        check_label_names(pipeline, labels)
        return label_corpus(labels)
    if not args.train_set_file:
        raise DataError("--recall_mode text indexes the labelled texts of --train_set_file; give it")
    return text_corpus(load_examples(args.train_set_file, labels), labels)


def run(args: argparse.Namespace) -> None:
    set_device(args.device)
    labels = read_label_list(args.corpus_file)
    queries = [example.text for example in load_examples(args.similar_text_pair_file, labels)]
    model, tokenizer = load_semantic_model(args.params_path, args.model_name_or_path, args.output_emb_size)
    pipeline = embedding_pipeline(tokenizer, args.max_seq_length, args.batch_size)
    info = IndexInfo(model.embedding_size, encoder_fingerprint(args.params_path))
    with tempfile.TemporaryDirectory() as scratch:
        index = open_index(info, args.index_path or scratch, args.milvus_uri, args.hnsw_m, args.hnsw_ef,
                           args.hnsw_max_elements, args.collection_name, milvus_credentials(args))
        build_index(model, pipeline, index, corpus(args, labels, pipeline), args.prune_index)
        index.save()
        result = recall(model, pipeline, index, queries, args.recall_num)
    output = Path(args.recall_result_dir) / args.recall_result_file
    write_recall_file(output, queries, result, args.recall_mode)
    logger.info(f"Recall results of {len(queries)} texts ({args.recall_num} each) saved in {output}")


def main(argv: list[str] | None = None) -> None:
    run(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
