"""Label texts with the index: embed them with the exported encoder, search, print the labels above the threshold.

PaddleNLP's retrieval_based/run_system.py asked a Paddle Serving pipeline for the embedding and
searched Milvus. Here the embedding comes from the embedding server (`--server_url`, the
SimpleServing server in deploy/simple_serving; Paddle Serving does not install on Python 3.11) or,
without a server, from the exported encoder run in this process through Paddle Inference
(`--model_dir`). The index is the one vector_insert.py (or recall.py --milvus_uri /
--index_path) filled: `--milvus_uri` (Milvus Lite path or http://host:19530) or `--index_path`
(hnswlib). It prints the reference's timing lines and `<query> <label> <score>` per label above
`--threshold`, best first (the reference sorted ascending).
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import time

import numpy as np

from cli import POSITIVE_FLOAT, POSITIVE_INT, PROBABILITY, SEQ_LENGTH, ArgumentParser
from data_io import iter_examples
from http_json import server_result
from retrieval import RECALL_MODES, label_scores, read_corpus, reconcile_index, search_entries
from semantic_index import load_encoder_export
from serving import MAX_REQUEST_TEXTS
from utils import DataError, batched, run_cli, set_device
from vector_index import MILVUS_COLLECTION, IndexInfo, add_milvus_credential_options, milvus_credentials, open_index

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--model_dir", type=str, default=None, help="The directory of the exported encoder (export_model.py --output_path), run in this process.")
parser.add_argument("--server_url", type=str, default=None, help="Get the embeddings from this server instead of --model_dir, e.g. http://127.0.0.1:8190/models/semantic_index.")
parser.add_argument("--timeout", default=60, type=POSITIVE_FLOAT, help="Seconds to wait for the server's answer.")
parser.add_argument("--text", type=str, nargs="+", default=["中国农业大学怎么样？可以吗？"], help="The texts to label (the reference's sample by default).")
parser.add_argument("--input_file", type=str, default=None, help="Label the texts of this file (one per line, text<TAB>labels also read) instead of --text.")
parser.add_argument("--milvus_uri", type=str, default="./milvus.db", help="The Milvus index: a local path (Milvus Lite) or http://host:19530.")
parser.add_argument("--index_path", type=str, default=None, help="Search this hnswlib index directory instead of Milvus.")
parser.add_argument("--collection_name", type=str, default=MILVUS_COLLECTION, help="The Milvus collection.")
add_milvus_credential_options(parser)
parser.add_argument("--corpus_file", type=str, default=None, help="The corpus the index should hold (label.txt, or labelled texts): its entries the index has and the file has not are counted in a warning.")
parser.add_argument("--prune_index", action="store_true", help="Remove those entries from the index (needs --corpus_file).")
parser.add_argument("--top_k", type=POSITIVE_INT, default=20, help="Number of nearest entries searched per text.")
parser.add_argument("--threshold", type=PROBABILITY, default=0.5, help="Labels scoring above this are printed.")
parser.add_argument("--recall_mode", default="label", choices=RECALL_MODES, help="What the index holds: label names, or labelled texts whose neighbours vote.")
parser.add_argument("--max_seq_length", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Batch size for the encoder.")
parser.add_argument('--device', choices=['cpu', 'gpu'], default="gpu", help="Select which device to run the encoder on, defaults to gpu.")
# yapf: enable


def embeddings(args: argparse.Namespace, queries: list[str]) -> tuple[np.ndarray, str]:
    """The queries' embeddings and the fingerprint of the encoder that made them."""
    if args.server_url:
        parameters = {"max_seq_len": args.max_seq_length, "batch_size": args.batch_size}
        try:  # requests of at most MAX_REQUEST_TEXTS texts, as the server takes them
            answers = [server_result(args.server_url, {"text": chunk}, parameters, args.timeout)
                       for chunk in batched(queries, MAX_REQUEST_TEXTS)]
        except RuntimeError as err:
            raise DataError(f"the embedding server: {err}") from None
        return np.concatenate([np.asarray(answer["embedding"], dtype="float32") for answer in answers]), \
            answers[0]["encoder"]
    set_device(args.device)
    exported = load_encoder_export(args.model_dir, args.device)
    return exported.embed(queries, args.max_seq_length, args.batch_size), exported.encoder


def run(args: argparse.Namespace) -> list[list[tuple[str, float]]]:
    if (args.model_dir is None) == (args.server_url is None):
        raise DataError("give the encoder: --model_dir (the export, run here) or --server_url (the embedding server)")
    if args.prune_index and not args.corpus_file:
        raise DataError("--prune_index removes the index entries that are not in --corpus_file; give it")
    queries = [example.text for example in iter_examples(args.input_file)] if args.input_file else args.text
    if not queries:
        raise DataError(f"{args.input_file}: no texts to label (the file has only blank lines)")
    start = time.time()
    vectors, encoder = embeddings(args, queries)
    print("Extract feature time to cost :{} seconds".format(time.time() - start))
    index = open_index(IndexInfo(vectors.shape[1], encoder), args.index_path,
                       None if args.index_path else args.milvus_uri, collection=args.collection_name,
                       credentials=milvus_credentials(args))
    if args.corpus_file and reconcile_index(index, read_corpus(args.corpus_file), args.prune_index):
        index.save()
    if index.count() == 0:
        raise DataError("the index is empty: fill it with utils/feature_extract.py and utils/vector_insert.py first")
    start = time.time()
    result = search_entries(index, vectors, args.top_k)
    print("Search milvus time cost is {} seconds ".format(time.time() - start))
    labels = list(dict.fromkeys(name for row in result.entries for entry in row for name in entry.labels))
    scores = label_scores(result, labels, args.recall_mode)
    chosen = []
    for query, row in zip(queries, scores):
        ranked = sorted(((labels[j], float(row[j])) for j in range(len(labels)) if row[j] > args.threshold),
                        key=lambda item: -item[1])
        for label, score in ranked:
            print({"sentence": query}, label, score)
        chosen.append(ranked)
    return chosen


def main(argv: list[str] | None = None) -> None:
    run(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
