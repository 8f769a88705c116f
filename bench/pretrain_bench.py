"""Domain-adaptive masked-LM pretraining before fine-tuning, on a real data set with an unlabelled corpus.

Usage: python bench/pretrain_bench.py --dataset_dir divorce --corpus legal_corpus/corpus.txt.gz
                                      [--seeds 1 2 3] [--arms a b c d] [--curve_epochs 1 2] [--jobs 2]
                                      [--sections f1 cost few_shot] [--few_shot_shots 4 8] [--few_shot_arms a c]

Four starting points of the same tiny scratch architecture (dropout 0.1), each fine-tuned with every
seed by the real train.py with the recommended recipe (--loss db --sampling repeat_factor
--repeat_threshold 0.1 --tune_thresholds; 10 epochs, batch 16, lr 1e-3, warmup 200) and scored on
test.txt by predict.py with the tuned thresholds:
  (a) random weights, vocabulary from train/dev (scratch_model.py with the fine-tuning's seed);
  (b) scratch_model.py --mlm_epochs: masked-LM pretraining on the train/dev texts only;
  (c) scratch_model.py --corpus (vocabulary from train/dev and the corpus), then pretrain.py on the
      corpus plus the train/dev texts with token masking;
  (d) as (c) with whole-word masking.
(b), (c) and (d) are pretrained once, from the scratch model of --pretrain_seed, and fine-tuned with each
seed; --curve_epochs adds (c) pretrained for other numbers of corpus epochs (the curve of F1 against pretraining).
The table (mean +- std over the seeds finished so far, with TF-IDF + logistic regression beside it)
is rewritten into <out_dir>/pretrain.md after every run; finished runs are kept (each with when and from
which commit it was measured, which the result file reports), so the command continues where it stopped.
The cost section times each pretraining alone (tokens per second, minutes per corpus epoch); the few-shot
section runs prompt learning (few-shot/train.py) from the --few_shot_arms starting points on
bench/few_shot_bench.py's splits of K sentences per label, with that script's settings.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import json
import os
import shutil
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Callable

import few_shot_bench
import numpy as np
from accuracy import test_scores, tfidf_baseline
from benchtools import check_kept_run, mean_std, measured_now, run_script, runs_provenance, save_result
from filelock import FileLock

from data_io import iter_examples, load_examples, multi_hot, read_label_list
from train import parser as train_parser
from utils import write_text_atomic

ARMS = {"a": "(a) scratch, random weights",
        "b": "(b) MLM on train/dev texts (scratch_model.py --mlm_epochs)",
        "c": "(c) MLM on corpus + train/dev texts, token masking (pretrain.py)",
        "d": "(d) MLM on corpus + train/dev texts, whole-word masking (pretrain.py)"}
RECIPE = ["--loss", "db", "--sampling", "repeat_factor", "--repeat_threshold", "0.1", "--tune_thresholds",
          "--batch_size", "16", "--learning_rate", "1e-3", "--warmup_steps", "200"]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset_dir", required=True)
parser.add_argument("--corpus", required=True, nargs="+", help="The unlabelled corpus (pretrain.py --corpus).")
parser.add_argument("--out_dir", default="bench/out/pretrain")
parser.add_argument("--seeds", type=int, nargs="+", default=[1])
parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
parser.add_argument("--epochs", type=int, default=10, help="Fine-tuning epochs.")
parser.add_argument("--own_mlm_epochs", type=int, default=6, help="(b): masked-LM epochs on the train/dev texts.")
parser.add_argument("--corpus_mlm_epochs", type=int, default=4, help="(c), (d): masked-LM epochs on corpus + texts.")
parser.add_argument("--curve_epochs", type=int, nargs="*", default=[], help="(c) also pretrained for these epochs.")
parser.add_argument("--pretrain_seed", type=int, default=1, help="Seed of the scratch model and pretraining of (b)-(d).")
parser.add_argument("--corpus_mlm_steps", type=int, default=0, help="(c), (d): stop after this many optimizer steps (pretrain.py --max_steps; 0: all epochs).")
parser.add_argument("--mlm_learning_rate", type=float, default=5e-4)
parser.add_argument("--sections", nargs="+", choices=["f1", "cost", "few_shot"], default=["f1", "cost", "few_shot"])
parser.add_argument("--cost_presets", nargs="+", default=["tiny", "ernie-3.0-mini-zh"],
                    help="Cost section: scratch shapes whose pretraining speed is measured, one after the other.")
parser.add_argument("--cost_steps", type=int, default=20, help="Cost section: optimizer steps timed per shape.")
parser.add_argument("--few_shot_shots", type=int, nargs="+", default=[4, 8],
                    help="Few-shot section: training (and dev) sentences per label.")
parser.add_argument("--few_shot_arms", nargs="+", default=["a", "c"],
                    help="Few-shot section: the starting points prompt learning starts from (a, b, c, d, c@N).")
parser.add_argument("--tabulate_only", action="store_true", help="Start no run: the tables of the runs finished so far.")
parser.add_argument("--jobs", type=int, default=2, help="Runs side by side, one share of the cores each.")

MODEL_LOCKS: defaultdict[Path, threading.Lock] = defaultdict(threading.Lock)  # one builder per starting point
SCRATCH = ["--preset", "tiny", "--dropout", "0.1"]
MLM = ["--batch_size", "32", "--max_seq_length", "128"]


def dataset_texts(dataset: Path, out: Path) -> Path:
    """The train/dev texts without their labels, one a line: the data set's own unlabelled corpus."""
    texts = out / "dataset_texts.txt"
    if not texts.is_file():
        lines = [e.text for name in ("train.txt", "dev.txt") for e in iter_examples(dataset / name)]
        texts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return texts


