"""Calibration and label-count policies (decision.py) on a real data set, over several seeds.

Usage: python bench/decision_bench.py --dataset_dir divorce [--seeds 1 2 3] [--jobs 2]

Per seed, one scratch model (preset tiny, dropout 0.1) is fine-tuned by the real train.py with
--tune_thresholds in each setting (bce, and the README's recommended db + repeat-factor sampling).
Then, on the dev and test logits of the best checkpoint:
- calibration fitted on dev (Platt and temperature, per label), scored on test: expected calibration
  error (15 bins over every text and label, and over the chosen labels only: the `confidence` a server
  returns, whose calibration decides a review cut-off) and Brier score, before and after;
- test micro/macro F1 of the policies: the tuned thresholds alone, min_labels 1, max_labels 2 and 3;
- the test texts that get no label from the thresholds: how many, how many of them have a gold label,
  and how often the label min_labels 1 adds is one of the gold labels.
The raw figures of every run (with when and from which commit it was measured) are kept in
<out_dir>/results.json, and finished runs are not repeated; the tables (mean +- std over the seeds)
go to bench/results/decision.json.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from benchtools import check_kept_run, mean_std, measured_now, run_script, runs_provenance, save_result
from loss_bench import make_scratch_model

from data_io import load_examples, multi_hot, read_label_list
from decision import Decision, calibration_error, fit_calibration
from metric import MetricReport
from modeling import DygraphRunner, checkpoint_decision, dygraph_pipeline, load_model, load_tokenizer
from train import parser as train_parser
from utils import set_device, write_text_atomic

SETTINGS = {"bce": ["--loss", "bce"],
            "db + repeat_factor": ["--loss", "db", "--sampling", "repeat_factor", "--repeat_threshold", "0.1"]}
POLICIES = {"thresholds only": {}, "min_labels 1": {"min_labels": 1}, "max_labels 2": {"max_labels": 2},
            "max_labels 3": {"max_labels": 3}}

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset_dir", required=True)
parser.add_argument("--out_dir", default="bench/out/decision")
parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--jobs", type=int, default=2, help="Trainings side by side, one share of the cores each.")


def split_logits(checkpoint: Path, dataset: Path, split: str, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The checkpoint's logits on a labelled split and the gold multi-hot matrix."""
    examples = load_examples(dataset / f"{split}.txt", labels)
    model, tokenizer = load_model(str(checkpoint)), load_tokenizer(str(checkpoint))
    model.eval()
    pipeline = dygraph_pipeline(tokenizer, 128, 64)
    logits = pipeline.outputs(DygraphRunner(model, tokenizer.pad_token_id), pipeline.encode([e.text for e in examples]))
    return logits, multi_hot(examples, len(labels))


