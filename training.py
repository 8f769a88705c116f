"""The one training loop of the suite, with its batches, optimizer and evaluation.

train.py (fine-tuning), prune.py (DynaBERT width training) and scratch_model.py (masked-LM
pretraining) differ only in what one step computes and what happens after a step or an epoch; the
loop (epochs, optimizer and schedule steps, progress bar, the reference's timed log lines, early
stop) is written once here. Batches come from the pipeline's one bucketing rule, and the dev loss
is computed with the training loss from `losses`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import paddle
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from data_io import Example, multi_hot
from losses import LossFunction
from metric import MetricReport
from modeling import DygraphRunner, model_inputs
from pipeline import EncodedRows, TextPipeline, length_grouped_batches, sigmoid
from utils import logger


@dataclass
class LabelledRows:
    """Encoded texts and their multi-hot targets (one row of targets per text, whatever its rows)."""

    rows: EncodedRows
    targets: np.ndarray


def encode_examples(pipeline: TextPipeline, examples: Sequence[Example], num_labels: int) -> LabelledRows:
    return LabelledRows(pipeline.encode([e.text for e in examples]), multi_hot(examples, num_labels))


def repeat_factors(targets: np.ndarray, threshold: float) -> np.ndarray:
    """LVIS's repeat factor per text (Gupta et al. 2019): a label seen in a share f of the texts gets
    r = max(1, sqrt(threshold / f)), and a text repeats as often as its rarest label asks (the max
    over its labels; 1 for a text without labels). A label absent from the texts asks for nothing."""
    positive = targets > 0.5
    label_factor = np.maximum(1.0, np.sqrt(threshold / np.maximum(positive.mean(0), 1e-12)))
    return np.where(positive, label_factor, 1.0).max(1)


def epoch_rows(factors: np.ndarray) -> int:
    """Rows per epoch under repeat factors: their sum, rounded, the same in every epoch."""
    return max(1, int(round(float(factors.sum()))))


def repeated_rows(factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One epoch's rows when row i should appear factors[i] times: round(sum) picks by systematic
    sampling over a random permutation, so each row appears floor or ceil of its (rescaled) factor
    and an epoch always has the same number of rows (every process must run the same steps)."""
    num_picks = epoch_rows(factors)
    order = rng.permutation(len(factors))
    cumulative = np.cumsum(factors[order])
    points = (rng.random() + np.arange(num_picks)) * (cumulative[-1] / num_picks)
    return order[np.minimum(np.searchsorted(cumulative, points, side="right"), len(order) - 1)]


