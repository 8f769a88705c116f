"""The one data/model core of the suite.

Every script (train, predict, export, analysis, prune, deploy, few-shot) reads data, loads
models, batches and evaluates through this module, so the file format, the label list and the
decision thresholds are handled in exactly one place.
"""
from __future__ import annotations

import difflib
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import paddle
from paddlenlp.data import DataCollatorWithPadding
import paddlenlp.transformers
from paddlenlp.transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from paddlenlp.utils.log import logger  # the one logger of every script, as in the reference
from tqdm import tqdm

from metric import MetricReport

REFERENCE_MODEL_NAMES = (
    "ernie-1.0-large-zh-cw",
    "ernie-3.0-xbase-zh",
    "ernie-3.0-base-zh",
    "ernie-3.0-medium-zh",
    "ernie-3.0-micro-zh",
    "ernie-3.0-mini-zh",
    "ernie-3.0-nano-zh",
    "ernie-2.0-base-en",
    "ernie-2.0-large-en",
    "ernie-m-base",
    "ernie-m-large",
)

# Additive attention-mask value for padded positions. paddlenlp uses -1e4; its softmax clamps
# the exponent at about -88, so padded weights become denormal floats (~4e-39) and the backward
# pass crawls through denormal arithmetic (a 4-layer ERNIE training step on a padded 32x128 batch:
# 2.91 s with -1e4, 2.26 s with this value, as fast as the same batch unpadded; bench/mask_speed.py). exp(-50) = 2e-22 is a normal float and still far
# below float32 resolution next to the real weights, so the outputs are unchanged (tested to 1e-6).
PAD_MASK_VALUE = -50.0

# Prediction reads this many batches at a time and sorts them by length, so each batch is padded
# only to its own longest text while the output keeps the input order.
WINDOW_BATCHES = 64


class DataError(Exception):
    """A problem with the user's input: reported as one clear line and exit status 2."""


def run_cli(main: Callable[[], None]) -> None:
    """Run a script's main so that bad input ends with a message and exit 2, never a traceback."""
    try:
        main()
    except DataError as err:
        logger.error(str(err))
        sys.exit(2)


# ----------------------------------------------------------------------------------- reading


def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without line ending); accepts a BOM and CRLF line endings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"File not found: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline=None) as handle:
            for line_no, line in enumerate(handle, start=1):
                yield line_no, line.rstrip("\n")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None


def read_label_entries(path: str | os.PathLike) -> list[tuple[int, str]]:
    """(line number, stripped line) of every label line; trailing blank lines are allowed."""
    entries: list[tuple[int, str]] = []
    blank_line = 0
    for line_no, line in read_lines(path):
        entry = line.strip()
        if not entry:
            blank_line = blank_line or line_no
            continue
        if blank_line:
            raise DataError(f"{path}:{blank_line}: blank label name (every line of the label file must name a label)")
        entries.append((line_no, entry))
    if not entries:
        raise DataError(f"{path}: the label file is empty")
    return entries


def check_unique_labels(path: str | os.PathLike, names: Iterable[tuple[int, str]]) -> None:
    """Refuse a label named twice; `names` are (line number, label name)."""
    seen: dict[str, int] = {}
    for line_no, name in names:
        if name in seen:
            raise DataError(f"{path}:{line_no}: duplicate label {name!r} (first on line {seen[name]})")
        seen[name] = line_no


def read_label_list(path: str | os.PathLike) -> list[str]:
    """Read label.txt: one name per line, line order = class id."""
    entries = read_label_entries(path)
    check_unique_labels(path, entries)
    return [name for _, name in entries]


@dataclass
class Example:
    """One line of a data file: its text and the ids of its labels (empty: no label)."""

    text: str
    labels: list[int]
    line_no: int


