"""DynaBERT width pruning of a fine-tuned checkpoint, exported per width for deployment.

The reference drives this through paddlenlp's Trainer.compress() and paddleslim's OFA supernet,
which do not run on Paddle 3 without patches and distil multi-label logits with a softmax loss.
Here the same recipe works directly on the ERNIE layers:

1. head and FFN-neuron importance on dev (gradient of the loss w.r.t. a head gate; first-order
   Taylor score of each neuron), then heads and neurons are re-ordered, most important first;
2. width-adaptive training: every step runs every width of the shared weights (a width keeps the
   first heads and neurons) and distils the unpruned teacher into it, with sigmoid/BCE on the
   teacher's probabilities plus MSE on the embedding and layer outputs;
3. every --save_steps each width is evaluated on dev; its best sub-network by macro F1 is cut out
   as a dense smaller model and exported with everything deploy/predictor needs.

This script is the command line and the order of the stages; the surgery (elastic layers, importance,
narrowing) is pruning.py, the DynaBERT loop and the widths' checkpoints and exports dynabert.py.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import math
import random
from fractions import Fraction
from pathlib import Path

import paddle.distributed as dist
from paddlenlp.trainer import CompressionArguments, PdArgumentParser

from cli import (
    MINUS_ONE_OR_MORE,
    NON_NEGATIVE_FLOAT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    SEQ_LENGTH,
    UNIT_INTERVAL_OPEN,
    ArgumentParser,
)
from data_io import load_examples, multi_hot
from dynabert import PRUNED_PREFIX, Pruner, clear_width_dir, export_width, width_name
from losses import get_loss
from modeling import (
    check_max_seq_length,
    checkpoint_decision,
    checkpoint_long_text,
    dygraph_pipeline,
    load_model,
    load_tokenizer,
    resolve_label_list,
)
from pruning import check_widths, encoder_layers, kept_units
from training import (
    AMP_DTYPES,
    check_amp,
    encode_examples,
    evaluate,
    labelled_batches,
    optimizer_steps_per_epoch,
)
from utils import DataError, logger, run_cli, set_device, set_seed, write_settings

# yapf: disable
parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--device", default="gpu", help="Device for pruning: cpu or gpu (gpu:N).")
parser.add_argument("--dataset_dir", required=True, type=str, help="Local dataset directory with train.txt, dev.txt and label.txt.")
parser.add_argument("--output_dir", required=True, type=str, help="Where width_mult_<w>/ directories are written.")
parser.add_argument("--params_dir", default="./checkpoint/", type=str, help="The fine-tuned checkpoint (model and tokenizer) to prune.")
parser.add_argument("--max_seq_length", default=128, type=SEQ_LENGTH, help="Truncation length of the texts.")
parser.add_argument("--per_device_train_batch_size", default=8, type=POSITIVE_INT, help="Training batch size.")
parser.add_argument("--per_device_eval_batch_size", default=8, type=POSITIVE_INT, help="Evaluation batch size.")
parser.add_argument("--learning_rate", default=5e-5, type=POSITIVE_FLOAT, help="Peak learning rate of AdamW.")
parser.add_argument("--num_train_epochs", default=1.0, type=POSITIVE_FLOAT, help="Training epochs (may be fractional).")
parser.add_argument("--max_steps", default=-1, type=MINUS_ONE_OR_MORE, help="If > 0: total training steps, overriding --num_train_epochs.")
parser.add_argument("--warmup_ratio", default=0.1, type=UNIT_INTERVAL_OPEN, help="Share of the steps with linear warmup, then linear decay.")
parser.add_argument("--weight_decay", default=0.0, type=NON_NEGATIVE_FLOAT, help="AdamW weight decay (not on biases and LayerNorm).")
parser.add_argument("--gradient_accumulation_steps", default=1, type=POSITIVE_INT, help="Batches whose gradients are summed before each optimizer step; --max_steps, logging and the schedule count optimizer steps.")
parser.add_argument("--amp", choices=list(AMP_DTYPES), default=None, help="Mixed precision on GPU: fp16 (with dynamic loss scaling) or bf16. Not available on CPU.")
parser.add_argument("--logging_steps", default=100, type=POSITIVE_INT, help="Log the loss every this many steps.")
parser.add_argument("--save_steps", default=100, type=POSITIVE_INT, help="Evaluate every width every this many steps (and at the end) and keep its best.")
parser.add_argument("--seed", default=42, type=SEED, help="Random seed.")
parser.add_argument("--width_mult_list", nargs="+", default=["3/4"], help="Widths to keep, e.g. '3/4' '2/3' '1/2'; width x heads must be an integer.")
parser.add_argument("--strategy", default="dynabert", choices=["dynabert", "dynabert+ptq"], help="DynaBERT width pruning is run, as the reference's script forces; INT8 is done at deployment (deploy/predictor/infer.py --use_quantize).")
# yapf: enable

LOSS = get_loss("bce")  # each label is its own yes/no question, for importance and distillation alike
PARITY_SAMPLES = 256  # dev texts in each width's export parity check


# ------------------------------------------------------------------------------------ widths


def parse_width(text: str) -> Fraction:
    """'3/4', '0.75' or '1/2' as an exact fraction (the reference eval()s these strings)."""
    try:
        width = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise DataError(f"--width_mult_list: '{text}' is not a number or fraction such as 3/4") from None
    if not 0 < width <= 1:
        raise DataError(f"--width_mult_list: {text} must lie in (0, 1]")
    return width




def refuse_unsupported(extra: list[str]) -> None:
    """Name the reference's CompressionArguments options this loop cannot honour, instead of ignoring them.

    The reference parses paddlenlp's whole CompressionArguments (TrainingArguments and more); this
    script runs its own FP32 DynaBERT loop and honours the options of its own parser. Any other option
    is parsed the reference's way, and if it changes anything it is refused with its name;
    an option CompressionArguments does not know either is an argparse error as before.
    """
    if not extra:
        return
    compression = PdArgumentParser((CompressionArguments,))
    probe = ["--output_dir", "unused"]
    given, unknown = compression.parse_known_args(probe + extra)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    default = vars(compression.parse_args(probe))
    changed = [f"--{name}" for name, value in vars(given).items() if value != default[name]]
    if changed:
        honoured = sorted(option for option in parser._option_string_actions if option not in ("-h", "--help"))
        raise DataError(f"prune.py cannot honour {', '.join(changed)} (it runs its own DynaBERT loop); the options it "
                        f"honours: {' '.join(honoured)}")


def check_args(args: argparse.Namespace) -> list[Fraction]:
    if not Path(args.dataset_dir).is_dir():
        raise DataError(f"--dataset_dir {args.dataset_dir} is not a directory")
    if not Path(args.params_dir).is_dir():
        raise DataError(f"--params_dir {args.params_dir} is not a checkpoint directory (train.py --save_dir)")
    return sorted({parse_width(text) for text in args.width_mult_list}, reverse=True)


def prune(args: argparse.Namespace) -> None:
    widths = check_args(args)
    if dist.get_world_size() > 1:
        raise DataError("prune.py runs in one process on one device; start it without paddle.distributed.launch")
    set_seed(args.seed)
    set_device(args.device)
    check_amp(args.amp)
    dataset = Path(args.dataset_dir)
    teacher = load_model(args.params_dir)
    if getattr(teacher.config, "pruned_width", None):
        raise DataError(f"--params_dir {args.params_dir} is already pruned; prune the unpruned checkpoint instead")
    label_list = resolve_label_list(teacher, dataset / "label.txt")
    layers = encoder_layers(teacher)
    check_widths(widths, layers[0].self_attn.num_heads)
    teacher.eval()
    tokenizer = load_tokenizer(args.params_dir)
    for width in widths:
        heads, neurons = kept_units(width, layers[0].self_attn.num_heads, layers[0].linear1.weight.shape[1])
        logger.info(f"width {width}: {heads} of {layers[0].self_attn.num_heads} heads, "
                    f"{neurons} of {layers[0].linear1.weight.shape[1]} FFN neurons per layer")

    check_max_seq_length(args.max_seq_length, teacher.config.max_position_embeddings, args.params_dir)
    long_text = checkpoint_long_text(teacher)  # read texts as the teacher was trained to; its widths keep it
    train_pipeline = dygraph_pipeline(tokenizer, args.max_seq_length, args.per_device_train_batch_size, long_text)
    dev_pipeline = dygraph_pipeline(tokenizer, args.max_seq_length, args.per_device_eval_batch_size, long_text)
    train_data = encode_examples(train_pipeline, load_examples(dataset / "train.txt", label_list), len(label_list))
    dev_examples = load_examples(dataset / "dev.txt", label_list)
    dev_data = encode_examples(dev_pipeline, dev_examples, len(label_list))
    batches = labelled_batches(train_pipeline, train_data, args.per_device_train_batch_size, args.seed)
    steps_per_epoch = optimizer_steps_per_epoch(len(batches), args.gradient_accumulation_steps)
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)

    output = Path(args.output_dir)
    for width in widths:
        clear_width_dir(output / width_name(width))
    output.mkdir(parents=True, exist_ok=True)
    write_settings(args, output)

    logger.info("Teacher's evaluation starts.")
    evaluate(teacher, dev_pipeline, dev_data, LOSS, checkpoint_decision(teacher), label_list)
    pruner = Pruner(args, teacher, tokenizer, label_list, widths, dev_pipeline, dev_data, LOSS)
    pruner.prepare()
    logger.info("DynaBERT training starts. This period will cost some time.")
    pruner.train(batches, total_steps)

    sample = random.Random(0).sample(dev_examples, min(PARITY_SAMPLES, len(dev_examples)))
    texts, labels = [e.text for e in sample], multi_hot(sample, len(label_list))
    for width in widths:
        logger.info("Best result of width_mult %.2f: %.4f" % (float(width), pruner.best[width]))
        export_width(output / width_name(width), texts, labels, args.max_seq_length)
    logger.info("Pruned models have been exported: "
                + ", ".join(f"{output / width_name(w) / PRUNED_PREFIX}.*" for w in widths))
    logger.info("Pruning is finished using DynaBERT strategy.")


def main(argv: list[str] | None = None) -> None:
    args, extra = parser.parse_known_args(argv)
    refuse_unsupported(extra)
    if args.strategy != "dynabert":
        logger.info(f"--strategy {args.strategy}: DynaBERT width pruning is run; quantise the exported widths with "
                    f"deploy/predictor/infer.py --use_quantize")
    prune(args)


if __name__ == "__main__":
    run_cli(main)
