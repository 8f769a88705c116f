"""Knowledge distillation: a fine-tuned checkpoint (the teacher) taught to a smaller student.

Labelling cost grows with the model's size, so a student of a few layers that answers like its
teacher labels large corpora far cheaper. The student learns, per label, the teacher's probability
(`--alpha` x BCE against sigmoid(teacher logit / T), losses.soft_label_loss) and the gold labels
((1 - alpha) x any registered loss) on the labelled training texts, and the teacher's probabilities
alone on unlabelled in-domain texts (`--corpus`), where soft labels cost nothing. `--intermediate`
adds TinyBERT/MiniLM transfer: the student's hidden states, through one learned projection, fit
the teacher's at uniformly mapped layers; attention maps fit the teacher's (heads averaged in
groups) when the teacher's head count is a multiple of the student's.

The teacher's logits on the training texts are computed once and cached on disk (in chunks, so a
large corpus never needs them in memory), keyed by the teacher's weights, the texts and how they
are read: another teacher or corpus computes its own. Training runs on the suite's one loop
(training.TrainingLoop: accumulation, mixed precision, resumable states, multi-card, history and
curves). The result is an ordinary checkpoint: labels, thresholds tuned on dev, the teacher's
label-count policy and long-text settings, so predict.py, export_model.py, serving and prune.py
use it unchanged.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import paddle
import paddle.distributed as dist
from numpy.lib.format import open_memmap
from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification, LinearDecayWithWarmup
from tqdm import tqdm

from cli import (
    NON_NEGATIVE_FLOAT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    SEQ_LENGTH,
    UNIT_INTERVAL_OPEN,
    ArgumentParser,
    bounded,
    ignored_options,
)
from data_io import iter_corpus, load_examples, multi_hot
from decision import Decision
from history import TrainingHistory
from losses import LOSSES, LossSettings, get_loss, hidden_state_loss, positive_weights, soft_label_loss
from metric import fit_decision_on_dev
from modeling import (
    check_max_seq_length,
    checkpoint_decision,
    checkpoint_long_text,
    dygraph_pipeline,
    init_classifier_bias,
    load_model,
    load_tokenizer,
    model_inputs,
    resolve_label_list,
    save_checkpoint,
    stored_config,
)
from pruning import encoder_layers
from resume import (
    check_data,
    check_options,
    data_fingerprint,
    file_checksum,
    find_state,
    load_state,
    read_progress,
    save_state,
)
from scratch_model import PRESETS, model_config
from training import (
    AMP_DTYPES,
    LabelledRows,
    MixedPrecision,
    StepState,
    TrainBatches,
    TrainingLoop,
    add_sampling_arguments,
    build_optimizer,
    encode_examples,
    evaluate,
    labelled_batch,
    optimizer_steps_per_epoch,
    pool_logits,
    predict_logits,
    sampling_option_use,
    sampling_repeats,
    start_run,
)
from utils import DataError, logger, run_cli, write_json, write_settings

STUDENT_PRESETS = {name.removeprefix("ernie-3.0-").removesuffix("-zh"): name for name in PRESETS}
UNIT_INTERVAL = bounded(float, 0, 1)

# yapf: disable
parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--device", default="gpu", help="Device for training: cpu or gpu (gpu:N).")
parser.add_argument("--teacher", required=True, help="The checkpoint to distil: a --save_dir of train.py, a width of prune.py or an earlier distill.py output.")
student = parser.add_mutually_exclusive_group(required=True)
student.add_argument("--student_preset", choices=list(STUDENT_PRESETS), help="A new random student of this shape (scratch_model.py's presets: tiny or an ERNIE 3.0 shape), with the teacher's vocabulary.")
student.add_argument("--student_model_name", help="An existing model directory as the student (e.g. MLM-pretrained by scratch_model.py); its vocabulary must be the teacher's.")
parser.add_argument("--student_layers", type=POSITIVE_INT, default=None, help="Override the preset's number of layers.")
parser.add_argument("--student_hidden", type=POSITIVE_INT, default=None, help="Override the preset's hidden size.")
parser.add_argument("--student_heads", type=POSITIVE_INT, default=None, help="Override the preset's attention heads.")
parser.add_argument("--student_intermediate", type=POSITIVE_INT, default=None, help="Override the preset's feed-forward width.")
parser.add_argument("--init_from_teacher", action="store_true", help="Start the preset student from the teacher's embeddings, classifier and uniformly chosen layers (DistilBERT); needs the teacher's hidden size, heads and FFN width.")
parser.add_argument("--dataset_dir", required=True, help="Directory with the labelled train and dev files and label.txt.")
parser.add_argument("--train_file", default="train.txt", help="Labelled training file name.")
parser.add_argument("--dev_file", default="dev.txt", help="Dev file name: model selection and threshold tuning.")
parser.add_argument("--label_file", default="label.txt", help="Label file name (must name the teacher's labels).")
parser.add_argument("--corpus", "--unlabeled_file", dest="corpus", nargs="+", default=[], help="Files of unlabelled texts, one per line (.txt or .gz; a label column is ignored), taught with the teacher's probabilities only.")
parser.add_argument("--save_dir", default="./checkpoint_distilled", help="Where the student checkpoint is written.")
parser.add_argument("--cache_dir", default=None, help="Where the teacher's logits are cached. Default: <teacher>/distill_cache.")
parser.add_argument("--alpha", type=UNIT_INTERVAL, default=0.5, help="Weight of the soft (teacher) loss; 1 - alpha weighs the gold-label loss on labelled texts. 1: teacher only, 0: labels only.")
parser.add_argument("--temperature", type=POSITIVE_FLOAT, default=1.0, help="T of the soft loss: both logits are divided by T and the loss multiplied by T^2.")
parser.add_argument("--loss", choices=list(LOSSES), default="bce", help="The gold-label loss (losses.py); also the logged dev loss.")
parser.add_argument("--intermediate", choices=["none", "hidden", "attention", "both"], default="none", help="Intermediate-layer transfer (TinyBERT/MiniLM): hidden states through a learned projection and/or attention maps.")
parser.add_argument("--intermediate_weight", type=NON_NEGATIVE_FLOAT, default=0.1, help="Weight of the intermediate losses.")
parser.add_argument("--max_seq_length", type=SEQ_LENGTH, default=128, help="Tokens per text (or window, when the teacher reads long texts in windows).")
parser.add_argument("--batch_size", type=POSITIVE_INT, default=32, help="Texts per step and process.")
parser.add_argument("--learning_rate", type=POSITIVE_FLOAT, default=5e-4, help="Peak learning rate of AdamW.")
parser.add_argument("--weight_decay", type=NON_NEGATIVE_FLOAT, default=0.0, help="AdamW weight decay (not on biases and LayerNorm).")
parser.add_argument("--warmup_ratio", type=UNIT_INTERVAL_OPEN, default=0.1, help="Share of the steps with linear warmup, then linear decay.")
parser.add_argument("--epochs", type=POSITIVE_INT, default=3, help="Passes over the labelled and unlabelled texts.")
parser.add_argument("--gradient_accumulation_steps", type=POSITIVE_INT, default=1, help="Batches whose gradients are summed before each optimizer step.")
parser.add_argument("--amp", choices=list(AMP_DTYPES), default=None, help="Mixed precision on GPU: fp16 or bf16.")
parser.add_argument("--logging_steps", type=POSITIVE_INT, default=20, help="Log the loss every this many steps.")
parser.add_argument("--seed", type=SEED, default=3, help="Random seed (student weights, data order).")
parser.add_argument("--save_last", action="store_true", help="Write a resumable state into <save_dir>/resume/ after every epoch.")
parser.add_argument("--resume_from_checkpoint", default=None, help="Continue a run from its resumable state (a --save_dir written with --save_last).")
add_sampling_arguments(parser)  # the corpus's texts count with the labels the teacher gives them
# yapf: enable

CACHE_CHUNK = 4096  # texts the teacher labels between two writes of its cache
# the configuration entry of a preset student that each shape option (its destination) overrides
SHAPE_OPTIONS = {"num_hidden_layers": "student_layers", "hidden_size": "student_hidden",
                 "num_attention_heads": "student_heads", "intermediate_size": "student_intermediate"}
# what fixes the data order, the schedule and the targets: a resumed run must use the saved run's values
RESUME_FIXED = ["teacher", "student_preset", "student_model_name", *SHAPE_OPTIONS.values(), "init_from_teacher",
                "corpus", "alpha", "temperature", "loss", "intermediate", "intermediate_weight", "max_seq_length",
                "batch_size", "learning_rate", "weight_decay", "warmup_ratio", "epochs", "gradient_accumulation_steps",
                "seed", "sampling", "repeat_threshold"]


# ------------------------------------------------------------------------------------ inputs


def load_teacher(path: str):
    """The teacher checkpoint, refused with one line unless a script of the suite wrote it."""
    if not Path(path).is_dir():
        raise DataError(f"--teacher {path} is not a directory (a checkpoint of train.py, prune.py or distill.py)")
    if not stored_config(path).get("multi_label_names"):
        raise DataError(f"--teacher {path} is not a checkpoint of train.py, prune.py or distill.py (its config.json "
                        f"stores no label list)")
    teacher = load_model(path)
    teacher.eval()
    return teacher


def read_corpus(paths: list[str], known: set[str]) -> list[str]:
    """The unlabelled texts; texts that are also labelled (train or dev) are left out and counted, so dev
    figures are never measured on texts the student was taught."""
    texts, repeated = [], 0
    for path in paths:
        before = len(texts)
        for text in iter_corpus(path):
            if text in known:
                repeated += 1
            else:
                texts.append(text)
        if len(texts) == before:
            raise DataError(f"--corpus {path}: no texts to learn from (empty, blank, or only labelled texts)")
    logger.info(f"Corpus: {len(texts)} unlabelled texts from {len(paths)} file(s)"
                + (f"; {repeated} texts also in the labelled files left out" if repeated else ""))
    return texts


def build_student(args: argparse.Namespace, teacher, tokenizer, num_labels: int):
    """The student: a preset shape with the teacher's vocabulary, or an existing model with the same vocabulary
    (teacher and student read the same token ids, so the teacher's cached outputs fit the student's batches)."""
    if args.student_model_name:
        if load_tokenizer(args.student_model_name).vocab.token_to_idx != tokenizer.vocab.token_to_idx:
            raise DataError(f"--student_model_name {args.student_model_name}: its vocabulary differs from the teacher's; "
                            f"teacher and student must read the same tokens (use --student_preset)")
        return load_model(args.student_model_name, num_labels)
    if "ErnieM" in "".join(getattr(teacher.config, "architectures", None) or []):
        raise DataError("--student_preset builds an ERNIE student; an ERNIE-M teacher needs --student_model_name")
    overrides = {key: getattr(args, option) for key, option in SHAPE_OPTIONS.items()}
    config = model_config(STUDENT_PRESETS[args.student_preset], overrides)
    config.update(vocab_size=teacher.config.vocab_size, num_classes=num_labels,
                  max_position_embeddings=teacher.config.max_position_embeddings)
    student = ErnieForSequenceClassification(ErnieConfig(**config))
    if args.init_from_teacher:
        copy_teacher_layers(teacher, student)
    return student


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer (1-based) each student layer learns from: uniformly spread, the last to the last."""
    return [(i * teacher_layers) // student_layers for i in range(1, student_layers + 1)]


def copy_teacher_layers(teacher, student) -> None:
    """DistilBERT's initialisation: embeddings, pooler, classifier and the mapped layers of the teacher."""
    t_layer, s_layer = encoder_layers(teacher)[0], encoder_layers(student)[0]
    t_shape = (teacher.config.hidden_size, t_layer.self_attn.num_heads, t_layer.linear1.weight.shape[1])
    s_shape = (student.config.hidden_size, s_layer.self_attn.num_heads, s_layer.linear1.weight.shape[1])
    if t_shape != s_shape:
        raise DataError(f"--init_from_teacher needs the teacher's hidden size, heads and FFN width {t_shape}; "
                        f"the student has {s_shape}")
    sources = layer_map(len(encoder_layers(student)), len(encoder_layers(teacher)))
    teacher_state, marker = teacher.state_dict(), ".encoder.layers."
    state = {}
    for name in student.state_dict():
        source = name
        if marker in name:
            head, rest = name.split(marker)
            index, tail = rest.split(".", 1)
            source = f"{head}{marker}{sources[int(index)] - 1}.{tail}"
        state[name] = teacher_state[source]
    student.set_state_dict(state)
    logger.info(f"Student initialised from the teacher's layers {sources}")


# --------------------------------------------------------------------------------- the cache


def cache_key(args: argparse.Namespace, pipeline, texts: list[str]) -> str:
    """What the teacher's logits depend on: its weights, how texts are read, and the texts themselves."""
    digest = hashlib.sha256()
    identity = {"weights": file_checksum(Path(args.teacher, "model_state.pdparams"))["sha256"],
                "vocab": stored_config(args.teacher).get("vocab_size"), "max_seq_length": args.max_seq_length,
                "long_text": pipeline.long_text.as_dict()}
    digest.update(json.dumps(identity, sort_keys=True).encode("utf-8"))
    for text in texts:
        digest.update(text.encode("utf-8") + b"\n")
    return digest.hexdigest()[:24]


def teacher_logits(args: argparse.Namespace, teacher, tokenizer, texts: list[str], long_text) -> np.ndarray:
    """The teacher's logits per text, from the cache or computed in chunks straight into a file on disk
    (renamed into place when complete, so a cut run never leaves a cache that looks whole)."""
    pipeline = dygraph_pipeline(tokenizer, args.max_seq_length, args.batch_size, long_text)
    cache_dir = Path(args.cache_dir or Path(args.teacher, "distill_cache"))
    path = cache_dir / f"teacher_logits-{cache_key(args, pipeline, texts)}.npy"
    if path.is_file():
        logits = np.load(path, mmap_mode="r")
        if logits.shape == (len(texts), teacher.config.num_labels):
            logger.info(f"Teacher's logits on {len(texts)} texts read from its cache {path}")
            return logits
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".partial{os.getpid()}.npy")
    logits = open_memmap(partial, mode="w+", dtype="float32", shape=(len(texts), teacher.config.num_labels))
    for start in tqdm(range(0, len(texts), CACHE_CHUNK), desc="Teacher's logits", disable=None):
        chunk = texts[start:start + CACHE_CHUNK]
        logits[start:start + len(chunk)] = predict_logits(teacher, pipeline, pipeline.encode(chunk))
        logits.flush()
    del logits
    os.replace(partial, path)
    logger.info(f"Teacher's logits on {len(texts)} texts cached in {path}")
    return np.load(path, mmap_mode="r")


