"""The one training loop of the suite, with its batches, optimizer and evaluation.

train.py (fine-tuning), prune.py (DynaBERT width training), distill.py (knowledge distillation) and
scratch_model.py (masked-LM pretraining) differ only in what one step computes and what happens after a step or an epoch; the
loop (epochs, optimizer and schedule steps, progress bar, the reference's timed log lines, early
stop) is written once here, with the callbacks a run composes at its step and epoch ends (dev
evaluation, best checkpoint, early stopping; the resumable state is resume.py's, the metrics history
history.py's). Batches come from the pipeline's one bucketing rule, and the dev loss is computed with
the training loss from `losses`. Gradient accumulation and mixed precision are properties of the
loop too, so every training script gets them the same way.
"""
from __future__ import annotations

import contextlib
import time
from argparse import ArgumentParser, Namespace
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import paddle
import paddle.distributed as dist
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from cli import PROBABILITY
from data_io import Example, multi_hot
from decision import Decision
from losses import LossFunction
from metric import MetricReport
from modeling import DygraphRunner, model_inputs
from pipeline import EncodedRows, TextPipeline, length_grouped_batches
from utils import DataError, logger, set_device, set_seed


@dataclass
class LabelledRows:
    """Encoded texts and their multi-hot targets (one row of targets per text, whatever its rows)."""

    rows: EncodedRows
    targets: np.ndarray


def encode_examples(pipeline: TextPipeline, examples: Sequence[Example], num_labels: int) -> LabelledRows:
    return LabelledRows(pipeline.encode([e.text for e in examples]), multi_hot(examples, num_labels))


def add_sampling_arguments(parser: ArgumentParser) -> None:
    """--sampling and --repeat_threshold, of every script that fine-tunes a classifier (train.py, distill.py)."""
    parser.add_argument("--sampling", choices=["none", "repeat_factor"], default="none", help="repeat_factor: texts with rare labels are repeated within each epoch (LVIS repeat-factor sampling).")
    parser.add_argument("--repeat_threshold", type=PROBABILITY, default=0.01, help="For --sampling repeat_factor: a label in a share f < threshold of the training texts repeats its texts sqrt(threshold / f) times.")


def sampling_option_use(args: Namespace) -> dict[str, tuple[bool, str]]:
    """Whether the chosen --sampling reads each sampling option, and the setting it acts with (for the warnings
    of cli.ignored_options)."""
    return {"repeat_threshold": (args.sampling == "repeat_factor", "--sampling repeat_factor")}


def sampling_repeats(args: Namespace, targets: Callable[[], np.ndarray]) -> np.ndarray | None:
    """Repeat factors per training text under --sampling repeat_factor, else None; `targets` (the labels each
    text counts with) is computed only then."""
    return None if args.sampling == "none" else text_repeats(targets(), args.repeat_threshold)


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


def text_repeats(targets: np.ndarray, threshold: float) -> np.ndarray:
    """Repeat factors per training text (--sampling repeat_factor), with their effect logged, and a hint
    when they hardly change an epoch (the default threshold suits thousands of labels, not 20)."""
    factors = repeat_factors(targets, threshold)
    rows = epoch_rows(factors)
    logger.info(f"Repeat-factor sampling (threshold {threshold}): {int((factors > 1).sum())} of "
                f"{len(factors)} texts repeated (up to {factors.max():.1f}x); an epoch has {rows} texts")
    shares = (targets > 0.5).mean(0)
    if rows < 1.01 * len(factors) and shares.any():
        rarest = float(shares[shares > 0].min())
        advice = (f"--repeat_threshold {10 * rarest:.2g} would repeat its texts about 3 times." if rarest < 0.1 else
                  "No label is rare enough to repeat (a threshold must stay below 1).")
        logger.warning(f"Repeat-factor sampling adds less than 1% to an epoch: the rarest label is in "
                       f"{rarest:.2%} of the training texts. {advice}")
    return factors


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
        return self.iterate()

    def iterate(self, skip: int = 0) -> Iterator:
        """The epoch's batches after the first `skip` (a resumed run skips them without collating)."""
        return (self.collate(batch) for batch in self.indices()[skip:])


