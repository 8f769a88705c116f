"""Few-shot: prompt learning (few-shot/train.py) against plain fine-tuning (train.py) on K examples per label.

Usage: python bench/few_shot_bench.py --dataset_dir divorce [--shots 4] [--seeds 1 2 3]
                                      [--mlm_epochs 0 30]

For each seed, K training and K dev sentences per label are drawn from train.txt (the reference's
80-sentence divorce split has this shape); both methods start from the same scratch model and
stop early on dev macro F1 with the same patience (10 by default: from random weights, 4 stops
before learning has begun). Scratch models: random weights, and the same model pretrained as a
masked LM on all train.txt/dev.txt texts (labels unused), the offline stand-in for pretraining.
Micro/macro F1 on the full test.txt at threshold 0.5, plus a TF-IDF baseline fitted on the same
split, are printed per seed and as mean ± std, as a Markdown table.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import random
import time
from pathlib import Path

import numpy as np
from accuracy import f1_pair, tfidf_baseline
from benchtools import ROOT, markdown_table, run_script, save_result

from data_io import load_examples, multi_hot, read_label_list, read_lines

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--dataset_dir", required=True, help="The divorce dataset directory (README 2.3).")
parser.add_argument("--out_dir", default=str(ROOT / "bench/out/few_shot"))
parser.add_argument("--shots", type=int, default=4, help="training (and dev) sentences per label")
parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
parser.add_argument("--prompt", default="这句话包含的要素有")
parser.add_argument("--preset", default="tiny")
parser.add_argument("--mlm_epochs", type=int, nargs="+", default=[0, 30],
                    help="scratch models to compare: 0 = random weights, N = masked-LM pretrained N epochs")
parser.add_argument("--mlm_learning_rate", type=float, default=5e-4)
parser.add_argument("--dropout", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=100, help="upper bound; both methods stop early")
parser.add_argument("--patience", type=int, default=10, help="epochs without a better dev macro F1 before stopping")
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--learning_rate", type=float, default=1e-3)
parser.add_argument("--ppt_learning_rate", type=float, default=1e-2)
parser.add_argument("--warmup_steps", type=int, default=20)
parser.add_argument("--max_seq_length", type=int, default=128)


def draw_split(dataset: Path, labels: list[str], shots: int, seed: int, target: Path) -> None:
    """K labelled sentences per label for train, K more for dev (a sentence counts for all its labels)."""
    lines = dict(read_lines(dataset / "train.txt"))
    examples = [e for e in load_examples(dataset / "train.txt", labels) if e.labels]
    random.Random(seed).shuffle(examples)
    used: set[int] = set()
    target.mkdir(parents=True, exist_ok=True)
    for part in ("train", "dev"):
        chosen = []
        for label in range(len(labels)):
            candidates = [e for e in examples if label in e.labels and e.line_no not in used]
            for example in candidates[:shots]:
                used.add(example.line_no)
                chosen.append(lines[example.line_no])
        (target / f"{part}.txt").write_text("\n".join(chosen) + "\n", encoding="utf-8")
    for name in ("test.txt", "label.txt"):
        (target / name).write_bytes((dataset / name).read_bytes())


def test_f1(pred_file: Path, dataset: Path, labels: list[str]) -> tuple[float, float]:
    gold = multi_hot(load_examples(dataset / "test.txt", labels), len(labels))
    return f1_pair(multi_hot(load_examples(pred_file, labels), len(labels)), gold)


def prompt_f1(args: argparse.Namespace, split: Path, labels: list[str], model: Path, seed: int, out: Path
              ) -> tuple[float, float]:
    """Test F1 of prompt learning (few-shot/train.py) from `model` on the split."""
    run_script("few-shot/train.py", "--device", "cpu", "--data_dir", split, "--model_name_or_path", model,
               "--output_dir", out / "prompt", "--prompt", args.prompt, "--dropout", args.dropout,
               "--ppt_learning_rate", args.ppt_learning_rate, "--do_train", "--do_predict",
               "--num_train_epochs", args.epochs, "--per_device_train_batch_size", args.batch_size,
               "--per_device_eval_batch_size", 32, "--warmup_steps", args.warmup_steps, "--logging_steps", 50,
               "--evaluation_strategy", "epoch", "--save_strategy", "epoch", "--save_total_limit", 1,
               "--load_best_model_at_end", "--metric_for_best_model", "macro_f1_score",
               "--early_stopping_patience", args.patience, "--seed", seed, "--max_seq_length", args.max_seq_length,
               "--learning_rate", args.learning_rate, log=out / "prompt.log")
    return test_f1(out / "prompt" / "test_predictions.txt", split, labels)


def finetune_f1(args: argparse.Namespace, split: Path, labels: list[str], model: Path, seed: int, out: Path
                ) -> tuple[float, float]:
    """Test F1 of plain fine-tuning (train.py) from `model` on the split, with the same stopping rule."""
    run_script("train.py", "--device", "cpu", "--dataset_dir", split, "--model_name", model, "--save_dir",
               out / "finetune", "--epochs", args.epochs, "--early_stop", "--early_stop_nums", args.patience,
               "--batch_size", args.batch_size, "--warmup", "--warmup_steps", args.warmup_steps, "--logging_steps", 50,
               "--seed", seed, "--max_seq_length", args.max_seq_length, "--learning_rate", args.learning_rate,
               log=out / "finetune.log")
    run_script("predict.py", "--device", "cpu", "--dataset_dir", split, "--data_file", "test.txt", "--params_path",
               out / "finetune", "--output_file", out / "finetune_test.txt", "--max_seq_length", args.max_seq_length,
               log=out / "predict.log")
    return test_f1(out / "finetune_test.txt", split, labels)


def model_name(mlm_epochs: int) -> str:
    return "random init" if mlm_epochs == 0 else f"MLM-pretrained {mlm_epochs} epochs"


def main() -> None:
    args = parser.parse_args()
    dataset, out = Path(args.dataset_dir), Path(args.out_dir)
    labels = read_label_list(dataset / "label.txt")
    start = time.time()
    results: dict[str, dict[int, tuple[float, float]]] = {}
    for seed in args.seeds:
        split = out / f"seed{seed}" / "data"
        draw_split(dataset, labels, args.shots, seed, split)
        results.setdefault("TF-IDF + logistic regression (same split)", {})[seed] = tfidf_baseline(split, labels)
    for mlm_epochs in args.mlm_epochs:
        scratch = out / f"scratch_mlm{mlm_epochs}"
        run_script("scratch_model.py", "--dataset_dir", dataset, "--output_dir", scratch, "--preset", args.preset,
                   "--dropout", args.dropout, "--mlm_epochs", mlm_epochs, "--mlm_learning_rate", args.mlm_learning_rate,
                   log=out / f"scratch_mlm{mlm_epochs}.log")
        for seed in args.seeds:
            split, run = out / f"seed{seed}" / "data", out / f"seed{seed}" / f"mlm{mlm_epochs}"
            results.setdefault(f"prompt (few-shot/train.py), {model_name(mlm_epochs)}", {})[seed] = prompt_f1(
                args, split, labels, scratch, seed, run)
            results.setdefault(f"fine-tune (train.py), {model_name(mlm_epochs)}", {})[seed] = finetune_f1(
                args, split, labels, scratch, seed, run)

    setting = (f"{dataset.name}: {args.shots} train + {args.shots} dev sentences per label, test.txt in full; "
               f"scratch {args.preset} (dropout {args.dropout}; MLM pretraining on all train/dev texts at lr "
               f"{args.mlm_learning_rate}), batch {args.batch_size}, lr {args.learning_rate} (prompt parameters "
               f"{args.ppt_learning_rate}), warmup {args.warmup_steps} steps, early stopping on dev macro F1 (patience "
               f"{args.patience}, at most {args.epochs} epochs); prompt {args.prompt!r}; "
               f"{(time.time() - start) / 60:.1f} min")
    rows = []
    for method, per_seed in results.items():
        scores = np.asarray([per_seed[seed] for seed in args.seeds]) * 100
        mean, std = scores.mean(0), scores.std(0)
        rows.append([method, *(f"{micro:.2f} / {macro:.2f}" for micro, macro in scores),
                     f"{mean[0]:.2f} ± {std[0]:.2f}", f"{mean[1]:.2f} ± {std[1]:.2f}"])
    header = ["method, model", *(f"seed {s} micro / macro" for s in args.seeds), "mean micro F1", "mean macro F1"]
    save_result("few_shot", setting + "\n\n" + markdown_table(header, rows))

if __name__ == "__main__":
    main()
