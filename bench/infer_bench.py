"""CPU inference speed of every backend and precision, and the F1 each keeps on a trained model.

Usage: python bench/infer_bench.py --dataset_dir divorce
                                   [--trained_checkpoint bench/out/accuracy/checkpoint ...]

1. Speed: a scratch model with the ernie-3.0-medium-zh shape (6 layers, hidden 768: the cost of
   the real weights) is exported with export_model.py and labels the dev texts with each variant,
   tokenization included: batch 32 (length-sorted), batch 1, and batch 32 padded to 128 tokens
   (the fixed shape of the first measurement in the issue). Each timed pass follows one warm-up
   pass over the same texts (engines compile kernels per input shape).
2. Length-sorted batching against the reference's padding (every batch padded to the longest
   text of the whole input), for Paddle Inference FP32 and the fastest variant.
3. Peak: one large matmul through numpy (FP32) and OpenVINO (FP32, BF16, INT8), to show how close
   each variant runs to the machine's limit.
4. Accuracy: each trained checkpoint (bench/accuracy.py's output) is exported and every variant's
   micro/macro F1 on test.txt is compared with the dygraph model (inference.parity_rows).
All cases run in this one process, one after another, on --num_threads threads.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
from benchtools import ROOT, save_result, seconds

from backends import create_backend, variants
from data_io import load_examples, multi_hot, read_label_list
from decision import Decision
from exporting import load_export, load_export_tokenizer
from modeling import DygraphRunner, load_model, load_tokenizer, save_checkpoint, text_probs
from parity import parity_rows
from pipeline import TextPipeline
from scratch_model import create_scratch_model
from utils import batched, set_device

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--dataset_dir", required=True, help="The divorce dataset directory (README 2.3).")
parser.add_argument("--trained_checkpoint", nargs="+", default=[str(ROOT / "bench/out/accuracy/checkpoint")],
                    help="checkpoints trained on dataset_dir (bench/accuracy.py writes one)")
parser.add_argument("--out_dir", default=str(ROOT / "bench/out/infer"))
parser.add_argument("--num_threads", type=int, default=2)
parser.add_argument("--batch1_texts", type=int, default=64, help="texts timed one by one")
parser.add_argument("--padded_texts", type=int, default=64, help="texts timed in batches padded to 128 tokens")
parser.add_argument("--dygraph_texts", type=int, default=128, help="dygraph is slow: time it on fewer texts")


def timed_batches(pipeline: TextPipeline, backend, texts: list[str], batch_size: int, pad_to: int | None = None
                  ) -> tuple[float, list[float]]:
    """One warm-up pass, then a timed pass: (samples/s, per-batch ms), tokenization included."""
    pipeline.batch_size = batch_size
    for measure in (False, True):
        times = []
        start = time.perf_counter()
        encoded = pipeline.encode(texts)
        in_order = [list(rows) for rows in batched(range(len(encoded)), batch_size)]
        for rows in (pipeline.batches(encoded) if pad_to is None else in_order):
            t0 = time.perf_counter()
            feed = pipeline.pad(encoded, rows)
            if pad_to is not None:
                feed = {k: np.pad(v, ((0, 0), (0, pad_to - v.shape[1])), constant_values=(
                    pipeline.tokenizer.pad_token_id if k == "input_ids" else 0)) for k, v in feed.items()}
            backend.run(feed)
            times.append(1000 * (time.perf_counter() - t0))
        total = time.perf_counter() - start
    return len(texts) / total, times


def flops_per_sample(config, length: float) -> float:
    """Multiply-adds x2 of the encoder at a sequence length (embeddings and head are negligible)."""
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = 2 * (4 * h * h + 2 * h * ffn) + 2 * 2 * length * h
    return layers * length * per_token


def matmul_peaks(threads: int) -> dict[str, float]:
    """GFLOP/s (GOP/s for INT8) of a 2048^3 matmul, the best of 10 runs (the machine is shared)."""
    import nncf
    import openvino as ov
    import openvino.opset13 as ops

    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n)).astype("float32")

    def best(fn) -> float:
        fn()
        return min(seconds(fn) for _ in range(10))

    peaks = {"numpy fp32": 2 * n ** 3 / best(lambda: a @ a) / 1e9}
    core = ov.Core()
    param = ops.parameter([n, n], np.float32, name="x")
    model = ov.Model([ops.matmul(param, ops.constant(a), False, False)], [param])
    feed = {"x": a}
    with contextlib.redirect_stdout(sys.stderr):  # keep NNCF's progress bars out of the tables
        quantized = nncf.quantize(model, nncf.Dataset([feed]), subset_size=1)
    for name, m, hint in (("openvino fp32", model, "f32"), ("openvino bf16", model, "bf16"),
                          ("openvino int8", quantized, "f32")):
        request = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads}
                                     ).create_infer_request()
        peaks[name] = 2 * n ** 3 / best(lambda: request.infer(feed)) / 1e9
    return peaks


def export(checkpoint: Path, output: Path, dataset: Path) -> Path:
    if not (output / "export_meta.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "export_model.py"), "--params_path", str(checkpoint),
                        "--output_path", str(output), "--dataset_dir", str(dataset)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return output / "float32"


def medium_checkpoint(dataset: Path, out: Path) -> Path:
    """A random ernie-3.0-medium-zh-shaped classifier with the data set's labels."""
    checkpoint = out / "medium_checkpoint"
    if not (checkpoint / "config.json").is_file():
        labels = read_label_list(dataset / "label.txt")
        create_scratch_model(str(dataset), str(out / "medium_scratch"), "ernie-3.0-medium-zh")
        model = load_model(str(out / "medium_scratch"), num_labels=len(labels))
        save_checkpoint(model, load_tokenizer(str(out / "medium_scratch")), checkpoint, labels,
                        Decision.stored(None, None, len(labels)))
    return checkpoint