# ------------------------------------------------------------------------------- the student


class Distiller(paddle.nn.Layer):
    """The student with the learned projection of hidden-state transfer; only the student is saved."""

    def __init__(self, student, teacher_hidden: int | None):
        super().__init__()
        self.student = student
        width = student.config.hidden_size
        self.projection = paddle.nn.Linear(width, teacher_hidden) if teacher_hidden and teacher_hidden != width else None

    def forward(self, inputs: dict, intermediate: bool):
        if not intermediate:
            return self.student(**inputs), [], []
        out = self.student(**inputs, output_hidden_states=True, output_attentions=True, return_dict=True)
        hidden = [self.projection(h) if self.projection is not None else h for h in out.hidden_states]
        return out.logits, hidden, list(out.attentions)


def check_intermediate(mode: str, teacher, student) -> tuple[bool, bool]:
    """(hidden, attention) transfer to run: the student must be no wider and no deeper than the teacher;
    attention maps need a teacher head count that is a multiple of the student's."""
    if mode == "none":
        return False, False
    t_layers, s_layers = encoder_layers(teacher), encoder_layers(student)
    t_width, s_width = teacher.config.hidden_size, student.config.hidden_size
    if s_width > t_width or len(s_layers) > len(t_layers):
        raise DataError(f"--intermediate {mode}: the student ({len(s_layers)} layers, hidden {s_width}) is deeper or "
                        f"wider than the teacher ({len(t_layers)} layers, hidden {t_width}); intermediate transfer "
                        f"maps a smaller student onto the teacher")
    t_heads, s_heads = t_layers[0].self_attn.num_heads, s_layers[0].self_attn.num_heads
    attention = mode in ("attention", "both")
    if attention and t_heads % s_heads:
        logger.warning(f"--intermediate {mode}: the teacher's {t_heads} heads do not group into the student's "
                       f"{s_heads}; attention maps are not transferred")
        attention = False
    return mode in ("hidden", "both"), attention


