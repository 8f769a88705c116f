"""Fine-tune an ERNIE model for multi-label text classification.

Same command line, log lines and checkpoint layout as PaddleNLP's multi_label/train.py, plus the
label list and the decision (thresholds, label-count policy, calibration; decision.py) saved with the
checkpoint. Multi-card: run it under
`python -m paddle.distributed.launch`.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle
import paddle.distributed as dist
from paddlenlp.transformers import LinearDecayWithWarmup

from cli import (
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    PROBABILITY,
    SEED,
    SEQ_LENGTH,
    UNIT_INTERVAL_OPEN,
    ArgumentParser,
    bounded,
    ignored_options,
)
from data_io import load_examples, read_label_list
from decision import CALIBRATION_METHODS, Decision
from history import TrainingHistory
from losses import LOSS_OPTIONS, LOSSES, LossFunction, LossSettings, get_loss, pos_weight_option
from metric import fit_decision_on_dev
from modeling import (
    check_label_list,
    check_max_seq_length,
    dygraph_pipeline,
    has_trained_head,
    init_classifier_bias,
    load_model,
    load_tokenizer,
    save_checkpoint,
    stored_config,
)
from pipeline import LongText, TextPipeline
from resume import (
    RESUME_DIR,
    ResumableState,
    check_data,
    data_fingerprint,
    find_state,
    load_state,
    read_progress,
    stop_on_sigterm,
)
from script_options import add_decision_arguments, add_long_text_arguments, resolve_long_text
from training import (
    AMP_DTYPES,
    BestCheckpoint,
    DevEvaluation,
    EarlyStopping,
    LabelledRows,
    MixedPrecision,
    StepState,
    TrainBatches,
    TrainingLoop,
    add_sampling_arguments,
    build_optimizer,
    encode_examples,
    labelled_batches,
    optimizer_steps_per_epoch,
    predict_logits,
    sampling_option_use,
    sampling_repeats,
    start_run,
    text_logits,
)
from utils import DataError, logger, run_cli, write_json, write_settings

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument('--device', default="gpu", help="Select which device to train model, defaults to gpu.")
parser.add_argument("--dataset_dir", required=True, type=str, help="Local dataset directory should include train.txt, dev.txt and label.txt")
parser.add_argument("--save_dir", default="./checkpoint", type=str, help="The output directory where the model checkpoints will be written.")
parser.add_argument("--max_seq_length", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization. Sequences longer than this will be truncated, sequences shorter will be padded.")
parser.add_argument('--model_name', default="ernie-3.0-medium-zh", help="A reference model name (downloaded when online) or a local model directory, e.g. one made by scratch_model.py.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Batch size per GPU/CPU for training (texts per step; with --long_text window each text brings all of its windows, up to --max_windows).")
parser.add_argument("--learning_rate", default=3e-5, type=NON_NEGATIVE_FLOAT, help="The initial learning rate for Adam.")
parser.add_argument("--weight_decay", default=0.0, type=NON_NEGATIVE_FLOAT, help="Weight decay if we apply some.")
parser.add_argument('--early_stop', action='store_true', help='Stop when dev macro F1 has not improved for --early_stop_nums epochs.')
parser.add_argument('--early_stop_nums', type=POSITIVE_INT, default=4, help='Number of epoch before early stop.')
parser.add_argument("--epochs", default=10, type=POSITIVE_INT, help="Total number of training epochs to perform.")
parser.add_argument('--warmup', action='store_true', help="whether use warmup strategy")
parser.add_argument("--warmup_steps", default=0, type=NON_NEGATIVE_INT, help="Linear warmup steps over the training process (implies --warmup when > 0).")
parser.add_argument("--logging_steps", default=5, type=POSITIVE_INT, help="The interval steps to logging.")
parser.add_argument("--init_from_ckpt", type=str, default=None, help="The path of checkpoint to be loaded (a model_state.pdparams file or a checkpoint directory).")
parser.add_argument("--seed", type=SEED, default=3, help="random seed for initialization")
parser.add_argument("--train_file", type=str, default="train.txt", help="Train dataset file name")
parser.add_argument("--dev_file", type=str, default="dev.txt", help="Dev dataset file name")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name")
parser.add_argument("--threshold", type=PROBABILITY, default=0.5, help="Decision threshold on the sigmoid probability (prob > threshold).")
parser.add_argument("--classifier_bias", choices=["prior", "zero"], default="prior", help="Initial bias of a freshly initialised classifier head: the log-odds of each label's training frequency (prior) or 0.")
parser.add_argument("--loss", choices=list(LOSSES), default="bce", help="Training loss (losses.py); the logged eval loss is the same loss.")
parser.add_argument("--pos_weight", default="auto", help="For --loss bce_pos_weight: auto (clip(sqrt(negatives / positives), 1, --pos_weight_max) per label, counted on the training file) or a file with one weight per line, in label file order.")
parser.add_argument("--pos_weight_max", type=bounded(float, 1), default=10.0, help="Upper clip of the automatic positive weights.")
parser.add_argument("--focal_gamma", type=NON_NEGATIVE_FLOAT, default=2.0, help="For --loss focal and db: the focusing exponent (0 is BCE).")
parser.add_argument("--asl_gamma_neg", type=NON_NEGATIVE_FLOAT, default=4.0, help="For --loss asl: the focusing exponent of negatives.")
parser.add_argument("--asl_gamma_pos", type=NON_NEGATIVE_FLOAT, default=0.0, help="For --loss asl: the focusing exponent of positives.")
parser.add_argument("--asl_clip", type=UNIT_INTERVAL_OPEN, default=0.05, help="For --loss asl: negatives below this probability are ignored (probability margin).")
parser.add_argument("--db_neg_scale", type=bounded(float, 1), default=2.0, help="For --loss db: negatives are scored at this multiple of their logit, with its inverse as weight (negative-tolerant regularisation).")
parser.add_argument("--db_bias_scale", type=NON_NEGATIVE_FLOAT, default=0.05, help="For --loss db: each logit is shifted by this share of its label's prior log-odds (divided by --db_neg_scale) inside the loss.")
parser.add_argument("--tune_thresholds", action='store_true', help="After training, pick a per-label threshold on dev for the best checkpoint and save it with the model.")
parser.add_argument("--calibrate", action='store_true', help="After training, fit per-label calibration on dev (probabilities that match observed rates) and save it with the model; thresholds move with it, so the labels stay the same.")
parser.add_argument("--calibration", choices=list(CALIBRATION_METHODS), default="platt", help="With --calibrate: platt (per-label scale and bias of the logit) or temperature (per-label scale only).")
parser.add_argument("--save_last", action='store_true', help="Write a resumable state (weights, optimizer, LR schedule, random generators, data position, best score) into <save_dir>/resume/ after every epoch.")
parser.add_argument("--save_last_steps", type=NON_NEGATIVE_INT, default=0, help="Also write the resumable state every this many optimizer steps (implies --save_last; 0: at epoch ends only).")
parser.add_argument("--resume_from_checkpoint", type=str, default=None, help="Continue a run exactly from its resumable state: a --save_dir written with --save_last (or its resume/step-N directory). --init_from_ckpt loads weights only.")
parser.add_argument("--gradient_accumulation_steps", type=POSITIVE_INT, default=1, help="Batches whose gradients are summed before each optimizer step (effective batch size = batch_size x this x processes); logging and the LR schedule count optimizer steps.")
parser.add_argument("--amp", choices=list(AMP_DTYPES), default=None, help="Mixed precision on GPU: fp16 (with dynamic loss scaling) or bf16. Not available on CPU.")
parser.add_argument("--visualdl", action='store_true', help="Also log the metrics history to VisualDL in <save_dir>/visualdl (visualdl --logdir <save_dir>/visualdl).")
add_sampling_arguments(parser)
add_long_text_arguments(parser, stored=False)
add_decision_arguments(parser, stored=False)
# yapf: enable


# what fixes the data order and the schedule: a resumed run must use the saved run's values
RESUME_FIXED = ["train_file", "batch_size", "epochs", "seed", "gradient_accumulation_steps", "learning_rate", "warmup",
                "warmup_steps", "weight_decay", "max_seq_length", "long_text", "window_stride", "max_windows",
                "window_pooling", "sampling", "repeat_threshold", "loss"]


def check_args(args: argparse.Namespace) -> None:
    if not Path(args.dataset_dir).is_dir():
        raise DataError(f"--dataset_dir {args.dataset_dir} is not a directory")
    if args.resume_from_checkpoint and args.init_from_ckpt:
        raise DataError("--resume_from_checkpoint restores the weights with everything else; drop --init_from_ckpt")
    warn_ignored_options(args)


def train_decision(args: argparse.Namespace, num_labels: int) -> Decision:
    """The decision evaluated during training and stored with the checkpoint: --threshold for every
    label with the label-count policy of the decision options."""
    try:
        return Decision(np.full(num_labels, args.threshold, dtype="float32"), args.decision_min_labels or 0,
                        args.decision_max_labels or None, args.decision_top_k or 0)
    except ValueError as err:
        raise DataError(f"--min_labels/--max_labels: {err}") from None


def warn_ignored_options(args: argparse.Namespace) -> None:
    """One warning per option given a value that the chosen loss, sampling or stopping rule never reads
    (a --pos_weight file under --loss bce trained without it, silently)."""
    acts_with = {name: (args.loss in losses, "--loss " + " or ".join(losses)) for name, losses in LOSS_OPTIONS.items()}
    if args.pos_weight != "auto":
        acts_with["pos_weight_max"] = (False, "--pos_weight auto")
    acts_with["early_stop_nums"] = (args.early_stop, "--early_stop")
    for warning in ignored_options(args, parser, {**acts_with, **sampling_option_use(args)}):
        logger.warning(warning)


def saves_states(args: argparse.Namespace) -> bool:
    """Whether the run writes resumable states (--save_last_steps implies --save_last)."""
    return args.save_last or args.save_last_steps > 0


def data_files(args: argparse.Namespace) -> dict[str, Path]:
    """The files whose content a resumable state belongs to: the texts and labels trained on, and dev (the
    best score and the early-stopping counter are measured on it)."""
    dataset = Path(args.dataset_dir)
    return {name: dataset / getattr(args, name) for name in ("train_file", "dev_file", "label_file")}


def check_resume_args(state_dir: Path, args: argparse.Namespace, fingerprint: dict) -> None:
    """Refuse a resume whose options or data would change the data order or the schedule (it would not be
    exact), or that would continue in another --save_dir (where the best checkpoint so far is not)."""
    run_dir = state_dir.parent.parent
    if state_dir.parent.name == RESUME_DIR and run_dir.resolve() != Path(args.save_dir).resolve():
        raise DataError(f"--resume_from_checkpoint {state_dir}: the run continues in its own save directory, where its "
                        f"best checkpoint is; use --save_dir {run_dir}")
    progress = read_progress(state_dir)
    saved = progress.get("args", {})
    changed = [f"--{name} {getattr(args, name)} (the saved run used {saved[name]})" for name in RESUME_FIXED
               if saved.get(name) != getattr(args, name)]
    if changed:
        raise DataError(f"--resume_from_checkpoint {state_dir}: resume with the saved run's options; changed: "
                        + ", ".join(changed))
    check_data(state_dir, progress.get("data"), fingerprint, data_files(args))


def build_lr_scheduler(args: argparse.Namespace, total_steps: int):
    """Constant LR by default; warmup then linear decay to 0 with --warmup or --warmup_steps > 0.

    The reference builds the warmup schedule but steps it only with --warmup, so --warmup_steps alone
    froze the learning rate at 0; here the schedule is always stepped.
    """
    if args.warmup or args.warmup_steps > 0:
        return LinearDecayWithWarmup(args.learning_rate, total_steps, args.warmup_steps)
    return args.learning_rate


def load_init_checkpoint(model, path: str, label_file: Path, label_list: list[str]) -> None:
    """Load --init_from_ckpt (a .pdparams file or a checkpoint directory); never skip it silently."""
    ckpt = Path(path)
    state_file = ckpt / "model_state.pdparams" if ckpt.is_dir() else ckpt
    if not state_file.is_file():
        raise DataError(f"--init_from_ckpt {path}: no such checkpoint file")
    stored = stored_config(state_file.parent).get("multi_label_names")
    if stored:
        check_label_list(label_file, label_list, stored)
    model.set_dict(paddle.load(str(state_file)))
    logger.info(f"Loaded parameters from {state_file}")


@dataclass
class FineTuning:
    """What one fine-tuning run trains and evaluates, built by `prepare`."""

    model: paddle.nn.Layer  # paddle.DataParallel-wrapped in a multi-process run
    tokenizer: object
    pipeline: TextPipeline
    label_list: list[str]
    train_data: LabelledRows
    dev_data: LabelledRows
    batches: TrainBatches
    total_steps: int
    lr_scheduler: object
    optimizer: paddle.optimizer.Optimizer
    precision: MixedPrecision
    loss_function: LossFunction
    decision: Decision

    def train_step(self, batch: dict, backward) -> paddle.Tensor:
        logits = text_logits(self.model, batch, self.tokenizer.pad_token_id, self.pipeline.long_text.pooling)
        loss = self.loss_function(logits.astype("float32"), batch["labels"])
        backward(loss)
        return loss

    def save_best(self, save_dir: str) -> None:
        save_checkpoint(self.model, self.tokenizer, save_dir, self.label_list, self.decision, self.pipeline.long_text)


def prepare(args: argparse.Namespace, rank: int, world_size: int) -> FineTuning:
    """Read the data, load the model and tokenizer, encode the texts and build the batches, optimizer and
    loss: everything the loop needs, in the order the log has always shown it."""
    dataset = Path(args.dataset_dir)
    label_list = read_label_list(dataset / args.label_file)
    train_examples = load_examples(dataset / args.train_file, label_list)
    dev_examples = load_examples(dataset / args.dev_file, label_list)
    tokenizer = load_tokenizer(args.model_name)
    model = load_model(args.model_name, len(label_list))
    check_max_seq_length(args.max_seq_length, model.config.max_position_embeddings, args.model_name)
    long_text = resolve_long_text(args, LongText(), args.max_seq_length)
    pipeline = dygraph_pipeline(tokenizer, args.max_seq_length, args.batch_size, long_text)
    train_data = encode_examples(pipeline, train_examples, len(label_list))
    logger.info(f"{args.train_file}: {pipeline.length_summary(train_data.rows.counts)}")
    dev_data = encode_examples(pipeline, dev_examples, len(label_list))
    logger.info(f"{args.dev_file}: {pipeline.length_summary(dev_data.rows.counts)}")
    if args.classifier_bias == "prior" and not has_trained_head(args.model_name, len(label_list)):
        init_classifier_bias(model, train_data.targets.mean(0))
    if args.init_from_ckpt:
        load_init_checkpoint(model, args.init_from_ckpt, dataset / args.label_file, label_list)
    repeats = sampling_repeats(args, lambda: train_data.targets)
    batches = labelled_batches(pipeline, train_data, args.batch_size, args.seed, world_size, rank, repeats)
    if world_size > 1:
        model = paddle.DataParallel(model)
    total_steps = optimizer_steps_per_epoch(len(batches), args.gradient_accumulation_steps) * args.epochs
    lr_scheduler = build_lr_scheduler(args, total_steps)
    optimizer = build_optimizer(model, lr_scheduler, args.weight_decay)
    precision = MixedPrecision(args.amp)
    loss_function = get_loss(args.loss, loss_settings(args, train_data.targets, dataset / args.label_file))
    return FineTuning(model, tokenizer, pipeline, label_list, train_data, dev_data, batches, total_steps, lr_scheduler,
                      optimizer, precision, loss_function, train_decision(args, len(label_list)))


def log_line(state: StepState) -> str:
    """The reference's training log line."""
    return ("global step %d, epoch: %d, batch: %d, loss: %.5f, speed: %.2f step/s, lr: %.3e"
            % (state.global_step, state.epoch, state.step, float(state.loss), state.speed, state.lr))


