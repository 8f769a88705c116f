"""What the training features cost on this CPU: mixed precision, gradient accumulation, resumable states.

For the tiny preset and the ernie-3.0-medium-zh shape (random weights; only the shape matters for
speed), one process measures side by side, in turns, with the median per variant:

- step time in fp32, and in bf16 as far as Paddle can run it here (paddle.amp.auto_cast, and a model
  cast to bfloat16); each row says what actually ran (the dtype of the logits, or the error);
- gradient accumulation: seconds per batch with 4 batches per optimizer step against 1;
- the cost of one resumable state (resume.save_state): seconds and bytes.

Writes a Markdown table:

    python bench/train_features.py      (the tables go to bench/results/train_features.json)
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import paddle
from benchtools import save_result
from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification

import resume
from losses import get_loss
from scratch_model import model_config
from training import FixedBatches, MixedPrecision, StepState, TrainingLoop, build_optimizer
from utils import set_device, set_seed

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--presets", nargs="+", default=["tiny", "ernie-3.0-medium-zh"])
parser.add_argument("--batch_size", type=int, default=16)
parser.add_argument("--seq_length", type=int, default=128)
parser.add_argument("--steps", type=int, default=8, help="Batches per timed run.")
parser.add_argument("--repeats", type=int, default=3, help="Timed runs per variant, taken in turns (median).")

LOSS = get_loss("bce")
NUM_LABELS = 20
VOCAB = 3000


def random_batches(steps: int, batch_size: int, seq_length: int, seed: int = 0) -> FixedBatches:
    rng = np.random.default_rng(seed)
    return FixedBatches([{"input_ids": paddle.to_tensor(rng.integers(5, VOCAB, (batch_size, seq_length))),
                          "labels": paddle.to_tensor((rng.random((batch_size, NUM_LABELS)) < 0.1).astype("float32"))}
                         for _ in range(steps)])


def build_model(preset: str) -> ErnieForSequenceClassification:
    set_seed(0)
    config = ErnieConfig(**{**model_config(preset, {}), "vocab_size": VOCAB, "hidden_dropout_prob": 0.0,
                            "attention_probs_dropout_prob": 0.0}, num_classes=NUM_LABELS)
    return ErnieForSequenceClassification(config)


def timed_run(model, batches: FixedBatches, accumulation: int = 1, amp: str | None = None) -> tuple[float, str]:
    """Seconds per batch of one pass over the batches, and the dtype the logits came out in."""
    optimizer = build_optimizer(model, 1e-5, 0.0)
    dtypes = set()

    def train_step(batch, backward):
        logits = model(input_ids=batch["input_ids"])
        dtypes.add(str(logits.dtype).replace("paddle.", ""))
        loss = LOSS(logits.astype("float32"), batch["labels"])
        backward(loss)
        return loss

    total_steps = -(-len(batches) // accumulation)
    start = time.perf_counter()
    TrainingLoop(model, batches, train_step, optimizer, None, total_steps, main_process=False,
                 accumulation_steps=accumulation, precision=MixedPrecision(amp)).run()
    return (time.perf_counter() - start) / len(batches), ",".join(sorted(dtypes))


def bf16_model_step(preset: str, batches: FixedBatches) -> str:
    """A model cast to bfloat16 (what O2 mixed precision would run): the error Paddle gives on CPU, if any."""
    model = build_model(preset)
    model.to(dtype="bfloat16")
    try:
        model(input_ids=batches.batches[0]["input_ids"])
    except RuntimeError as err:
        return str(err).strip().splitlines()[0][:120]
    return "ran"


def save_cost(model, batches: FixedBatches) -> tuple[float, int]:
    """Median seconds of writing one resumable state (after an optimizer step, so the moments exist), and its bytes."""
    optimizer = build_optimizer(model, 1e-5, 0.0)
    batch = batches.batches[0]
    LOSS(model(input_ids=batch["input_ids"]), batch["labels"]).backward()
    optimizer.step()
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for step in range(3):
            start = time.perf_counter()
            state_dir = resume.save_state(tmp, model, optimizer, MixedPrecision().scaler,
                                          {**StepState(global_step=step).position(), "args": {}})
            seconds.append(time.perf_counter() - start)
        size = sum(f.stat().st_size for f in Path(state_dir).iterdir())
    return statistics.median(seconds), size


def main() -> None:
    args = parser.parse_args()
    set_device("cpu")
    warnings.filterwarnings("ignore", message="amp_guard can only be enabled")
    lines = [f"Batch {args.batch_size} x {args.seq_length} tokens, {NUM_LABELS} labels, AdamW, CPU "
             f"({os.cpu_count()} cores), Paddle {paddle.__version__}; median of {args.repeats} "
             f"runs of {args.steps} batches taken in turns", "",
             "| shape | variant | logits dtype | s per batch | vs fp32 |", "|---|---|---|---|---|"]
    saves = []
    for preset in args.presets:
        model = build_model(preset)
        batches = random_batches(args.steps, args.batch_size, args.seq_length)
        timed_run(model, batches)  # warm-up
        variants = {"fp32": dict(), "bf16 auto_cast (--amp bf16 if allowed on CPU)": dict(amp="bf16"),
                    "fp32, 4 batches per optimizer step": dict(accumulation=4)}
        seconds = {name: [] for name in variants}
        dtypes = {}
        for _ in range(args.repeats):
            for name, options in variants.items():
                value, dtypes[name] = timed_run(model, batches, **options)
                seconds[name].append(value)
        base = statistics.median(seconds["fp32"])
        for name in variants:
            median = statistics.median(seconds[name])
            lines.append(f"| {preset} | {name} | {dtypes[name]} | {median:.3f} | {median / base:.2f}x |")
        lines.append(f"| {preset} | model cast to bfloat16 | — | {bf16_model_step(preset, batches)} | — |")
        saves.append((preset, sum(int(np.prod(p.shape)) for p in model.parameters()), *save_cost(model, batches)))
    lines += ["", "| shape | parameters | one resumable state: seconds | bytes |", "|---|---|---|---|"]
    lines += [f"| {preset} | {params / 1e6:.1f} M | {seconds:.3f} | {size / 1e6:.1f} MB |"
              for preset, params, seconds, size in saves]
    save_result("train_features", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