def corpus_vocabulary_model(args: argparse.Namespace, dataset: Path, out: Path) -> Path:
    """(c) and (d) start from one scratch model whose vocabulary covers the corpus (made once)."""
    base = out / "pretrained" / "scratch_corpus_vocab"
    if not (base / "model_state.pdparams").is_file():
        run_script("scratch_model.py", "--dataset_dir", dataset, "--seed", args.pretrain_seed, *SCRATCH,
                   "--output_dir", base, "--corpus", *args.corpus, log=base.with_suffix(".log"))
    return base


def arm_epochs(arm: str, args: argparse.Namespace) -> int:
    """Corpus epochs of a (c)/(d) arm: "c@2" is (c) pretrained for 2 epochs."""
    return int(arm.split("@")[1]) if "@" in arm else args.corpus_mlm_epochs


def starting_point(args: argparse.Namespace, dataset: Path, out: Path, seed: int, arm: str) -> Path:
    """The model directory arm `arm` fine-tunes from (pretrained ones made once, shared by the seeds)."""
    model = out / f"seed{seed}" / "model_a" if arm == "a" else out / "pretrained" / f"model_{arm}"
    with MODEL_LOCKS[model]:
        return make_starting_point(args, dataset, model, seed, arm)


def make_starting_point(args: argparse.Namespace, dataset: Path, model: Path, seed: int, arm: str) -> Path:
    out = model.parents[1]
    if (model / "model_state.pdparams").is_file() and (arm == "a" or (model / "pretrain_results.json").is_file()):
        return model
    if arm in ("a", "b"):
        mlm = [] if arm == "a" else ["--mlm_epochs", args.own_mlm_epochs, "--mlm_learning_rate",
                                     args.mlm_learning_rate, "--mlm_batch_size", 32]
        run_script("scratch_model.py", "--dataset_dir", dataset, "--seed", seed if arm == "a" else args.pretrain_seed,
                   *SCRATCH, "--output_dir", model, *mlm, log=model.with_suffix(".log"))
        return model
    run_script("pretrain.py", "--model_name", corpus_vocabulary_model(args, dataset, out), "--output_dir", model,
               "--device", "cpu", "--corpus", *args.corpus, dataset_texts(dataset, out), "--masking",
               "whole_word" if arm.startswith("d") else "token", "--epochs", arm_epochs(arm, args), "--max_steps",
               args.corpus_mlm_steps, "--learning_rate", args.mlm_learning_rate, "--seed", args.pretrain_seed,
               "--validation_split", "0.02", "--logging_steps", 50, *MLM, log=model.with_suffix(".log"))
    return model