def attention_loss(student_maps, teacher_maps, valid: paddle.Tensor) -> paddle.Tensor:
    """MiniLM's KL(teacher || student) of each query's attention distribution, teacher heads averaged in
    groups to the student's count, over the real (unpadded) queries."""
    total = 0.0
    for s, t in zip(student_maps, teacher_maps):
        batch, heads, length, _ = s.shape
        t = t.reshape([batch, heads, -1, length, length]).mean(2)
        kl = (t * (paddle.log(t + 1e-9) - paddle.log(s + 1e-9))).sum(-1)  # [batch, heads, queries]
        total = total + (kl * valid[:, None, :]).sum() / (valid.sum() * heads)
    return total


class Objective:
    """One step's loss: alpha x soft + (1 - alpha) x gold-label loss, plus the intermediate transfer."""

    def __init__(self, args: argparse.Namespace, teacher, distiller, student, hard_loss, pad_token_id: int,
                 pooling: str, transfer: tuple[bool, bool]):
        self.args, self.teacher, self.distiller, self.hard_loss = args, teacher, distiller, hard_loss
        self.pad_token_id, self.pooling = pad_token_id, pooling
        self.hidden, self.attention = transfer
        self.pairs = [0] + layer_map(len(encoder_layers(student)), len(encoder_layers(teacher)))

    def __call__(self, batch: dict, backward) -> paddle.Tensor:
        args, inputs = self.args, model_inputs(batch, self.pad_token_id)
        logits, hidden, maps = self.distiller(inputs, self.hidden or self.attention)
        logits = logits.astype("float32")
        if "row_text" in batch:
            logits = pool_logits(logits, batch["row_text"], self.pooling)
        loss = args.alpha * soft_label_loss(logits, batch["teacher_logits"], args.temperature)
        labelled = paddle.nonzero(batch["labelled"]).flatten()
        if args.alpha < 1 and labelled.shape[0]:
            loss = loss + (1 - args.alpha) * self.hard_loss(paddle.gather(logits, labelled),
                                                            paddle.gather(batch["labels"], labelled))
        if self.hidden or self.attention:
            loss = loss + args.intermediate_weight * self.intermediate(inputs, hidden, maps, batch["input_ids"])
        backward(loss)
        return loss

    def intermediate(self, inputs: dict, hidden: list, maps: list, input_ids: paddle.Tensor) -> paddle.Tensor:
        with paddle.no_grad():
            teacher = self.teacher(**inputs, output_hidden_states=True, output_attentions=True, return_dict=True)
        loss = 0.0
        if self.hidden:
            loss = loss + hidden_state_loss(hidden, [teacher.hidden_states[t] for t in self.pairs])
        if self.attention:
            valid = (input_ids != self.pad_token_id).astype("float32")
            loss = loss + attention_loss(maps, [teacher.attentions[t - 1] for t in self.pairs[1:]], valid)
        return loss


