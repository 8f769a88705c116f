"""The retrieval route on a real data set next to the classifier, and the index engines at scale.

Usage:
    python bench/retrieval_bench.py --sections quality --dataset_dir divorce --out_dir bench/out/retrieval
    python bench/retrieval_bench.py --sections scale --sizes 10000 100000 1000000 --out bench/out/retrieval_scale.md
    python bench/retrieval_bench.py --sections curve --dataset_dir divorce --legal_corpus legal_corpus/corpus.txt.gz

quality: one scratch model (scratch_model.py, preset tiny, dropout 0.1) is the starting point of the
classifier (train.py --tune_thresholds, then predict.py on test.txt) and of the retrieval encoder
(retrieval_based/train.py, model selection by the dev macro F1 of the label corpus). The encoder is
trained once and used in both recall modes (recall.py on dev and test: label names, or the labelled
training texts). Test micro/macro F1 at the 0.5 threshold and at per-label thresholds tuned on dev
(the classifier's tuner, metric.tune_thresholds, applied to the recall scores). Then two labels are
held out: removed from train.txt, dev.txt and the label file a second encoder trains with, and given
to recall.py afterwards in the full label file and train.txt (label mode: their names are embedded
into the index; text mode: their training examples are indexed with them), so that encoder never saw
them; their test F1 is reported with the overall F1. A last row starts the encoder from the
fine-tuned classifier instead of the scratch model. Every step runs the real scripts; a re-run reuses
the trainings an earlier run finished (`trained.json` in each run's directory) and recomputes the scores.

scale: random unit vectors (the engines do not care where vectors come from) of `--dim` dimensions
are upserted through vector_index (the interface the scripts use), in chunks of INSERT_CHUNK; then
`--queries` other unit vectors are searched one at a time (a request's latency), top 10, and
compared with exact search (numpy): recall@10 counts a returned vector when it is at least as near as
the true 10th (less 1e-6: ties of the real-text vectors of `curve` are not misses). Memory is the growth of this process's resident set over the
build (Milvus Lite runs inside the process); for the Milvus server (the `milvus` package's
standalone, started by this script on free ports with tests/milvus_server.py) it is the resident set
of the server process after the build. All engines use the scripts' defaults: HNSW with M = 100 and
ef = 100 (efConstruction and search). One engine after the other. Both Milvus kinds index flushed
data in the background: they are measured right after the insert and again once the index is built
(build time then includes it). Batched: all queries in one search call, queries per second.

curve: recall@10 and single-query latency over the search `ef` (M 100 and 16, efConstruction 100) of each
engine, on vectors of real text: the sentences of --legal_corpus and the texts of the divorce train
and dev files, embedded by a retrieval encoder trained here with the suite's scripts (scratch_model.py
tiny, retrieval_based/train.py, export_model.py, utils/feature_extract.py); the queries are the
divorce test texts. A re-run reuses the encoder and vectors an earlier run made.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import contextlib
import gc
import gzip
import importlib.util
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from accuracy import f1_pair, test_scores
from benchtools import run_script, save_result

from data_io import load_examples, multi_hot, read_label_list
from metric import tune_thresholds
from retrieval import label_scores, read_recall_file
from vector_index import INSERT_CHUNK, Entry, HnswIndex, IndexInfo, MilvusIndex, VectorIndex

K = 10
RECALL_MODES = ("label", "text")
ENGINES = ["hnswlib", "milvus", "milvus_server"]
ENGINE_NAMES = {"hnswlib": "hnswlib", "milvus": "Milvus Lite", "milvus_server": "Milvus server"}
TARGET_RECALL = 0.95
TIE_TOLERANCE = 1e-6
INDEX_WAIT_S = 1800


def load_tests_module(name: str):
    """tests/<name>.py as a module (tests/ is not a package): the Milvus server launcher the tests use."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--sections", nargs="+", default=["quality", "scale"], choices=["quality", "scale", "curve"])
parser.add_argument("--dataset_dir", help="quality and curve: the divorce dataset directory (README 2.3).")
parser.add_argument("--out_dir", default="bench/out/retrieval", help="quality: models, logs and retrieval_quality.md.")
parser.add_argument("--epochs", type=int, default=30, help="quality: training epochs of the classifier and the encoder.")
parser.add_argument("--holdout_labels", nargs=2, default=["婚后分居", "有夫妻共同债务"],
                    help="quality: the two labels the held-out encoder never trains with.")
parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000, 1000000], help="Index sizes.")
parser.add_argument("--dim", type=int, default=256, help="Vector width (train.py's default output_emb_size).")
parser.add_argument("--queries", type=int, default=500, help="Queries per index, searched one at a time.")
parser.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES,
                    help="milvus: Milvus Lite; milvus_server: a Milvus standalone server started here.")
parser.add_argument("--out", default="bench/out/retrieval_scale.md", help="scale: the table.")
parser.add_argument("--legal_corpus", help="curve: the gzipped legal corpus whose sentences are indexed.")
parser.add_argument("--curve_dir", default="bench/out/retrieval_curve", help="curve: encoder, vectors and retrieval_curve.md.")
parser.add_argument("--curve_epochs", type=int, default=3, help="curve: training epochs of the encoder.")
parser.add_argument("--efs", type=int, nargs="+", default=[10, 16, 32, 64, 128, 256], help="curve: search ef values.")
parser.add_argument("--curve_queries", type=int, default=None, help="curve: search only the first N test texts.")
parser.add_argument("--curve_m", type=int, nargs="+", default=[100, 16], help="curve: HNSW M values (100: the scripts' default).")


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_kth(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each query's similarity to its K-th nearest vector (exact search, numpy)."""
    kth = []
    for start in range(0, len(queries), 100):
        similarities = queries[start:start + 100] @ vectors.T
        kth.append(-np.partition(-similarities, K - 1, axis=1)[:, K - 1])
    return np.concatenate(kth)


def recall_at_k(found: list[np.ndarray], vectors: np.ndarray, queries: np.ndarray, kth: np.ndarray) -> float:
    """The share of the K true nearest found, ties included: a returned vector counts when its exact
    similarity to the query is at least the K-th best's (less TIE_TOLERANCE, float32's rounding), so
    that which of several equally near vectors an engine returns does not count as a miss."""
    hits = [np.sum(vectors[ids] @ query >= threshold - TIE_TOLERANCE) for ids, query, threshold in zip(found, queries, kth)]
    return float(np.mean(hits)) / K


def query_all(index, queries: np.ndarray, vectors: np.ndarray, kth: np.ndarray) -> dict:
    """Latency p50/p95 of single queries and their mean recall@10 against exact search."""
    latencies, found = [], []
    for query in queries:
        begin = time.perf_counter()
        ids, _ = index.search(query[None, :], K)
        latencies.append(time.perf_counter() - begin)
        found.append(ids[0])
    begin = time.perf_counter()
    index.search(queries, K)
    batched = len(queries) / (time.perf_counter() - begin)
    return {"p50_ms": 1000 * np.percentile(latencies, 50), "p95_ms": 1000 * np.percentile(latencies, 95),
            "recall": recall_at_k(found, vectors, queries, kth), "batched_qps": batched}


def wait_for_milvus_lite_index(path: Path, collection: str) -> None:
    """Block until Milvus Lite has compacted the flushed segments and built their HNSW indexes.

    Milvus Lite does both in a background thread after a flush, and describe_index reports the index
    as finished at once, so the bench drains that thread through Milvus Lite's own collection object
    (a private API: only this benchmark needs to know when the index exists).
    """
    from milvus_lite.server_manager import server_manager_instance

    _, database, _ = server_manager_instance._servers[os.path.abspath(path)]
    database._collections[("default", collection)]._wait_for_bg()


def wait_for_server_index(index: MilvusIndex) -> None:
    """Block until the server searches every row through the HNSW index: describe_index counts the
    indexed rows, but until the query node loads the indexed segment it keeps searching the growing
    one through Milvus's interim index (IVF), whose recall is far lower."""
    deadline = time.monotonic() + INDEX_WAIT_S
    while time.monotonic() < deadline:
        segments = index.client.list_loaded_segments(index.collection)
        if segments and all(segment.index_id for segment in segments) and \
                sum(segment.num_rows for segment in segments) >= index.count():
            return
        time.sleep(1)
    raise SystemExit(f"the Milvus server did not index {index.collection} in {INDEX_WAIT_S} s")


def open_engine(engine: str, name: str, dim: int, size: int, work: Path, server, m: int) -> VectorIndex:
    info = IndexInfo(dim, "bench")
    if engine == "hnswlib":
        return HnswIndex(work / f"hnswlib_{name}", info, m=m, max_elements=size)
    if engine == "milvus":
        return MilvusIndex(str(work / f"milvus_{name}.db"), info, m=m)
    return MilvusIndex(server.uri, info, f"bench_{name}", m=m)


def wait_for_index(engine: str, index: VectorIndex, work: Path, name: str) -> None:
    if engine == "milvus":
        wait_for_milvus_lite_index(work / f"milvus_{name}.db", index.collection)
    elif engine == "milvus_server":
        wait_for_server_index(index)


def memory_mb(engine: str, server, rss_before: int) -> float:
    """hnswlib and Milvus Lite: this process's growth; the server: its process's resident set."""
    if engine == "milvus_server":
        return psutil.Process(server.pid).memory_info().rss / 2**20
    return (psutil.Process().memory_info().rss - rss_before) / 2**20


def build(engine: str, name: str, vectors: np.ndarray, work: Path, server, m: int = 100) -> VectorIndex:
    index = open_engine(engine, name, vectors.shape[1], len(vectors), work, server, m)
    entries = [Entry("", [])] * len(vectors)
    for first in range(0, len(vectors), INSERT_CHUNK):
        chunk = slice(first, first + INSERT_CHUNK)
        index.upsert(list(range(first, min(first + INSERT_CHUNK, len(vectors)))), vectors[chunk], entries[chunk])
    index.save()
    return index


def drop(engine: str, index: VectorIndex) -> None:
    if engine != "hnswlib":
        index.client.drop_collection(index.collection)
        index.close()


def measure(engine: str, size: int, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, work: Path,
            server) -> list[dict]:
    """hnswlib: one row. Milvus: queried right after the insert (its background index build has not
    run yet), then again once its index is built."""
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    index = build(engine, str(size), vectors, work, server)
    name = ENGINE_NAMES[engine]
    rows = [{"engine": name if engine == "hnswlib" else f"{name}, right after insert",
             "build_s": time.perf_counter() - start, "memory_mb": memory_mb(engine, server, rss_before),
             **query_all(index, queries, vectors, exact)}]
    if engine != "hnswlib":
        wait_for_index(engine, index, work, str(size))
        rows.append({"engine": f"{name}, index built", "build_s": time.perf_counter() - start,
                     "memory_mb": memory_mb(engine, server, rss_before), **query_all(index, queries, vectors, exact)})
        drop(engine, index)
    del index
    return rows


@contextlib.contextmanager
def server_if_needed(engines: list[str], work: Path):
    """The Milvus server when an engine needs it (its idle resident set is logged), else None."""
    if "milvus_server" not in engines:
        yield None
        return
    server = load_tests_module("milvus_server").MilvusStandalone(work / "milvus_server")
    with server:
        print(f"Milvus server {server.uri}, idle resident set {psutil.Process(server.pid).memory_info().rss / 2**20:.0f} MB",
              flush=True)
        yield server


def without_labels(source: Path, target: Path, held_out: set[str]) -> None:
    """A copy of a data file with `held_out` removed from every line's labels (the texts stay)."""
    lines = []
    for line in source.read_text(encoding="utf-8").splitlines():
        text, _, names = line.partition("\t")
        lines.append(f"{text}\t{','.join(name for name in names.split(',') if name and name not in held_out)}")
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def holdout_dataset(dataset: Path, target: Path, labels: list[str], held_out: list[str]) -> Path:
    """train.txt, dev.txt and label.txt without the held-out labels."""
    missing = set(held_out) - set(labels)
    if missing:
        raise SystemExit(f"--holdout_labels {sorted(missing)} are not in {dataset / 'label.txt'}")
    target.mkdir(parents=True, exist_ok=True)
    for name in ("train.txt", "dev.txt"):
        without_labels(dataset / name, target / name, set(held_out))
    (target / "label.txt").write_text("".join(f"{name}\n" for name in labels if name not in held_out), encoding="utf-8")
    return target


def recall_scores(params: Path, dataset: Path, data_file: str, mode: str, labels: list[str], out: Path) -> np.ndarray:
    """recall.py's [texts, labels] scores for one data file, read back from its recall file."""
    name = f"recall_{mode}_{data_file}"
    run_script("retrieval_based/recall.py", "--device", "cpu", "--params_path", params, "--corpus_file", dataset / "label.txt",
               "--similar_text_pair_file", dataset / data_file, "--train_set_file", dataset / "train.txt",
               "--recall_mode", mode, "--recall_num", 50 if mode == "label" else 10, "--max_seq_length", 128,
               "--recall_result_dir", out, "--recall_result_file", name, log=out / f"{name}.log")
    texts = [example.text for example in load_examples(dataset / data_file, labels)]
    result, _ = read_recall_file(out / name, texts)
    return label_scores(result, labels, mode)


def retrieval_scores(encoder: Path, train_data: Path, eval_data: Path, labels: list[str], epochs: int, out: Path,
                     modes: tuple[str, ...] = RECALL_MODES) -> dict[str, dict]:
    """Train the encoder on `train_data` (its label file; model selection by the dev F1 of the label
    corpus), then per recall mode: recall `eval_data`'s dev and test with its full label file and
    train.txt, and score test at 0.5 and with thresholds tuned on dev, with the per-label test F1."""
    minutes = trained_once(out, lambda: run_script(
        "retrieval_based/train.py", "--device", "cpu", "--model_name_or_path", encoder, "--save_dir", out / "checkpoint",
        "--train_set_file", train_data / "train.txt", "--corpus_file", train_data / "label.txt",
        "--similar_text_pair_file", train_data / "dev.txt", "--epochs", epochs, "--batch_size", 32,
        "--learning_rate", 1e-3, "--warmup_proportion", 0.1, "--max_seq_length", 128, "--recall_num", 50,
        "--recall_result_dir", out / "train_recall", "--log_steps", 50, log=out / "train.log"))
    params = out / "checkpoint" / "model_best"
    dev_gold = multi_hot(load_examples(eval_data / "dev.txt", labels), len(labels))
    test_gold = multi_hot(load_examples(eval_data / "test.txt", labels), len(labels))
    rows = {}
    for mode in modes:
        dev, test = (recall_scores(params, eval_data, name, mode, labels, out) for name in ("dev.txt", "test.txt"))
        predicted = (test > tune_thresholds(dev, dev_gold, 0.5)).astype("float32")
        rows[mode] = {"0.5": f1_pair(test, test_gold), "tuned": f1_pair(predicted, test_gold), "minutes": minutes,
                      "per_label_tuned": [f1_pair(predicted[:, [j]], test_gold[:, [j]])[0] for j in range(len(labels))]}
    return rows


def trained_once(run_dir: Path, train) -> float:
    """Run `train` unless an earlier run of the benchmark finished it (run_dir/trained.json, written
    after training returns); the minutes training took either way."""
    done = run_dir / "trained.json"
    if not done.is_file():
        start = time.perf_counter()
        train()
        done.write_text(json.dumps({"minutes": (time.perf_counter() - start) / 60}) + "\n", encoding="utf-8")
    return json.loads(done.read_text(encoding="utf-8"))["minutes"]


def quality(args: argparse.Namespace) -> None:
    if not args.dataset_dir:
        raise SystemExit("--sections quality needs --dataset_dir")
    dataset, out = Path(args.dataset_dir), Path(args.out_dir)
    labels = read_label_list(dataset / "label.txt")
    test_gold = multi_hot(load_examples(dataset / "test.txt", labels), len(labels))
    scratch, classifier = out / "scratch", out / "classifier"
    if not (scratch / "model_state.pdparams").is_file():
        run_script("scratch_model.py", "--dataset_dir", dataset, "--output_dir", scratch, "--preset", "tiny", "--dropout",
                   "0.1", log=out / "scratch_model.log")

    minutes = trained_once(classifier, lambda: run_script(
        "train.py", "--device", "cpu", "--dataset_dir", dataset, "--model_name", scratch, "--save_dir",
        classifier / "checkpoint", "--epochs", args.epochs, "--batch_size", 16, "--learning_rate", 1e-3, "--warmup",
        "--warmup_steps", 300, "--logging_steps", 100, "--tune_thresholds", log=classifier / "train.log"))
    rows = {"classifier (train.py)": {**test_scores(dataset, classifier / "checkpoint", classifier, test_gold, labels),
                                      "minutes": minutes}}
    holdout = holdout_dataset(dataset, out / "holdout_data", labels, args.holdout_labels)
    held_out = [labels.index(name) for name in args.holdout_labels]
    write_quality_table(rows, args, out, len(test_gold), held_out)
    for name, train_data, run_dir in (("", dataset, "encoder"), (", 2 labels added after training", holdout,
                                                                  "holdout_encoder")):
        for mode, scores in retrieval_scores(scratch, train_data, dataset, labels, args.epochs, out / run_dir).items():
            rows[f"retrieval, {mode} corpus{name}"] = scores
        write_quality_table(rows, args, out, len(test_gold), held_out)
    rows["retrieval, label corpus, encoder started from the classifier"] = retrieval_scores(
        classifier / "checkpoint", dataset, dataset, labels, args.epochs, out / "from_classifier", ("label",))["label"]
    save_result("retrieval_quality", write_quality_table(rows, args, out, len(test_gold), held_out))


def write_quality_table(rows: dict, args: argparse.Namespace, out: Path, test_size: int, held_out: list[int]) -> str:
    """The table of the rows so far, written to out/retrieval_quality.md (after every row: a long run can be read)."""
    dataset = Path(args.dataset_dir)
    lines = [f"#### {dataset.name}/test.txt ({test_size} texts): one scratch tiny model (dropout 0.1), "
             f"{args.epochs} epochs each; classifier batch 16, lr 1e-3, warmup 300 steps; encoder batch 32 pairs, "
             f"lr 1e-3, warmup 10 %, output_emb_size 256, margin 0.2, scale 30; recall 50 label names or 10 texts",
             "", "| model | micro F1 (0.5) | macro F1 (0.5) | micro F1 (tuned) | macro F1 (tuned) | "
             + " | ".join(f"{name} F1 (tuned)" for name in args.holdout_labels) + " | minutes |",
             "|---|---|---|---|---|" + "---|" * len(args.holdout_labels) + "---|"]
    for name, scores in rows.items():
        per_label = scores.get("per_label_tuned")
        held = [f"{per_label[j] * 100:.2f}" if per_label else "-" for j in held_out]
        lines.append(f"| {name} | " + " | ".join(f"{value * 100:.2f}" for key in ("0.5", "tuned")
                                                  for value in scores[key]) + " | " + " | ".join(held)
                     + f" | {scores['minutes']:.1f} |")
    (out / "retrieval_quality.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "\n".join(lines)


def scale(args: argparse.Namespace) -> None:
    lines = [f"Index engines, {args.dim}-dimensional random unit vectors, HNSW M 100 / ef 100, top {K}, "
             f"{args.queries} queries one at a time, then all in one call", "",
             "| vectors | engine | build (s) | memory (MB) | query p50 (ms) | query p95 (ms) | recall@10 | "
             "batched queries/s |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as scratch, server_if_needed(args.engines, Path(scratch)) as server:
        for size in args.sizes:
            vectors = unit_vectors(size, args.dim, 0)
            queries = unit_vectors(args.queries, args.dim, 1)
            exact = exact_kth(vectors, queries)
            for engine in args.engines:
                for row in measure(engine, size, vectors, queries, exact, Path(scratch), server):
                    lines.append(f"| {size:,} | {row['engine']} | {row['build_s']:.1f} | {row['memory_mb']:.0f} | "
                                 f"{row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['recall']:.3f} | "
                                 f"{row['batched_qps']:.0f} |")
                    print(lines[-1], flush=True)
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # after every row: a long run can be read
                    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    save_result("retrieval_scale", "\n".join(lines) + "\n")


def legal_sentences(path: Path) -> list[str]:
    """The sentences of the gzipped legal corpus (split at sentence and clause punctuation), 5+ characters."""
    with gzip.open(path, "rt", encoding="utf-8") as corpus:
        parts = re.split(r"[。！？!?；;:：\n]", corpus.read())
    return [part.strip() for part in parts if len(part.strip()) >= 5]


def real_text_vectors(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """(corpus vectors, query vectors, a description), made once by the suite's scripts in --curve_dir."""
    if not (args.dataset_dir and args.legal_corpus):
        raise SystemExit("--sections curve needs --dataset_dir (divorce) and --legal_corpus")
    dataset, out = Path(args.dataset_dir), Path(args.curve_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = legal_sentences(Path(args.legal_corpus)) + [line.split("\t")[0] for name in ("train.txt", "dev.txt")
                                                        for line in (dataset / name).read_text(encoding="utf-8").splitlines()]
    queries = [line.split("\t")[0] for line in (dataset / "test.txt").read_text(encoding="utf-8").splitlines()]
    for name, lines in (("corpus", texts), ("queries", queries)):  # labelled texts (one placeholder label), not label names
        (out / f"{name}.txt").write_text("".join(f"{text}\ttext\n" for text in dict.fromkeys(lines) if text.strip()),
                                         encoding="utf-8")
    if not (out / "scratch" / "model_state.pdparams").is_file():
        run_script("scratch_model.py", "--dataset_dir", dataset, "--output_dir", out / "scratch", "--preset", "tiny",
            log=out / "scratch_model.log")
    trained_once(out, lambda: run_script(
        "retrieval_based/train.py", "--device", "cpu", "--model_name_or_path", out / "scratch", "--save_dir",
        out / "checkpoint", "--train_set_file", dataset / "train.txt", "--corpus_file", dataset / "label.txt",
        "--similar_text_pair_file", dataset / "dev.txt", "--epochs", args.curve_epochs, "--batch_size", 32,
        "--learning_rate", 1e-3, "--warmup_proportion", 0.1, "--max_seq_length", 64, "--recall_num", 20,
        "--recall_result_dir", out / "train_recall", "--log_steps", 50, log=out / "train.log"))
    for name in ("corpus", "queries"):
        if not (out / f"{name}_embedding.npy").is_file():
            if not (out / "export").is_dir():
                run_script("retrieval_based/export_model.py", "--params_path", out / "checkpoint" / "model_best",
                    "--output_path", out / "export", log=out / "export.log")
            run_script("retrieval_based/utils/feature_extract.py", "--device", "cpu", "--model_dir", out / "export",
                "--corpus_file", out / f"{name}.txt", "--output_dir", out, "--data_name", name,
                "--max_seq_length", 128, "--cpu_threads", 2, log=out / f"feature_extract_{name}.log")
    vectors, queries = (np.load(out / f"{name}_embedding.npy").astype("float32") for name in ("corpus", "queries"))
    return vectors, queries, (f"{len(vectors):,} texts ({Path(args.legal_corpus).parent.name} sentences, "
                              f"{dataset.name} train and dev texts), {len(queries)} queries ({dataset.name} test texts), "
                              f"{vectors.shape[1]}-dimensional embeddings of a tiny scratch encoder trained "
                              f"{args.curve_epochs} epochs")


def curve(args: argparse.Namespace) -> None:
    vectors, queries, described = real_text_vectors(args)
    queries = queries[:args.curve_queries]
    if args.curve_queries is not None:
        described = f"{described}, the first {len(queries)} searched"
    exact = exact_kth(vectors, queries)
    out = Path(args.curve_dir) / "retrieval_curve.md"
    lines = [f"Recall@10 over the search ef, HNSW efConstruction 100: {described}; single queries", "",
             "| engine | M | ef | query p50 (ms) | query p95 (ms) | recall@10 |", "|---|---|---|---|---|---|"]
    reached = []
    with tempfile.TemporaryDirectory() as scratch, server_if_needed(args.engines, Path(scratch)) as server:
        for m in args.curve_m:
            for engine in args.engines:
                index = build(engine, f"curve_m{m}", vectors, Path(scratch), server, m)
                wait_for_index(engine, index, Path(scratch), f"curve_m{m}")
                first = None
                for ef in args.efs:
                    index.ef = ef
                    row = query_all(index, queries, vectors, exact)
                    lines.append(f"| {ENGINE_NAMES[engine]} | {m} | {ef} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | "
                                 f"{row['recall']:.3f} |")
                    print(lines[-1], flush=True)
                    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
                    if first is None and row["recall"] >= TARGET_RECALL:
                        first = f"ef {ef} ({row['p50_ms']:.2f} ms p50, {row['p95_ms']:.2f} ms p95, recall {row['recall']:.3f})"
                reached.append(f"- {ENGINE_NAMES[engine]}, M {m}: recall@10 >= {TARGET_RECALL} first at "
                               f"{first or f'no ef up to {max(args.efs)}'}")
                drop(engine, index)
    lines += ["", *reached]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    save_result("retrieval_curve", "\n".join(lines) + "\n")


def main() -> None:
    args = parser.parse_args()
    if "quality" in args.sections:
        quality(args)
    if "scale" in args.sections:
        scale(args)
    if "curve" in args.sections:
        curve(args)


if __name__ == "__main__":
    main()
