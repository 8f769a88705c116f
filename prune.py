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
"""
from __future__ import annotations

import argparse
import copy
import functools
import math
import random
import shutil
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn.functional as F
from paddle.nn.layer.transformer import _convert_attention_mask
from paddlenlp.trainer import CompressionArguments, PdArgumentParser
from paddlenlp.transformers import LinearDecayWithWarmup
from tqdm import tqdm

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
from exporting import deploy_input_names
from losses import distillation_loss, get_loss
from modeling import (
    check_max_seq_length,
    checkpoint_decision,
    checkpoint_labels,
    checkpoint_long_text,
    dygraph_pipeline,
    encoder_layers,
    kept_units,
    load_model,
    load_tokenizer,
    model_inputs,
    narrow_to_width,
    pruned_width,
    resolve_label_list,
    save_checkpoint,
)
from parity import export_checked
from pipeline import TextPipeline, length_grouped_batches
from training import (
    AMP_DTYPES,
    LabelledRows,
    MixedPrecision,
    StepState,
    TrainingLoop,
    build_optimizer,
    check_amp,
    encode_examples,
    evaluate,
    labelled_batch,
    labelled_batches,
    optimizer_steps_per_epoch,
    text_logits,
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
PRUNED_PREFIX = "pruned_model"


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


def check_widths(widths: list[Fraction], num_heads: int) -> None:
    """Every width must keep a whole number of heads, else the head reshape cannot work."""
    for width in widths:
        heads = width * num_heads
        if heads.denominator != 1:
            valid = [f"{Fraction(k, num_heads)}" for k in range(1, num_heads + 1)]
            raise DataError(f"width {width} x {num_heads} heads = {float(heads):g} heads is not an integer; "
                            f"widths this model accepts: {' '.join(valid)}")


def width_name(width: Fraction) -> str:
    """The reference's directory name: width_mult_ + round(w, 2), e.g. width_mult_0.75, width_mult_0.67."""
    return f"width_mult_{round(float(width), 2)}"


# ------------------------------------------------------------------------- elastic encoder


def elastic_layer_forward(layer, src, src_mask=None, cache=None, output_attentions=False):
    """paddle.nn.TransformerEncoderLayer.forward (post-norm) on the first `layer.kept_heads` heads
    and `layer.kept_neurons` FFN neurons, with an optional per-head gate for importance scores.

    Slicing the shared weights keeps one set of parameters for all widths, as DynaBERT trains them.
    """
    attn = layer.self_attn
    heads, width, neurons = layer.kept_heads, layer.kept_heads * attn.head_dim, layer.kept_neurons
    src_mask = _convert_attention_mask(src_mask, src.dtype)

    def project(linear):
        out = F.linear(src, linear.weight[:, :width], linear.bias[:width])
        return out.reshape([0, 0, heads, attn.head_dim]).transpose([0, 2, 1, 3])

    query, key, value = project(attn.q_proj), project(attn.k_proj), project(attn.v_proj)
    scores = paddle.matmul(query * attn.head_dim ** -0.5, key, transpose_y=True)
    if src_mask is not None:
        scores = scores + src_mask
    weights = F.dropout(F.softmax(scores), attn.dropout, training=layer.training, mode="upscale_in_train")
    context = paddle.matmul(weights, value)
    if layer.head_gate is not None:
        context = context * layer.head_gate[:heads].reshape([1, heads, 1, 1])
    context = context.transpose([0, 2, 1, 3]).reshape([0, 0, width])
    attended = F.linear(context, attn.out_proj.weight[:width], attn.out_proj.bias)
    src = layer.norm1(src + layer.dropout1(attended))
    hidden = layer.activation(F.linear(src, layer.linear1.weight[:, :neurons], layer.linear1.bias[:neurons]))
    ffn = F.linear(layer.dropout(hidden), layer.linear2.weight[:neurons], layer.linear2.bias)
    return layer.norm2(src + layer.dropout2(ffn))


def make_elastic(model) -> None:
    for layer in encoder_layers(model):
        layer.forward = functools.partial(elastic_layer_forward, layer)
        layer.head_gate = None
    set_width(model, Fraction(1))