class FixedBatches:
    """Batches built beforehand, the same in every epoch: TrainingLoop's batch source for measurements
    and for checks of its step arithmetic, where the data order must not change."""

    def __init__(self, batches: list):
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.batches)

    def iterate(self, skip: int = 0) -> Iterator:
        return iter(self.batches[skip:])


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


def build_optimizer(model, learning_rate, weight_decay: float, grad_clip=None) -> paddle.optimizer.AdamW:
    """AdamW without weight decay on biases and LayerNorm parameters, as in the reference."""
    decay_params = {p.name for n, p in model.named_parameters() if not any(nd in n for nd in ["bias", "norm"])}
    return paddle.optimizer.AdamW(learning_rate=learning_rate, parameters=model.parameters(),
                                  weight_decay=weight_decay, apply_decay_param_fun=lambda name: name in decay_params,
                                  grad_clip=grad_clip)


AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def check_amp(amp: str | None) -> None:
    """--amp needs a GPU: Paddle's auto_cast has no effect on CPU (it warns and runs fp32), and the
    CPU build has no bfloat16 kernel for matmul, so CPU mixed precision would be fp32 under another name."""
    if amp and paddle.get_device() == "cpu":
        raise DataError(f"--amp {amp}: Paddle's mixed precision (paddle.amp.auto_cast) runs on GPU only; it has no "
                        "effect on CPU and the CPU build has no bfloat16 matmul kernel. Train without --amp on CPU")


class MixedPrecision:
    """`--amp fp16|bf16`: forward passes under paddle.amp.auto_cast (O1: matmuls in half precision,
    reductions in fp32); fp16 also scales the loss dynamically so small gradients do not underflow
    (bf16 has fp32's exponent range and needs no scaling). Without --amp every call is a plain fp32
    pass-through, so the loop has one code path."""

    def __init__(self, amp: str | None = None, init_loss_scaling: float = 2.0**15):
        self.amp = amp
        self.scaler = paddle.amp.GradScaler(enable=amp == "fp16", init_loss_scaling=init_loss_scaling)

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(dtype=AMP_DTYPES[self.amp], level="O1")

    def backward(self, loss: paddle.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: paddle.optimizer.Optimizer) -> None:
        self.scaler.step(optimizer)
        self.scaler.update()


def start_run(seed: int, device: str, amp: str | None) -> tuple[int, int]:
    """What every training script does first: seed, device, the --amp check and, under
    paddle.distributed.launch, the process group. Returns (rank, world size)."""
    set_seed(seed)
    set_device(device)
    check_amp(amp)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if world_size > 1:
        dist.init_parallel_env()
    return rank, world_size


