"""Masked-language-model pretraining: the masks (token or whole-word, BERT's 80/10/10 rule), the
masked-token loss and accuracy, and the pretraining run on the suite's training loop.

pretrain.py (continued pretraining of any ERNIE on unlabelled corpora) and scratch_model.py
--mlm_epochs (a new model on its dataset's texts) are two doors into `pretrain`, so masking,
packing, resume and the metrics history are the same for both. Masks are drawn from a generator
seeded by (seed, epoch, the batch's blocks): a resumed run masks its remaining batches exactly as the
uninterrupted run did, and the held-out slice gets the same masks at every evaluation, so its loss
is comparable from one evaluation to the next.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import paddle
from paddlenlp.transformers import ErnieForMaskedLM, LinearDecayWithWarmup

from corpus import Blocks, PackingOptions, Piece, Tokenization, build_blocks
from history import TrainingHistory
from modeling import (
    _save_pretrained_atomically,
    check_max_seq_length,
    from_pretrained,
    load_tokenizer,
    model_input_names,
    model_inputs,
)
from resume import check_data, check_options, data_fingerprint, find_state, load_state, read_progress, save_state
from training import (
    MixedPrecision,
    StepState,
    TrainBatches,
    TrainingLoop,
    build_optimizer,
    optimizer_steps_per_epoch,
    start_run,
)
from utils import DataError, logger, write_json

MASKINGS = ("token", "whole_word")
IGNORE = -100  # label of positions that are not predicted
EVAL_BATCH_SIZE = 64
METRICS = ("masked_accuracy",)
EVAL_EPOCH = 2**32 - 1  # the held-out slice's masks: an "epoch" training never reaches


@dataclass
class MLMSettings:
    """What fixes a pretraining run's data, masks and schedule (a resumed run must keep all of it)."""

    epochs: int = 3
    max_steps: int = 0  # stop after this many optimizer steps (0: the epochs decide)
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    max_seq_length: int = 128
    masking: str = "token"
    mlm_probability: float = 0.15
    validation_split: float = 0.0
    pack_across_documents: bool = False
    seed: int = 3
    gradient_accumulation_steps: int = 1


@dataclass
class RunOptions:
    """How a pretraining run is carried out, without changing what it computes."""

    device: str = "cpu"
    amp: str | None = None
    logging_steps: int = 10
    save_last: bool = False
    save_last_steps: int = 0
    resume_from_checkpoint: str | None = None


