"""DynaBERT width training of a fine-tuned checkpoint (prune.py's stages after the command line):
the elastic student learns every width from the frozen teacher on TrainingLoop, each width's best
sub-network by dev macro F1 is kept as a dense checkpoint in `width_mult_<w>/`, and exported there
with its parity check. The surgery itself (elastic layers, importance, narrowing) is pruning.py.
"""
from __future__ import annotations

import argparse
import copy
import math
import shutil
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import paddle
from paddlenlp.transformers import LinearDecayWithWarmup

from exporting import deploy_input_names
from losses import LossFunction, distillation_loss
from modeling import (
    checkpoint_decision,
    checkpoint_labels,
    load_model,
    load_tokenizer,
    model_inputs,
    save_checkpoint,
    stored_config,
)
from parity import export_checked
from pipeline import TextPipeline, length_grouped_batches
from pruning import compute_importance, make_elastic, narrow_to_width, pruned_width, reorder_by_importance, set_width
from training import (
    LabelledRows,
    MixedPrecision,
    StepState,
    TrainingLoop,
    build_optimizer,
    evaluate,
    labelled_batch,
    text_logits,
)
from utils import DataError, logger

PRUNED_PREFIX = "pruned_model"


def width_name(width: Fraction) -> str:
    """The reference's directory name: width_mult_ + round(w, 2), e.g. width_mult_0.75, width_mult_0.67."""
    return f"width_mult_{round(float(width), 2)}"


class Pruner:
    """The DynaBERT loop: one student with shared weights, a frozen teacher, every width per step.

    Each width learns from the teacher through losses.distillation_loss (logits and hidden states of
    both); `loss` scores the importance of heads and neurons and the dev loss.
    """

    def __init__(self, args: argparse.Namespace, teacher, tokenizer, label_list: list[str],
                 widths: list[Fraction], pipeline: TextPipeline, dev: LabelledRows,
                 loss: LossFunction) -> None:
        self.args, self.tokenizer, self.label_list, self.widths = args, tokenizer, label_list, widths
        self.teacher, self.pipeline, self.dev = teacher, pipeline, dev
        self.loss = loss
        self.decision = checkpoint_decision(teacher)
        self.student = copy.deepcopy(teacher)
        self.best = {width: -1.0 for width in widths}
        self.output = Path(args.output_dir)

    def prepare(self) -> None:
        """Score heads and neurons on dev and put the most important first."""
        make_elastic(self.student)
        head_scores, neuron_scores = compute_importance(
            self.student, length_grouped_batches(self.dev.rows.text_lengths(), self.pipeline.batch_size),
            self.dev_loss)
        reorder_by_importance(self.student, head_scores, neuron_scores)
        logger.info("Heads and FFN neurons re-ordered by importance on dev")

    def dev_loss(self, texts: list[int]) -> paddle.Tensor:
        """The student's loss on these dev texts (what importance differentiates)."""
        batch = labelled_batch(self.pipeline, self.dev, texts)
        return self.loss(text_logits(self.student, batch, self.tokenizer.pad_token_id,
                                     self.pipeline.long_text.pooling), batch["labels"])

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
            metric, _ = evaluate(self.student, self.pipeline, self.dev, self.loss, self.decision, self.label_list)
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
    if pruned_width(stored_config(directory)) is None and (not directory.is_dir() or any(directory.iterdir())):
        raise DataError(f"{directory} exists and does not hold a pruned model of an earlier run; move it away or "
                        f"choose another --output_dir (nothing was deleted)")
    shutil.rmtree(directory)