def callbacks(args: argparse.Namespace, run: FineTuning, loop: TrainingLoop, history: TrainingHistory,
              progress: dict, fingerprint: dict, rank: int, world_size: int) -> tuple[list, BestCheckpoint]:
    """The epoch-end work in order (evaluate, history row, best checkpoint, early stop, resumable state)
    and the best-checkpoint callback, whose record the results report; a resumed run's counters come
    from its `progress`."""
    best = BestCheckpoint((lambda: run.save_best(args.save_dir)) if rank == 0 else None,
                          progress.get("best"), progress.get("epochs_without_gain", 0))
    hooks = [DevEvaluation(run.model, run.pipeline, run.dev_data, run.loss_function, run.decision, run.label_list),
             history, best]
    if args.early_stop:
        hooks.append(EarlyStopping(loop, best, args.early_stop_nums))
    if saves_states(args):
        def resumable_progress() -> dict:
            return {"stop_requested": loop.stop_requested, "best": best.best,
                    "epochs_without_gain": best.epochs_since_best, "history_rows": history.rows,
                    "args": {name: getattr(args, name) for name in RESUME_FIXED}, "data": fingerprint}

        hooks.append(ResumableState(args.save_dir, run.model, run.optimizer, run.precision.scaler, resumable_progress,
                                    len(run.batches), args.save_last_steps, rank, world_size))
    return hooks, best


