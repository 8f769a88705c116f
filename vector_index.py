"""Nearest-neighbour search over corpus embeddings: one interface, two engines.

The retrieval route indexes corpus entries (label names, or labelled training texts) and looks up the
nearest ones for each query. `HnswIndex` (hnswlib, embedded in the process, the reference's
default) keeps the index in a directory; `MilvusIndex` keeps it in Milvus through pymilvus: a local
path runs the embedded Milvus Lite, an http(s) address a Milvus standalone or cluster deployment.
Both return cosine similarities (the embeddings are L2-normalised), nearest first, and both store
with the vectors each entry's text and labels and the identity of the encoder that made them, so a
search with another model's vectors, or of another width, is refused instead of answered.

Ids are the caller's: re-inserting an id replaces its entry (a re-run adds no duplicates).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from utils import DataError

MILVUS_COLLECTION = "multi_label"  # the reference's collection name
MILVUS_TEXT_LENGTH = 65535  # VARCHAR limit of the text and labels fields, in bytes
INSERT_CHUNK = 50000  # the reference inserts in chunks of this many rows


@dataclass
class Entry:
    """A corpus entry: its text (a label name or a training text) and the labels it stands for."""

    text: str
    labels: list[str]


@dataclass
class IndexInfo:
    """What an index was built with: the embedding width and the encoder's fingerprint."""

    dim: int
    encoder: str

    def check(self, dim: int, encoder: str, where: str) -> None:
        if dim != self.dim:
            raise DataError(f"{where} holds {self.dim}-dimensional vectors, but the encoder makes {dim}-dimensional "
                            f"ones; rebuild the index with this model")
        if encoder != self.encoder:
            raise DataError(f"{where} was built with another model (encoder {self.encoder}, this one is {encoder}); "
                            f"rebuild the index with this model")