# ---------------------------------------------------------------------------------- training


def data_files(args: argparse.Namespace) -> dict[str, Path]:
    """The files a resumable state belongs to: labelled data, corpus and the teacher's weights."""
    dataset = Path(args.dataset_dir)
    files = {name: dataset / getattr(args, name) for name in ("train_file", "dev_file", "label_file")}
    files.update({f"corpus {i}": Path(path) for i, path in enumerate(args.corpus)})
    files["teacher"] = Path(args.teacher, "model_state.pdparams")
    return files


def resume_progress(args: argparse.Namespace, fingerprint: dict) -> Path | None:
    """The state to resume from, refused when its options or data differ (the run would not be the same) or when
    it would continue in another --save_dir (where the best student so far is not)."""
    if not args.resume_from_checkpoint:
        return None
    state_dir = find_state(args.resume_from_checkpoint)
    check_options(state_dir, args.save_dir, {name: getattr(args, name) for name in RESUME_FIXED})
    check_data(state_dir, read_progress(state_dir).get("data"), fingerprint, data_files(args))
    return state_dir


def check_args(args: argparse.Namespace) -> None:
    if not Path(args.dataset_dir).is_dir():
        raise DataError(f"--dataset_dir {args.dataset_dir} is not a directory")
    if args.corpus and args.alpha == 0:
        raise DataError("--alpha 0 trains on the gold labels only, so --corpus would teach nothing; use --alpha > 0")
    given = [f"--{option}" for option in SHAPE_OPTIONS.values() if getattr(args, option) is not None]
    if args.student_model_name and (given or args.init_from_teacher):
        raise DataError(f"{' '.join(given) or '--init_from_teacher'} shape(s) a --student_preset; "
                        f"--student_model_name brings its own shape and weights")