def f1(decision: Decision, logits: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    metric = MetricReport(decision=decision)
    metric.update(decision.probabilities(logits), gold)
    return metric.accumulate()


def empty_text_figures(decision: Decision, logits: np.ndarray, gold: np.ndarray) -> dict:
    """Texts without any label from the thresholds, and what min_labels 1 gives them."""
    probs = decision.probabilities(logits)
    empty = ~decision.chosen(probs).any(1)
    added = decision.overridden(min_labels=1).chosen(probs) & ~decision.chosen(probs)
    right = (added & (gold > 0.5)).any(1)
    return {"texts": len(gold), "no_label": int(empty.sum()), "no_label_gold_nonempty": int((gold[empty] > 0.5).any(1).sum()),
            "added_label_right": int(right[empty].sum()), "gold_empty_texts": int((~(gold > 0.5).any(1)).sum())}


def measure(checkpoint: Path, dataset: Path, labels: list[str]) -> dict:
    dev_logits, dev_gold = split_logits(checkpoint, dataset, "dev", labels)
    test_logits, test_gold = split_logits(checkpoint, dataset, "test", labels)
    stored = checkpoint_decision(load_model(str(checkpoint)))
    kinds = {"sigmoid": stored, **{method: stored.calibrated(fit_calibration(dev_logits, dev_gold, method)[0])
                                   for method in ("platt", "temperature")}}
    chosen = stored.chosen(stored.probabilities(test_logits))
    result = {"calibration": {}}
    for name, kind in kinds.items():
        probs = kind.probabilities(test_logits)
        result["calibration"][name] = {**calibration_error(probs, test_gold),
                                       "chosen_ece": calibration_error(probs[chosen], test_gold[chosen])["ece"],
                                       "labels_unchanged": bool(np.array_equal(kind.chosen(probs), chosen))}
    platt = kinds["platt"]
    result["policies"] = {name: {"raw": f1(stored.overridden(**policy), test_logits, test_gold),
                                 "platt": f1(platt.overridden(**policy), test_logits, test_gold)}
                          for name, policy in POLICIES.items()}
    result["empty"] = {"raw": empty_text_figures(stored, test_logits, test_gold),
                       "platt": empty_text_figures(platt, test_logits, test_gold)}
    for figures in result["calibration"].values():
        figures.pop("reliability")
    return result


def train(args: argparse.Namespace, dataset: Path, out: Path, scratch: Path, seed: int, setting: str) -> Path:
    run_dir = out / setting.replace(" + ", "+") / f"seed{seed}"
    options = ["--device", "cpu", "--dataset_dir", dataset, "--model_name", scratch, "--save_dir", run_dir / "checkpoint",
               "--epochs", args.epochs, "--batch_size", 16, "--learning_rate", 1e-3, "--warmup_steps", 200, "--seed",
               seed, "--logging_steps", 100, "--tune_thresholds", *SETTINGS[setting]]
    if (run_dir / "checkpoint" / "results.json").is_file():
        check_kept_run(run_dir / "checkpoint", train_parser, options)
    else:
        run_script("train.py", *options, log=run_dir / "train.log")
    return run_dir / "checkpoint"


def tables(results: dict) -> str:
    lines = ["| setting | probabilities | test ECE (all labels) | test ECE (chosen labels) | test Brier | labels unchanged |",
             "|---|---|---|---|---|---|"]
    for setting, seeds in results.items():
        runs = list(seeds.values())
        for kind in ("sigmoid", "platt", "temperature"):
            figures = [r["calibration"][kind] for r in runs]
            same = "" if kind == "sigmoid" else f"{sum(f['labels_unchanged'] for f in figures)}/{len(runs)}"
            lines.append(f"| {setting} | {kind} | {mean_std([f['ece'] for f in figures], 1, 4)} | "
                         f"{mean_std([f['chosen_ece'] for f in figures], 1, 4)} | "
                         f"{mean_std([f['brier'] for f in figures], 1, 4)} | {same} |")
    lines += ["", "| setting | policy | micro F1 | macro F1 | micro F1 (Platt ranking) | macro F1 (Platt ranking) |",
              "|---|---|---|---|---|---|"]
    for setting, seeds in results.items():
        runs = list(seeds.values())
        for policy in POLICIES:
            cells = [mean_std([r["policies"][policy][kind][i] for r in runs], 100) for kind in ("raw", "platt")
                     for i in (0, 1)]
            lines.append(f"| {setting} | {policy} | " + " | ".join(cells) + " |")
    lines += ["", "| setting | test texts | gold without label | no label from thresholds | of those with a gold label "
              "| min_labels 1 adds a gold label | same, Platt ranking |", "|---|---|---|---|---|---|---|"]
    for setting, seeds in results.items():
        runs = list(seeds.values())
        raw = [r["empty"]["raw"] for r in runs]
        platt = [r["empty"]["platt"] for r in runs]
        lines.append(f"| {setting} | {raw[0]['texts']} | {raw[0]['gold_empty_texts']} | "
                     f"{mean_std([e['no_label'] for e in raw], 1, 1)} | "
                     f"{mean_std([e['no_label_gold_nonempty'] for e in raw], 1, 1)} | "
                     f"{mean_std([e['added_label_right'] for e in raw], 1, 1)} | "
                     f"{mean_std([e['added_label_right'] for e in platt], 1, 1)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parser.parse_args()
    os.environ["PADDLE_LOCAL_SIZE"] = str(args.jobs)  # each training takes its share of the cores
    set_device("cpu")
    dataset, out = Path(args.dataset_dir), Path(args.out_dir)
    labels = read_label_list(dataset / "label.txt")
    results_file = out / "results.json"
    results = json.loads(results_file.read_text(encoding="utf-8")) if results_file.is_file() else {}
    with ThreadPoolExecutor(args.jobs) as pool:
        scratch = dict(zip(args.seeds, pool.map(lambda seed: make_scratch_model(dataset, out, seed), args.seeds)))
        pending = {(seed, setting): pool.submit(train, args, dataset, out, scratch[seed], seed, setting)
                   for seed in args.seeds for setting in args.settings if str(seed) not in results.get(setting, {})}
        for (seed, setting), future in pending.items():
            results.setdefault(setting, {})[str(seed)] = {**measure(future.result(), dataset, labels),
                                                          **measured_now()}
            write_text_atomic(results_file, json.dumps(results, indent=1) + "\n")
    save_result("decision", tables(results),
                measured=runs_provenance([run for seeds in results.values() for run in seeds.values()]))


if __name__ == "__main__":
    main()
