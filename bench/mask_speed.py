"""Training step time on CPU: paddlenlp's -1e4 attention mask vs ours, random vs length-grouped batches.

Usage: python bench/mask_speed.py --dataset_dir divorce [--steps 12]

Part 1 times single steps on one randomly padded 32 x 128 batch (and the same batch without
padding), interleaving the cases so machine noise hits all of them alike, and checks that the
logits of both masks agree. Part 2 times whole batches drawn from a real training file with the
reference's batching (random order, -1e4 mask) and ours (length-grouped, fast mask).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import paddle
from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification, ErnieTokenizer

from data_io import load_examples, read_label_list
from modeling import dygraph_pipeline, model_inputs
from pipeline import length_grouped_batches
from scratch_model import build_vocab
from training import encode_examples, labelled_batch
from utils import set_device

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--dataset_dir", required=True, help="The divorce dataset directory (README 2.3).")
parser.add_argument("--steps", type=int, default=12, help="timed steps per case (after one warm-up step)")
parser.add_argument("--batch_size", type=int, default=32)
parser.add_argument("--max_seq_length", type=int, default=128)


def make_model(vocab_size: int, num_labels: int):
    """The 4-layer, 256-hidden ERNIE of the original measurement."""
    paddle.seed(0)
    config = ErnieConfig(vocab_size=vocab_size, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=1024, num_labels=num_labels)
    model = ErnieForSequenceClassification(config)
    optimizer = paddle.optimizer.AdamW(1e-4, parameters=model.parameters())
    return model, optimizer


def train_step(model, optimizer, inputs: dict, labels) -> float:
    start = time.perf_counter()
    logits = model(**inputs)
    loss = paddle.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    return time.perf_counter() - start


def interleaved_times(cases: dict, steps: int) -> dict:
    """Seconds per step for each case; the cases take turns so machine noise spreads evenly."""
    times = {name: [] for name in cases}
    for name, run in cases.items():
        run(0)  # warm-up
    for step in range(steps):
        for name, run in cases.items():
            times[name].append(run(step))
    return times


def synthetic_batch_table(model, optimizer, args) -> None:
    rng = np.random.default_rng(0)
    full = rng.integers(5, 3000, size=(args.batch_size, args.max_seq_length))
    padded = full.copy()
    for row, length in enumerate(rng.integers(20, args.max_seq_length + 1, size=args.batch_size)):
        padded[row, length:] = 0
    labels = paddle.to_tensor((rng.random((args.batch_size, 20)) < 0.2).astype("float32"))
    batches = {"unpadded": {"input_ids": paddle.to_tensor(full)}, "padded": {"input_ids": paddle.to_tensor(padded)}}
    cases = {
        "unpadded batch, no mask": lambda _: train_step(model, optimizer, batches["unpadded"], labels),
        "padded, paddlenlp -1e4 mask": lambda _: train_step(model, optimizer, batches["padded"], labels),
        "padded, utils.model_inputs mask": lambda _: train_step(
            model, optimizer, model_inputs(batches["padded"], pad_token_id=0), labels),
    }
    medians = {name: statistics.median(t) for name, t in interleaved_times(cases, args.steps).items()}
    model.eval()
    with paddle.no_grad():
        diff = float((model(**batches["padded"]) - model(**model_inputs(batches["padded"], 0))).abs().max())
    model.train()
    base = medians["padded, paddlenlp -1e4 mask"]
    print(f"\n### One {args.batch_size} x {args.max_seq_length} batch, 4-layer 256-hidden ERNIE "
          f"(median of {args.steps} steps)\n")
    print("| case | s/step | speed-up vs -1e4 mask |\n|---|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value:.2f} | {base / value:.2f}x |")
    print(f"\nmax |logits(-1e4 mask) - logits(our mask)| in eval mode: {diff:.2e}")


def real_data_table(model, optimizer, args) -> None:
    dataset = Path(args.dataset_dir)
    labels = read_label_list(dataset / "label.txt")
    examples = load_examples(dataset / "train.txt", labels)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "vocab.txt").write_text("\n".join(build_vocab(e.text for e in examples)), encoding="utf-8")
        tokenizer = ErnieTokenizer(str(Path(tmp, "vocab.txt")))
    pipeline = dygraph_pipeline(tokenizer, args.max_seq_length)
    data = encode_examples(pipeline, examples, len(labels))
    lengths = data.rows.lengths.tolist()
    random_batches = list(paddle.io.BatchSampler(range(len(lengths)), batch_size=args.batch_size, shuffle=True))
    grouped_batches = length_grouped_batches(lengths, args.batch_size, np.random.default_rng(0))

    def runner(batches, fast_mask: bool):
        def run(step: int) -> float:
            batch = labelled_batch(pipeline, data, batches[step % len(batches)])
            inputs = model_inputs(batch, 0) if fast_mask else {"input_ids": batch["input_ids"],
                                                               "token_type_ids": batch["token_type_ids"]}
            return train_step(model, optimizer, inputs, paddle.cast(batch["labels"], "float32"))
        return run

    cases = {
        "reference: random batches, -1e4 mask": runner(random_batches, False),
        "random batches, fast mask": runner(random_batches, True),
        "ours: length-grouped batches, fast mask": runner(grouped_batches, True),
    }
    # batches differ in length, so the mean over consecutive batches of the shuffled epoch estimates an epoch
    means = {name: statistics.mean(t) for name, t in interleaved_times(cases, args.steps).items()}
    padding = {
        "random": 1 - sum(lengths) / sum(max(lengths[i] for i in b) * len(b) for b in random_batches),
        "grouped": 1 - sum(lengths) / sum(max(lengths[i] for i in b) * len(b) for b in grouped_batches),
    }
    base = means["reference: random batches, -1e4 mask"]
    print(f"\n### Batches of {dataset.name}/train.txt ({len(lengths)} examples, max_seq_length "
          f"{args.max_seq_length}, batch {args.batch_size}; mean of the first {args.steps} batches of an epoch)\n")
    print(f"padding share: random batches {padding['random']:.0%}, length-grouped {padding['grouped']:.0%}\n")
    print("| batching | s/step | epoch estimate (s) | speed-up |\n|---|---|---|---|")
    for name, value in means.items():
        print(f"| {name} | {value:.2f} | {value * len(random_batches):.0f} | {base / value:.2f}x |")


def main() -> None:
    args = parser.parse_args()
    set_device("cpu")
    model, optimizer = make_model(8000, 20)  # covers the synthetic ids and a char vocabulary
    synthetic_batch_table(model, optimizer, args)
    if Path(args.dataset_dir).is_dir():
        real_data_table(model, optimizer, args)
    else:
        print(f"\n(no {args.dataset_dir}: real-data table skipped)")


if __name__ == "__main__":
    main()
