"""Texts to prompt-model inputs and back, shared by few-shot/train.py and few-shot/infer.py.

Training, the export's parity check and ONNX inference encode and pad texts with this one code
path, so the exported graph sees exactly what the dygraph model saw. The label order is the
verbalizer's (label names sorted); it is saved with the export and never re-derived later.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import paddle
from paddle.static import InputSpec
from paddlenlp.prompt import AutoTemplate, PromptModelForSequenceClassification, Template

from data_io import check_unique_labels, load_examples, multi_hot, read_label_entries
from decision import Decision
from exporting import META_FILE, ExportInfo, ensure_onnx, load_export, paddle_model_files
from modeling import PAD_MASK_VALUE, load_tokenizer
from pipeline import EncodedRows, TextPipeline, pad_sequences
from utils import DataError, logger

WORD_SEPARATOR = "=="  # label.txt: `label==word`
SEQUENCE_INPUTS = ("input_ids", "token_type_ids", "position_ids", "soft_token_ids", "encoder_ids")
TEMPLATE_FILE, VERBALIZER_FILE = "template_config.json", "verbalizer_config.json"  # paddlenlp's names
REFERENCE_EMBEDDING_SIZE = 8  # any width rebuilds a template: the trained soft vectors are in the graph


# ------------------------------------------------------------------------------------ data


def read_label_words(path: str | os.PathLike) -> dict[str, str]:
    """label.txt of few-shot data: `label` or `label==word`, in file order.

    The word initialises the label's output row from its embedding, so a short word that reads
    well after the prompt helps a pretrained model. Without `==` the word is the label itself,
    or the last level `b` of a hierarchical label `a##b`.
    """
    entries = []
    for line_no, entry in read_label_entries(path):
        label, separator, word = (part.strip() for part in entry.partition(WORD_SEPARATOR))
        if not label:
            raise DataError(f"{path}:{line_no}: no label name before '{WORD_SEPARATOR}' in {entry!r}")
        if separator and (not word or WORD_SEPARATOR in word):
            raise DataError(f"{path}:{line_no}: expected `label` or `label{WORD_SEPARATOR}word`, got {entry!r}")
        entries.append((line_no, label, word if separator else label.split("##")[-1]))
    check_unique_labels(path, [(line_no, label) for line_no, label, _ in entries])
    return {label: word for _, label, word in entries}


def load_prompt_examples(path: str | os.PathLike, labels: Sequence[str]) -> list[dict]:
    """A data file as prompt examples: `text_a` and a float multi-hot over `labels`.

    An unknown label stops the run with its line number (the reference silently dropped it).
    PromptTrainer maps the MapDataset it gets to template encodings, so callers keep these lists
    (texts for predictions and the parity check) and hand the trainer a MapDataset over them.
    """
    examples = load_examples(path, labels)
    targets = multi_hot(examples, len(labels))
    return [{"text_a": example.text, "labels": target.tolist()} for example, target in zip(examples, targets)]


# --------------------------------------------------------------------------- model inputs


def input_spec(model: PromptModelForSequenceClassification) -> list[InputSpec]:
    """The prompt model's export inputs, with the attention mask shaped [batch, 1, 1, length].

    paddlenlp's spec leaves all four mask dimensions free; the exported graph then fixes them to
    the attention scores' [batch, heads, length, length] and rejects a padding mask (the
    reference's ONNX crash). A template without exactly one mask is refused: the verbalizer reads
    one position per text.
    """
    template = model.template
    masks = sum("mask" in part for part in template.prompt)
    if masks != 1:
        raise DataError(f"the prompt must hold exactly one {{'mask'}}, found {masks}: {template.prompt}")
    return [InputSpec([None, 1, 1, None], "float32", "attention_mask") if spec.name == "attention_mask" else spec
            for spec in model.get_input_spec()]


def pad_features(features: Sequence[dict], pad_token_id: int, input_names: Sequence[str],
                 mask_heads: int | None = None) -> dict[str, np.ndarray]:
    """Template encodings of one batch as model inputs.

    Sequences are padded to the batch's longest, the padding is hidden by an additive
    [batch, 1, 1, length] mask (broadcast to [batch, mask_heads, length, length] for graphs that
    fix that shape), and mask positions are flattened over the batch (the verbalizer gathers them
    from the [batch * length, hidden] outputs).
    """
    lengths = [len(feature["input_ids"]) for feature in features]
    width = max(lengths)
    batch = {name: pad_sequences([feature[name] for feature in features], pad_token_id if name == "input_ids" else 0)
             for name in SEQUENCE_INPUTS if name in input_names}
    mask = np.full((len(features), 1, 1, width), PAD_MASK_VALUE, dtype="float32")
    for row, length in enumerate(lengths):
        mask[row, ..., :length] = 0.0
    batch["attention_mask"] = mask if mask_heads is None else np.repeat(np.repeat(mask, mask_heads, 1), width, 2)
    batch["masked_positions"] = np.asarray([row * width + position for row, feature in enumerate(features)
                                            for position in feature["masked_positions"]], dtype="int64")
    return batch


class PromptCollator:
    """PromptTrainer's data_collator: `pad_features` as tensors, plus the float multi-hot labels."""

    def __init__(self, pad_token_id: int, input_names: Sequence[str]):
        self.pad_token_id = pad_token_id
        self.input_names = list(input_names)

    def __call__(self, features: list[dict]) -> dict[str, paddle.Tensor]:
        batch = {name: paddle.to_tensor(array)
                 for name, array in pad_features(features, self.pad_token_id, self.input_names).items()}
        if "labels" in features[0]:
            batch["labels"] = paddle.to_tensor(np.asarray([feature["labels"] for feature in features], "float32"))
        return batch