@dataclass
class ReadStats:
    """What a read saw, so that nothing is dropped without being counted."""

    examples: int = 0
    unlabelled: int = 0
    blank: int = 0
    label_columns_ignored: int = 0

    def summary(self, path: str | os.PathLike) -> str:
        parts = [f"{self.examples} examples"]
        if self.unlabelled:
            parts.append(f"{self.unlabelled} without labels")
        if self.blank:
            parts.append(f"{self.blank} blank lines skipped")
        if self.label_columns_ignored:
            parts.append(f"label column ignored on {self.label_columns_ignored} lines")
        return f"Read {Path(path).name}: " + ", ".join(parts)


def _unknown_label_message(path, line_no: int, label: str, label2id: dict[str, int]) -> str:
    close = difflib.get_close_matches(label, list(label2id), n=1, cutoff=0.0)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{path}:{line_no}: unknown label {label!r} (not in the label file){hint}"


def iter_examples(
    path: str | os.PathLike,
    label2id: dict[str, int] | None = None,
    stats: ReadStats | None = None,
) -> Iterator[Example]:
    """Stream the examples of a `text<TAB>label,label` file.

    With `label2id=None` (prediction input) only the text is used: a second column, if present,
    is ignored and counted. A line without TAB (or ending in TAB) is an example with no labels.
    """
    stats = stats if stats is not None else ReadStats()
    for line_no, raw in read_lines(path):
        line = raw.rstrip()
        if not line.strip():
            stats.blank += 1
            continue
        columns = line.split("\t")
        if len(columns) > 2:
            raise DataError(
                f"{path}:{line_no}: more than one TAB in the line (format is text<TAB>label,label; "
                f"texts must not contain TAB): {raw!r}"
            )
        text = columns[0].strip()
        if not text:
            raise DataError(f"{path}:{line_no}: empty text before the TAB: {raw!r}")
        labels: list[int] = []
        if len(columns) == 2 and label2id is None:
            stats.label_columns_ignored += 1
        elif len(columns) == 2:
            for item in columns[1].split(","):
                name = item.strip()
                if not name:
                    raise DataError(f"{path}:{line_no}: empty label in {columns[1]!r}")
                if name not in label2id:
                    raise DataError(_unknown_label_message(path, line_no, name, label2id))
                if label2id[name] not in labels:
                    labels.append(label2id[name])
        stats.examples += 1
        stats.unlabelled += not labels and label2id is not None
        yield Example(text=text, labels=labels, line_no=line_no)


def load_examples(path: str | os.PathLike, label_list: Sequence[str] | None) -> list[Example]:
    """Read a whole data file, log what was read, and refuse a file with no example."""
    label2id = None if label_list is None else {name: i for i, name in enumerate(label_list)}
    stats = ReadStats()
    examples = list(iter_examples(path, label2id, stats))
    if not examples:
        raise DataError(f"{path}: no examples (the file has only blank lines)")
    logger.info(stats.summary(path))
    return examples


def format_labels(label_ids: Iterable[int], label_list: Sequence[str]) -> str:
    """The label column of the data format: names joined by a bare comma."""
    return ",".join(label_list[i] for i in label_ids)


def format_prediction(text: str, probs: np.ndarray, thresholds: np.ndarray, label_list: Sequence[str],
                      output_probs: bool = False) -> str:
    """One output line: `text<TAB>label,label` (the training format), plus the probabilities as JSON."""
    line = f"{text}\t{format_labels(np.flatnonzero(probs > thresholds), label_list)}"
    if output_probs:
        line += "\t" + json.dumps({n: round(float(p), 4) for n, p in zip(label_list, probs)}, ensure_ascii=False)
    return line


# ----------------------------------------------------------------------- models and checkpoints


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def set_device(device: str) -> None:
    """Select the device; on CPU give each local process an equal share of the cores."""
    try:
        paddle.set_device(device)
    except ValueError as err:
        raise DataError(f"--device {device}: {err} (use --device cpu on a machine without GPU)") from None
    if paddle.get_device() == "cpu":
        local_procs = int(os.environ.get("PADDLE_LOCAL_SIZE", os.environ.get("PADDLE_TRAINERS_NUM", "1")))
        paddle.base.core.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_procs)))