def speed_tables(args, dataset: Path, out: Path) -> str:
    lines = []
    peaks = matmul_peaks(args.num_threads)
    checkpoint = medium_checkpoint(dataset, out)
    export_info = load_export(export(checkpoint, out / "medium_export", dataset))
    tokenizer = load_export_tokenizer(export_info)
    pipeline = TextPipeline(tokenizer, export_info.input_names, 128)
    texts = [e.text for e in load_examples(dataset / "dev.txt", export_info.labels)]
    train_texts = [e.text for e in load_examples(dataset / "train.txt", export_info.labels)][:300]
    lengths = pipeline.encode(texts).lengths
    mean_len = float(np.mean(lengths))
    model = load_model(str(checkpoint))
    flops_real, flops_128 = flops_per_sample(model.config, mean_len), flops_per_sample(model.config, 128)
    lines.append(f"\nModel: ernie-3.0-medium-zh shape, random weights; {len(texts)} dev texts of {dataset.name}, "
          f"mean {mean_len:.1f} tokens (max 128); {args.num_threads} threads.")
    lines.append(f"FLOP per sample: {flops_real / 1e9:.2f} G at the mean length, {flops_128 / 1e9:.2f} G at 128 tokens.\n")

    engines = {"dygraph fp32": DygraphRunner(model, tokenizer.pad_token_id)}
    for backend, precision in variants("cpu"):
        engines[f"{backend} {precision}"] = create_backend(
            export_info, backend, precision, "cpu", 0, args.num_threads,
            lambda: pipeline.feeds(pipeline.encode(train_texts)))
    results = {}
    for name, engine in engines.items():
        subset = texts[:args.dygraph_texts] if name.startswith("dygraph") else texts
        rate32, times32 = timed_batches(pipeline, engine, subset, 32)
        rate1, times1 = timed_batches(pipeline, engine, subset[:args.batch1_texts], 1)
        rate128, _ = timed_batches(pipeline, engine, subset[:args.padded_texts], 32, pad_to=128)
        results[name] = (rate32, times32, rate1, times1, rate128)
        print(f"  measured {name}: {rate32:.1f} samples/s", file=sys.stderr, flush=True)

    base = results["paddle fp32"]
    lines.append("| variant | batch 32 samples/s | p50 / p95 ms per batch | batch 1 samples/s | p50 / p95 ms | "
          "padded 128: samples/s | × Paddle Inference FP32 (batch 32 / batch 1 / padded) | GFLOP/s (padded) |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, (rate32, times32, rate1, times1, rate128) in results.items():
        lines.append(f"| {name} | {rate32:.1f} | {np.percentile(times32, 50):.0f} / {np.percentile(times32, 95):.0f} | "
              f"{rate1:.1f} | {np.percentile(times1, 50):.1f} / {np.percentile(times1, 95):.1f} | {rate128:.1f} | "
              f"{rate32 / base[0]:.2f} / {rate1 / base[2]:.2f} / {rate128 / base[4]:.2f} | "
              f"{rate128 * flops_128 / 1e9:.0f} |")

    best = max((n for n in results if not n.startswith("dygraph")), key=lambda n: results[n][0])
    lines.append("\nLength-sorted batching vs the reference's padding to the longest text of the whole input "
          "(batch 32, samples/s):\n")
    lines.append("| variant | padded to input max | length-sorted | gain |")
    lines.append("|---|---|---|---|")
    for name in dict.fromkeys(["paddle fp32", best]):
        padded, _ = timed_batches(pipeline, engines[name], texts, 32, pad_to=max(lengths))
        lines.append(f"| {name} | {padded:.1f} | {results[name][0]:.1f} | {results[name][0] / padded:.2f}× |")

    lines.append("\nPeak of one 2048×2048×2048 matmul (best of 10, measured before the models):\n")
    lines.append("| library | GFLOP/s (GOP/s for INT8) |")
    lines.append("|---|---|")
    for name, peak in peaks.items():
        lines.append(f"| {name} | {peak:.0f} |")
    return "\n".join(lines) + "\n"


def accuracy_table(args, checkpoint: Path, dataset: Path, export_dir: Path) -> str:
    lines = []
    export_info = load_export(export(checkpoint, export_dir, dataset))
    tokenizer = load_export_tokenizer(export_info)
    pipeline = TextPipeline(tokenizer, export_info.input_names, 128)
    examples = load_examples(dataset / "test.txt", export_info.labels)
    texts, labels = [e.text for e in examples], multi_hot(examples, len(export_info.labels))
    train_texts = [e.text for e in load_examples(dataset / "train.txt", export_info.labels)][:300]
    reference = text_probs(load_model(str(checkpoint)), load_tokenizer(str(checkpoint)), texts, 128)
    probs = {}
    for backend, precision in variants("cpu"):
        engine = create_backend(export_info, backend, precision, "cpu", 0, args.num_threads,
                                lambda: pipeline.feeds(pipeline.encode(train_texts)))
        probs[f"{backend} {precision}"] = pipeline.probs(engine, texts)
    rows = parity_rows(reference, probs, export_info.decision, labels)
    config = load_model(str(checkpoint)).config
    lines.append(f"\nAccuracy on {dataset.name} test.txt ({len(texts)} texts), trained checkpoint {checkpoint} "
          f"({config.num_hidden_layers} layers, hidden {config.hidden_size}):\n")
    lines.append("| variant | max abs Δprob | flipped label decisions | micro F1 | macro F1 | Δ micro / macro |")
    lines.append("|---|---|---|---|---|---|")
    for row in rows:
        lines.append(f"| {row['variant']} | {row['max_abs_diff']:.1e} | {row['changed_decisions']:.2%} | "
              f"{100 * row['micro_f1']:.2f} | {100 * row['macro_f1']:.2f} | "
              f"{100 * (row['micro_f1'] - rows[0]['micro_f1']):+.2f} / "
              f"{100 * (row['macro_f1'] - rows[0]['macro_f1']):+.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parser.parse_args()
    set_device("cpu")
    paddle.base.core.set_num_threads(args.num_threads)
    dataset, out = Path(args.dataset_dir), Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = [Path(c) for c in args.trained_checkpoint]
    for checkpoint in checkpoints:
        if not (checkpoint / "config.json").is_file():
            sys.exit(f"{checkpoint} is not a trained checkpoint: run bench/accuracy.py first or pass "
                     f"--trained_checkpoint")
    report = "".join(accuracy_table(args, checkpoint, dataset, out / f"trained_export_{i}")
                     for i, checkpoint in enumerate(checkpoints))
    save_result("infer", report + speed_tables(args, dataset, out))


if __name__ == "__main__":
    main()