def fine_tune(args: argparse.Namespace, dataset: Path, out: Path, seed: int, arm: str, gold: np.ndarray,
              labels: list[str]) -> dict:
    model = starting_point(args, dataset, out, seed, arm)
    run_dir = out / f"seed{seed}" / f"finetune_{arm}"
    options = ["--device", "cpu", "--dataset_dir", dataset, "--model_name", model, "--save_dir", run_dir / "checkpoint",
               "--epochs", args.epochs, "--seed", seed, "--logging_steps", 100, *RECIPE]
    if (run_dir / "checkpoint" / "results.json").is_file():  # a fine-tuning finished before is kept
        check_kept_run(run_dir / "checkpoint", train_parser, options)
    else:
        run_script("train.py", *options, log=run_dir / "train.log")
    scores = test_scores(dataset, run_dir / "checkpoint", run_dir, gold, labels)
    pretrain_file = model / "pretrain_results.json"
    if pretrain_file.is_file():
        pretrained = json.loads(pretrain_file.read_text(encoding="utf-8"))
        scores["pretrain"] = {key: pretrained.get(key) for key in (
            "train_tokens", "epochs_run", "global_steps", "steps_per_epoch", "loop_time_s", "evaluations")}
    return scores


def arm_name(arm: str, args: argparse.Namespace) -> str:
    epochs = arm_epochs(arm, args)
    return ARMS[arm[0]] + (f", {epochs} corpus epoch{'s' if epochs > 1 else ''}" if arm[0] in "cd" else "")


def held_out_accuracy(pretrain: dict) -> str:
    return ", ".join(f"{evaluation['accuracy']:.3f}" for evaluation in pretrain["evaluations"])


def tables(results: dict, tfidf: tuple[float, float], args: argparse.Namespace) -> str:
    lines = ["| starting point | seeds | test micro F1 | test macro F1 | Δ micro vs (a) | Δ macro vs (a) |",
             "|---|---|---|---|---|---|"]
    base = results.get("a", {})
    for arm, seeds in sorted(results.items()):
        tuned = [run["tuned"] for run in seeds.values()]
        paired = [(run["tuned"], base[seed]["tuned"]) for seed, run in seeds.items() if seed in base]
        deltas = ["" if not paired or arm == "a" else f"{np.mean([(r[i] - b[i]) * 100 for r, b in paired]):+.2f}"
                  for i in (0, 1)]
        lines.append(f"| {arm_name(arm, args)} | {len(tuned)} | {mean_std([t[0] for t in tuned], 100)} | "
                     f"{mean_std([t[1] for t in tuned], 100)} | {deltas[0]} | {deltas[1]} |")
    lines.append(f"| TF-IDF char 1-3 gram + logistic regression | - | {tfidf[0] * 100:.2f} | {tfidf[1] * 100:.2f} | | |")
    lines += ["", "| pretraining | held-out masked-token accuracy after each epoch |", "|---|---|"]
    for arm, seeds in sorted(results.items()):
        p = next((run["pretrain"] for run in seeds.values() if run.get("pretrain")), None)
        if p and p.get("evaluations"):
            lines.append(f"| {arm_name(arm, args)} | {held_out_accuracy(p)} |")
    return "\n".join(lines) + "\n"


def cost_table(args: argparse.Namespace, dataset: Path, out: Path) -> tuple[str, dict]:
    """Pretraining speed of each --cost_presets shape on the whole machine: pretrain.py for --cost_steps
    steps on the corpus and the data set's texts (batch 32 x 128 tokens, token masking, no held-out slice);
    with --tabulate_only, the speeds measured before. The table, and when and where it was measured."""
    record = out / "cost" / "measured.json"
    if not args.tabulate_only:
        for preset in args.cost_presets:
            measure_cost(args, dataset, out, preset)
        write_text_atomic(record, json.dumps(measured_now()) + "\n")
    rows = []
    for preset in args.cost_presets:
        p = json.loads((out / "cost" / f"pretrain_{preset}" / "pretrain_results.json").read_text(encoding="utf-8"))
        tokens_per_s = p["train_tokens"] / p["steps_per_epoch"] * p["global_steps"] / p["loop_time_s"]
        rows.append(f"| {preset} | {p['train_tokens']} | {p['global_steps'] / p['loop_time_s']:.2f} | "
                    f"{tokens_per_s:.0f} | {p['train_tokens'] / tokens_per_s / 60:.1f} |")
    table = "\n".join(["| model | tokens per corpus epoch | steps/s | tokens/s | minutes per corpus epoch |",
                       "|---|---|---|---|---|", *rows]) + "\n"
    return table, json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}


