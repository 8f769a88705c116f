"""Index engines at scale: build time, memory, query latency and recall@10 of hnswlib and Milvus Lite.

Usage: python -P bench/retrieval.py --sizes 10000 100000 --out bench/out/retrieval_scale.md
(-P: bench/losses.py must not shadow the suite's losses module)

Random unit vectors (the engines do not care where vectors come from) of `--dim` dimensions are
upserted through vector_index (the interface the scripts use), in chunks of INSERT_CHUNK; then
`--queries` other unit vectors are searched one at a time (a request's latency), top 10, and
compared with exact search (numpy). Memory is the growth of this process's resident set over the
build (Milvus Lite runs inside the process). Both engines use the scripts' defaults: HNSW with
M = 100 and ef = 100 (efConstruction and search). One engine after the other, on this machine.
"""
from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from vector_index import INSERT_CHUNK, Entry, HnswIndex, IndexInfo, MilvusIndex

K = 10

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000, 1000000], help="Index sizes.")
parser.add_argument("--dim", type=int, default=256, help="Vector width (train.py's default output_emb_size).")
parser.add_argument("--queries", type=int, default=500, help="Queries per index, searched one at a time.")
parser.add_argument("--engines", nargs="+", default=["hnswlib", "milvus"], choices=["hnswlib", "milvus"])
parser.add_argument("--out", default="bench/out/retrieval_scale.md")


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    best = []
    for start in range(0, len(queries), 100):
        similarities = queries[start:start + 100] @ vectors.T
        best.append(np.argsort(-similarities, axis=1)[:, :K])
    return np.concatenate(best)


def measure(engine: str, size: int, dim: int, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray,
            work: Path) -> dict:
    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    info = IndexInfo(dim, "bench")
    start = time.perf_counter()
    if engine == "hnswlib":
        index = HnswIndex(work / f"hnsw_{size}", info, max_elements=size)
    else:
        index = MilvusIndex(str(work / f"milvus_{size}.db"), info)
    entries = [Entry("", [])] * size
    for first in range(0, size, INSERT_CHUNK):
        chunk = slice(first, first + INSERT_CHUNK)
        index.upsert(list(range(first, min(first + INSERT_CHUNK, size))), vectors[chunk], entries[chunk])
    index.save()
    build = time.perf_counter() - start
    memory = (process.memory_info().rss - rss_before) / 2**20
    latencies, found = [], []
    for query in queries:
        begin = time.perf_counter()
        ids, _ = index.search(query[None, :], K)
        latencies.append(time.perf_counter() - begin)
        found.append(ids[0])
    recall = np.mean([len(set(row) & set(truth)) / K for row, truth in zip(found, exact)])
    if engine == "milvus":
        index.client.drop_collection(index.collection)
        index.client.close()
    del index
    return {"build_s": build, "memory_mb": memory, "p50_ms": 1000 * np.percentile(latencies, 50),
            "p95_ms": 1000 * np.percentile(latencies, 95), "recall": recall}


def main() -> None:
    args = parser.parse_args()
    lines = [f"Index engines, {args.dim}-dimensional random unit vectors, HNSW M 100 / ef 100, top {K}, "
             f"{args.queries} queries one at a time", "",
             "| vectors | engine | build (s) | memory growth (MB) | query p50 (ms) | query p95 (ms) | recall@10 |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            vectors = unit_vectors(size, args.dim, 0)
            queries = unit_vectors(args.queries, args.dim, 1)
            exact = exact_top_k(vectors, queries)
            for engine in args.engines:
                row = measure(engine, size, args.dim, vectors, queries, exact, Path(scratch))
                lines.append(f"| {size:,} | {'Milvus Lite' if engine == 'milvus' else engine} | {row['build_s']:.1f} | "
                             f"{row['memory_mb']:.0f} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | "
                             f"{row['recall']:.3f} |")
                print(lines[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