def masked_token_loss(logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
    """Mean cross-entropy over the masked tokens: logits [n, vocabulary] of the predicted positions and
    their labels [n] (-100 for a placeholder position when a batch has none).

    ErnieForMaskedLM's own loss divides by every position, masked or not (paddle's mean with
    ignore_index), which shrinks it by the share of masked positions (4.43 logged as 0.51 on one
    batch) and makes the logged value meaningless.
    """
    total = paddle.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
    return total / paddle.clip((labels != IGNORE).astype("float32").sum(), min=1.0)


def masked_logits(model, batch: dict, pad_id: int) -> paddle.Tensor:
    """The masked-LM head's logits at the predicted positions only: the head's vocabulary-wide product
    over every position would cost more than the encoder of a small model."""
    return model(**model_inputs(batch, pad_id), masked_positions=batch["masked_positions"],
                 return_dict=True).logits.astype("float32")


class Masker:
    """Turns packed blocks into masked-LM inputs: [CLS] block [SEP], a share `probability` of the tokens
    (or, for whole-word masking, of the words: all tokens of a chosen word) chosen for prediction, and of
    those 80% replaced by [MASK], 10% by a random ordinary token, 10% kept."""

    def __init__(self, tokenizer, probability: float, whole_word: bool):
        self.probability = probability
        self.whole_word = whole_word
        self.cls_id, self.sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.mask_id, self.pad_id = tokenizer.mask_token_id, tokenizer.pad_token_id
        special = set(tokenizer.all_special_ids)
        self.replacements = np.asarray([i for i in range(len(tokenizer)) if i not in special], dtype=np.int64)

    def chosen(self, flags: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Which tokens of a block are predicted: each token, or each word (a run of tokens from a word start)."""
        if not self.whole_word:
            return rng.random(len(flags)) < self.probability
        word_of_token = np.cumsum(flags.astype(np.int64)) - 1
        word_of_token[word_of_token < 0] = 0  # a block that starts inside a word: its first tokens are one word
        return (rng.random(int(word_of_token.max(initial=0)) + 1) < self.probability)[word_of_token]

    def mask(self, ids: np.ndarray, flags: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(input ids, labels) of one block, with [CLS] and [SEP] around it (never predicted)."""
        chosen = self.chosen(flags, rng)
        labels = np.where(chosen, ids, IGNORE)
        draw = rng.random(len(ids))
        inputs = np.where(chosen & (draw < 0.8), self.mask_id, ids)
        random_tokens = self.replacements[rng.integers(0, len(self.replacements), len(ids))]
        inputs = np.where(chosen & (draw >= 0.8) & (draw < 0.9), random_tokens, inputs)
        return (np.concatenate([[self.cls_id], inputs, [self.sep_id]]),
                np.concatenate([[IGNORE], labels, [IGNORE]]))

    def batch(self, blocks: Blocks, indices: list[int], rng: np.random.Generator) -> dict[str, paddle.Tensor]:
        """Padded tensors of these blocks: input_ids, token_type_ids, and the flat indices of the predicted
        positions (masked_positions) with their labels (masked_labels)."""
        masked = [self.mask(*blocks.block(i), rng) for i in indices]
        width = max(len(ids) for ids, _ in masked)
        input_ids = np.full((len(masked), width), self.pad_id, dtype=np.int64)
        labels = np.full((len(masked), width), IGNORE, dtype=np.int64)
        for row, (ids, targets) in enumerate(masked):
            input_ids[row, :len(ids)], labels[row, :len(ids)] = ids, targets
        positions = np.flatnonzero(labels != IGNORE)
        if not len(positions):
            positions = np.zeros(1, dtype=np.int64)  # a batch without a masked token: one ignored position
        return {"input_ids": paddle.to_tensor(input_ids), "token_type_ids": paddle.zeros_like(paddle.to_tensor(input_ids)),
                "masked_positions": paddle.to_tensor(positions.astype(np.int64)),
                "masked_labels": paddle.to_tensor(labels.reshape(-1)[positions])}


def batch_rng(seed: int, epoch: int, indices: list[int]) -> np.random.Generator:
    """The masks' generator of one batch: fixed by the seed, the epoch and the batch's blocks."""
    return np.random.default_rng([seed, epoch, *indices])


def evaluate_mlm(model, blocks: Blocks, masker: Masker, seed: int) -> tuple[float, float]:
    """Masked-token loss and accuracy on held-out blocks, with the same masks at every evaluation."""
    was_training = model.training
    model.eval()
    order = np.argsort(blocks.lengths(), kind="stable")
    total_loss, correct, count = 0.0, 0, 0
    with paddle.no_grad():
        for start in range(0, len(order), EVAL_BATCH_SIZE):
            indices = order[start:start + EVAL_BATCH_SIZE].tolist()
            batch = masker.batch(blocks, indices, batch_rng(seed, EVAL_EPOCH, indices))
            logits = masked_logits(model, batch, masker.pad_id)
            labels = batch["masked_labels"]
            predicted = (labels != IGNORE)
            masked = int(predicted.astype("int64").sum())
            total_loss += float(masked_token_loss(logits, labels)) * masked
            correct += int(((logits.argmax(-1) == labels) & predicted).astype("int64").sum())
            count += masked
    if was_training:
        model.train()
    return total_loss / max(count, 1), correct / max(count, 1)


def load_mlm_model(model_name: str):
    """ErnieForMaskedLM from a name or directory; a model saved without a masked-LM head (a scratch model,
    a fine-tuned classifier) gets a new one, and says so."""
    weights = Path(model_name, "model_state.pdparams")
    if weights.is_file() and not any(key.startswith("cls.") for key in paddle.load(str(weights))):
        logger.warning(f"{model_name} has no masked-LM head: a new, randomly initialised one is created")
    return from_pretrained(ErnieForMaskedLM.from_pretrained, model_name)


def pack_corpus(pieces: Iterable[Piece], tokenizer, settings: MLMSettings, directory: Path) -> tuple[Blocks, Blocks]:
    """The corpus as training and held-out blocks of at most max_seq_length tokens with [CLS] and [SEP]."""
    started = time.time()
    options = PackingOptions(settings.max_seq_length - 2, settings.validation_split, settings.pack_across_documents,
                             tokenizer.sep_token_id)
    train, held_out, documents = build_blocks(pieces, Tokenization(tokenizer, settings.masking == "whole_word"),
                                              options, directory)
    if not len(train):
        raise DataError("the corpus is empty: no document with text in it" if not documents else
                        f"--validation_split {settings.validation_split} leaves none of the {documents} documents for "
                        f"training")
    if settings.validation_split and not len(held_out):
        raise DataError(f"--validation_split {settings.validation_split} of {documents} documents holds out none: "
                        f"give a larger share or a larger corpus")
    logger.info(f"Corpus: {documents} documents, {train.token_count()} training tokens in {len(train)} blocks, "
                f"{held_out.token_count()} held-out tokens in {len(held_out)} blocks "
                f"({time.time() - started:.0f} s to read and pack)")
    return train, held_out


def check_resume(state_dir: Path, output_dir: str, settings: MLMSettings, fingerprint: dict,
                 files: dict[str, Path]) -> None:
    """Refuse a resume that would not continue the saved run exactly: other settings or other corpus files."""
    check_options(state_dir, output_dir, asdict(settings))
    saved = read_progress(state_dir).get("data", {})
    if set(saved) != set(fingerprint):
        raise DataError(f"--resume_from_checkpoint {state_dir}: the saved run read other corpus files "
                        f"({', '.join(sorted(saved))}); resume with the same --corpus")
    check_data(state_dir, saved, fingerprint, files)


class PretrainingRun:
    """One pretraining run: the model, its packed corpus and the loop's hooks (evaluation, history,
    resumable states, the model saved after every epoch)."""

    def __init__(self, model_name: str, output_dir: str, settings: MLMSettings, options: RunOptions,
                 fingerprint: dict, rank: int, world_size: int):
        self.output_dir, self.settings, self.options = Path(output_dir), settings, options
        self.fingerprint, self.rank, self.world_size = fingerprint, rank, world_size
        self.tokenizer = load_tokenizer(model_name)
        if "token_type_ids" not in model_input_names(self.tokenizer):
            raise DataError(f"--model_name {model_name}: an ERNIE-M model; paddlenlp has no masked-LM head for ERNIE-M, "
                            f"so it cannot be pretrained here (use an ERNIE 3.0 model)")
        self.model = load_mlm_model(model_name)
        check_max_seq_length(settings.max_seq_length, self.model.config.max_position_embeddings, model_name,
                             windows=False)
        self.masker = Masker(self.tokenizer, settings.mlm_probability, settings.masking == "whole_word")

    def batches(self, blocks: Blocks) -> TrainBatches:
        batches = TrainBatches(blocks.lengths(), self.settings.batch_size, lambda indices: self.masker.batch(
            blocks, indices, batch_rng(self.settings.seed, batches.epoch, indices)), self.settings.seed,
            self.world_size, self.rank)
        return batches

    def save_model(self) -> None:
        if self.rank == 0:
            _save_pretrained_atomically(self.unwrapped(), self.tokenizer, self.output_dir)

    def unwrapped(self):
        return self.model._layers if isinstance(self.model, paddle.DataParallel) else self.model

    def train(self, train_blocks: Blocks, held_out: Blocks, state_dir: Path | None) -> dict:
        settings, options = self.settings, self.options
        batches = self.batches(train_blocks)
        if self.world_size > 1:
            self.model = paddle.DataParallel(self.model)
        total_steps = optimizer_steps_per_epoch(len(batches), settings.gradient_accumulation_steps) * settings.epochs
        total_steps = min(total_steps, settings.max_steps or total_steps)
        scheduler = LinearDecayWithWarmup(settings.learning_rate, total_steps, settings.warmup_proportion)
        optimizer = build_optimizer(self.model, scheduler, settings.weight_decay)
        precision = MixedPrecision(options.amp)
        progress = load_state(state_dir, self.model, optimizer, precision.scaler, self.rank,
                              self.world_size) if state_dir else {}
        history = TrainingHistory(self.output_dir, enabled=self.rank == 0, keep_rows=progress.get("history_rows", 0),
                                  metrics=METRICS)
        loop = TrainingLoop(self.model, batches, self.train_step, optimizer, scheduler, total_steps, log_line,
                            options.logging_steps, "MLM pretraining", self.rank == 0,
                            settings.gradient_accumulation_steps, precision, on_log=history.log_step)
        evaluations: list[dict] = progress.get("evaluations", [])

        def save_resumable(state: StepState) -> None:
            saved = save_state(self.output_dir, self.model, optimizer, precision.scaler,
                               {**state.position(), "history_rows": history.rows, "evaluations": evaluations,
                                "args": asdict(settings), "data": self.fingerprint}, self.rank, self.world_size)
            logger.info(f"Resumable state saved in {saved}")

        def on_step_end(state: StepState) -> bool:
            if not options.save_last_steps or state.global_step % options.save_last_steps or state.step == len(batches):
                return False
            save_resumable(state)
            return True

        def on_epoch_end(state: StepState) -> bool:
            if len(held_out):
                loss, accuracy = evaluate_mlm(self.model, held_out, self.masker, settings.seed)
                logger.info("eval masked-token loss: %.5f, masked-token accuracy: %.5f" % (loss, accuracy))
                history.log_eval(state, loss, accuracy)
                evaluations.append({"epoch": state.epoch, "global_step": state.global_step, "loss": loss,
                                    "accuracy": accuracy})
            self.save_model()
            if options.save_last or options.save_last_steps:
                save_resumable(state)
            return True

        start = StepState(**{key: progress[key] for key in StepState().position()}) if progress else None
        loop_started = time.time()
        last = loop.run(on_step_end=on_step_end, on_epoch_end=on_epoch_end, start=start)
        history.close()
        return {"epochs_run": last.epoch, "global_steps": last.global_step, "evaluations": evaluations,
                "steps_per_epoch": len(batches), "loop_time_s": round(time.time() - loop_started, 1),
                "train_blocks": len(train_blocks), "train_tokens": train_blocks.token_count(),
                "held_out_blocks": len(held_out), "resumed_from": str(state_dir) if state_dir else None}

    def train_step(self, batch: dict, backward) -> paddle.Tensor:
        loss = masked_token_loss(masked_logits(self.model, batch, self.masker.pad_id), batch["masked_labels"])
        backward(loss)
        return loss


def log_line(state: StepState) -> str:
    return ("global step %d, epoch: %d, batch: %d, masked-token loss: %.5f, speed: %.2f step/s, lr: %.3e"
            % (state.global_step, state.epoch, state.step, float(state.loss), state.speed, state.lr))


def pretrain(model_name: str, output_dir: str, pieces: Iterable[Piece], settings: MLMSettings,
             options: RunOptions = RunOptions(), files: dict[str, Path] | None = None) -> dict:
    """Continue masked-LM training of `model_name` on the corpus `pieces` and save the model with its
    tokenizer in `output_dir` (a `--model_name` for every script). `files` ({name: path}) are the corpus
    files a resumable state is fingerprinted against."""
    started = time.time()
    state_dir = find_state(options.resume_from_checkpoint) if options.resume_from_checkpoint else None
    keeps_states = state_dir or options.save_last or options.save_last_steps > 0
    fingerprint = data_fingerprint(files or {}) if keeps_states else {}
    if state_dir:
        check_resume(state_dir, output_dir, settings, fingerprint, files or {})
    rank, world_size = start_run(settings.seed, options.device, options.amp)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    run = PretrainingRun(model_name, output_dir, settings, options, fingerprint, rank, world_size)
    with tempfile.TemporaryDirectory(prefix=".blocks.", dir=output_dir) as blocks_dir:
        train_blocks, held_out = pack_corpus(pieces, run.tokenizer, settings, Path(blocks_dir))
        results = run.train(train_blocks, held_out, state_dir)
    results["train_time_s"] = round(time.time() - started, 1)
    if rank == 0:
        write_json(Path(output_dir, "pretrain_results.json"), {"settings": asdict(settings), **results})
        logger.info(f"Masked-LM pretrained model and tokenizer saved in {output_dir}")
    return results