def train(args: argparse.Namespace) -> dict:
    """Fine-tune, keep the checkpoint with the best dev macro F1, and return (and save) its results."""
    check_args(args)
    state_dir = find_state(args.resume_from_checkpoint) if args.resume_from_checkpoint else None
    keeps_states = args.resume_from_checkpoint or saves_states(args)
    fingerprint = data_fingerprint(data_files(args)) if keeps_states else {}  # read the data once more only then
    if state_dir:
        check_resume_args(state_dir, args, fingerprint)
    rank, world_size = start_run(args.seed, args.device, args.amp)
    started = time.time()
    run = prepare(args, rank, world_size)
    progress = load_state(state_dir, run.model, run.optimizer, run.precision.scaler, rank, world_size) if state_dir else {}
    if rank == 0:
        os.makedirs(args.save_dir, exist_ok=True)
        write_settings(args, args.save_dir)
        write_json(Path(args.save_dir, "args.json"), vars(args))

    history = TrainingHistory(args.save_dir, enabled=rank == 0, keep_rows=progress.get("history_rows", 0),
                              visualdl=args.visualdl)
    loop = TrainingLoop(run.model, run.batches, run.train_step, run.optimizer, run.lr_scheduler, run.total_steps,
                        log_line, args.logging_steps, main_process=rank == 0,
                        accumulation_steps=args.gradient_accumulation_steps, precision=run.precision)
    hooks, best = callbacks(args, run, loop, history, progress, fingerprint, rank, world_size)
    if progress.get("stop_requested"):
        loop.request_stop()
    start = StepState(**{key: progress[key] for key in StepState().position()}) if progress else None
    with stop_on_sigterm(Path(args.save_dir, RESUME_DIR) if saves_states(args) else None):
        last = loop.run(start=start, callbacks=hooks)
    history.close()
    return finish(args, run, best.best, last, state_dir, started, rank, world_size)


