"""How every stage scales with the number of labels, and which loss learns 3,000 rare labels.

Usage: python bench/label_scale.py [--label_counts 20 1000 10000] [--budget_epochs 5]
       (an empty --label_counts keeps the scale rows of the last run and redoes the loss budget)

1. Scale: keyword sets from `data/generate.py --num_labels N` with the same lines for every N
   (2,000 train, 500 dev). Per N: train.py for one epoch (median ms per step from its speed log
   lines), threshold tuning on the dev probabilities, predict.py on data.txt, analysis/evaluate.py,
   and 100 one-text requests to the Triton ensemble; wall time and peak RSS (of the process, or
   of the Triton server) per stage. Script stages include the interpreter's start-up, the same for
   every N, so the growth with N is what the table shows.
2. Learning: on a 3,000-label set (6,000 train / 1,000 dev lines, Zipf 1.0), train.py with each
   loss for the same budget, dev micro/macro F1 at 0.5 and with tuned thresholds.
Tables go to bench/results/<--result>.json.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from benchtools import ROOT, save_result
from serve_load import TritonTarget

from data_io import load_examples, multi_hot
from metric import MetricReport, tune_thresholds
from modeling import load_model, load_tokenizer, text_probs

LOSSES = ["bce", "bce_pos_weight", "focal", "asl", "zlpr", "db"]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out_dir", default=str(ROOT / "bench/out/label_scale"))
parser.add_argument("--label_counts", type=int, nargs="*", default=[20, 1000, 10000])
parser.add_argument("--budget_labels", type=int, default=3000)
parser.add_argument("--budget_epochs", type=int, default=5)
parser.add_argument("--budget_warmup_steps", type=int, default=100, help="the tiny recipe's warmup (zlpr barely moves without it)")
parser.add_argument("--losses", nargs="+", default=LOSSES, choices=LOSSES)
parser.add_argument("--result", default="label_scale", help="The tables go to bench/results/<result>.json.")
parser.add_argument("--classifier_bias", choices=["prior", "zero"], default="prior", help="train.py --classifier_bias of the budget runs (zero: the reference's fresh head)")


def timed(script: str, *args, log: Path) -> tuple[float, float]:
    """Run a script; (seconds, peak RSS in MB) of that process alone (wait4's rusage)."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], stdout=handle,
                                   stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"{script} failed, see {log}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def step_ms(log: Path) -> float:
    speeds = [float(line.split("speed: ")[1].split(" step/s")[0]) for line in log.read_text().splitlines()
              if "speed: " in line]
    return 1000 / float(np.median(speeds))


def generate(out: Path, labels: int, train_lines: int, dev_lines: int) -> Path:
    data = out / f"data_{labels}"
    if not (data / "data.txt").is_file():
        subprocess.run([sys.executable, str(ROOT / "data/generate.py"), "--num_labels", str(labels), "--output_dir",
                        str(data), "--train_lines", str(train_lines), "--dev_lines", str(dev_lines)], check=True)
    return data


def scale_row(out: Path, labels: int) -> dict:
    data = generate(out, labels, 2000, 500)
    run = out / f"run_{labels}"
    run.mkdir(exist_ok=True)
    timed("scratch_model.py", "--dataset_dir", data, "--output_dir", run / "scratch", log=run / "scratch.log")
    row = {"labels": labels}
    row["train"] = timed("train.py", "--device", "cpu", "--dataset_dir", data, "--model_name", run / "scratch",
                         "--save_dir", run / "checkpoint", "--epochs", 1, "--batch_size", 32, "--learning_rate",
                         1e-3, "--logging_steps", 10, log=run / "train.log")
    row["step_ms"] = step_ms(run / "train.log")
    label_list = (data / "label.txt").read_text(encoding="utf-8").split()
    examples = load_examples(data / "dev.txt", label_list)
    probs = text_probs(load_model(str(run / "checkpoint")), load_tokenizer(str(run / "checkpoint")),
                       [e.text for e in examples], 128, 32)
    start = time.perf_counter()
    tune_thresholds(probs, multi_hot(examples, labels), 0.5)
    row["tune_s"] = time.perf_counter() - start
    row["predict"] = timed("predict.py", "--device", "cpu", "--dataset_dir", data, "--params_path",
                           run / "checkpoint", "--output_file", run / "output.txt", log=run / "predict.log")
    row["evaluate"] = timed("analysis/evaluate.py", "--device", "cpu", "--dataset_dir", data, "--params_path",
                            run / "checkpoint", log=run / "evaluate.log")
    timed("export_model.py", "--params_path", run / "checkpoint", "--output_path", run / "export", log=run / "export.log")
    with tempfile.TemporaryDirectory() as work:
        target = TritonTarget(run / "export", run / "triton.log", Path(work))
        try:
            client = target.client()
            texts = [e.text for e in examples[:100]]
            start = time.perf_counter()
            for text in texts:
                client.labels(text)
            row["triton_ms"] = (time.perf_counter() - start) / len(texts) * 1000
            server = psutil.Process(target.process.pid)
            row["triton_rss"] = sum(p.memory_info().rss for p in [server, *server.children(recursive=True)]) / 2**20
        finally:
            target.process.kill()  # a graceful Triton shutdown waits 30 s for nothing here
            target.process.wait()
    return row


def budget_row(out: Path, data: Path, loss: str, epochs: int, warmup_steps: int, classifier_bias: str) -> dict:
    run = out / f"budget_{loss}"
    if not (out / "budget_scratch" / "model_state.pdparams").is_file():
        timed("scratch_model.py", "--dataset_dir", data, "--output_dir", out / "budget_scratch",
              log=out / "budget_scratch.log")
    seconds, _ = timed("train.py", "--device", "cpu", "--dataset_dir", data, "--model_name", out / "budget_scratch",
                       "--save_dir", run, "--epochs", epochs, "--batch_size", 32, "--learning_rate", 1e-3,
                       "--warmup_steps", warmup_steps, "--logging_steps", 50, "--loss", loss, "--tune_thresholds",
                       "--classifier_bias", classifier_bias, log=out / f"budget_{loss}.log")
    label_list = (data / "label.txt").read_text(encoding="utf-8").split()
    examples = load_examples(data / "dev.txt", label_list)
    model = load_model(str(run))
    probs = text_probs(model, load_tokenizer(str(run)), [e.text for e in examples], 128, 64)
    row = {"loss": loss, "minutes": seconds / 60}
    for name, thresholds in (("0.5", np.full(len(label_list), 0.5)),
                             ("tuned", np.asarray(model.config.multi_label_thresholds))):
        metric = MetricReport(decision=thresholds)
        metric.update(probs, multi_hot(examples, len(label_list)))
        row[name] = metric.accumulate()
    return row


def tables(scale: list[dict], budget: list[dict], args: argparse.Namespace) -> str:
    lines = []
    if scale:  # a budget-only run (empty --label_counts, nothing kept) has no scale table
        lines += ["#### Stage cost against the label count (2,000 train / 500 dev lines; seconds, peak RSS MB)", "",
                  "| labels | train 1 epoch | ms/step | tune thresholds s | predict.py | evaluate.py | Triton ms/request "
                  "| Triton server RSS |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {row['labels']} | {row['train'][0]:.1f} s, {row['train'][1]:.0f} MB | {row['step_ms']:.1f} | "
                  f"{row['tune_s']:.2f} | {row['predict'][0]:.1f} s, {row['predict'][1]:.0f} MB | "
                  f"{row['evaluate'][0]:.1f} s, {row['evaluate'][1]:.0f} MB | {row['triton_ms']:.1f} | "
                  f"{row['triton_rss']:.0f} MB |" for row in scale]
        lines.append("")
    lines += [f"#### Dev F1 on {args.budget_labels} Zipf labels (6,000 train / 1,000 dev lines) after "
              f"{args.budget_epochs} epochs (batch 32, lr 1e-3, warmup {args.budget_warmup_steps} steps, tiny scratch "
              f"model, --classifier_bias {args.classifier_bias})", "",
              "| loss | micro F1 (0.5) | macro F1 (0.5) | micro F1 (tuned) | macro F1 (tuned) | train min |",
              "|---|---|---|---|---|---|"]
    for row in budget:
        lines.append(f"| {row['loss']} | {row['0.5'][0] * 100:.2f} | {row['0.5'][1] * 100:.2f} | "
                     f"{row['tuned'][0] * 100:.2f} | {row['tuned'][1] * 100:.2f} | {row['minutes']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "scale_rows.json"  # scale rows of an earlier run are kept when --label_counts is empty
    scale = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() and not args.label_counts else []
    budget = []
    for count in args.label_counts:
        scale.append(scale_row(out, count))
        saved.write_text(json.dumps(scale) + "\n", encoding="utf-8")
    data = generate(out, args.budget_labels, 6000, 1000)
    for loss in args.losses:
        budget.append(budget_row(out, data, loss, args.budget_epochs, args.budget_warmup_steps, args.classifier_bias))
    save_result(args.result, tables(scale, budget, args))


if __name__ == "__main__":
    main()