class TrainBatches:
    """Shuffled length-grouped batches of items (texts with all their windows; rows in MLM
    pretraining), the same permutation in every process.

    Each epoch draws its permutation from seed + epoch; every process takes every world_size-th
    batch, and the batch list is padded so all processes run the same number of steps
    (DataParallel needs that). With `repeats` (repeat-factor sampling) the epoch's items are first
    drawn with those expected counts, then grouped the same way. `collate` turns a list of item
    indices into the step's input.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, collate: Callable[[list[int]], object],
                 seed: int = 0, num_replicas: int = 1, rank: int = 0, repeats: np.ndarray | None = None):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.collate = collate
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.repeats = repeats
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> list[list[int]]:
        """This process's batches of this epoch, as item indices."""
        rng = np.random.default_rng(self.seed + self.epoch)
        items = np.arange(len(self.lengths)) if self.repeats is None else repeated_rows(self.repeats, rng)
        batches = [items[batch].tolist() for batch in length_grouped_batches(self.lengths[items], self.batch_size, rng)]
        if self.num_replicas > 1:
            missing = -len(batches) % self.num_replicas
            batches = (batches + batches[:missing])[self.rank::self.num_replicas]
        return batches

    def items_per_epoch(self) -> int:
        return len(self.lengths) if self.repeats is None else epoch_rows(self.repeats)

    def __len__(self) -> int:
        num_batches = -(-self.items_per_epoch() // self.batch_size)  # windows hold whole batches: only the last is short
        return -(-num_batches // self.num_replicas)

    def __iter__(self) -> Iterator:
        return (self.collate(batch) for batch in self.indices())


def labelled_batch(pipeline: TextPipeline, data: LabelledRows, texts: list[int]) -> dict[str, paddle.Tensor]:
    """The rows of `texts` as padded token tensors (padded exactly as at prediction time) plus the
    texts' `labels`; when a text has several rows (windows), `row_text` names each row's text in the
    batch, for `text_logits`."""
    rows, row_text = data.rows.text_rows(texts)
    tensors = {name: paddle.to_tensor(array) for name, array in pipeline.pad(data.rows, rows).items()}
    tensors["labels"] = paddle.to_tensor(data.targets[texts])
    if len(rows) != len(texts):
        tensors["row_text"] = paddle.to_tensor(row_text)
    return tensors


def labelled_batches(pipeline: TextPipeline, data: LabelledRows, batch_size: int, seed: int,
                     num_replicas: int = 1, rank: int = 0, text_repeats: np.ndarray | None = None) -> TrainBatches:
    """Shuffled training batches of `labelled_batch`es of `batch_size` texts each (all the windows of
    a text in one batch); `text_repeats` (per text) turns on repeat-factor sampling."""
    return TrainBatches(data.rows.text_lengths(), batch_size, lambda texts: labelled_batch(pipeline, data, texts),
                        seed, num_replicas, rank, text_repeats)


def pool_logits(row_logits: paddle.Tensor, row_text: paddle.Tensor, pooling: str) -> paddle.Tensor:
    """Per text, its rows' logits pooled as `pipeline.pool_rows` pools them, differentiably (multiple-
    instance learning: the loss sees the document's decision, and the gradient reaches the windows
    that made it). `row_text` must be sorted, as `labelled_batch` makes it."""
    if pooling == "max":
        return paddle.geometric.segment_max(row_logits, row_text)
    if pooling == "mean":
        return paddle.geometric.segment_mean(row_logits, row_text)
    maximum = paddle.geometric.segment_max(row_logits, row_text).detach()  # logsumexp: shift for stability
    shifted = paddle.exp(row_logits - paddle.gather(maximum, row_text))
    return maximum + paddle.log(paddle.geometric.segment_mean(shifted, row_text))


def text_logits(model, batch: dict, pad_token_id: int, pooling: str) -> paddle.Tensor:
    """The model's logits per text of a `labelled_batch` (windows pooled)."""
    logits = model(**model_inputs(batch, pad_token_id))
    return pool_logits(logits, batch["row_text"], pooling) if "row_text" in batch else logits


def build_optimizer(model, learning_rate, weight_decay: float) -> paddle.optimizer.AdamW:
    """AdamW without weight decay on biases and LayerNorm parameters, as in the reference."""
    decay_params = {p.name for n, p in model.named_parameters() if not any(nd in n for nd in ["bias", "norm"])}
    return paddle.optimizer.AdamW(learning_rate=learning_rate, parameters=model.parameters(),
                                  weight_decay=weight_decay, apply_decay_param_fun=lambda name: name in decay_params)


@dataclass
class StepState:
    """Where the loop is, handed to the log line and the hooks."""

    global_step: int = 0
    epoch: int = 0
    step: int = 0  # batch number inside the epoch, from 1
    loss: paddle.Tensor | None = None
    lr: float = 0.0
    speed: float = 0.0  # steps per second since the last log line or evaluation


class TrainingLoop:
    """Runs `train_step(batch) -> loss` (forward and backward; the loop steps the optimizer) for
    `total_steps` steps over epochs of `batches`.

    `on_step_end` / `on_epoch_end` are called with the state and return True when they did slow
    work (an evaluation), so the next logged speed leaves it out; `request_stop()` ends training
    before the next epoch with the reference's "Early stop!" line.
    """

    def __init__(self, model: paddle.nn.Layer, batches: TrainBatches, train_step: Callable[[object], paddle.Tensor],
                 optimizer: paddle.optimizer.Optimizer, lr_scheduler, total_steps: int,
                 log_line: Callable[[StepState], str] | None = None, logging_steps: int = 1,
                 description: str = "Training", main_process: bool = True):
        self.model = model
        self.batches = batches
        self.train_step = train_step
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler if isinstance(lr_scheduler, paddle.optimizer.lr.LRScheduler) else None
        self.total_steps = total_steps
        self.logging_steps = logging_steps
        self.log_line = log_line
        self.description = description
        self.main_process = main_process  # only the main process logs and draws the progress bar
        self.stop_requested = False

    def request_stop(self) -> None:
        self.stop_requested = True

    def run(self, on_step_end: Callable[[StepState], bool] | None = None,
            on_epoch_end: Callable[[StepState], bool] | None = None) -> StepState:
        state = StepState()
        tic = time.time()
        with logging_redirect_tqdm(loggers=[logger.logger]):
            progress = tqdm(total=self.total_steps, desc=self.description, disable=None if self.main_process else True)
            while state.global_step < self.total_steps:
                if self.stop_requested:
                    logger.info("Early stop!")
                    break
                state.epoch += 1
                self.batches.set_epoch(state.epoch)
                self.model.train()
                for state.step, batch in enumerate(self.batches, start=1):
                    state.loss = self.train_step(batch)
                    self.optimizer.step()
                    if self.lr_scheduler is not None:
                        self.lr_scheduler.step()
                    self.optimizer.clear_grad()
                    state.global_step += 1
                    progress.update(1)
                    if self.main_process and self.log_line and state.global_step % self.logging_steps == 0:
                        state.lr, state.speed = self.optimizer.get_lr(), self.logging_steps / (time.time() - tic)
                        logger.info(self.log_line(state))
                        tic = time.time()
                    if on_step_end and on_step_end(state):
                        tic = time.time()
                    if state.global_step == self.total_steps:
                        break
                if on_epoch_end and on_epoch_end(state):
                    tic = time.time()
            progress.close()
        return state


def predict_logits(model, pipeline: TextPipeline, rows: EncodedRows) -> np.ndarray:
    """Dygraph logits per text in input order; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    logits = pipeline.outputs(DygraphRunner(model, pipeline.tokenizer.pad_token_id), rows)
    if was_training:
        model.train()
    return logits


def evaluate(model, pipeline: TextPipeline, data: LabelledRows, loss: LossFunction, thresholds,
             label_list: Sequence[str]) -> MetricReport:
    """Evaluate on labelled rows and log the reference's eval line; the loss is the training loss."""
    logits = predict_logits(model, pipeline, data.rows)
    # the reference's eval loss: the mean of the batches' mean losses
    batch_texts = [np.unique(data.rows.source[batch]) for batch in pipeline.batches(data.rows)]
    eval_loss = float(np.mean([float(loss(paddle.to_tensor(logits[texts]), paddle.to_tensor(data.targets[texts])))
                               for texts in batch_texts]))
    metric = MetricReport(thresholds=thresholds, label_names=label_list)
    metric.update(sigmoid(logits), data.targets)
    micro_f1, macro_f1 = metric.accumulate()
    logger.info("eval loss: %.5f, micro f1 score: %.5f, macro f1 score: %.5f" % (eval_loss, micro_f1, macro_f1))
    return metric