def warn_ignored_options(args: argparse.Namespace) -> None:
    """One warning per sampling option given a value that the chosen --sampling never reads."""
    for warning in ignored_options(args, parser, sampling_option_use(args)):
        logger.warning(warning)


def hard_loss_function(args: argparse.Namespace, targets: np.ndarray):
    counts = (targets > 0.5).sum(0)
    return get_loss(args.loss, LossSettings(label_counts=counts, num_texts=len(targets),
                                            pos_weight=positive_weights(counts, len(targets))))


def training_data(args: argparse.Namespace, teacher, tokenizer, pipeline, label_list: list[str], rank: int,
                  world_size: int) -> tuple:
    """The training texts (labelled, then the corpus) encoded with their targets (zeros for the corpus), the
    teacher's logits on them (rank 0 computes the cache, the others read it), which texts are labelled, the
    labelled targets, and the encoded dev data."""
    dataset = Path(args.dataset_dir)
    train_examples = load_examples(dataset / args.train_file, label_list)
    dev_examples = load_examples(dataset / args.dev_file, label_list)
    corpus = read_corpus(args.corpus, {e.text for e in train_examples + dev_examples}) if args.corpus else []
    texts = [e.text for e in train_examples] + corpus
    if args.alpha == 0:  # labels only: the teacher's probabilities would weigh nothing
        soft = np.zeros((len(texts), len(label_list)), dtype="float32")
    else:
        soft = teacher_logits(args, teacher, tokenizer, texts, pipeline.long_text) if rank == 0 else None
    if world_size > 1 and args.alpha > 0:
        dist.barrier()
        soft = teacher_logits(args, teacher, tokenizer, texts, pipeline.long_text)  # from rank 0's cache
    rows = pipeline.encode(texts)
    logger.info(f"training texts: {pipeline.length_summary(rows.counts)}")
    labelled_targets = multi_hot(train_examples, len(label_list))
    targets = np.concatenate([labelled_targets, np.zeros((len(corpus), len(label_list)), dtype="float32")])
    is_labelled = np.arange(len(texts)) < len(train_examples)
    return (LabelledRows(rows, targets), soft, is_labelled, labelled_targets,
            encode_examples(pipeline, dev_examples, len(label_list)))


