"""The reference's data-optimisation experiment, in spirit, on a 500-sentence training subset.

Usage: python bench/analysis_bench.py --dataset_dir divorce [--seeds 3 4]

1. Draw 500 training sentences (fixed seed) and give 50 of them wrong labels (each loses its
   labels and gets 1-2 labels it did not have).
2. Train the scratch recipe on the noisy subset; run analysis/dirty.py; count how many injected
   rows it ranks in its top 100; "re-label" the rows it flags (restore their true labels, as an
   annotator would) and retrain.
3. Train on the clean subset alone and on the clean subset plus analysis/aug.py's rows (one
   offline strategy), to show the effect of augmentation.
Every model is evaluated on test.txt (micro/macro F1, thresholds 0.5); each training run is
repeated for every seed in --seeds and averaged. Runs the real command-line scripts.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import random
import shutil
from pathlib import Path

import numpy as np
from benchtools import ROOT, markdown_table, run_script, save_result

from data_io import format_labels, load_examples, multi_hot, read_label_list
from metric import MetricReport

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--dataset_dir", required=True, help="The divorce dataset directory (README 2.3).")
parser.add_argument("--out_dir", default=str(ROOT / "bench/out/analysis"))
parser.add_argument("--subset", type=int, default=500)
parser.add_argument("--noisy", type=int, default=50)
parser.add_argument("--dirty_num", type=int, default=100)
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4])
parser.add_argument("--aug_strategy", default="delete")


def write_dataset(directory: Path, source: Path, train_lines: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("label.txt", "dev.txt", "test.txt"):
        shutil.copy(source / name, directory / name)
    (directory / "train.txt").write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    return directory


def train_and_test(dataset: Path, scratch: Path, out: Path, seeds: list[int], epochs: int
                   ) -> tuple[float, float]:
    """Mean test micro/macro F1 over seeds of the tiny recipe trained on dataset/train.txt."""
    labels = read_label_list(dataset / "label.txt")
    test = load_examples(dataset / "test.txt", labels)
    scores = []
    for seed in seeds:
        checkpoint = out / f"checkpoint_{seed}"
        run_script("train.py", "--device", "cpu", "--dataset_dir", dataset, "--model_name", scratch, "--save_dir",
                   checkpoint, "--batch_size", "16", "--learning_rate", "1e-3", "--warmup", "--warmup_steps", "50",
                   "--epochs", epochs, "--seed", seed, append=True, log=out / "train.log")
        predictions = out / f"test_pred_{seed}.txt"
        run_script("predict.py", "--device", "cpu", "--dataset_dir", dataset, "--params_path", checkpoint, "--data_file",
                   "test.txt", "--output_file", predictions, "--threshold", "0.5", append=True, log=out / "predict.log")
        metric = MetricReport()
        metric.update(multi_hot(load_examples(predictions, labels), len(labels)), multi_hot(test, len(labels)))
        scores.append(metric.accumulate())
    return tuple(100 * float(np.mean(column)) for column in zip(*scores))


def main(args: argparse.Namespace) -> None:
    source, out = Path(args.dataset_dir), Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = read_label_list(source / "label.txt")
    rng = random.Random(0)
    subset = rng.sample(load_examples(source / "train.txt", labels), args.subset)
    clean = [f"{e.text}\t{format_labels(e.labels, labels)}" for e in subset]
    noisy_rows = set(rng.sample(range(len(subset)), args.noisy))
    noisy = list(clean)
    for i in noisy_rows:
        wrong = [j for j in range(len(labels)) if j not in subset[i].labels]
        noisy[i] = f"{subset[i].text}\t{format_labels(sorted(rng.sample(wrong, rng.randint(1, 2))), labels)}"

    scratch = out / "scratch"
    if not (scratch / "config.json").is_file():
        run_script("scratch_model.py", "--dataset_dir", source, "--output_dir", scratch, "--preset", "tiny", "--dropout",
                   "0.1", append=True, log=out / "scratch.log")
    rows = []
    noisy_data = write_dataset(out / "noisy", source, noisy)
    rows.append(("500 rows, 50 wrong labels",
                 *train_and_test(noisy_data, scratch, out / "noisy", args.seeds, args.epochs)))

    run_script("analysis/dirty.py", "--device", "cpu", "--dataset_dir", noisy_data, "--params_path",
               out / "noisy" / f"checkpoint_{args.seeds[0]}", "--dirty_num", args.dirty_num, append=True, log=out / "dirty.log")
    flagged = set((noisy_data / "train_dirty.txt").read_text(encoding="utf-8").splitlines())
    found = sum(noisy[i] in flagged for i in noisy_rows)
    relabelled = [clean[i] if noisy[i] in flagged else noisy[i] for i in range(len(noisy))]
    relabelled_data = write_dataset(out / "relabelled", source, relabelled)
    rows.append((f"dirty.py top {args.dirty_num} re-labelled ({found} of {args.noisy} wrong rows found)",
                 *train_and_test(relabelled_data, scratch, out / "relabelled", args.seeds, args.epochs)))

    clean_data = write_dataset(out / "clean", source, clean)
    rows.append(("500 rows, all labels right",
                 *train_and_test(clean_data, scratch, out / "clean", args.seeds, args.epochs)))
    run_script("analysis/aug.py", "--train_path", clean_data / "train.txt", "--aug_path", out / "aug.txt", "--aug_strategy",
               args.aug_strategy, "--create_n", "2", append=True, log=out / "aug.log")
    augmented = clean + (out / "aug.txt").read_text(encoding="utf-8").splitlines()
    aug_data = write_dataset(out / "augmented", source, augmented)
    rows.append((f"all right + aug.py {args.aug_strategy} x2 ({len(augmented) - len(clean)} new rows)",
                 *train_and_test(aug_data, scratch, out / "augmented", args.seeds, args.epochs)))

    setting = (f"Test micro/macro F1 on {source.name}/test.txt, tiny scratch model (dropout 0.1), {args.epochs} "
               f"epochs, mean of seeds {args.seeds}; dirty.py ranked {found} of the {args.noisy} wrong rows in its top "
               f"{args.dirty_num} (chance: {args.noisy * args.dirty_num / args.subset:.0f}).")
    save_result("analysis", setting + "\n\n" + markdown_table(["training data", "micro F1", "macro F1"], [
        (name, f"{micro:.2f}", f"{macro:.2f}") for name, micro, macro in rows]))

if __name__ == "__main__":
    main(parser.parse_args())