def _offline_hint(model_name: str) -> str:
    return (
        f"Could not download '{model_name}' (no network access to the model hub?). To work offline, "
        f"create a local model and pass its directory instead:\n"
        f"  python scratch_model.py --dataset_dir data --output_dir ./scratch_model "
        f"--preset {model_name if model_name.startswith('ernie-3.0-') else 'tiny'}\n"
        f"  python train.py --model_name ./scratch_model ...   "
        f"(few-shot/train.py: --model_name_or_path ./scratch_model)\n"
        f"or copy a downloaded model directory (config.json, model_state.pdparams, vocab.txt, "
        f"tokenizer_config.json) to this machine and pass its path as --model_name."
    )


def from_pretrained(loader: Callable, model_name: str, **kwargs):
    """Load from a local directory or a reference model name, with clear errors for both."""
    if os.path.isdir(model_name):
        try:
            return loader(model_name, **kwargs)
        except Exception as err:  # missing or foreign files surface as OSError, ValueError, KeyError...
            raise DataError(f"{model_name} does not hold a paddlenlp model and tokenizer (config.json, "
                            f"model_state.pdparams, tokenizer files): {type(err).__name__}: {err}") from None
    if model_name not in REFERENCE_MODEL_NAMES:
        raise DataError(
            f"--model_name {model_name!r} is neither a local model directory nor one of: "
            + ", ".join(REFERENCE_MODEL_NAMES)
        )
    try:
        return loader(model_name, **kwargs)
    except Exception as err:  # paddlenlp raises many kinds of errors for a failed download
        raise DataError(f"{_offline_hint(model_name)}\n(cause: {type(err).__name__}: {err})") from None


def load_tokenizer(model_name: str):
    return from_pretrained(AutoTokenizer.from_pretrained, model_name)


def plain_vocabulary(tokenizer) -> list[str]:
    """Vocabulary entries that are ordinary text: no special tokens ([CLS], <unk>), no ## continuations."""
    return [token for token in tokenizer.vocab.token_to_idx if not token.startswith(("[", "##", "<"))]


def load_model(model_name: str, num_labels: int | None = None):
    """Load a sequence-classification model (a fresh head when the checkpoint has none of this size).

    Width-pruned checkpoints (prune.py) are narrower than their config says: they are built full
    size, narrowed to the stored width, and only then given their weights.
    """
    kwargs = {} if num_labels is None else {"num_classes": num_labels}
    pruned = pruned_width(model_name)
    if pruned is None:
        return from_pretrained(AutoModelForSequenceClassification.from_pretrained, model_name, **kwargs)
    config = from_pretrained(AutoConfig.from_pretrained, model_name, **kwargs)
    model = getattr(paddlenlp.transformers, config.architectures[0])(config)
    narrow_encoder(model, pruned["num_attention_heads"], pruned["intermediate_size"])
    model.set_state_dict(paddle.load(str(Path(model_name) / "model_state.pdparams")))
    return model


def pruned_width(model_name: str) -> dict | None:
    """The `pruned_width` entry prune.py stores in config.json ({width_mult, heads, FFN size}), if any."""
    config_file = Path(model_name) / "config.json"
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text(encoding="utf-8")).get("pruned_width")


def encoder_layers(model) -> list[paddle.nn.TransformerEncoderLayer]:
    """The transformer layers of an ERNIE-family classifier (post-norm paddle.nn layers)."""
    base = getattr(model, model.base_model_prefix, None)
    layers = list(getattr(getattr(base, "encoder", None), "layers", []))
    if not layers or not all(isinstance(layer, paddle.nn.TransformerEncoderLayer) and not layer.normalize_before
                             for layer in layers):
        raise DataError(f"{type(model).__name__}: width pruning needs an ERNIE-style encoder of "
                        f"paddle.nn.TransformerEncoderLayer (post-norm)")
    return layers


