"""The retrieval route on a real data set next to the classifier, and the index engines at scale.

Usage:
    python bench/retrieval_bench.py --sections quality --dataset_dir divorce --out_dir bench/out/retrieval
    python bench/retrieval_bench.py --sections scale --sizes 10000 100000 1000000 --out bench/out/retrieval_scale.md

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
compared with exact search (numpy). Memory is the growth of this process's resident set over the
build (Milvus Lite runs inside the process). Both engines use the scripts' defaults: HNSW with
M = 100 and ef = 100 (efConstruction and search). One engine after the other, on this machine.
Milvus Lite compacts and indexes flushed data in a background thread: it is measured right after
the insert and again once that thread is done (build time then includes it).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from accuracy import f1_pair, run, test_scores

from data_io import load_examples, multi_hot, read_label_list
from metric import tune_thresholds
from retrieval import label_scores, read_recall_file
from vector_index import INSERT_CHUNK, Entry, HnswIndex, IndexInfo, MilvusIndex

K = 10
RECALL_MODES = ("label", "text")

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--sections", nargs="+", default=["quality", "scale"], choices=["quality", "scale"])
parser.add_argument("--dataset_dir", help="quality: the divorce dataset directory (README 2.3).")
parser.add_argument("--out_dir", default="bench/out/retrieval", help="quality: models, logs and retrieval_quality.md.")
parser.add_argument("--epochs", type=int, default=30, help="quality: training epochs of the classifier and the encoder.")
parser.add_argument("--holdout_labels", nargs=2, default=["婚后分居", "有夫妻共同债务"],
                    help="quality: the two labels the held-out encoder never trains with.")
parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000, 1000000], help="Index sizes.")
parser.add_argument("--dim", type=int, default=256, help="Vector width (train.py's default output_emb_size).")
parser.add_argument("--queries", type=int, default=500, help="Queries per index, searched one at a time.")
parser.add_argument("--engines", nargs="+", default=["hnswlib", "milvus"], choices=["hnswlib", "milvus"])
parser.add_argument("--out", default="bench/out/retrieval_scale.md", help="scale: the table.")


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    best = []
    for start in range(0, len(queries), 100):
        similarities = queries[start:start + 100] @ vectors.T
        best.append(np.argsort(-similarities, axis=1)[:, :K])
    return np.concatenate(best)


def query_all(index, queries: np.ndarray, exact: np.ndarray) -> dict:
    """Latency p50/p95 of single queries and their mean recall@10 against exact search."""
    latencies, found = [], []
    for query in queries:
        begin = time.perf_counter()
        ids, _ = index.search(query[None, :], K)
        latencies.append(time.perf_counter() - begin)
        found.append(ids[0])
    return {"p50_ms": 1000 * np.percentile(latencies, 50), "p95_ms": 1000 * np.percentile(latencies, 95),
            "recall": np.mean([len(set(row) & set(truth)) / K for row, truth in zip(found, exact)])}


def wait_for_milvus_lite_index(path: Path, collection: str) -> None:
    """Block until Milvus Lite has compacted the flushed segments and built their HNSW indexes.

    Milvus Lite does both in a background thread after a flush, and describe_index reports the index
    as finished at once, so the bench drains that thread through Milvus Lite's own collection object
    (a private API: only this benchmark needs to know when the index exists).
    """
    from milvus_lite.server_manager import server_manager_instance

    _, database, _ = server_manager_instance._servers[os.path.abspath(path)]
    database._collections[("default", collection)]._wait_for_bg()


def measure(engine: str, size: int, dim: int, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray,
            work: Path) -> list[dict]:
    """hnswlib: one row. Milvus Lite: queried right after the insert (its background index build has
    not run yet), then again once its index is built."""
    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    info = IndexInfo(dim, "bench")
    start = time.perf_counter()
    path = work / f"{engine}_{size}"
    index = HnswIndex(path, info, max_elements=size) if engine == "hnswlib" else MilvusIndex(str(path) + ".db", info)
    entries = [Entry("", [])] * size
    for first in range(0, size, INSERT_CHUNK):
        chunk = slice(first, first + INSERT_CHUNK)
        index.upsert(list(range(first, min(first + INSERT_CHUNK, size))), vectors[chunk], entries[chunk])
    index.save()
    rows = [{"engine": engine if engine == "hnswlib" else "Milvus Lite, right after insert",
             "build_s": time.perf_counter() - start, "memory_mb": (process.memory_info().rss - rss_before) / 2**20,
             **query_all(index, queries, exact)}]
    if engine == "milvus":
        wait_for_milvus_lite_index(Path(str(path) + ".db"), index.collection)
        rows.append({"engine": "Milvus Lite, index built", "build_s": time.perf_counter() - start,
                     "memory_mb": (process.memory_info().rss - rss_before) / 2**20, **query_all(index, queries, exact)})
        index.client.drop_collection(index.collection)
        index.client.close()
    del index
    return rows


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
    run("retrieval_based/recall.py", "--device", "cpu", "--params_path", params, "--corpus_file", dataset / "label.txt",
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
    minutes = trained_once(out, lambda: run(
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
        run("scratch_model.py", "--dataset_dir", dataset, "--output_dir", scratch, "--preset", "tiny", "--dropout",
            "0.1", log=out / "scratch_model.log")

    minutes = trained_once(classifier, lambda: run(
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
    print(write_quality_table(rows, args, out, len(test_gold), held_out))


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
             f"{args.queries} queries one at a time", "",
             "| vectors | engine | build (s) | memory growth (MB) | query p50 (ms) | query p95 (ms) | recall@10 |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            vectors = unit_vectors(size, args.dim, 0)
            queries = unit_vectors(args.queries, args.dim, 1)
            exact = exact_top_k(vectors, queries)
            for engine in args.engines:
                for row in measure(engine, size, args.dim, vectors, queries, exact, Path(scratch)):
                    lines.append(f"| {size:,} | {row['engine']} | {row['build_s']:.1f} | {row['memory_mb']:.0f} | "
                                 f"{row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['recall']:.3f} |")
                    print(lines[-1], flush=True)
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # after every row: a long run can be read
                    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main() -> None:
    args = parser.parse_args()
    if "quality" in args.sections:
        quality(args)
    if "scale" in args.sections:
        scale(args)


if __name__ == "__main__":
    main()