def measure_cost(args: argparse.Namespace, dataset: Path, out: Path, preset: str) -> None:
    model, run = out / "cost" / f"scratch_{preset}", out / "cost" / f"pretrain_{preset}"
    shutil.rmtree(run, ignore_errors=True)
    run_script("scratch_model.py", "--dataset_dir", dataset, "--preset", preset, "--output_dir", model, "--corpus",
               *args.corpus, log=model.parent / f"{model.name}.log")
    run_script("pretrain.py", "--model_name", model, "--output_dir", run, "--device", "cpu", "--corpus", *args.corpus,
               dataset_texts(dataset, out), "--max_steps", args.cost_steps, "--seed", args.pretrain_seed, *MLM,
               log=run.parent / f"{run.name}.log")


def f1_section(args: argparse.Namespace, dataset: Path, out: Path) -> tuple[str, list[dict]]:
    """Every (seed, arm) not in <out_dir>/results.json yet, --jobs side by side; the F1 tables of all, and
    the runs they show."""
    labels = read_label_list(dataset / "label.txt")
    gold = multi_hot(load_examples(dataset / "test.txt", labels), len(labels))
    tfidf = tfidf_baseline(dataset, labels)
    results_file = out / "results.json"
    done = read_results(results_file)
    arms = [*args.arms, *(f"c@{epochs}" for epochs in args.curve_epochs)]
    order = [] if args.tabulate_only else sorted(
        ((seed, arm) for seed in args.seeds for arm in arms if str(seed) not in done.get(arm, {})),
        key=lambda item: (item[0], item[1] in "ab"))  # the corpus pretrainings first: they take longest
    if any(arm[0] in "cd" for _, arm in order):
        corpus_vocabulary_model(args, dataset, out)
    runs = [(arm, seed, partial(fine_tune, args, dataset, out, seed, arm, gold, labels)) for seed, arm in order]
    run_pending(args.jobs, results_file, runs,
                lambda results: write_text_atomic(out / "pretrain.md", tables(results, tfidf, args)))
    results = read_results(results_file)
    return tables(results, tfidf, args), runs_in(results, list(results))


def read_results(results_file: Path) -> dict:
    return json.loads(results_file.read_text(encoding="utf-8")) if results_file.is_file() else {}


def run_pending(jobs: int, results_file: Path, runs: list[tuple[str, int, Callable[[], object]]],
                after_each: Callable[[dict], None] = lambda results: None) -> None:
    """Each (group, seed, run) `jobs` at a time; every result is recorded in the results file as it finishes."""
    with ThreadPoolExecutor(jobs) as pool:
        pending = {pool.submit(run): (group, seed) for group, seed, run in runs}
        for future in as_completed(pending):
            after_each(record_run(results_file, *pending[future], future.result()))


def record_run(results_file: Path, group: str, seed: int, scores: dict) -> dict:
    """Adds one run, with when and from which commit it was measured, to the results file as it is on disk
    now, so invocations over other arms or seeds can share an --out_dir without losing each other's runs."""
    with FileLock(f"{results_file}.lock"):
        results = read_results(results_file)
        results.setdefault(group, {})[str(seed)] = {**scores, **measured_now()}
        write_text_atomic(results_file, json.dumps(results, indent=1) + "\n")
    return results


def runs_in(results: dict, groups: list[str]) -> list[dict]:
    """The recorded runs of these groups (arms, or shots and arms), for their provenance."""
    return [run for group in groups for run in results.get(group, {}).values()]


def few_shot_split(out: Path, shots: int, seed: int) -> Path:
    return out / "few_shot" / f"{shots}shot_seed{seed}" / "data"