class PromptPipeline(TextPipeline):
    """TextPipeline for prompt models: texts are wrapped by the template, and a padded batch also
    carries the attention mask and the [MASK] positions the verbalizer reads."""

    def __init__(self, export: ExportInfo, template: Template, batch_size: int = 32, mask_heads: int | None = None):
        super().__init__(template.tokenizer, export.input_names, template.prompt_tokenizer.max_length, batch_size)
        self.template = template
        self.mask_heads = mask_heads

    def encode(self, texts: Sequence[str]) -> EncodedRows:
        features = [self.template({"text_a": text}) for text in texts]
        return EncodedRows({name: [feature[name] for feature in features] for name in features[0]
                            if name in self.input_names}, np.arange(len(texts)), len(texts))

    def pad(self, rows: EncodedRows, batch: Sequence[int]) -> dict[str, np.ndarray]:
        features = [{name: values[row] for name, values in rows.features.items()} for row in batch]
        return pad_features(features, self.tokenizer.pad_token_id, self.input_names, self.mask_heads)


class PromptRunner:
    """The trained dygraph prompt model as a runner of the pipeline, for the export's parity check."""

    def __init__(self, model: PromptModelForSequenceClassification):
        self.model = model
        self.model.eval()

    def run(self, feed):
        with paddle.no_grad():
            return self.model(**{name: paddle.to_tensor(array) for name, array in feed.items()}).numpy()


# ------------------------------------------------------------------------------- inference


@dataclass
class PromptExport:
    """A few-shot export, ours or the reference's, as infer.py needs it.

    `mask_heads` is set for exports made with paddlenlp's default input spec (the reference's):
    their graph fixes the attention mask to [batch, heads, length, length], so the padding mask
    is broadcast to that shape. `trained_length` is None when the export does not record it.
    """

    export: ExportInfo
    embedding_size: int
    trained_length: int | None
    mask_heads: int | None