def sampling_targets(labelled_targets: np.ndarray, corpus_logits: np.ndarray, decision: Decision) -> np.ndarray:
    """The labels repeat-factor sampling counts: the gold labels of the labelled texts, then the labels the
    teacher's decision gives each corpus text (read from its cache in chunks)."""
    chosen = [decision.chosen(decision.probabilities(corpus_logits[start:start + CACHE_CHUNK]))
              for start in range(0, len(corpus_logits), CACHE_CHUNK)]
    return np.concatenate([labelled_targets, *chosen]).astype("float32")


def distill(args: argparse.Namespace) -> dict:
    """Distil, keep the student with the best dev macro F1, tune its thresholds on dev; returns the results."""
    check_args(args)
    warn_ignored_options(args)
    fingerprint = data_fingerprint(data_files(args)) if args.save_last or args.resume_from_checkpoint else {}
    state_dir = resume_progress(args, fingerprint)
    rank, world_size = start_run(args.seed, args.device, args.amp)
    started = time.time()
    teacher = load_teacher(args.teacher)
    label_list = resolve_label_list(teacher, Path(args.dataset_dir, args.label_file))
    tokenizer = load_tokenizer(args.teacher)
    check_max_seq_length(args.max_seq_length, teacher.config.max_position_embeddings, args.teacher)
    long_text = checkpoint_long_text(teacher)  # the student reads texts as its teacher does
    pipeline = dygraph_pipeline(tokenizer, args.max_seq_length, args.batch_size, long_text)
    data, soft, is_labelled, labelled_targets, dev_data = training_data(args, teacher, tokenizer, pipeline, label_list,
                                                                        rank, world_size)

    student = build_student(args, teacher, tokenizer, len(label_list))
    if not args.student_model_name and not args.init_from_teacher:
        init_classifier_bias(student, labelled_targets.mean(0))
    transfer = check_intermediate(args.intermediate, teacher, student)
    distiller = Distiller(student, teacher.config.hidden_size if transfer[0] else None)
    logger.info(f"Student: {student.config.num_hidden_layers} layers, hidden {student.config.hidden_size}, "
                f"{encoder_layers(student)[0].self_attn.num_heads} heads, "
                f"{sum(p.size for p in student.parameters()):,} parameters; teacher "
                f"{sum(p.size for p in teacher.parameters()):,}")

    def collate(batch_texts: list[int]) -> dict:
        batch = labelled_batch(pipeline, data, batch_texts)
        batch["teacher_logits"] = paddle.to_tensor(np.asarray(soft[batch_texts], dtype="float32"))
        batch["labelled"] = paddle.to_tensor(is_labelled[batch_texts])
        return batch

    repeats = sampling_repeats(args, lambda: sampling_targets(labelled_targets, soft[len(labelled_targets):],
                                                              checkpoint_decision(teacher)))
    batches = TrainBatches(data.rows.text_lengths(), args.batch_size, collate, args.seed, world_size, rank, repeats)
    model = paddle.DataParallel(distiller) if world_size > 1 else distiller
    total_steps = optimizer_steps_per_epoch(len(batches), args.gradient_accumulation_steps) * args.epochs
    lr_scheduler = LinearDecayWithWarmup(args.learning_rate, total_steps, math.ceil(args.warmup_ratio * total_steps))
    optimizer = build_optimizer(model, lr_scheduler, args.weight_decay)
    precision = MixedPrecision(args.amp)
    hard_loss = hard_loss_function(args, labelled_targets)
    objective = Objective(args, teacher, model, student, hard_loss, tokenizer.pad_token_id, long_text.pooling, transfer)
    progress = load_state(state_dir, model, optimizer, precision.scaler, rank, world_size) if state_dir else {}
    if rank == 0:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        write_settings(args, args.save_dir)
    decision = checkpoint_decision(teacher).calibrated(None).overridden(threshold=0.5)  # the policy, fresh thresholds
    best = run_loop(args, model, batches, objective, optimizer, lr_scheduler, precision, total_steps, progress,
                    (pipeline, dev_data, hard_loss, decision, label_list, tokenizer), fingerprint, rank, world_size)
    results = {"best_dev": best, "student_parameters": int(sum(p.size for p in student.parameters())),
               "texts": {"labelled": len(labelled_targets), "unlabelled": len(is_labelled) - len(labelled_targets)}}
    if rank == 0:
        results.update(tune_decision(args, student, tokenizer, pipeline, dev_data, checkpoint_decision(teacher),
                                     label_list, long_text))
        results["train_time_s"] = round(time.time() - started, 1)
        write_json(Path(args.save_dir, "results.json"), results)
    if world_size > 1:
        dist.barrier()
    return results


