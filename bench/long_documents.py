"""Long documents: truncation against windows, on the divorce judgments.

Usage: python bench/long_documents.py --docs_dir divorce_docs --sentences_dir divorce [--epochs 20]

Every setting starts from one scratch model (preset tiny, dropout 0.1, its vocabulary from the
documents) and runs the real scripts (train.py --tune_thresholds, predict.py on test.txt):

  (a) truncate at 128 tokens, trained on the documents (the reference)
  (b) truncate at 512 tokens, trained on the documents
  (c) --long_text window (128 tokens, 64 shared), trained on the documents (windows pooled per document)
  (d) trained on the sentences of the same documents (--sentences_dir), applied to the documents with
      --long_text window at predict time; with its sentence-level thresholds, and with thresholds tuned
      on the documents of dev.txt
  (e) TF-IDF + logistic regression on the documents, and on their first 128 characters (how much the
      rest of a document tells the strong baseline)

Test micro/macro F1 with the tuned thresholds and documents per second of predict.py (its start-up
measured on a one-line file and taken off) go to bench/results/long_documents.json; finished settings
are kept in results.json in --out_dir and skipped when the benchmark runs again.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import json
import time
from pathlib import Path

import numpy as np
from accuracy import f1_pair, tfidf_baseline
from benchtools import ROOT, measured_now, run_script, runs_provenance, save_result

from data_io import load_examples, multi_hot, read_label_list
from metric import tune_thresholds

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--docs_dir", required=True, help="The divorce documents (train/dev/test.txt, label.txt).")
parser.add_argument("--sentences_dir", required=True, help="The divorce sentences of the same documents.")
parser.add_argument("--out_dir", default=str(ROOT / "bench/out/long_documents"))
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--train_max_windows", type=int, default=16, help="--max_windows of the window training (c).")
parser.add_argument("--predict_max_windows", type=int, default=256, help="--max_windows when (c) and (d) predict.")
parser.add_argument("--timing_copies", type=int, default=5, help="Copies of test.txt in the documents/s file.")

RECIPE = ["--learning_rate", "1e-3", "--warmup_steps", "100", "--logging_steps", "50", "--tune_thresholds"]
SETTINGS = {  # name -> (dataset: docs|sentences, train.py options, predict.py options)
    "(a) truncate 128": ("docs", ["--max_seq_length", "128", "--batch_size", "16"], ["--max_seq_length", "128"]),
    "(b) truncate 512": ("docs", ["--max_seq_length", "512", "--batch_size", "16"], ["--max_seq_length", "512"]),
    "(c) window 128 / 64, trained on documents": (
        "docs", ["--max_seq_length", "128", "--batch_size", "16", "--long_text", "window", "--window_stride", "64",
                 "--max_windows", "{train_max_windows}"], ["--max_seq_length", "128", "--max_windows",
                                                           "{predict_max_windows}"]),
    "(d) trained on sentences, window at predict time": (
        "sentences", ["--max_seq_length", "128", "--batch_size", "16"],
        ["--max_seq_length", "128", "--long_text", "window", "--window_stride", "64", "--max_windows",
         "{predict_max_windows}"]),
}


def predicted(args, checkpoint: Path, dataset: Path, data_file: str, options: list[str], out: Path,
              labels: list[str]) -> tuple[np.ndarray, float]:
    """predict.py's probabilities for a data file (--output_probs) and its wall time in seconds."""
    output = out / f"predict_{Path(data_file).stem}.txt"
    start = time.perf_counter()
    run_script("predict.py", "--device", "cpu", "--dataset_dir", dataset, "--data_file", data_file, "--params_path",
               checkpoint, "--output_file", output, "--output_probs", *options, log=out / f"predict_{Path(data_file).stem}.log")
    seconds = time.perf_counter() - start
    rows = [line.split("\t") for line in output.read_text(encoding="utf-8").splitlines()[1:]]
    return np.array([[json.loads(row[2])[name] for name in labels] for row in rows]), seconds


