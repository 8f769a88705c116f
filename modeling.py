"""Models and checkpoints: loading by name or directory, the checkpoint format (a width-pruned one
rebuilt through pruning.py), and the dygraph model as a runner of the text pipeline (`load_trained`:
a checkpoint ready to label texts, for predict.py and the analysis scripts).

A checkpoint directory is a paddlenlp model and tokenizer whose config.json also stores the label
list (`multi_label_names`), the decision thresholds (`multi_label_thresholds`) with the rest of the
decision (`multi_label_decision`: label-count policy, calibration; decision.py), how it reads long
texts (`long_text`) and, for a width-pruned model, its width (`pruned_width`): everything later
scripts need, written and read only here.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import paddle
import paddlenlp.transformers
from paddlenlp.transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from data_io import read_label_list
from decision import CONFIG_KEY as DECISION_KEY
from decision import Decision
from losses import label_log_odds
from pipeline import ERNIE_INPUTS, ERNIE_M_INPUTS, LongText, TextPipeline
from pruning import narrow_encoder, pruned_width
from script_options import resolve_decision, resolve_long_text
from utils import DataError, logger, read_json_object, write_json

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
    "rocketqa-zh-dureader-query-encoder",  # retrieval_based/'s default encoder
)

# Additive attention-mask value for padded positions. paddlenlp uses -1e4; its softmax clamps
# the exponent at about -88, so padded weights become denormal floats (~4e-39) and the backward
# pass crawls through denormal arithmetic (a 4-layer ERNIE training step on a padded 32x128 batch:
# 2.91 s with -1e4, 2.26 s with this value, as fast as the same batch unpadded; docs/benchmarks.md). exp(-50) = 2e-22 is a normal float and still far
# below float32 resolution next to the real weights, so the outputs are unchanged (tested to 1e-6).
PAD_MASK_VALUE = -50.0


def _offline_hint(model_name: str) -> str:
    return (
        f"Could not download '{model_name}' (no network access to the model hub?). To work offline, "
        f"create a local model and pass its directory instead:\n"
        f"  python scratch_model.py --dataset_dir data --output_dir ./scratch_model "
        f"--preset {model_name if model_name.startswith('ernie-3.0-') else 'tiny'}\n"
        f"  python train.py --model_name ./scratch_model ...   "
        f"(few-shot/ and retrieval_based/: --model_name_or_path ./scratch_model)\n"
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
    pruned = pruned_width(stored_config(model_name))
    if pruned is None:
        return from_pretrained(AutoModelForSequenceClassification.from_pretrained, model_name, **kwargs)
    config = from_pretrained(AutoConfig.from_pretrained, model_name, **kwargs)
    model = getattr(paddlenlp.transformers, config.architectures[0])(config)
    narrow_encoder(model, pruned["num_attention_heads"], pruned["intermediate_size"])
    model.set_state_dict(paddle.load(str(Path(model_name) / "model_state.pdparams")))
    return model


def stored_config(directory: str | os.PathLike) -> dict:
    """The config.json of a model directory as written (empty when there is none), read without
    building the model: enough to tell what kind of checkpoint the directory holds."""
    config_file = Path(directory) / "config.json"
    if not config_file.is_file():
        return {}
    return read_json_object(config_file, f"restore {directory} from a copy or train it again")


def has_trained_head(model_name: str, num_labels: int) -> bool:
    """Whether `model_name` holds a classifier head of the right size (else it starts fresh)."""
    config = stored_config(model_name)
    is_classifier = any("ForSequenceClassification" in name for name in config.get("architectures", []))
    stored_labels = len(config.get("id2label") or {}) or config.get("num_classes", 0)
    return is_classifier and stored_labels == num_labels


def init_classifier_bias(model, label_prior: np.ndarray) -> None:
    """Start each label's logit at the log-odds of its training frequency.

    A fresh head predicts p=0.5 for every label, and BCE spends many epochs pushing all rare labels
    down before anything is learned; starting at the prior lets a scratch model predict from epoch 2.
    """
    model.classifier.bias.set_value(label_log_odds(label_prior))


def checkpoint_labels(model) -> list[str] | None:
    """The label list stored in a model's config by save_checkpoint (None for foreign models)."""
    names = getattr(model.config, "multi_label_names", None)
    return list(names) if names else None


