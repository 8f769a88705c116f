"""Width pruning: F1 and CPU throughput of the unpruned model and each width, FP32 and INT8.

Usage: python bench/prune_bench.py --teacher bench/out/prune/teacher --dataset_dir divorce

1. Accuracy and speed of a trained model: prune.py prunes --teacher (a checkpoint trained on
   dataset_dir with 12 heads, so that 3/4, 2/3 and 1/2 are all valid); the teacher is exported
   with export_model.py. Every model's micro/macro F1 on dev and test is measured through ONNX
   Runtime FP32, ONNX Runtime INT8 (dynamic) and OpenVINO INT8 (NNCF, calibrated on train.txt).
2. Speed at the real model size: a random ernie-3.0-medium-zh-shaped classifier is narrowed to
   each width (no training: weights do not change the speed) and exported the same way.
Throughput is samples/s labelling the dev texts in length-sorted batches of 32, tokenization
included, after one warm-up pass; every ratio is against the unpruned model's Paddle Inference
FP32 in the same run. All timings run in this one process on --num_threads threads.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import shlex
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import paddle
from benchtools import ROOT, markdown_table, save_result

from backends import create_backend
from data_io import load_examples, multi_hot
from dynabert import PRUNED_PREFIX, export_width, width_name
from exporting import load_export, load_export_tokenizer
from metric import MetricReport
from modeling import checkpoint_decision, checkpoint_labels, load_model, load_tokenizer, save_checkpoint
from pipeline import TextPipeline
from pruning import encoder_layers, narrow_to_width
from utils import set_device

from infer_bench import export, medium_checkpoint, timed_batches

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset_dir", required=True, help="The divorce dataset directory (README 2.3).")
parser.add_argument("--teacher", default=str(ROOT / "bench/out/prune/teacher"), help="trained checkpoint to prune")
parser.add_argument("--out_dir", default=str(ROOT / "bench/out/prune"))
parser.add_argument("--result", default="prune", help="The tables go to bench/results/<result>.json.")
parser.add_argument("--width_mult_list", nargs="+", default=["3/4", "2/3", "1/2"])
parser.add_argument("--prune_args", default="--per_device_train_batch_size 16 --per_device_eval_batch_size 32 "
                    "--learning_rate 1e-4 --num_train_epochs 3 --save_steps 125 --logging_steps 50",
                    help="more prune.py arguments")
parser.add_argument("--num_threads", type=int, default=2)
parser.add_argument("--speed_texts", type=int, default=320, help="dev texts per throughput measurement")
parser.add_argument("--skip_medium", action="store_true", help="only the trained model")

VARIANTS = [("paddle", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "int8")]


def run_prune(args, dataset: Path, output: Path) -> None:
    if all((output / width_name(Fraction(w)) / "export_meta.json").is_file() for w in args.width_mult_list):
        print(f"(reusing pruned models in {output})", file=sys.stderr)
        return
    command = [sys.executable, str(ROOT / "prune.py"), "--device", "cpu", "--dataset_dir", str(dataset),
               "--params_dir", args.teacher, "--output_dir", str(output),
               "--width_mult_list", *args.width_mult_list, *shlex.split(args.prune_args)]
    with open(output.parent / "prune.log", "w", encoding="utf-8") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)


def measure(prefix: Path, dataset: Path, args, with_f1: bool) -> dict[str, tuple]:
    """Per variant: samples/s on dev, and (micro, macro) F1 on dev and test when asked."""
    export_info = load_export(prefix)
    pipeline = TextPipeline(load_export_tokenizer(export_info), export_info.input_names, 128)
    splits = {name: load_examples(dataset / f"{name}.txt", export_info.labels) for name in ("dev", "test")}
    calibration = [e.text for e in load_examples(dataset / "train.txt", export_info.labels)][:300]
    results = {}
    for backend, precision in VARIANTS:
        engine = create_backend(export_info, backend, precision, "cpu", 0, args.num_threads,
                                lambda: pipeline.feeds(pipeline.encode(calibration)))
        speed, _ = timed_batches(pipeline, engine, [e.text for e in splits["dev"]][:args.speed_texts], 32)
        f1 = {}
        if with_f1:
            for split, examples in splits.items():
                metric = MetricReport(decision=export_info.decision)
                metric.update(pipeline.probs(engine, [e.text for e in examples]),
                              multi_hot(examples, len(export_info.labels)))
                f1[split] = metric.accumulate()
        results[f"{backend} {precision}"] = (speed, f1)
        print(f"  {prefix.parent.name} {backend} {precision}: {speed:.1f} samples/s", file=sys.stderr, flush=True)
    return results


def shape(checkpoint: Path) -> str:
    layer = encoder_layers(load_model(str(checkpoint)))[0]
    return f"{layer.self_attn.num_heads} / {layer.linear1.weight.shape[1]}"


def table_text(title: str, models: dict[str, tuple[Path, Path]], results: dict[str, dict], with_f1: bool) -> str:
    """`models`: name -> (export prefix, dygraph checkpoint)."""
    base = results["unpruned"]["paddle fp32"][0]
    header = ["model", "heads / FFN", "variant", "samples/s", "× unpruned Paddle FP32"]
    header += ["dev micro / macro F1", "test micro / macro F1"] if with_f1 else []
    rows = []
    for name, (_, checkpoint) in models.items():
        heads_ffn = shape(checkpoint)
        for variant, (speed, f1) in results[name].items():
            f1_cells = [f"{100 * f1[s][0]:.2f} / {100 * f1[s][1]:.2f}" for s in ("dev", "test")] if with_f1 else []
            rows.append([name, heads_ffn, variant, f"{speed:.1f}", f"{speed / base:.2f}", *f1_cells])
    return f"{title}\n\n{markdown_table(header, rows)}"


def trained_tables(args, dataset: Path, out: Path) -> str:
    pruned = out / "pruned"
    pruned.mkdir(parents=True, exist_ok=True)
    run_prune(args, dataset, pruned)
    models = {"unpruned": (export(Path(args.teacher), out / "teacher_export", dataset), Path(args.teacher))}
    for width in args.width_mult_list:
        directory = pruned / width_name(Fraction(width))
        models[f"width {width}"] = (directory / PRUNED_PREFIX, directory)
    results = {name: measure(prefix, dataset, args, with_f1=True) for name, (prefix, _) in models.items()}
    config = load_model(args.teacher).config
    return table_text(f"Trained scratch model ({config.num_hidden_layers} layers, hidden {config.hidden_size}, "
                f"{config.num_attention_heads} heads, FFN {config.intermediate_size}) on {dataset.name}; prune.py "
                f"{args.prune_args}; speed on {args.speed_texts} dev texts, {args.num_threads} threads:",
                models, results, with_f1=True)


def medium_tables(args, dataset: Path, out: Path) -> str:
    checkpoint = medium_checkpoint(dataset, out)
    models = {"unpruned": (export(checkpoint, out / "medium_export", dataset), checkpoint)}
    dev = load_examples(dataset / "dev.txt", None)[:64]
    for text in args.width_mult_list:
        width, directory = Fraction(text), out / "medium_pruned" / width_name(Fraction(text))
        if not (directory / "export_meta.json").is_file():
            model = load_model(str(checkpoint))
            narrow_to_width(model, width)
            save_checkpoint(model, load_tokenizer(str(checkpoint)), directory, checkpoint_labels(model),
                            checkpoint_decision(model))
            export_width(directory, [e.text for e in dev], None, 128)
        models[f"width {text}"] = (directory / PRUNED_PREFIX, directory)
    results = {name: measure(prefix, dataset, args, with_f1=False) for name, (prefix, _) in models.items()}
    return table_text(f"ernie-3.0-medium-zh shape (6 layers, hidden 768, 12 heads, FFN 3072), random weights, narrowed "
                f"without training; {args.speed_texts} dev texts, {args.num_threads} threads:",
                models, results, with_f1=False)


def main() -> None:
    args = parser.parse_args()
    set_device("cpu")
    paddle.base.core.set_num_threads(args.num_threads)
    dataset, out = Path(args.dataset_dir), Path(args.out_dir)
    report = trained_tables(args, dataset, out)
    if not args.skip_medium:
        report += "\n" + medium_tables(args, dataset, ROOT / "bench/out/infer")
    save_result(args.result, report)


if __name__ == "__main__":
    main()