def load_prompt_export(model_path_prefix: str | os.PathLike) -> PromptExport:
    """Our export (export_meta.json), or the reference's: template_config.json and
    verbalizer_config.json beside the graph, labels in the verbalizer's order (names sorted),
    thresholds 0.5, inputs and mask shape read from the graph."""
    prefix = Path(model_path_prefix)
    paddle_model_files(prefix)
    directory = prefix.parent
    if (directory / META_FILE).is_file():
        export = load_export(prefix)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if "prompt" not in meta:
            raise DataError(f"{directory} is not a few-shot export (no template in {META_FILE}): "
                            f"run few-shot/train.py --do_export, or use deploy/predictor/infer.py for this model")
        return PromptExport(export, meta["prompt"]["embedding_size"], meta["prompt"]["max_seq_length"], None)
    missing = [name for name in (TEMPLATE_FILE, VERBALIZER_FILE) if not (directory / name).is_file()]
    if missing:
        raise DataError(f"{directory} is not a few-shot export: it has no {META_FILE} and no {' or '.join(missing)}")
    import onnx

    label_words = json.loads((directory / VERBALIZER_FILE).read_text(encoding="utf-8"))
    labels = sorted(label_words)
    graph = onnx.load(str(ensure_onnx(prefix, directory)), load_external_data=False).graph
    shapes = {item.name: [dim.dim_value for dim in item.type.tensor_type.shape.dim] for item in graph.input}
    mask_shape = shapes.get("attention_mask", [])
    export = ExportInfo(directory, prefix, labels, Decision.stored(None, None, len(labels)), list(shapes))
    logger.info(f"{directory}: an export without {META_FILE} (the reference's); labels from {VERBALIZER_FILE}, "
                f"threshold 0.5")
    return PromptExport(export, REFERENCE_EMBEDDING_SIZE, None,
                        mask_shape[1] if len(mask_shape) == 4 and mask_shape[1] > 1 else None)


def prompt_tokenizer(export: ExportInfo, model_name: str | None):
    """`--model_name`, else the tokenizer saved in the export, else the one the reference's
    Trainer saved in the training output directory above its `export/`."""
    if model_name is not None:
        return load_tokenizer(model_name)
    for directory in (export.directory, export.directory.parent):
        if (directory / "tokenizer_config.json").is_file():
            return load_tokenizer(str(directory))
    raise DataError(f"no tokenizer in {export.directory} or {export.directory.parent}: pass --model_name, the model "
                    f"the export was trained from (the reference's default was ernie-3.0-base-zh)")


class _EmbeddingTable:
    """What AutoTemplate reads from a language model to rebuild a template: its embedding table's
    shape. The trained soft-prompt vectors are inside the exported graph, so inference needs
    neither the pretrained weights (the reference loaded them again) nor these random values."""

    def __init__(self, vocab_size: int, embedding_size: int):
        self.table = paddle.nn.Embedding(vocab_size, embedding_size)

    def get_input_embeddings(self) -> paddle.nn.Embedding:
        return self.table


def template_meta(model: PromptModelForSequenceClassification) -> dict:
    """What infer.py needs besides the export's files to rebuild the template."""
    return {"prompt": {"embedding_size": int(model.plm.get_input_embeddings().weight.shape[1]),
                       "max_seq_length": model.template.prompt_tokenizer.max_length},
            "max_position_embeddings": model.plm.config.max_position_embeddings}


def load_template(prompt_export: PromptExport, tokenizer, max_length: int) -> Template:
    """The template saved next to the export (template_config.json)."""
    trained_length = prompt_export.trained_length
    if trained_length is not None and max_length < trained_length:
        logger.warning(f"--max_length {max_length} is shorter than the {trained_length} tokens the model was "
                       f"trained with: longer texts are cut more than in training")
    table = _EmbeddingTable(len(tokenizer), prompt_export.embedding_size)
    return AutoTemplate.load_from(str(prompt_export.export.directory), tokenizer, max_length, model=table)
