"""training.TrainingLoop against paddlenlp's Trainer: the measurement behind the suite's one training loop.

The same freshly initialised model (scratch_model.py preset), the same training texts, batch size,
AdamW and linear schedule, the same number of steps; only the loop differs:

- ours: training.TrainingLoop over pipeline-bucketed batches with the fast padding mask (train.py);
- Trainer, stock: paddlenlp.trainer.Trainer with its random sampler, DataCollatorWithPadding and the
  model's own attention mask, as a Trainer-based train.py would run out of the box;
- Trainer, our batches: the same Trainer with get_train_dataloader / compute_loss overridden to
  feed our batches and mask, to tell the loop's own cost from the batching's.

Variants run in turns (A B C A B C ...) in one process and the median per variant is reported,
as a ratio to ours. Writes a Markdown table.

    python bench/train_loop_bench.py --dataset_dir <divorce> --steps 120 --out bench/out/train_loop.md
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import paddle
from paddlenlp.data import DataCollatorWithPadding
from paddlenlp.datasets import MapDataset
from paddlenlp.trainer import Trainer, TrainingArguments
from paddlenlp.transformers import LinearDecayWithWarmup

from data_io import load_examples, read_label_list
from losses import get_loss
from modeling import dygraph_pipeline, load_model, load_tokenizer, model_inputs
from scratch_model import create_scratch_model
from training import TrainingLoop, build_optimizer, encode_examples, labelled_batches
from utils import set_device, set_seed

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset_dir", required=True, help="Directory with train.txt and label.txt.")
parser.add_argument("--preset", default="tiny", help="scratch_model.py preset of the model trained.")
parser.add_argument("--batch_size", type=int, default=32)
parser.add_argument("--steps", type=int, default=120, help="Training steps per timed run.")
parser.add_argument("--repeats", type=int, default=3, help="Timed runs per variant (median reported).")
parser.add_argument("--max_seq_length", type=int, default=128)
parser.add_argument("--learning_rate", type=float, default=1e-3)
parser.add_argument("--out", default="bench/out/train_loop.md", help="Where the Markdown table is written.")

LOSS = get_loss("bce")


def run_ours(model, pipeline, data, args) -> float:
    batches = labelled_batches(pipeline, data, args.batch_size, seed=0)
    scheduler = LinearDecayWithWarmup(args.learning_rate, args.steps, 0)
    optimizer = build_optimizer(model, scheduler, 0.0)

    def train_step(batch, backward):
        loss = LOSS(model(**model_inputs(batch, pipeline.tokenizer.pad_token_id)), batch["labels"])
        backward(loss)
        return loss

    start = time.perf_counter()
    TrainingLoop(model, batches, train_step, optimizer, scheduler, args.steps, main_process=False).run()
    return time.perf_counter() - start


class BatchedTrainer(Trainer):
    """Trainer fed with our batches and padding mask."""

    def __init__(self, *trainer_args, our_batches, pad_token_id, **kwargs):
        super().__init__(*trainer_args, **kwargs)
        self.our_batches, self.pad_token_id = our_batches, pad_token_id

    def get_train_dataloader(self):
        return self.our_batches

    def compute_loss(self, model, inputs, return_outputs=False):
        return LOSS(model(**model_inputs(inputs, self.pad_token_id)), inputs["labels"])


def run_trainer(model, pipeline, data, args, our_batches: bool) -> float:
    tokenizer = pipeline.tokenizer
    features = [{"input_ids": ids, "token_type_ids": types, "labels": target.tolist()} for ids, types, target in
                zip(data.rows.features["input_ids"], data.rows.features["token_type_ids"],
                    data.targets[data.rows.source])]
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=args.batch_size,
                                          learning_rate=args.learning_rate, max_steps=args.steps,
                                          logging_steps=args.steps, save_strategy="no", evaluation_strategy="no",
                                          report_to=["none"], disable_tqdm=True, device="cpu", seed=0)
        common = dict(model=model, args=training_args, train_dataset=MapDataset(features),
                      data_collator=DataCollatorWithPadding(tokenizer, return_tensors="pd"))
        if our_batches:
            trainer = BatchedTrainer(**common, our_batches=labelled_batches(pipeline, data, args.batch_size, seed=0),
                                     pad_token_id=tokenizer.pad_token_id)
        else:
            trainer = Trainer(**common, criterion=paddle.nn.BCEWithLogitsLoss())
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def main() -> None:
    args = parser.parse_args()
    set_device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = create_scratch_model(args.dataset_dir, str(Path(tmp, "model")), args.preset)
        labels = read_label_list(Path(args.dataset_dir) / "label.txt")
        tokenizer = load_tokenizer(str(model_dir))
        pipeline = dygraph_pipeline(tokenizer, args.max_seq_length, args.batch_size)
        data = encode_examples(pipeline, load_examples(Path(args.dataset_dir) / "train.txt", labels), len(labels))
        variants = {
            "ours: training.TrainingLoop, bucketed batches, fast mask": lambda m: run_ours(m, pipeline, data, args),
            "paddlenlp Trainer, stock (random batches, its mask)": lambda m: run_trainer(m, pipeline, data, args, False),
            "paddlenlp Trainer, our batches and mask": lambda m: run_trainer(m, pipeline, data, args, True),
        }
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():
                set_seed(0)
                seconds[name].append(run(load_model(str(model_dir), len(labels))))
    base = statistics.median(seconds[next(iter(variants))])
    lengths = data.rows.lengths
    lines = [f"{args.steps} steps of batch {args.batch_size} on {Path(args.dataset_dir).name}/train.txt "
             f"({len(lengths)} texts, mean {np.mean(lengths):.1f} tokens), preset {args.preset}, "
             f"median of {args.repeats} runs taken in turns", "",
             "| loop | s per run | steps/s | time vs ours |", "|---|---|---|---|"]
    for name, values in seconds.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.1f} | {args.steps / median:.2f} | {median / base:.2f}x |")
    table = "\n".join(lines) + "\n"
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