def run_loop(args: argparse.Namespace, model, batches, objective: Objective, optimizer, lr_scheduler,
             precision: MixedPrecision, total_steps: int, progress: dict, evaluation: tuple, fingerprint: dict,
             rank: int, world_size: int) -> dict:
    """The training loop with an evaluation on dev after every epoch; the best student by macro F1 is saved
    as a checkpoint (and, with --save_last, the resumable state). Returns the best dev figures."""
    pipeline, dev_data, hard_loss, decision, label_list, tokenizer = evaluation
    student = (model._layers if world_size > 1 else model).student
    history = TrainingHistory(args.save_dir, enabled=rank == 0, keep_rows=progress.get("history_rows", 0))
    best = progress.get("best", {"macro_f1": -1.0})

    def log_line(state: StepState) -> str:
        return ("global step %d, epoch: %d, batch: %d, loss: %.5f, speed: %.2f step/s, lr: %.3e"
                % (state.global_step, state.epoch, state.step, float(state.loss), state.speed, state.lr))

    def on_epoch_end(state: StepState) -> bool:
        metric, eval_loss = evaluate(student, pipeline, dev_data, hard_loss, decision, label_list)
        figures = metric.figures()
        history.log_eval(state, eval_loss, figures["micro_f1"], figures["macro_f1"])
        if figures["macro_f1"] > best["macro_f1"]:
            best.update(macro_f1=figures["macro_f1"], micro_f1=figures["micro_f1"], epoch=state.epoch)
            if rank == 0:
                save_checkpoint(student, tokenizer, args.save_dir, label_list, decision, pipeline.long_text)
        logger.info("Current best macro f1 score: %.5f" % best["macro_f1"])
        if args.save_last:
            saved = save_state(args.save_dir, model, optimizer, precision.scaler,
                               {**state.position(), "best": best, "history_rows": history.rows,
                                "args": {name: getattr(args, name) for name in RESUME_FIXED}, "data": fingerprint},
                               rank, world_size)
            logger.info(f"Resumable state saved in {saved}")
        return True

    loop = TrainingLoop(model, batches, objective, optimizer, lr_scheduler, total_steps, log_line, args.logging_steps,
                        description="Distilling", main_process=rank == 0,
                        accumulation_steps=args.gradient_accumulation_steps, precision=precision,
                        on_log=history.log_step)
    start = StepState(**{key: progress[key] for key in StepState().position()}) if progress else None
    loop.run(on_epoch_end=on_epoch_end, start=start)
    history.close()
    logger.info("Final best macro f1 score: %.5f" % best["macro_f1"])
    return best


def tune_decision(args: argparse.Namespace, student, tokenizer, pipeline, dev_data, teacher_decision,
                  label_list: list[str], long_text) -> dict:
    """Reload the best student, tune its thresholds on dev (calibrated again when the teacher was) and store
    them with the teacher's label-count policy."""
    student.set_dict(paddle.load(str(Path(args.save_dir, "model_state.pdparams"))))
    logits = predict_logits(student, pipeline, dev_data.rows)
    calibration = teacher_decision.calibration.method if teacher_decision.calibration else None
    policy = teacher_decision.calibrated(None).overridden(threshold=0.5)
    decision, results = fit_decision_on_dev(policy, logits, dev_data.targets, label_list, 0.5, calibration)
    save_checkpoint(student, tokenizer, args.save_dir, label_list, decision, long_text)
    logger.info(f"Student saved in {args.save_dir} with thresholds tuned on dev")
    return results


def main(argv: list[str] | None = None) -> dict:
    return distill(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
