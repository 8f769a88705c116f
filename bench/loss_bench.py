"""Test micro/macro F1 of every loss, with and without repeat-factor sampling, over several seeds.

Usage: python bench/loss_bench.py --dataset_dir divorce [--seeds 1 2 3] [--epochs 10] [--jobs 2]

Each seed makes one scratch model (preset tiny, dropout 0.1) that every setting starts from; each
setting runs the real train.py (same schedule, --tune_thresholds) and predict.py on test.txt at the
0.5 threshold and at the thresholds tuned on dev. The table (mean +- std over the seeds finished so
far) is rewritten after every run, so a long run can be read while it goes.

A second table splits the labels into three bands by their training frequency and gives each
setting's tuned macro F1 per band next to the TF-IDF + logistic-regression baseline (balanced class
weights, 0.5): it shows where a loss gains and what is left to gain.

`--jobs 2` runs two trainings at once with one core each (a tiny model keeps one core busier than
two); in a one-epoch check the dev micro F1 differed from a 2-thread run by 0.0004 (float rounding).
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from accuracy import test_scores, tfidf_probabilities
from benchtools import ROOT, measured_now, run_script, runs_provenance, save_result
from sklearn.metrics import f1_score

from data_io import load_examples, multi_hot, read_label_list

SETTINGS = {  # name -> train.py arguments
    "bce": ["--loss", "bce"],
    "bce_pos_weight": ["--loss", "bce_pos_weight"],
    "focal": ["--loss", "focal"],
    "asl": ["--loss", "asl"],
    "zlpr": ["--loss", "zlpr"],
    "db": ["--loss", "db"],
    "bce + repeat_factor": ["--loss", "bce", "--sampling", "repeat_factor"],
    "bce_pos_weight + repeat_factor": ["--loss", "bce_pos_weight", "--sampling", "repeat_factor"],
    "focal + repeat_factor": ["--loss", "focal", "--sampling", "repeat_factor"],
    "db + repeat_factor": ["--loss", "db", "--sampling", "repeat_factor"],
}

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset_dir", required=True, help="The divorce dataset directory (README 2.3).")
parser.add_argument("--out_dir", default=str(ROOT / "bench/out/losses"))
parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--warmup_steps", type=int, default=200)
parser.add_argument("--repeat_threshold", type=float, default=0.1,
                    help="train.py --repeat_threshold of the repeat_factor settings: train.py's 0.01 repeats no text of "
                         "divorce's rarest labels (39 of 4,005 texts, about 1%%); 0.1 repeats them about 3 times")
parser.add_argument("--jobs", type=int, default=1, help="trainings run at once, each on an equal share of the cores")


def table(results: dict, args: argparse.Namespace, dataset: Path, test_size: int) -> str:
    lines = [f"#### {dataset.name}/test.txt ({test_size} texts): scratch tiny --dropout 0.1, {args.epochs} epochs, "
             f"batch 16, lr 1e-3, warmup {args.warmup_steps}, --repeat_threshold {args.repeat_threshold}; "
             "mean +- std over seeds",
             "", "| setting | seeds | micro F1 (0.5) | macro F1 (0.5) | micro F1 (tuned) | macro F1 (tuned) |",
             "|---|---|---|---|---|---|"]
    for setting, runs in results.items():
        cells = []
        for threshold in ("0.5", "tuned"):
            for index in (0, 1):
                values = np.array([run_[threshold][index] for run_ in runs.values()]) * 100
                cells.append(f"{values.mean():.2f} +- {values.std():.2f}")
        lines.append(f"| {setting} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def frequency_bands(train_counts: np.ndarray) -> list[np.ndarray]:
    """Label indices from the most to the least frequent in train.txt, in three bands of (nearly) equal size."""
    return np.array_split(np.argsort(-train_counts, kind="stable"), 3)


def band_table(results: dict, tfidf_per_label: list[float], train_counts: np.ndarray) -> str:
    bands = frequency_bands(train_counts)
    names = [f"{band} ({len(indices)} labels, {train_counts[indices].min()}-{train_counts[indices].max()} "
             "training texts)" for band, indices in zip(("head", "middle", "tail"), bands)]
    lines = ["#### Tuned test macro F1 by label band (labels ranked by their training frequency); mean over seeds", "",
             "| setting | " + " | ".join(names) + " |", "|---|" + "---|" * len(bands)]
    rows = {setting: np.mean([run_["tuned_per_label"] for run_ in runs.values()], axis=0)
            for setting, runs in results.items()}
    rows["TF-IDF + logistic regression (balanced, 0.5)"] = np.array(tfidf_per_label)
    for setting, per_label in rows.items():
        lines.append(f"| {setting} | " + " | ".join(f"{100 * per_label[indices].mean():.2f}" for indices in bands) + " |")
    return "\n".join(lines) + "\n"


def tables(results: dict, args: argparse.Namespace, dataset: Path, gold: np.ndarray, tfidf_per_label: list[float],
           train_counts: np.ndarray) -> str:
    return table(results, args, dataset, len(gold)) + "\n" + band_table(results, tfidf_per_label, train_counts)


def per_label_f1(predictions: Path, gold: np.ndarray, labels: list[str]) -> list[float]:
    predicted = multi_hot(load_examples(predictions, labels), len(labels))
    return f1_score(gold, predicted, average=None, zero_division=0).tolist()


def make_scratch_model(dataset: Path, out: Path, seed: int) -> Path:
    scratch = out / f"scratch_seed{seed}"
    if not (scratch / "model_state.pdparams").is_file():
        run_script("scratch_model.py", "--dataset_dir", dataset, "--output_dir", scratch, "--preset", "tiny",
                   "--dropout", "0.1", "--seed", seed, log=out / f"scratch_seed{seed}.log")
    return scratch


def train_and_score(args: argparse.Namespace, dataset: Path, out: Path, scratch: Path, seed: int, setting: str,
                    gold: np.ndarray, labels: list[str]) -> dict:
    run_dir = out / setting.replace(" + ", "+") / f"seed{seed}"
    sampling = ["--repeat_threshold", args.repeat_threshold] if "repeat_factor" in setting else []
    run_script("train.py", "--device", "cpu", "--dataset_dir", dataset, "--model_name", scratch,
               "--save_dir", run_dir / "checkpoint", "--epochs", args.epochs, "--batch_size", 16, "--learning_rate", 1e-3,
               "--warmup_steps", args.warmup_steps, "--seed", seed, "--logging_steps", 100, "--tune_thresholds",
               *SETTINGS[setting], *sampling, log=run_dir / "train.log")
    scores = test_scores(dataset, run_dir / "checkpoint", run_dir, gold, labels)
    scores["tuned_per_label"] = per_label_f1(run_dir / "test_tuned.txt", gold, labels)
    return scores


def main() -> None:
    args = parser.parse_args()
    # utils.set_device gives each process of a launch an equal share of the cores; the jobs here share them alike
    os.environ["PADDLE_LOCAL_SIZE"] = str(args.jobs)
    dataset, out = Path(args.dataset_dir), Path(args.out_dir)
    labels = read_label_list(dataset / "label.txt")
    gold = multi_hot(load_examples(dataset / "test.txt", labels), len(labels))
    results_file = out / "results.json"
    results = json.loads(results_file.read_text(encoding="utf-8")) if results_file.is_file() else {}
    train_counts = multi_hot(load_examples(dataset / "train.txt", labels), len(labels)).sum(0).astype(int)
    tfidf_per_label = f1_score(gold, tfidf_probabilities(dataset, labels) > 0.5, average=None, zero_division=0)
    with ThreadPoolExecutor(args.jobs) as pool:
        scratch = dict(zip(args.seeds, pool.map(lambda seed: make_scratch_model(dataset, out, seed), args.seeds)))
        pending = {(seed, setting): pool.submit(train_and_score, args, dataset, out, scratch[seed], seed, setting, gold,
                                                labels)
                   for seed in args.seeds for setting in args.settings
                   if str(seed) not in results.get(setting, {})}  # runs finished earlier are kept
        for (seed, setting), future in pending.items():
            results.setdefault(setting, {})[str(seed)] = {**future.result(), **measured_now()}
            results_file.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    save_result("losses", tables(results, args, dataset, gold, tfidf_per_label, train_counts),
                measured=runs_provenance([run for seeds in results.values() for run in seeds.values()]))


if __name__ == "__main__":
    main()
