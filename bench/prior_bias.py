"""Does starting the classifier bias at the label log-odds help a scratch model learn? Dev F1 per epoch.

Usage: python bench/prior_bias.py [--dataset_dir data] [--epochs 10] [--learning_rate 1e-3]

Trains the same scratch model twice with train.py, `--classifier_bias prior` and `--classifier_bias
zero`, everything else equal, and prints dev micro/macro F1 after every epoch side by side.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--dataset_dir", default=str(ROOT / "data"))
parser.add_argument("--out_dir", default=str(ROOT / "bench/out/prior_bias"))
parser.add_argument("--preset", default="tiny")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--batch_size", type=int, default=16)
parser.add_argument("--learning_rate", type=float, default=1e-3)
parser.add_argument("--warmup_steps", type=int, default=30)

EVAL_LINE = re.compile(r"micro f1 score: ([\d.]+), macro f1 score: ([\d.]+)")


def run(*args) -> str:
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, check=True)
    return result.stderr


def main() -> None:
    args = parser.parse_args()
    out = Path(args.out_dir)
    run(ROOT / "scratch_model.py", "--dataset_dir", args.dataset_dir, "--output_dir", out / "scratch",
        "--preset", args.preset)
    scores = {}
    for bias in ("prior", "zero"):
        log = run(ROOT / "train.py", "--device", "cpu", "--dataset_dir", args.dataset_dir, "--model_name",
                  out / "scratch", "--save_dir", out / bias, "--epochs", args.epochs, "--batch_size",
                  args.batch_size, "--learning_rate", args.learning_rate, "--warmup", "--warmup_steps",
                  args.warmup_steps, "--classifier_bias", bias)
        scores[bias] = [(float(a) * 100, float(b) * 100) for a, b in EVAL_LINE.findall(log)]
    print(f"\n### Dev F1 per epoch on {Path(args.dataset_dir).name}: preset {args.preset}, batch {args.batch_size}, "
          f"lr {args.learning_rate}, warmup {args.warmup_steps}\n")
    print("| epoch | prior bias micro | prior bias macro | zero bias micro | zero bias macro |\n|---|---|---|---|---|")
    for epoch, (prior, zero) in enumerate(zip(scores["prior"], scores["zero"]), start=1):
        print(f"| {epoch} | {prior[0]:.1f} | {prior[1]:.1f} | {zero[0]:.1f} | {zero[1]:.1f} |")


if __name__ == "__main__":
    main()
