"""Test micro/macro F1 of every loss, with and without repeat-factor sampling, over several seeds.

Usage: python bench/losses.py --dataset_dir divorce [--seeds 1 2 3] [--epochs 10]

Each seed makes one scratch model (preset tiny, dropout 0.1) that every setting starts from; each
setting runs the real train.py (same schedule, --tune_thresholds) and predict.py on test.txt at the
0.5 threshold and at the thresholds tuned on dev. The table (mean +- std over the seeds finished so
far) is rewritten after every run, so a long run can be read while it goes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from accuracy import run, test_scores

from data_io import load_examples, multi_hot, read_label_list

ROOT = Path(__file__).resolve().parents[1]
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


def table(results: dict, args: argparse.Namespace, dataset: Path, test_size: int) -> str:
    lines = [f"#### {dataset.name}/test.txt ({test_size} texts): scratch tiny --dropout 0.1, {args.epochs} epochs, "
             f"batch 16, lr 1e-3, warmup {args.warmup_steps}; mean +- std over seeds",
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


def main() -> None:
    args = parser.parse_args()
    dataset, out = Path(args.dataset_dir), Path(args.out_dir)
    labels = read_label_list(dataset / "label.txt")
    gold = multi_hot(load_examples(dataset / "test.txt", labels), len(labels))
    results_file = out / "results.json"
    results = json.loads(results_file.read_text(encoding="utf-8")) if results_file.is_file() else {}
    for seed in args.seeds:
        scratch = out / f"scratch_seed{seed}"
        if not (scratch / "model_state.pdparams").is_file():
            run("scratch_model.py", "--dataset_dir", dataset, "--output_dir", scratch, "--preset", "tiny",
                "--dropout", "0.1", "--seed", seed, log=out / f"scratch_seed{seed}.log")
        for setting in args.settings:
            if str(seed) in results.get(setting, {}):
                continue  # finished in an earlier run of the benchmark
            run_dir = out / setting.replace(" + ", "+") / f"seed{seed}"
            run("train.py", "--device", "cpu", "--dataset_dir", dataset, "--model_name", scratch, "--save_dir",
                run_dir / "checkpoint", "--epochs", args.epochs, "--batch_size", 16, "--learning_rate", 1e-3,
                "--warmup_steps", args.warmup_steps, "--seed", seed, "--logging_steps", 100, "--tune_thresholds",
                *SETTINGS[setting], log=run_dir / "train.log")
            results.setdefault(setting, {})[str(seed)] = test_scores(dataset, run_dir / "checkpoint", run_dir, gold,
                                                                     labels)
            results_file.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
            (out / "losses.md").write_text(table(results, args, dataset, len(gold)), encoding="utf-8")
    print(table(results, args, dataset, len(gold)))


if __name__ == "__main__":
    main()
