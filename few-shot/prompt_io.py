"""Texts to prompt-model inputs and back, shared by few-shot/train.py and few-shot/infer.py.

Training, the export's parity check and ONNX inference encode and pad texts with this one code
path, so the exported graph sees exactly what the dygraph model saw. The label order is the
verbalizer's (label names sorted); it is saved with the export and never re-derived later.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import paddle
from paddle.static import InputSpec
from paddlenlp.prompt import AutoTemplate, PromptModelForSequenceClassification, Template

from data_io import check_unique_labels, load_examples, multi_hot, read_label_entries
from exporting import META_FILE, ExportInfo
from modeling import PAD_MASK_VALUE
from pipeline import EncodedRows, TextPipeline, pad_sequences
from utils import DataError, logger

WORD_SEPARATOR = "=="  # label.txt: `label==word`
SEQUENCE_INPUTS = ("input_ids", "token_type_ids", "position_ids", "soft_token_ids", "encoder_ids")


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


def pad_features(features: Sequence[dict], pad_token_id: int, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Template encodings of one batch as model inputs.

    Sequences are padded to the batch's longest, the padding is hidden by an additive
    [batch, 1, 1, length] mask, and mask positions are flattened over the batch (the verbalizer
    gathers them from the [batch * length, hidden] outputs).
    """
    lengths = [len(feature["input_ids"]) for feature in features]
    width = max(lengths)
    batch = {name: pad_sequences([feature[name] for feature in features], pad_token_id if name == "input_ids" else 0)
             for name in SEQUENCE_INPUTS if name in input_names}
    mask = np.full((len(features), 1, 1, width), PAD_MASK_VALUE, dtype="float32")
    for row, length in enumerate(lengths):
        mask[row, ..., :length] = 0.0
    batch["attention_mask"] = mask
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

    def __init__(self, export: ExportInfo, template: Template, batch_size: int = 32):
        super().__init__(template.tokenizer, export.input_names, template.prompt_tokenizer.max_length, batch_size)
        self.template = template

    def encode(self, texts: Sequence[str]) -> EncodedRows:
        features = [self.template({"text_a": text}) for text in texts]
        return EncodedRows({name: [feature[name] for feature in features] for name in features[0]
                            if name in self.input_names}, np.arange(len(texts)), len(texts))

    def pad(self, rows: EncodedRows, batch: Sequence[int]) -> dict[str, np.ndarray]:
        features = [{name: values[row] for name, values in rows.features.items()} for row in batch]
        return pad_features(features, self.tokenizer.pad_token_id, self.input_names)


class PromptRunner:
    """The trained dygraph prompt model as a runner of the pipeline, for the export's parity check."""

    def __init__(self, model: PromptModelForSequenceClassification):
        self.model = model
        self.model.eval()

    def run(self, feed):
        with paddle.no_grad():
            return self.model(**{name: paddle.to_tensor(array) for name, array in feed.items()}).numpy()


# ------------------------------------------------------------------------------- inference


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
                       "max_seq_length": model.template.prompt_tokenizer.max_length}}


def load_template(export: ExportInfo, tokenizer, max_length: int) -> Template:
    """The template saved next to an export by few-shot/train.py --do_export."""
    meta = json.loads((export.directory / META_FILE).read_text(encoding="utf-8"))
    if "prompt" not in meta:
        raise DataError(f"{export.directory} is not a few-shot export (no template in {META_FILE}): "
                        f"run few-shot/train.py --do_export, or use deploy/predictor/infer.py for this model")
    trained_length = meta["prompt"]["max_seq_length"]
    if max_length < trained_length:
        logger.warning(f"--max_length {max_length} is shorter than the {trained_length} tokens the model was "
                       f"trained with: longer texts are cut more than in training")
    table = _EmbeddingTable(len(tokenizer), meta["prompt"]["embedding_size"])
    return AutoTemplate.load_from(str(export.directory), tokenizer, max_length, model=table)