def set_width(model, width: Fraction) -> None:
    for layer in encoder_layers(model):
        layer.kept_heads, layer.kept_neurons = kept_units(width, layer.self_attn.num_heads,
                                                          layer.linear1.weight.shape[1])


# --------------------------------------------------------------------------------- importance


def compute_importance(model, pipeline: TextPipeline, data: LabelledRows) -> tuple[np.ndarray, np.ndarray]:
    """Head and FFN-neuron importance on labelled rows, as DynaBERT scores them, with the training loss.

    Head: sum over batches of |d loss / d gate| for a gate of ones on each head's output.
    Neuron j: |sum_i w1[i,j] g1[i,j] + b1[j] gb1[j]| + |sum_k w2[j,k] g2[j,k]| per batch, summed.
    Returns arrays [layers, heads] and [layers, neurons].
    """
    layers = encoder_layers(model)
    gates = [paddle.ones([layer.self_attn.num_heads], dtype="float32") for layer in layers]
    for layer, gate in zip(layers, gates):
        gate.stop_gradient = False
        layer.head_gate = gate
    head_scores = np.zeros([len(layers), layers[0].self_attn.num_heads], dtype="float64")
    neuron_scores = np.zeros([len(layers), layers[0].linear1.weight.shape[1]], dtype="float64")
    model.eval()  # no dropout: the scores describe the model as it predicts
    for texts in tqdm(length_grouped_batches(data.rows.text_lengths(), pipeline.batch_size), desc="Importance",
                      leave=False, disable=None):
        batch = labelled_batch(pipeline, data, texts)
        loss = LOSS(text_logits(model, batch, pipeline.tokenizer.pad_token_id, pipeline.long_text.pooling),
                    batch["labels"])
        loss.backward()
        for i, (layer, gate) in enumerate(zip(layers, gates)):
            head_scores[i] += np.abs(gate.grad.numpy())
            w1, b1, w2 = layer.linear1.weight, layer.linear1.bias, layer.linear2.weight
            neuron_scores[i] += np.abs((w1 * w1.grad).sum(0).numpy() + (b1 * b1.grad).numpy())
            neuron_scores[i] += np.abs((w2 * w2.grad).sum(1).numpy())
            gate.clear_gradient()
        model.clear_gradients()
    for layer in layers:
        layer.head_gate = None
    return head_scores, neuron_scores


def _permute(param, index: np.ndarray, axis: int) -> None:
    param.set_value(paddle.index_select(param, paddle.to_tensor(index), axis=axis))


def reorder_by_importance(model, head_scores: np.ndarray, neuron_scores: np.ndarray) -> None:
    """Permute heads and neurons so that the most important come first; outputs stay the same."""
    for layer, heads, neurons in zip(encoder_layers(model), head_scores, neuron_scores):
        attn = layer.self_attn
        head_order = np.argsort(-heads, kind="stable")
        columns = (head_order[:, None] * attn.head_dim + np.arange(attn.head_dim)).reshape(-1)
        for linear in (attn.q_proj, attn.k_proj, attn.v_proj):
            _permute(linear.weight, columns, axis=1)
            _permute(linear.bias, columns, axis=0)
        _permute(attn.out_proj.weight, columns, axis=0)
        neuron_order = np.argsort(-neurons, kind="stable")
        _permute(layer.linear1.weight, neuron_order, axis=1)
        _permute(layer.linear1.bias, neuron_order, axis=0)
        _permute(layer.linear2.weight, neuron_order, axis=0)


# ----------------------------------------------------------------------------------- pruning


