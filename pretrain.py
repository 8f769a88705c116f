"""Continue masked-LM pretraining of an ERNIE model on unlabelled texts of the task's domain.

Teams that label texts usually have far more unlabelled texts of the same kind; continuing the
model's pretraining on them before fine-tuning ("domain-adaptive pretraining") is the standard way
to use them. `--model_name` is an ERNIE 3.0 name or directory, a scratch_model.py directory or a
train.py checkpoint; the output directory holds the model with its tokenizer and is a valid
`--model_name` for train.py (and `--model_name_or_path` for few-shot/). The corpus is streamed
(files, directories or globs of .txt/.gz with one document a line, or .jsonl), split into sentences
and packed into blocks; training runs on the suite's training loop, so resumable states,
gradient accumulation, mixed precision, multi-card launch and the metrics history work as in train.py.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
from dataclasses import fields

from cli import (
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    SEQ_LENGTH,
    UNIT_INTERVAL_OPEN,
    ArgumentParser,
    bounded,
)
from corpus import corpus_files, iter_pieces
from mlm import MASKINGS, MLMSettings, RunOptions, pretrain
from training import AMP_DTYPES
from utils import run_cli

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--model_name", required=True, help="The model to continue: an ERNIE 3.0 name (downloaded when online) or a local model directory (scratch_model.py, a train.py checkpoint, an earlier pretrain.py output).")
parser.add_argument("--corpus", required=True, nargs="+", help="Unlabelled texts: files, directories (their .txt/.gz/.jsonl files) or glob patterns; .txt and .gz hold one document a line, .jsonl one JSON object a line.")
parser.add_argument("--text_field", default="text", help="The field of a .jsonl record that holds its text.")
parser.add_argument("--output_dir", required=True, help="Where to write the pretrained model, its tokenizer, the metrics history and resumable states.")
parser.add_argument("--device", default="gpu", help="gpu or cpu.")
parser.add_argument("--max_seq_length", default=128, type=SEQ_LENGTH, help="Tokens per packed block, with [CLS] and [SEP].")
parser.add_argument("--pack_across_documents", action="store_true", help="Let a block continue into the next document (after a [SEP]); by default every block holds sentences of one document only.")
parser.add_argument("--masking", default="token", choices=MASKINGS, help="token: each token is chosen on its own; whole_word: the tokens of a word (jieba segmentation) are chosen together.")
parser.add_argument("--mlm_probability", default=0.15, type=bounded(float, 0, 1, low_open=True, high_open=True), help="Share of the tokens (words, with whole_word) predicted; of those 80%% become [MASK], 10%% a random token, 10%% stay.")
parser.add_argument("--validation_split", default=0.0, type=UNIT_INTERVAL_OPEN, help="Share of the documents held out to report masked-token loss and accuracy after every epoch (0: none).")
parser.add_argument("--epochs", default=3, type=POSITIVE_INT, help="Passes over the corpus.")
parser.add_argument("--max_steps", default=0, type=NON_NEGATIVE_INT, help="Stop after this many optimizer steps, evaluating at the end (0: run all --epochs); the learning-rate schedule spans these steps.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Blocks per batch and process.")
parser.add_argument("--learning_rate", default=5e-5, type=POSITIVE_FLOAT, help="Peak learning rate (linear warmup, then linear decay to 0); 5e-5 suits a pretrained model, a scratch model learns faster with 5e-4.")
parser.add_argument("--warmup_proportion", default=0.1, type=UNIT_INTERVAL_OPEN, help="Share of the optimizer steps spent warming up.")
parser.add_argument("--weight_decay", default=0.01, type=bounded(float, 0), help="AdamW weight decay (not on biases and LayerNorm).")
parser.add_argument("--seed", default=3, type=SEED, help="Random seed of the data order and the masks.")
parser.add_argument("--gradient_accumulation_steps", default=1, type=POSITIVE_INT, help="Batches whose gradients are summed before each optimizer step.")
parser.add_argument("--amp", choices=list(AMP_DTYPES), default=None, help="Mixed precision on GPU: fp16 or bf16.")
parser.add_argument("--logging_steps", default=10, type=POSITIVE_INT, help="Log the loss every this many optimizer steps.")
parser.add_argument("--save_last", action="store_true", help="Write a resumable state into <output_dir>/resume/ after every epoch.")
parser.add_argument("--save_last_steps", default=0, type=NON_NEGATIVE_INT, help="Also write the resumable state every this many optimizer steps (implies --save_last).")
parser.add_argument("--resume_from_checkpoint", default=None, help="Continue a run exactly from its resumable state (an --output_dir written with --save_last).")
# yapf: enable


def settings_of(args: argparse.Namespace, kind: type):
    return kind(**{field.name: getattr(args, field.name) for field in fields(kind)})


def run(args: argparse.Namespace) -> dict:
    files = corpus_files(args.corpus)
    return pretrain(args.model_name, args.output_dir, iter_pieces(files, args.text_field), settings_of(args, MLMSettings),
                    settings_of(args, RunOptions), {str(path): path for path in files})


def main(argv: list[str] | None = None) -> dict:
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