def few_shot_run(args: argparse.Namespace, dataset: Path, out: Path, shots: int, arm: str, seed: int,
                 labels: list[str]) -> dict:
    """Prompt learning with bench/few_shot_bench.py's settings on that script's split of `shots` sentences per
    label for `seed`, from arm `arm`'s starting point: {"f1": test micro / macro F1}."""
    split = few_shot_split(out, shots, seed)
    few_shot_bench.draw_split(dataset, labels, shots, seed, split)
    settings = few_shot_bench.parser.parse_args(["--dataset_dir", str(dataset)])
    model = starting_point(args, dataset, out, seed, arm)
    return {"f1": list(few_shot_bench.prompt_f1(settings, split, labels, model, seed, split.parent / arm))}


def few_shot_table(results: dict, tfidf: dict, args: argparse.Namespace) -> str:
    lines = ["| starting point | sentences per label | seeds | micro F1 per seed | mean micro F1 | mean macro F1 |",
             "|---|---|---|---|---|---|"]
    for shots in args.few_shot_shots:
        rows = [(arm_name(arm, args), [run["f1"] for run in results.get(f"{shots} {arm}", {}).values()])
                for arm in args.few_shot_arms]
        rows.append(("TF-IDF char 1-3 gram + logistic regression (same splits)", list(tfidf.get(shots, {}).values())))
        for name, scores in rows:
            means = [mean_std([s[i] for s in scores], 100) if scores else "" for i in (0, 1)]
            lines.append(f"| {name} | {shots} | {len(scores)} | {' / '.join(f'{s[0] * 100:.2f}' for s in scores)} | "
                         f"{means[0]} | {means[1]} |")
    return "\n".join(lines) + "\n"


def few_shot_section(args: argparse.Namespace, dataset: Path, out: Path) -> tuple[str, list[dict]]:
    """Prompt learning from each --few_shot_arms starting point on K sentences per label, every seed, --jobs
    side by side; runs finished before (in <out_dir>/few_shot_results.json) are kept. The table, and the runs
    it shows."""
    labels = read_label_list(dataset / "label.txt")
    results_file = out / "few_shot_results.json"
    done = read_results(results_file)
    runs = [] if args.tabulate_only else [
        (f"{shots} {arm}", seed, partial(few_shot_run, args, dataset, out, shots, arm, seed, labels))
        for shots in args.few_shot_shots for arm in args.few_shot_arms for seed in args.seeds
        if str(seed) not in done.get(f"{shots} {arm}", {})]
    run_pending(args.jobs, results_file, runs)
    tfidf = {shots: {seed: tfidf_baseline(few_shot_split(out, shots, seed), labels)
                     for seed in args.seeds if few_shot_split(out, shots, seed).is_dir()}
             for shots in args.few_shot_shots}
    results = read_results(results_file)
    shown = [f"{shots} {arm}" for shots in args.few_shot_shots for arm in args.few_shot_arms]
    return few_shot_table(results, tfidf, args), runs_in(results, shown)


def main() -> None:
    args = parser.parse_args()
    dataset, out = Path(args.dataset_dir), Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections, runs = [], []  # runs: the measurements the tables show, with when and where they were made
    if "cost" in args.sections:  # first, alone on the machine with all its cores
        table, measured = cost_table(args, dataset, out)
        sections.append(f"Pretraining speed, {args.cost_steps} steps per shape, one run at a time.\n\n" + table)
        runs.append(measured)
    os.environ["PADDLE_LOCAL_SIZE"] = str(args.jobs)  # the runs below share the cores, --jobs at a time
    if "f1" in args.sections:
        table, shown = f1_section(args, dataset, out)
        sections.append(f"Test micro / macro F1 (%), mean ± std over seeds {' '.join(map(str, args.seeds))}; "
                        f"fine-tuning {args.epochs} epochs.\n\n" + table)
        runs += shown
    if "few_shot" in args.sections:
        table, shown = few_shot_section(args, dataset, out)
        sections.append("Few-shot prompt learning (few-shot/train.py, bench/few_shot_bench.py's splits and settings) "
                        f"from the starting points above, test micro / macro F1 (%), seeds "
                        f"{' '.join(map(str, args.seeds))}.\n\n" + table)
        runs += shown
    save_result("pretrain", "\n".join(sections), measured=runs_provenance(runs))


if __name__ == "__main__":
    main()