def finish(args: argparse.Namespace, run: FineTuning, best: dict, last: StepState, state_dir: Path | None,
           started: float, rank: int, world_size: int) -> dict:
    """Log the best score, fit the decision on dev if asked, write results.json and leave the process group."""
    logger.info("Final best macro f1 score: %.5f" % best["macro_f1"])
    logger.info("Save best macro f1 text classification model in %s" % args.save_dir)
    results = {"best_dev": {"micro_f1": best["micro_f1"], "macro_f1": best["macro_f1"]},
               "best_epoch": best["epoch"], "best_global_step": best["global_step"],
               "epochs_run": last.epoch, "global_steps": last.global_step, "loss": args.loss,
               "resumed_from": str(state_dir) if state_dir else None,
               "thresholds": [float(t) for t in run.decision.thresholds]}
    if (args.tune_thresholds or args.calibrate) and rank == 0:
        results.update(save_decision(run.model._layers if world_size > 1 else run.model, run.tokenizer, run.pipeline,
                                     run.dev_data, run.decision, run.label_list, args))
    results["train_time_s"] = round(time.time() - started, 1)
    if rank == 0:
        write_json(Path(args.save_dir, "results.json"), results)
    if world_size > 1:
        # Leave together: a rank that exits while rank 0 (host of the TCP store) is still saving made
        # the launcher abort rank 0 after its last log line in one CI run.
        dist.barrier()
        dist.destroy_process_group()
    return results


