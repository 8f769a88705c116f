"""The one text pipeline: texts -> encoded rows -> length-grouped padded batches -> model outputs ->
per-text pooling -> thresholds -> labels.

Every way the suite runs a model (the dygraph model in training, evaluation and prediction, every
exported backend, the servers, Triton's python models, few-shot prompts) goes through this module,
so a text gets the same ids, the same padding and the same decision everywhere.

A *row* is one model input sequence and `EncodedRows.source` names the text each row came from:
an encoder may cut one text into several rows (windows of a long document) and `pool_rows` puts
their outputs back together; with one row per text the pooling is the identity. The module needs
only NumPy and SciPy, so Triton's python models can load a copy of this file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from scipy.special import expit

# Batches are formed inside windows of this many batches: rows are sorted by length there, so a
# batch is padded only to its own longest row, while memory and output order stay local.
WINDOW_BATCHES = 50

ERNIE_INPUTS = ("input_ids", "token_type_ids")
ERNIE_M_INPUTS = ("input_ids",)  # ERNIE-M tokenizers make no token_type_ids


class Runner(Protocol):
    """Anything that maps one padded batch (input name -> int64 array) to outputs [batch, ...]:
    the dygraph model (modeling.DygraphRunner) or an exported backend (backends.Backend)."""

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass
class EncodedRows:
    """Token ids per input name, one unpadded sequence per row, and the text each row belongs to."""

    features: dict[str, list]
    source: np.ndarray
    num_texts: int

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(ids) for ids in self.features["input_ids"]])

    def __len__(self) -> int:
        return len(self.source)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None = None
                           ) -> list[list[int]]:
    """Row indices per batch, rows of similar length together: the one bucketing rule of the suite.

    Rows are taken in windows of `batch_size * WINDOW_BATCHES` (in input order, or in a random
    permutation drawn from `rng`), sorted longest first inside each window and cut into batches;
    with `rng` the batches are then shuffled, so training sees them in random order.
    """
    lengths = np.asarray(lengths)
    order = np.arange(len(lengths)) if rng is None else rng.permutation(len(lengths))
    window = batch_size * WINDOW_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        part = order[start:start + window]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches += [part[i:i + batch_size].tolist() for i in range(0, len(part), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def pad_sequences(sequences: Sequence[Sequence[int]], pad_value: int) -> np.ndarray:
    """[rows, longest] int64 array, each sequence left-aligned and followed by `pad_value`."""
    array = np.full((len(sequences), max(len(ids) for ids in sequences)), pad_value, dtype="int64")
    for row, ids in enumerate(sequences):
        array[row, :len(ids)] = ids
    return array


def pool_rows(row_outputs: np.ndarray, source: np.ndarray, num_texts: int) -> np.ndarray:
    """Per text, the element-wise maximum over its rows (a label is present if any window shows it);
    with exactly one row per text, in text order, the rows themselves."""
    if len(source) == num_texts and np.array_equal(source, np.arange(num_texts)):
        return row_outputs
    counts = np.bincount(source, minlength=num_texts)
    if (counts == 0).any():
        raise ValueError(f"text {int(np.flatnonzero(counts == 0)[0])} has no encoded row")
    pooled = np.full((num_texts, *row_outputs.shape[1:]), -np.inf, dtype=row_outputs.dtype)
    np.maximum.at(pooled, source, row_outputs)
    return pooled


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return expit(logits)


def chosen_label_ids(probs: np.ndarray, thresholds) -> list[list[int]]:
    """Per text, the ids of the labels whose probability is above their threshold (maybe none)."""
    chosen = np.asarray(probs) > np.asarray(thresholds)
    return [np.flatnonzero(row).tolist() for row in chosen]


class TextPipeline:
    """Texts to model feeds and back, in input order, for any `Runner`.

    One pipeline serves any number of runners of the same model (the parity check runs them all on
    one encoding). Subclasses change how texts become rows (`encode`) or what a padded batch holds
    (`pad`); batching, running and pooling stay here.
    """

    def __init__(self, tokenizer, input_names: Sequence[str], max_seq_length: int = 128, batch_size: int = 32):
        self.tokenizer = tokenizer
        self.input_names = tuple(input_names)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> EncodedRows:
        """One row per text, cut to `max_seq_length` tokens."""
        if not texts:
            return EncodedRows({name: [] for name in self.input_names}, np.arange(0), 0)
        encoded = self.tokenizer(list(texts), max_length=self.max_seq_length, truncation=True)
        return EncodedRows({name: encoded[name] for name in self.input_names}, np.arange(len(texts)), len(texts))

    def pad(self, rows: EncodedRows, batch: Sequence[int]) -> dict[str, np.ndarray]:
        """The model inputs of the rows `batch`: token ids padded with the pad token, the rest with 0."""
        return {name: pad_sequences([sequences[row] for row in batch],
                                    self.tokenizer.pad_token_id if name == "input_ids" else 0)
                for name, sequences in rows.features.items()}

    def batches(self, rows: EncodedRows) -> list[list[int]]:
        return length_grouped_batches(rows.lengths, self.batch_size)

    def feeds(self, rows: EncodedRows) -> list[dict[str, np.ndarray]]:
        return [self.pad(rows, batch) for batch in self.batches(rows)]

    def outputs(self, runner: Runner, rows: EncodedRows) -> np.ndarray:
        """The runner's outputs per text, in input order (rows of one text pooled)."""
        row_outputs = None
        for batch in self.batches(rows):
            result = runner.run(self.pad(rows, batch))
            if row_outputs is None:
                row_outputs = np.zeros((len(rows), *result.shape[1:]), dtype=result.dtype)
            row_outputs[batch] = result
        if row_outputs is None:
            return np.zeros((0, 0), dtype="float32")
        return pool_rows(row_outputs, rows.source, rows.num_texts)

    def probs(self, runner: Runner, texts: Sequence[str]) -> np.ndarray:
        """Sigmoid probabilities [texts, labels] of a runner that outputs logits."""
        return sigmoid(self.outputs(runner, self.encode(texts)))


def predicted_labels(probs: np.ndarray, labels: Sequence[str], thresholds
                     ) -> tuple[list[list[int]], list[list[str]], list[list[float]]]:
    """Per text: the ids and names of the labels above their threshold and their probabilities (maybe none)."""
    probs = np.asarray(probs)
    chosen = chosen_label_ids(probs, thresholds)
    names = [[labels[j] for j in ids] for ids in chosen]
    confidences = [[round(float(row[j]), 6) for j in ids] for row, ids in zip(probs, chosen)]
    return chosen, names, confidences