def score(probs: np.ndarray, gold: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    return f1_pair((probs > thresholds).astype("float32"), gold)


def run_setting(args, name: str, docs: Path, sentences: Path, scratch: Path, out: Path, labels: list[str]) -> dict:
    corpus, train_options, predict_options = SETTINGS[name]
    fill = {"train_max_windows": args.train_max_windows, "predict_max_windows": args.predict_max_windows}
    train_options = [option.format(**fill) for option in train_options]
    predict_options = [option.format(**fill) for option in predict_options]
    run_dir = out / name.split()[0].strip("()")
    train_start = time.perf_counter()
    run_script("train.py", "--device", "cpu", "--dataset_dir", sentences if corpus == "sentences" else docs, "--model_name",
               scratch, "--save_dir", run_dir / "checkpoint", "--epochs", args.epochs, *RECIPE, *train_options,
               log=run_dir / "train.log")
    train_minutes = (time.perf_counter() - train_start) / 60
    checkpoint = run_dir / "checkpoint"
    thresholds = np.asarray(json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
                            ["multi_label_thresholds"], dtype="float32")
    gold = {split: multi_hot(load_examples(docs / f"{split}.txt", labels), len(labels)) for split in ("dev", "test")}
    test_probs, _ = predicted(args, checkpoint, docs, "test.txt", predict_options, run_dir, labels)
    _, startup = predicted(args, checkpoint, docs, str((out / "one_line.txt").resolve()), predict_options, run_dir,
                           labels)
    _, timed = predicted(args, checkpoint, docs, str((out / "timing.txt").resolve()), predict_options, run_dir, labels)
    docs_per_second = args.timing_copies * len(gold["test"]) / max(timed - startup, 1e-6)
    result = {"test": score(test_probs, gold["test"], thresholds), "docs_per_s": docs_per_second,
              "train_min": train_minutes}
    if corpus == "sentences":  # the sentence thresholds, and thresholds tuned on the documents of dev.txt
        dev_probs, _ = predicted(args, checkpoint, docs, "dev.txt", predict_options, run_dir, labels)
        result["test_doc_thresholds"] = score(test_probs, gold["test"], tune_thresholds(dev_probs, gold["dev"], 0.5))
    return result


def table(results: dict, args, docs: Path, test_size: int) -> str:
    lines = [f"#### {docs.name}/test.txt ({test_size} documents): scratch tiny --dropout 0.1, {args.epochs} epochs, "
             f"lr 1e-3, warmup 100, thresholds tuned on dev; (c) trains on at most {args.train_max_windows} windows "
             f"per document, (c) and (d) predict with at most {args.predict_max_windows}",
             "", "| setting | micro F1 | macro F1 | documents/s (predict.py) | train min |", "|---|---|---|---|---|"]
    for name, result in sorted(results.items()):
        micro, macro = (100 * value for value in result["test"])
        speed = f"{result['docs_per_s']:.1f}" if "docs_per_s" in result else "-"
        train = f"{result['train_min']:.1f}" if "train_min" in result else "-"
        lines.append(f"| {name} | {micro:.2f} | {macro:.2f} | {speed} | {train} |")
        if "test_doc_thresholds" in result:
            micro, macro = (100 * value for value in result["test_doc_thresholds"])
            lines.append(f"| {name}, thresholds tuned on dev documents | {micro:.2f} | {macro:.2f} | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parser.parse_args()
    docs, sentences, out = Path(args.docs_dir), Path(args.sentences_dir), Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = read_label_list(docs / "label.txt")
    test_texts = [e.text for e in load_examples(docs / "test.txt", labels)]
    (out / "one_line.txt").write_text(test_texts[0] + "\n", encoding="utf-8")
    (out / "timing.txt").write_text("\n".join(test_texts * args.timing_copies) + "\n", encoding="utf-8")
    scratch = out / "scratch"
    if not (scratch / "model_state.pdparams").is_file():
        run_script("scratch_model.py", "--dataset_dir", docs, "--output_dir", scratch, "--preset", "tiny", "--dropout", "0.1",
                   log=out / "scratch_model.log")
    results_file = out / "results.json"
    results = json.loads(results_file.read_text(encoding="utf-8")) if results_file.is_file() else {}
    for name, max_chars in (("(e) TF-IDF + logistic regression", None),
                            ("(e) TF-IDF + logistic regression, first 128 characters", 128)):
        if name not in results:
            results[name] = {"test": tfidf_baseline(docs, labels, max_chars)}
    for name in SETTINGS:
        if name not in results:
            results[name] = {**run_setting(args, name, docs, sentences, scratch, out, labels), **measured_now()}
        results_file.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    save_result("long_documents", table(results, args, docs, len(test_texts)),
                measured=runs_provenance([result for name, result in results.items() if name in SETTINGS]))


if __name__ == "__main__":
    main()