def loss_settings(args: argparse.Namespace, targets: np.ndarray, label_file: Path) -> LossSettings:
    """The chosen loss's parameters; positive weights are counted on the training texts (or read)."""
    settings = LossSettings(focal_gamma=args.focal_gamma, asl_gamma_neg=args.asl_gamma_neg,
                            asl_gamma_pos=args.asl_gamma_pos, asl_clip=args.asl_clip, label_counts=(targets > 0.5).sum(0),
                            num_texts=len(targets), db_neg_scale=args.db_neg_scale, db_bias_scale=args.db_bias_scale)
    weights = pos_weight_option(args.pos_weight, label_file, targets, args.pos_weight_max)
    if args.loss == "bce_pos_weight":
        settings.pos_weight = weights
        logger.info(f"Positive weights ({args.pos_weight}): min {weights.min():.2f}, median {np.median(weights):.2f}, "
                    f"max {weights.max():.2f}")
    return settings


def save_decision(model, tokenizer, pipeline, dev_data, decision: Decision, label_list: list[str],
                  args: argparse.Namespace) -> dict:
    """Reload the best checkpoint, tune its thresholds and/or calibrate it on dev, and store the result."""
    model.set_dict(paddle.load(str(Path(args.save_dir, "model_state.pdparams"))))
    logits = predict_logits(model, pipeline, dev_data.rows)
    decision, results = fit_decision_on_dev(decision, logits, dev_data.targets, label_list,
                                            args.threshold if args.tune_thresholds else None,
                                            args.calibration if args.calibrate else None)
    save_checkpoint(model, tokenizer, args.save_dir, label_list, decision, pipeline.long_text)
    logger.info(f"{'Per-label thresholds tuned' if args.tune_thresholds else 'Calibration'} on dev saved in "
                f"{Path(args.save_dir, 'config.json')}")
    return results


def main(argv: list[str] | None = None) -> dict:
    return train(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