class Pruner:
    """The DynaBERT loop: one student with shared weights, a frozen teacher, every width per step."""

    def __init__(self, args: argparse.Namespace, teacher, tokenizer, label_list: list[str],
                 widths: list[Fraction], pipeline: TextPipeline, dev: LabelledRows) -> None:
        self.args, self.tokenizer, self.label_list, self.widths = args, tokenizer, label_list, widths
        self.teacher, self.pipeline, self.dev = teacher, pipeline, dev
        self.decision = checkpoint_decision(teacher)
        self.student = copy.deepcopy(teacher)
        self.best = {width: -1.0 for width in widths}
        self.output = Path(args.output_dir)

    def prepare(self) -> None:
        """Score heads and neurons on dev and put the most important first."""
        make_elastic(self.student)
        head_scores, neuron_scores = compute_importance(self.student, self.pipeline, self.dev)
        reorder_by_importance(self.student, head_scores, neuron_scores)
        logger.info("Heads and FFN neurons re-ordered by importance on dev")

    def train_step(self, batch: dict, backward) -> paddle.Tensor:
        """Distil the teacher into every width; the gradients of all widths add up before the one
        optimizer step. Returns the last width's loss (the logged one)."""
        inputs = model_inputs(batch, self.tokenizer.pad_token_id)
        with paddle.no_grad():
            teacher_outputs = self.teacher(**inputs, output_hidden_states=True)
        self.student.train()
        for width in self.widths:
            set_width(self.student, width)
            loss = distillation_loss(self.student(**inputs, output_hidden_states=True), teacher_outputs)
            backward(loss)
        return loss

    def train(self, batches, total_steps: int) -> None:
        args = self.args
        warmup = math.ceil(args.warmup_ratio * total_steps)
        lr_scheduler = LinearDecayWithWarmup(args.learning_rate, total_steps, warmup)
        optimizer = build_optimizer(self.student, lr_scheduler, args.weight_decay)
        self.evaluate_widths(global_step=0)  # the merely re-ordered sub-networks are candidates too

        def log_line(state: StepState) -> str:
            return ("global step %d, epoch: %d, batch: %d, lr: %.3e, loss: %f, speed: %.2f step/s"
                    % (state.global_step, state.epoch, state.step, state.lr, float(state.loss), state.speed))

        def on_step_end(state: StepState) -> bool:
            if state.global_step % args.save_steps and state.global_step != total_steps:
                return False
            self.evaluate_widths(state.global_step)
            return True

        TrainingLoop(self.student, batches, self.train_step, optimizer, lr_scheduler, total_steps, log_line,
                     args.logging_steps, description="Pruning", accumulation_steps=args.gradient_accumulation_steps,
                     precision=MixedPrecision(args.amp)).run(on_step_end=on_step_end)

    def evaluate_widths(self, global_step: int) -> None:
        for width in self.widths:
            tic = time.time()
            logger.info(f"width_mult {round(float(width), 2)} (step {global_step}):")
            set_width(self.student, width)
            metric, _ = evaluate(self.student, self.pipeline, self.dev, LOSS, self.decision, self.label_list)
            _, macro_f1 = metric.accumulate()
            if macro_f1 > self.best[width]:
                self.best[width] = macro_f1
                self.save(width)
            logger.info("eval done total: %s s" % (time.time() - tic))
        set_width(self.student, Fraction(1))

    def dense(self, width: Fraction):
        """The student's sub-network of this width as an ordinary (smaller) model."""
        model = copy.deepcopy(self.teacher)
        model.set_state_dict(self.student.state_dict())
        narrow_to_width(model, width)
        model.eval()
        return model

    def save(self, width: Fraction) -> None:
        """Keep this width's best sub-network as a checkpoint every script can load."""
        save_checkpoint(self.dense(width), self.tokenizer, self.output / width_name(width), self.label_list,
                        self.decision)


def export_width(directory: Path, texts: list[str], labels: np.ndarray | None, max_seq_length: int) -> None:
    """Export a saved width like export_model.py does, as pruned_model.* plus ONNX, with parity."""
    model = load_model(str(directory))
    model.eval()
    tokenizer = load_tokenizer(str(directory))
    export_checked(model, tokenizer, directory, PRUNED_PREFIX, checkpoint_labels(model),
                   checkpoint_decision(model), deploy_input_names(tokenizer), texts, labels, max_seq_length)


def clear_width_dir(directory: Path) -> None:
    """Remove an older run's output for this width (never mix its files with the new run's), but only
    a directory that holds a pruned checkpoint: anything else there is the user's and stops the run."""
    if not directory.exists():
        return
    if pruned_width(str(directory)) is None and (not directory.is_dir() or any(directory.iterdir())):
        raise DataError(f"{directory} exists and does not hold a pruned model of an earlier run; move it away or "
                        f"choose another --output_dir (nothing was deleted)")
    shutil.rmtree(directory)


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
    pruner = Pruner(args, teacher, tokenizer, label_list, widths, dev_pipeline, dev_data)
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