def optimizer_steps_per_epoch(num_batches: int, accumulation_steps: int) -> int:
    """One optimizer step per `accumulation_steps` batches; a shorter last group still steps."""
    return -(-num_batches // accumulation_steps)


@dataclass
class StepState:
    """Where the loop is, handed to the log line and the hooks, and saved in a resumable state."""

    global_step: int = 0  # optimizer steps
    epoch: int = 0
    step: int = 0  # batches of this epoch done (the last one's number, from 1)
    epoch_end_done: bool = True  # on_epoch_end has run for `epoch`
    loss: paddle.Tensor | None = None  # the mean loss of the batches of the last optimizer step
    lr: float = 0.0
    speed: float = 0.0  # optimizer steps per second since the last log line or evaluation
    metrics: dict = field(default_factory=dict)  # the last evaluation's figures (`DevEvaluation`)

    def position(self) -> dict:
        return {"global_step": self.global_step, "epoch": self.epoch, "step": self.step,
                "epoch_end_done": self.epoch_end_done}


class TrainingLoop:
    """Runs `train_step(batch, backward) -> loss` for `total_steps` optimizer steps over epochs of
    `batches`. The step computes its loss(es) and hands each to `backward`, which scales it for
    accumulation and mixed precision; the loop steps the optimizer every `accumulation_steps`
    batches (under DataParallel, gradients are all-reduced only at that last batch).

    Hooks, in the style of Hugging Face's TrainerCallback: `run(callbacks=[...])` takes objects with
    any of `on_step_end(state)`, `on_epoch_end(state)` (each returns True when it did slow work, an
    evaluation or a save, so the next logged speed leaves it out) and `on_log(state)` (after each
    logged line), called in list order; `run(on_step_end=f, on_epoch_end=g)` adds one function of
    each kind after them, the simple way. `request_stop()` ends training before the next epoch with
    the reference's "Early stop!" line. `run(start=...)` continues from a saved position: the epoch's
    first batches are skipped, so the data order is that of an uninterrupted run.
    """

    def __init__(self, model: paddle.nn.Layer, batches: TrainBatches,
                 train_step: Callable[[object, Callable[[paddle.Tensor], None]], paddle.Tensor],
                 optimizer: paddle.optimizer.Optimizer, lr_scheduler, total_steps: int,
                 log_line: Callable[[StepState], str] | None = None, logging_steps: int = 1,
                 description: str = "Training", main_process: bool = True, accumulation_steps: int = 1,
                 precision: MixedPrecision | None = None, on_log: Callable[[StepState], None] | None = None):
        self.model = model
        self.batches = batches
        self.train_step = train_step
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler if isinstance(lr_scheduler, paddle.optimizer.lr.LRScheduler) else None
        self.total_steps = total_steps
        self.logging_steps = logging_steps
        self.log_line = log_line
        self.on_log = on_log  # called with every logged state (the metrics history)
        self.description = description
        self.main_process = main_process  # only the main process logs and draws the progress bar
        self.accumulation_steps = accumulation_steps
        self.precision = precision or MixedPrecision()
        self.stop_requested = False

    def request_stop(self) -> None:
        self.stop_requested = True

    def _sync_context(self, sync: bool):
        """Skip DataParallel's gradient all-reduce on batches that do not end an accumulation group."""
        if sync or not isinstance(self.model, paddle.DataParallel):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def _run_epoch(self, state: StepState, progress, on_step_end: list[Callable], on_log: list[Callable]) -> None:
        num_batches = len(self.batches)
        group_loss = 0.0
        for state.step, batch in enumerate(self.batches.iterate(state.step), start=state.step + 1):
            group_start = (state.step - 1) // self.accumulation_steps * self.accumulation_steps
            group_end = min(group_start + self.accumulation_steps, num_batches)
            group_size = group_end - group_start
            with self._sync_context(state.step == group_end), self.precision.autocast():
                loss = self.train_step(batch, lambda value: self.precision.backward(value / group_size))
            group_loss = loss.detach() / group_size + group_loss
            if state.step < group_end:
                continue
            self.precision.step(self.optimizer)
            if self.lr_scheduler is not None:
                self.lr_scheduler.step()
            self.optimizer.clear_grad()
            state.global_step += 1
            state.loss, group_loss = group_loss, 0.0
            progress.update(1)
            if self.main_process and self.log_line and state.global_step % self.logging_steps == 0:
                state.lr, state.speed = self.optimizer.get_lr(), self.logging_steps / (time.time() - self._tic)
                logger.info(self.log_line(state))
                for hook in on_log:
                    hook(state)
                self._tic = time.time()
            if slow_work(on_step_end, state):
                self._tic = time.time()
            if state.global_step == self.total_steps:
                break

    def run(self, on_step_end: Callable[[StepState], bool] | None = None,
            on_epoch_end: Callable[[StepState], bool] | None = None, start: StepState | None = None,
            callbacks: Sequence[object] = ()) -> StepState:
        step_hooks, epoch_hooks = hooks(callbacks, "on_step_end", on_step_end), hooks(callbacks, "on_epoch_end", on_epoch_end)
        log_hooks = hooks(callbacks, "on_log", self.on_log)
        state = start or StepState()
        self._tic = time.time()  # start of the interval the next logged speed covers
        with logging_redirect_tqdm(loggers=[logger.logger]):
            progress = tqdm(total=self.total_steps, initial=state.global_step, desc=self.description,
                            disable=None if self.main_process else True)
            while state.global_step < self.total_steps or not state.epoch_end_done:
                if state.epoch_end_done:
                    if self.stop_requested:
                        logger.info("Early stop!")
                        break
                    state.epoch, state.step, state.epoch_end_done = state.epoch + 1, 0, False
                self.batches.set_epoch(state.epoch)
                self.model.train()
                self._run_epoch(state, progress, step_hooks, log_hooks)
                state.epoch_end_done = True
                if slow_work(epoch_hooks, state):
                    self._tic = time.time()
            progress.close()
        return state


def hooks(callbacks: Sequence[object], name: str, function: Callable | None = None) -> list[Callable]:
    """The callbacks' hooks of this name, in order, then `function` (a `TrainingLoop.run` argument)."""
    found = [getattr(callback, name) for callback in callbacks if hasattr(callback, name)]
    return found + ([function] if function else [])


def slow_work(functions: list[Callable[[StepState], bool]], state: StepState) -> bool:
    """Run every hook (none is skipped when an earlier one did slow work); whether any did."""
    return any([function(state) for function in functions])


class DevEvaluation:
    """Callback: evaluate on dev at every epoch end (the reference's eval line); the figures and the
    eval loss go on `state.metrics` for the callbacks after it."""

    def __init__(self, model, pipeline: TextPipeline, data: LabelledRows, loss: LossFunction, decision: Decision,
                 label_list: Sequence[str]):
        self.model, self.pipeline, self.data, self.loss = model, pipeline, data, loss
        self.decision, self.label_list = decision, label_list

    def on_epoch_end(self, state: StepState) -> bool:
        metric, eval_loss = evaluate(self.model, self.pipeline, self.data, self.loss, self.decision, self.label_list)
        state.metrics = {**metric.figures(), "eval_loss": eval_loss}
        return True


class BestCheckpoint:
    """Callback after `DevEvaluation`, like timm's CheckpointSaver: when dev macro F1 beats the best so
    far, `save()` writes the checkpoint (None: a process that does not save) and `best` records the
    figures, epoch and step; `epochs_since_best` counts the epochs since (for early stopping and the
    resumable state, which restores both)."""

    def __init__(self, save: Callable[[], None] | None, best: dict | None = None, epochs_since_best: int = 0):
        self.save = save
        self.best = best or {"macro_f1": -1.0}
        self.epochs_since_best = epochs_since_best

    def on_epoch_end(self, state: StepState) -> bool:
        self.epochs_since_best += 1
        figures = state.metrics
        if figures["macro_f1"] > self.best["macro_f1"]:
            self.epochs_since_best = 0
            self.best.update(macro_f1=figures["macro_f1"], micro_f1=figures["micro_f1"], epoch=state.epoch,
                             global_step=state.global_step)
            if self.save:
                self.save()
        logger.info("Current best macro f1 score: %.5f" % self.best["macro_f1"])
        return False


class EarlyStopping:
    """Callback after `BestCheckpoint`: stop the loop once `patience` epochs have passed without a
    better dev macro F1 (train.py --early_stop, --early_stop_nums)."""

    def __init__(self, loop: TrainingLoop, best: BestCheckpoint, patience: int):
        self.loop, self.best, self.patience = loop, best, patience

    def on_epoch_end(self, state: StepState) -> bool:
        if self.best.epochs_since_best >= self.patience:
            self.loop.request_stop()
        return False


def predict_logits(model, pipeline: TextPipeline, rows: EncodedRows) -> np.ndarray:
    """Dygraph logits per text in input order; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    logits = pipeline.outputs(DygraphRunner(model, pipeline.tokenizer.pad_token_id), rows)
    if was_training:
        model.train()
    return logits


def evaluate(model, pipeline: TextPipeline, data: LabelledRows, loss: LossFunction, decision: Decision,
             label_list: Sequence[str]) -> tuple[MetricReport, float]:
    """Evaluate on labelled rows and log the reference's eval line; the loss is the training loss.
    Returns the metric and that eval loss."""
    logits = predict_logits(model, pipeline, data.rows)
    # the reference's eval loss: the mean of the batches' mean losses
    batch_texts = [np.unique(data.rows.source[batch]) for batch in pipeline.batches(data.rows)]
    eval_loss = float(np.mean([float(loss(paddle.to_tensor(logits[texts]), paddle.to_tensor(data.targets[texts])))
                               for texts in batch_texts]))
    metric = MetricReport(decision=decision, label_names=label_list)
    metric.update(decision.probabilities(logits), data.targets)
    micro_f1, macro_f1 = metric.accumulate()
    logger.info("eval loss: %.5f, micro f1 score: %.5f, macro f1 score: %.5f" % (eval_loss, micro_f1, macro_f1))
    return metric, eval_loss