class VectorIndex:
    """upsert entries with their vectors, search the nearest, read entries back."""

    info: IndexInfo

    def upsert(self, ids: Sequence[int], vectors: np.ndarray, entries: Sequence[Entry]) -> None:
        raise NotImplementedError

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosine similarities), each [queries, min(k, count)], nearest first."""
        raise NotImplementedError

    def entries(self, ids: Sequence[int]) -> dict[int, Entry]:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def save(self) -> None:
        """Make what was inserted durable."""

    def _check_vectors(self, ids: Sequence[int], vectors: np.ndarray, entries: Sequence[Entry]) -> np.ndarray:
        vectors = np.asarray(vectors, dtype="float32")
        if vectors.ndim != 2 or vectors.shape[1] != self.info.dim:
            raise DataError(f"vectors of shape {vectors.shape} do not fit this {self.info.dim}-dimensional index")
        if not len(ids) == len(vectors) == len(entries):
            raise DataError(f"{len(ids)} ids, {len(vectors)} vectors and {len(entries)} entries: they must match")
        return vectors


class HnswIndex(VectorIndex):
    """hnswlib in cosine space, persisted as a directory: index.bin, entries.jsonl and index.json."""

    def __init__(self, directory: str | os.PathLike, info: IndexInfo, m: int = 100, ef: int = 100,
                 max_elements: int = 1000000):
        import hnswlib

        self.directory = Path(directory)
        self.max_elements = max_elements
        self.ef = ef
        meta = self.directory / "index.json"
        if meta.is_file():
            stored = json.loads(meta.read_text(encoding="utf-8"))
            IndexInfo(stored["dim"], stored["encoder"]).check(info.dim, info.encoder, f"The index {self.directory}")
            self.index = hnswlib.Index(space="cosine", dim=info.dim)
            self.index.load_index(str(self.directory / "index.bin"), max_elements=stored["capacity"])
            with open(self.directory / "entries.jsonl", encoding="utf-8") as lines:
                self._entries = {row["id"]: Entry(row["text"], row["labels"]) for row in map(json.loads, lines)}
        else:
            self.index = hnswlib.Index(space="cosine", dim=info.dim)
            self.index.init_index(max_elements=min(1024, max_elements), ef_construction=ef, M=m)
            self._entries = {}
        self.index.set_ef(ef)
        self.info = info

    def upsert(self, ids, vectors, entries):
        vectors = self._check_vectors(ids, vectors, entries)
        ids = np.asarray(ids, dtype="int64")
        new = len(set(ids.tolist()) - self._entries.keys())
        needed = self.index.get_current_count() + new
        if needed > self.max_elements:
            raise DataError(f"{needed} entries exceed --hnsw_max_elements {self.max_elements}")
        if needed > self.index.get_max_elements():
            self.index.resize_index(min(self.max_elements, max(needed, 2 * self.index.get_max_elements())))
        if len(ids):
            self.index.add_items(vectors, ids)  # an existing id has its vector replaced
        self._entries.update(zip(ids.tolist(), entries))

    def search(self, vectors, k):
        vectors = np.asarray(vectors, dtype="float32")
        k = min(k, self.count())
        if k == 0 or not len(vectors):
            return np.zeros((len(vectors), 0), dtype="int64"), np.zeros((len(vectors), 0), dtype="float32")
        self.index.set_ef(max(self.ef, k))  # hnswlib needs ef >= k to return k neighbours
        ids, distances = self.index.knn_query(vectors, k=k)
        return ids.astype("int64"), (1.0 - distances).astype("float32")

    def entries(self, ids):
        return {i: self._entries[i] for i in ids}

    def count(self):
        return len(self._entries)

    def save(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        self.index.save_index(str(self.directory / "index.bin"))
        with open(self.directory / "entries.jsonl", "w", encoding="utf-8") as lines:
            for i, entry in self._entries.items():
                lines.write(json.dumps({"id": i, "text": entry.text, "labels": entry.labels}, ensure_ascii=False) + "\n")
        (self.directory / "index.json").write_text(json.dumps(
            {"dim": self.info.dim, "encoder": self.info.encoder, "capacity": self.index.get_max_elements(),
             "engine": "hnswlib"}) + "\n", encoding="utf-8")


class MilvusIndex(VectorIndex):
    """A Milvus collection: id (INT64, primary), vector (FLOAT_VECTOR), text and labels (VARCHAR), with an
    HNSW index (M, efConstruction) in the IP metric, which on normalised vectors is the cosine. The
    collection's property `encoder` holds the encoder's fingerprint."""

    def __init__(self, uri: str, info: IndexInfo, collection: str = MILVUS_COLLECTION, m: int = 100, ef: int = 100):
        from pymilvus import DataType, MilvusClient

        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)  # Milvus Lite logs unimplemented calls it ignores
        for chatty in ("milvus_lite", "faiss.loader"):  # server ports and CPU-feature probing, at INFO
            logging.getLogger(chatty).setLevel(logging.WARNING)
        self.client = MilvusClient(uri)
        self.collection = collection
        self.ef = ef
        self.where = f"The Milvus collection {collection} at {uri}"
        if self.client.has_collection(collection):
            description = self.client.describe_collection(collection)
            dim = next(field["params"]["dim"] for field in description["fields"] if field["name"] == "vector")
            encoder = description.get("properties", {}).get("encoder", "unknown")
            IndexInfo(int(dim), encoder).check(info.dim, info.encoder, self.where)
        else:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=info.dim)
            schema.add_field("text", DataType.VARCHAR, max_length=MILVUS_TEXT_LENGTH)
            schema.add_field("labels", DataType.VARCHAR, max_length=MILVUS_TEXT_LENGTH)
            index_params = self.client.prepare_index_params()
            index_params.add_index(field_name="vector", index_type="HNSW", metric_type="IP",
                                   params={"M": m, "efConstruction": ef})
            self.client.create_collection(collection, schema=schema, index_params=index_params,
                                          properties={"encoder": info.encoder})
        self.client.load_collection(collection)
        self.info = info

    def upsert(self, ids, vectors, entries):
        vectors = self._check_vectors(ids, vectors, entries)
        rows = [{"id": int(i), "vector": vector.tolist(), "text": entry.text, "labels": json.dumps(entry.labels,
                                                                                                   ensure_ascii=False)}
                for i, vector, entry in zip(ids, vectors, entries)]
        for start in range(0, len(rows), INSERT_CHUNK):
            self.client.upsert(self.collection, rows[start:start + INSERT_CHUNK])

    def search(self, vectors, k):
        vectors = np.asarray(vectors, dtype="float32")
        if not len(vectors):
            return np.zeros((0, 0), dtype="int64"), np.zeros((0, 0), dtype="float32")
        hits = self.client.search(self.collection, data=vectors.tolist(), limit=k,
                                  search_params={"metric_type": "IP", "params": {"ef": max(self.ef, k)}})
        found = min(map(len, hits))  # fewer than k only when the collection holds fewer entries
        ids = np.array([[hit["id"] for hit in row[:found]] for row in hits], dtype="int64").reshape(len(hits), found)
        similarities = np.array([[hit["distance"] for hit in row[:found]] for row in hits], dtype="float32")
        return ids, similarities.reshape(len(hits), found)

    def entries(self, ids):
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        rows = self.client.get(self.collection, ids=ids, output_fields=["text", "labels"])
        return {row["id"]: Entry(row["text"], json.loads(row["labels"])) for row in rows}

    def count(self):
        return int(self.client.query(self.collection, filter="", output_fields=["count(*)"])[0]["count(*)"])

    def save(self):
        self.client.flush(self.collection)


def open_index(info: IndexInfo, index_path: str | os.PathLike | None = None, milvus_uri: str | None = None,
               m: int = 100, ef: int = 100, max_elements: int = 1000000,
               collection: str = MILVUS_COLLECTION) -> VectorIndex:
    """The Milvus collection when `milvus_uri` is given, else the hnswlib index at `index_path` (either
    existing, checked against `info`, or new and empty)."""
    if milvus_uri:
        return MilvusIndex(milvus_uri, info, collection, m, ef)
    if index_path is None:
        raise DataError("give an index directory (hnswlib) or --milvus_uri")
    return HnswIndex(index_path, info, m, ef, max_elements)