def _narrow_linear(linear: paddle.nn.Linear, rows: int | None = None, cols: int | None = None) -> paddle.nn.Linear:
    """A smaller Linear holding the first `rows` inputs and/or `cols` outputs of `linear`."""
    weight = linear.weight[:rows, :cols]
    narrow = paddle.nn.Linear(weight.shape[0], weight.shape[1])
    narrow.weight.set_value(weight)
    narrow.bias.set_value(linear.bias[:cols])
    return narrow


def narrow_encoder(model, num_heads: int, intermediate_size: int) -> None:
    """Keep the first `num_heads` attention heads and `intermediate_size` FFN neurons of every layer.

    prune.py orders heads and neurons by importance first, so the first ones are the ones to keep.
    The hidden size is unchanged, so embeddings, pooler and classifier stay as they are.
    """
    for layer in encoder_layers(model):
        attn = layer.self_attn
        width = num_heads * attn.head_dim
        attn.q_proj, attn.k_proj, attn.v_proj = (_narrow_linear(p, cols=width)
                                                 for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        attn.out_proj = _narrow_linear(attn.out_proj, rows=width)
        attn.num_heads = num_heads
        layer.linear1 = _narrow_linear(layer.linear1, cols=intermediate_size)
        layer.linear2 = _narrow_linear(layer.linear2, rows=intermediate_size)


def has_trained_head(model_name: str, num_labels: int) -> bool:
    """Whether `model_name` holds a classifier head of the right size (else it starts fresh)."""
    config_file = Path(model_name) / "config.json"
    if not config_file.is_file():
        return False
    config = json.loads(config_file.read_text(encoding="utf-8"))
    is_classifier = any("ForSequenceClassification" in name for name in config.get("architectures", []))
    stored_labels = len(config.get("id2label") or {}) or config.get("num_classes", 0)
    return is_classifier and stored_labels == num_labels


def init_classifier_bias(model, label_prior: np.ndarray) -> None:
    """Start each label's logit at the log-odds of its training frequency.

    A fresh head predicts p=0.5 for every label, and BCE spends many epochs pushing all rare labels
    down before anything is learned; starting at the prior lets a scratch model predict from epoch 2.
    """
    prior = np.clip(label_prior, 1e-4, 1 - 1e-4)
    model.classifier.bias.set_value(np.log(prior / (1 - prior)).astype("float32"))


def checkpoint_labels(model) -> list[str] | None:
    """The label list stored in a model's config by save_checkpoint (None for foreign models)."""
    names = getattr(model.config, "multi_label_names", None)
    return list(names) if names else None


def checkpoint_thresholds(model, default: float = 0.5) -> np.ndarray:
    thresholds = getattr(model.config, "multi_label_thresholds", None)
    num_labels = model.config.num_labels
    return np.asarray(thresholds if thresholds else [default] * num_labels, dtype="float32")


def check_label_list(label_file: str | os.PathLike, file_labels: list[str], model_labels: list[str]) -> None:
    """Refuse a label.txt that disagrees with the labels the checkpoint was trained with."""
    if file_labels == model_labels:
        return
    if len(file_labels) != len(model_labels):
        detail = f"{len(file_labels)} labels in the file, {len(model_labels)} in the checkpoint"
    else:
        i = next(i for i, (a, b) in enumerate(zip(file_labels, model_labels)) if a != b)
        detail = f"line {i + 1} is {file_labels[i]!r} but the checkpoint's label {i} is {model_labels[i]!r}"
    raise DataError(
        f"{label_file} disagrees with the checkpoint ({detail}). The checkpoint stores its own label "
        f"list: omit the label file or pass the one it was trained with."
    )


def resolve_label_list(model, label_file: str | os.PathLike) -> list[str]:
    """Labels for a trained model: the checkpoint's own, checked against label_file if present."""
    model_labels = checkpoint_labels(model)
    if model_labels is None:
        labels = read_label_list(label_file)
        if len(labels) != model.config.num_labels:
            raise DataError(
                f"{label_file} has {len(labels)} labels but the model has {model.config.num_labels} outputs"
            )
        return labels
    if Path(label_file).is_file():
        check_label_list(label_file, read_label_list(label_file), model_labels)
    return model_labels


def save_checkpoint(model, tokenizer, save_dir: str | os.PathLike, label_list: Sequence[str], thresholds) -> None:
    """Write model, tokenizer, label list and thresholds: everything later scripts need."""
    model = model._layers if isinstance(model, paddle.DataParallel) else model
    model.config.multi_label_names = list(label_list)
    model.config.multi_label_thresholds = [float(t) for t in thresholds]
    model.config.id2label = {i: name for i, name in enumerate(label_list)}
    model.config.label2id = {name: i for i, name in enumerate(label_list)}
    model.save_pretrained(str(save_dir))
    tokenizer.save_pretrained(str(save_dir))


# ------------------------------------------------------------------------- features, batches


def convert_example(example: Example, tokenizer, max_seq_length: int, num_labels: int | None) -> dict:
    """Tokenize one example; `num_labels=None` for prediction input (no label vector)."""
    encoded = tokenizer(text=example.text, max_length=max_seq_length, truncation=True)
    features = {name: encoded[name] for name in ("input_ids", "token_type_ids") if name in encoded}
    if num_labels is not None:
        features["labels"] = multi_hot([example], num_labels)[0].tolist()
    return features


def multi_hot(examples: Sequence[Example], num_labels: int) -> np.ndarray:
    """The examples' labels as an (examples x labels) 0/1 matrix."""
    matrix = np.zeros((len(examples), num_labels), dtype="float32")
    for row, example in enumerate(examples):
        matrix[row, example.labels] = 1
    return matrix


class LengthGroupedBatchSampler(paddle.io.Sampler):
    """Batches of similar length (less padding), shuffled, and sharded over processes.

    Shuffles the indices, sorts them by length inside windows of `batch_size * window_batches`,
    cuts batches and shuffles the batches. Every process draws the same permutation (seed + epoch)
    and takes every world_size-th batch; the list is padded so all processes run the same number of
    steps (DataParallel needs that). Without shuffle, batches are simply in sorted order.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, window_batches: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.window = batch_size * window_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable")
            return [order[i:i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.window):
            window = order[start:start + self.window]
            window = window[np.argsort(-self.lengths[window], kind="stable")]
            batches += [window[i:i + self.batch_size].tolist() for i in range(0, len(window), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        if self.num_replicas > 1:
            missing = -len(batches) % self.num_replicas
            batches = batches + batches[:missing]
            batches = batches[self.rank::self.num_replicas]
        return iter(batches)

    def __len__(self) -> int:
        total = -(-len(self.lengths) // self.batch_size) if not self.shuffle else len(self._all_batches())
        return -(-total // self.num_replicas)


def make_loader(features: Sequence[dict], tokenizer, batch_size: int, shuffle: bool = False, seed: int = 0,
                num_replicas: int = 1, rank: int = 0, collate: Callable | None = None) -> paddle.io.DataLoader:
    """Length-grouped batches, padded per batch by `collate` (default: pad the token ids)."""
    sampler = LengthGroupedBatchSampler([len(f["input_ids"]) for f in features], batch_size, shuffle=shuffle,
                                        seed=seed, num_replicas=num_replicas, rank=rank)
    collate = collate or DataCollatorWithPadding(tokenizer, return_tensors="pd")
    return paddle.io.DataLoader(features, batch_sampler=sampler, collate_fn=collate, return_list=True)


def model_inputs(batch: dict, pad_token_id: int) -> dict:
    """The model's keyword inputs for a collated batch, with our fast additive attention mask."""
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids") if k in batch}
    padded = (inputs["input_ids"] == pad_token_id).astype("float32")
    inputs["attention_mask"] = paddle.unsqueeze(padded * PAD_MASK_VALUE, axis=[1, 2])
    return inputs


def _input_order(loader: paddle.io.DataLoader) -> np.ndarray:
    """Indices that put the loader's (length-sorted) batch outputs back into dataset order."""
    order = [i for batch in loader.batch_sampler for i in batch]
    return np.argsort(np.asarray(order, dtype="int64"), kind="stable")


@paddle.no_grad()
def predict_probs(model, loader: paddle.io.DataLoader, pad_token_id: int, show_progress: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """Sigmoid probabilities in dataset order (the loader may batch in any order).

    Returns (probs, labels or None, mean BCE loss or None).
    """
    was_training = model.training
    model.eval()
    probs, labels, losses = [], [], []
    for batch in tqdm(loader, desc="Predicting", disable=not show_progress, leave=False):
        logits = model(**model_inputs(batch, pad_token_id))
        probs.append(paddle.nn.functional.sigmoid(logits).numpy())
        if "labels" in batch:
            target = paddle.cast(batch["labels"], "float32")
            losses.append(float(paddle.nn.functional.binary_cross_entropy_with_logits(logits, target)))
            labels.append(target.numpy())
    if was_training:
        model.train()
    inverse = _input_order(loader)
    probs_arr = np.concatenate(probs)[inverse]
    labels_arr = np.concatenate(labels)[inverse] if labels else None
    return probs_arr, labels_arr, (float(np.mean(losses)) if losses else None)


def text_probs(model, tokenizer, texts: Sequence[str], max_seq_length: int, batch_size: int = 32) -> np.ndarray:
    """Dygraph sigmoid probabilities for raw texts, in input order."""
    features = [convert_example(Example(text, [], i), tokenizer, max_seq_length, None) for i, text in enumerate(texts)]
    probs, _, _ = predict_probs(model, make_loader(features, tokenizer, batch_size), tokenizer.pad_token_id)
    return probs


@paddle.no_grad()
def classifier_features(model, tokenizer, texts: Sequence[str], max_seq_length: int, batch_size: int = 32
                        ) -> np.ndarray:
    """The classifier's input (pooled [CLS] vector) per text, in input order.

    This is the space in which the analysis scripts compare examples (similar training examples,
    sparse dev data, representer points).
    """
    model.eval()
    features = [convert_example(Example(text, [], i), tokenizer, max_seq_length, None) for i, text in enumerate(texts)]
    loader = make_loader(features, tokenizer, batch_size)
    encoder = getattr(model, model.base_model_prefix)
    pooled = [encoder(**model_inputs(batch, tokenizer.pad_token_id))[1].numpy() for batch in loader]
    return np.concatenate(pooled)[_input_order(loader)]


def evaluate(model, loader: paddle.io.DataLoader, pad_token_id: int, thresholds, label_list: Sequence[str]
             ) -> MetricReport:
    """Evaluate on a labelled loader and log the reference's eval line."""
    probs, labels, loss = predict_probs(model, loader, pad_token_id)
    metric = MetricReport(thresholds=thresholds, label_names=label_list)
    metric.update(probs, labels)
    micro_f1, macro_f1 = metric.accumulate()
    logger.info("eval loss: %.5f, micro f1 score: %.5f, macro f1 score: %.5f" % (loss, micro_f1, macro_f1))
    return metric


def build_optimizer(model, learning_rate, weight_decay: float) -> paddle.optimizer.AdamW:
    """AdamW without weight decay on biases and LayerNorm parameters, as in the reference."""
    decay_params = {p.name for n, p in model.named_parameters() if not any(nd in n for nd in ["bias", "norm"])}
    return paddle.optimizer.AdamW(learning_rate=learning_rate, parameters=model.parameters(),
                                  weight_decay=weight_decay, apply_decay_param_fun=lambda name: name in decay_params)


def write_settings(args, save_dir: str | os.PathLike) -> None:
    """setting.txt of the resolved arguments, in the reference's layout."""
    lines = ["------------------ start ------------------"]
    lines += [f"{name} : {value}" for name, value in sorted(vars(args).items())]
    lines.append("------------------- end -------------------")
    Path(save_dir, "setting.txt").write_text("\n".join(lines), encoding="utf-8")


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch

