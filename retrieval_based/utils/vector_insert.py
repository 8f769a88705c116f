"""Insert corpus embeddings into the index: how a new label (or new examples) reaches it without retraining.

Same command line as PaddleNLP's retrieval_based/utils/vector_insert.py (`--vector_path`), plus where
the index lives: `--milvus_uri` (a local path runs Milvus Lite, http://host:19530 a Milvus server;
the default is Milvus Lite in ./milvus.db) or `--index_path` (an hnswlib directory). Entries are
upserted by their text: inserting the same corpus again changes nothing, a new label adds one entry.
The index must have been built by the same encoder.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse

from cli import ArgumentParser
from retrieval import entry_id, read_corpus_vectors
from utils import logger, run_cli
from vector_index import MILVUS_COLLECTION, IndexInfo, add_milvus_credential_options, milvus_credentials, open_index

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--vector_path", type=str, required=True, help="feature file path ({data_name}_embedding.npy of feature_extract.py).")
parser.add_argument("--milvus_uri", type=str, default="./milvus.db", help="The Milvus index: a local path (Milvus Lite) or http://host:19530.")
parser.add_argument("--index_path", type=str, default=None, help="Insert into this hnswlib index directory instead of Milvus.")
parser.add_argument("--collection_name", type=str, default=MILVUS_COLLECTION, help="The Milvus collection.")
add_milvus_credential_options(parser)
# yapf: enable


def insert(args: argparse.Namespace) -> int:
    vectors, entries, encoder = read_corpus_vectors(args.vector_path)
    logger.info(f"{vectors.shape}")
    index = open_index(IndexInfo(vectors.shape[1], encoder), args.index_path,
                       None if args.index_path else args.milvus_uri, collection=args.collection_name,
                       credentials=milvus_credentials(args))
    index.upsert([entry_id(entry.text) for entry in entries], vectors, entries)
    index.save()
    total = index.count()
    logger.info(f"Insert {len(entries)} entities, there are {total} entities after insert data.")
    return total


def main(argv: list[str] | None = None) -> None:
    insert(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