def checkpoint_decision(model) -> Decision:
    """The thresholds, label-count policy and calibration stored by save_checkpoint (0.5 for every
    label and nothing else for a checkpoint without them)."""
    config = model.config
    try:
        return Decision.stored(getattr(config, "multi_label_thresholds", None),
                               getattr(config, DECISION_KEY, None), config.num_labels)
    except ValueError as err:
        raise DataError(f"the checkpoint's decision settings ({DECISION_KEY} in config.json): {err}") from None


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


def save_checkpoint(model, tokenizer, save_dir: str | os.PathLike, label_list: Sequence[str], decision: Decision,
                    long_text: LongText | None = None) -> None:
    """Write model, tokenizer, label list, decision (thresholds, policy, calibration) and long-text
    settings: everything later scripts need."""
    model = model._layers if isinstance(model, paddle.DataParallel) else model
    if long_text is not None:
        model.config.long_text = long_text.as_dict()
    model.config.multi_label_names = list(label_list)
    model.config.multi_label_thresholds = [float(t) for t in decision.thresholds]
    setattr(model.config, DECISION_KEY, decision.settings())
    model.config.id2label = {i: name for i, name in enumerate(label_list)}
    model.config.label2id = {name: i for i, name in enumerate(label_list)}
    _save_pretrained_atomically(model, tokenizer, Path(save_dir))


def store_decision(checkpoint: str | os.PathLike, decision: Decision) -> Path:
    """Replace the decision stored in a checkpoint's config.json (atomically; the weights stay as they
    are) and return the file: calibrate.py's way of changing a checkpoint that exists."""
    config = stored_config(checkpoint)
    config["multi_label_thresholds"] = [float(t) for t in decision.thresholds]
    config[DECISION_KEY] = decision.settings()
    config_file = Path(checkpoint) / "config.json"
    write_json(config_file, config)
    return config_file


def _save_pretrained_atomically(model, tokenizer, save_dir: Path) -> None:
    """paddlenlp writes config.json and the weights in place, so a kill mid-save left a cut config.json (labels,
    thresholds) beside the previous weights; here they are written into a temporary folder and each file
    is renamed into place (atomic on POSIX), config.json last, so every file is whole, old or new."""
    save_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".saving.", dir=save_dir))
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        for file in sorted(staging.iterdir(), key=lambda path: path.name == "config.json"):
            os.replace(file, save_dir / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def stored_long_text(stored: dict | None) -> LongText:
    """LongText from its stored dict (config.json, export_meta.json); truncation when nothing is stored."""
    if not stored:
        return LongText()
    fields = {field.name for field in dataclasses.fields(LongText)}
    return LongText(**{name: value for name, value in stored.items() if name in fields})


def checkpoint_long_text(model) -> LongText:
    return stored_long_text(getattr(model.config, "long_text", None))


def check_max_seq_length(max_seq_length: int, max_positions: int | None, model_path: str | os.PathLike,
                         option: str = "--max_seq_length", windows: bool = True) -> None:
    """Refuse a sequence length beyond the model's position embeddings with one line (the engines fail
    deep inside their embedding lookup); `windows`: the script can read long texts in windows."""
    if max_positions and max_seq_length > max_positions:
        raise DataError(f"{option} {max_seq_length} is above the {max_positions} positions of the model in "
                        f"{model_path} (max_position_embeddings): use {option} {max_positions} or less"
                        + (", and --long_text window to read longer texts whole" if windows else ""))


def tokenizer_positions(tokenizer) -> int | None:
    """The input length a tokenizer was saved for (paddlenlp writes the model's position count as its
    `model_max_length`); None when it holds the "no limit" placeholder. For exports that do not
    record their positions (the reference's)."""
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


# ------------------------------------------------------------------------- the dygraph model


def model_input_names(tokenizer) -> tuple[str, ...]:
    """The token inputs the tokenizer makes for the model: ERNIE's two, or ERNIE-M's input_ids only."""
    return ERNIE_INPUTS if "token_type_ids" in tokenizer("测试") else ERNIE_M_INPUTS


def model_inputs(batch: dict, pad_token_id: int) -> dict:
    """The model's keyword inputs for a padded batch of tensors, with our fast additive attention mask."""
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids") if k in batch}
    padded = (inputs["input_ids"] == pad_token_id).astype("float32")
    inputs["attention_mask"] = paddle.unsqueeze(padded * PAD_MASK_VALUE, axis=[1, 2])
    return inputs


class DygraphRunner:
    """The dygraph model behind the pipeline's Runner interface: logits, or with `pooled=True` the
    encoder's pooled [CLS] vector (the classifier's input, in which the analysis scripts compare texts)."""

    def __init__(self, model, pad_token_id: int, pooled: bool = False):
        self.model = model
        self.pad_token_id = pad_token_id
        self.pooled = pooled

    @paddle.no_grad()
    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        inputs = model_inputs({name: paddle.to_tensor(array) for name, array in feed.items()}, self.pad_token_id)
        if self.pooled:
            return getattr(self.model, self.model.base_model_prefix)(**inputs)[1].numpy()
        return self.model(**inputs).numpy()


def dygraph_pipeline(tokenizer, max_seq_length: int, batch_size: int = 32, long_text: LongText = LongText()
                     ) -> TextPipeline:
    return TextPipeline(tokenizer, model_input_names(tokenizer), max_seq_length, batch_size, long_text)


def text_probs(model, tokenizer, texts: Sequence[str], max_seq_length: int, batch_size: int = 32,
               long_text: LongText | None = None, decision: Decision | None = None) -> np.ndarray:
    """Dygraph probabilities for raw texts, in input order (the model is left in eval mode): sigmoid,
    or calibrated by `decision`; long texts are read as the checkpoint stores unless `long_text` says
    otherwise."""
    model.eval()
    long_text = checkpoint_long_text(model) if long_text is None else long_text
    return dygraph_pipeline(tokenizer, max_seq_length, batch_size, long_text).probs(
        DygraphRunner(model, tokenizer.pad_token_id), texts, decision)


@dataclasses.dataclass
class TrainedModel:
    """The checkpoint with its labels, decision and the pipeline that reads texts as it was trained to
    (or as the long-text and decision options say)."""

    model: object
    tokenizer: object
    labels: list[str]
    decision: Decision
    pipeline: TextPipeline

    def runner(self, pooled: bool = False) -> DygraphRunner:
        return DygraphRunner(self.model, self.tokenizer.pad_token_id, pooled)

    def probs(self, texts: list[str]) -> np.ndarray:
        """The decision's (calibrated) probabilities per text, in input order (what was truncated or
        windowed is logged, here and in `logits` and `features`)."""
        return self.decision.probabilities(self.logits(texts))

    def logits(self, texts: list[str]) -> np.ndarray:
        rows = self.pipeline.encode(texts)
        logits = self.pipeline.outputs(self.runner(), rows)
        logger.info(self.pipeline.length_summary(rows.counts))
        return logits

    def features(self, texts: list[str]) -> np.ndarray:
        """The classifier's input (pooled [CLS] vector) per text, the windows of a text pooled like its
        logits: the space in which the analysis scripts compare examples (similar training examples,
        sparse dev data, representer points)."""
        rows = self.pipeline.encode(texts)
        logger.info(self.pipeline.length_summary(rows.counts))
        return self.pipeline.outputs(self.runner(pooled=True), rows)


def load_trained(args: argparse.Namespace) -> TrainedModel:
    """The checkpoint of --params_path, with its labels checked against the dataset's label file, the
    decision (stored, with the decision options over it) and the pipeline that reads texts as the
    checkpoint (or the long-text options) say: what predict.py and the analysis scripts run. It only
    loads: the caller has chosen the device (and seeded) before."""
    if not Path(args.params_path).is_dir():
        raise DataError(f"--params_path {args.params_path} is not a checkpoint directory")
    model = load_model(args.params_path)
    model.eval()
    check_max_seq_length(args.max_seq_length, model.config.max_position_embeddings, args.params_path)
    labels = resolve_label_list(model, Path(args.dataset_dir) / getattr(args, "label_file", "label.txt"))
    decision = resolve_decision(args, checkpoint_decision(model))
    tokenizer = load_tokenizer(args.params_path)
    long_text = resolve_long_text(args, checkpoint_long_text(model), args.max_seq_length)
    pipeline = dygraph_pipeline(tokenizer, args.max_seq_length, getattr(args, "batch_size", 32), long_text)
    return TrainedModel(model, tokenizer, labels, decision, pipeline)
