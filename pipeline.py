"""The one text pipeline: texts -> encoded rows -> length-grouped padded batches -> model outputs ->
per-text pooling (then decision.py turns the outputs into labels).

Every way the suite runs a model (the dygraph model in training, evaluation and prediction, every
exported backend, the servers, Triton's python models, few-shot prompts) goes through this module,
so a text gets the same ids and the same padding everywhere.

A *row* is one model input sequence and `EncodedRows.source` names the text each row came from:
an encoder may cut one text into several rows (windows of a long document) and `pool_rows` puts
their outputs back together; with one row per text the pooling is the identity. Token ids come from
native_tokenizer.py (the paddlenlp tokenizer's ids at native speed). The module needs only NumPy, SciPy,
that file and decision.py, so Triton's python models load copies of the three.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
from scipy.special import expit

from decision import Decision
from native_tokenizer import TokenEncoder, token_encoder

# Batches are formed inside windows of this many batches: rows are sorted by length there, so a
# batch is padded only to its own longest row, while memory and output order stay local.
WINDOW_BATCHES = 50

# How a text longer than one model input is read: cut at max_seq_length (the reference) or read in
# overlapping windows whose outputs are pooled per text.
LONG_TEXT_MODES = ("truncate", "window")
WINDOW_POOLINGS = ("max", "mean", "logsumexp")
DEFAULT_MAX_WINDOWS = 32

ERNIE_INPUTS = ("input_ids", "token_type_ids")
ERNIE_M_INPUTS = ("input_ids",)  # ERNIE-M tokenizers make no token_type_ids


class Runner(Protocol):
    """Anything that maps one padded batch (input name -> int64 array) to outputs [batch, ...]:
    the dygraph model (modeling.DygraphRunner) or an exported backend (backends.Backend)."""

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass
class LengthCounts:
    """What reading texts into rows cut or dropped, so that no text is shortened silently."""

    texts: int = 0
    rows: int = 0
    empty: int = 0  # texts without a single token after tokenization
    cut: int = 0  # truncate: texts cut; window: texts with more than max_windows windows
    tokens_cut: int = 0
    most_cut: int = 0
    windowed: int = 0  # texts read in more than one window

    def add(self, rows: int, tokens_cut: int, empty: bool) -> None:
        """Count one text read as `rows` rows with `tokens_cut` tokens left unread."""
        self.texts += 1
        self.rows += rows
        self.windowed += rows > 1
        self.empty += empty
        if tokens_cut > 0:
            self.cut += 1
            self.tokens_cut += tokens_cut
            self.most_cut = max(self.most_cut, tokens_cut)

    def __add__(self, other: LengthCounts) -> LengthCounts:
        """The counts of both encodings (a consumer that encodes in windows sums its windows' counts)."""
        return LengthCounts(**{name: getattr(self, name) + getattr(other, name) for name in
                               ("texts", "rows", "empty", "cut", "tokens_cut", "windowed")},
                            most_cut=max(self.most_cut, other.most_cut))

    def summary(self, long_text: LongText, max_seq_length: int) -> str:
        """One log line: what happened to texts longer than a model input."""
        if long_text.mode == "truncate":
            line = (f"Long texts (--long_text truncate, --max_seq_length {max_seq_length}): "
                    f"{self.cut} of {self.texts} texts truncated")
            if self.cut:
                line += (f", {self.tokens_cut} tokens cut in all, up to {self.most_cut} from one text "
                         f"(--long_text window reads them whole)")
        else:
            line = (f"Long texts (--long_text window, --max_seq_length {max_seq_length}, --window_stride "
                    f"{long_text.overlap(max_seq_length)}, --window_pooling {long_text.pooling}): {self.texts} texts "
                    f"read as {self.rows} windows, {self.windowed} of them in more than one")
            if self.cut:
                line += (f"; {self.cut} texts longer than --max_windows {long_text.max_windows}: their last "
                         f"{self.tokens_cut} tokens in all (up to {self.most_cut} from one text) not read")
        if self.empty:
            line += f"; {self.empty} texts have no token after tokenization (read as [CLS] [SEP] alone)"
        return line


@dataclass
class EncodedRows:
    """Token ids per input name, one unpadded sequence per row, the text each row belongs to, and what
    reading the texts into rows cut or windowed (`counts`, for the consumer's log line)."""

    features: dict[str, list]
    source: np.ndarray
    num_texts: int
    counts: LengthCounts = field(default_factory=LengthCounts)

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(ids) for ids in self.features["input_ids"]])

    def text_lengths(self) -> np.ndarray:
        """Tokens per text, over all of its rows."""
        return np.bincount(self.source, weights=self.lengths, minlength=self.num_texts).astype("int64")

    @functools.cached_property
    def _rows_by_text(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(rows ordered by text, first position of each text in that order, rows per text), computed
        once for all the batches drawn from these rows; None when row i is text i."""
        if len(self.source) == self.num_texts and np.array_equal(self.source, np.arange(self.num_texts)):
            return None
        counts = np.bincount(self.source, minlength=self.num_texts)
        return np.argsort(self.source, kind="stable"), np.cumsum(counts) - counts, counts

    def text_rows(self, texts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The rows of these texts, text by text, and for each row the position of its text in `texts`."""
        texts = np.asarray(texts, dtype="int64")
        if self._rows_by_text is None:
            return texts, np.arange(len(texts))
        order, starts, counts = self._rows_by_text
        return (np.concatenate([order[starts[text]:starts[text] + counts[text]] for text in texts]),
                np.repeat(np.arange(len(texts)), counts[texts]))

    def __len__(self) -> int:
        return len(self.source)


@dataclass(frozen=True)
class LongText:
    """How texts longer than `max_seq_length` tokens are read, the same in training, prediction,
    export and serving (stored with the checkpoint and the export).

    `truncate` keeps the first window only (the reference). `window` cuts the text's tokens into
    windows of `max_seq_length - 2` tokens (each gets its own [CLS] and [SEP]) that share `stride`
    tokens with the next one (None: half of max_seq_length), keeps at most `max_windows` of them
    (the tail beyond is not read, and counted), and pools the windows' logits per text.
    """

    mode: str = "truncate"
    stride: int | None = None
    max_windows: int = DEFAULT_MAX_WINDOWS
    pooling: str = "max"

    def check(self, max_seq_length: int, special_tokens: int = 2) -> None:
        """ValueError naming the option at fault (callers turn it into their kind of error)."""
        if self.mode not in LONG_TEXT_MODES:
            raise ValueError(f"--long_text {self.mode!r}: choose from {', '.join(LONG_TEXT_MODES)}")
        if self.pooling not in WINDOW_POOLINGS:
            raise ValueError(f"--window_pooling {self.pooling!r}: choose from {', '.join(WINDOW_POOLINGS)}")
        if self.max_windows < 1:
            raise ValueError(f"--max_windows {self.max_windows}: a text needs at least 1 window")
        body = max_seq_length - special_tokens
        if body < 1:
            raise ValueError(f"--max_seq_length {max_seq_length} leaves no room for text besides the "
                             f"{special_tokens} special tokens")
        if self.mode == "window" and not 0 <= self.overlap(max_seq_length) < body:
            raise ValueError(f"--window_stride {self.overlap(max_seq_length)}: the tokens shared by two windows must "
                             f"be at least 0 and fewer than the {body} text tokens of a window "
                             f"(--max_seq_length {max_seq_length} minus {special_tokens} special tokens)")

    def overlap(self, max_seq_length: int) -> int:
        return max_seq_length // 2 if self.stride is None else self.stride

    def as_dict(self) -> dict:
        """The settings as stored in config.json and export_meta.json."""
        return asdict(self)


def window_spans(num_tokens: int, body: int, overlap: int, max_windows: int | None = None) -> list[tuple[int, int]]:
    """[start, end) token ranges of the windows of a text: `body` tokens each, consecutive windows
    sharing `overlap` tokens, the last one ending at the text's end (it may be shorter); a text that
    fits (or has no tokens) is one window. At most `max_windows` are returned."""
    step = body - overlap
    count = 1 + max(0, -(-(num_tokens - body) // step))
    if max_windows is not None:
        count = min(count, max_windows)
    return [(start, min(start + body, num_tokens)) for start in range(0, count * step, step)]


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


def pool_rows(row_outputs: np.ndarray, source: np.ndarray, num_texts: int, pooling: str = "max") -> np.ndarray:
    """Per text, its rows' outputs pooled element-wise; with exactly one row per text, in text order,
    the rows themselves.

    max: a label is present when any window says so. mean: the average window. logsumexp: the log of
    the mean of exp(output), a smooth maximum between the two (equal to both for one window).
    """
    if len(source) == num_texts and np.array_equal(source, np.arange(num_texts)):
        return row_outputs
    counts = np.bincount(source, minlength=num_texts)
    if (counts == 0).any():
        raise ValueError(f"text {int(np.flatnonzero(counts == 0)[0])} has no encoded row")
    shape = (num_texts, *row_outputs.shape[1:])
    maximum = np.full(shape, -np.inf, dtype=row_outputs.dtype)
    np.maximum.at(maximum, source, row_outputs)
    if pooling == "max":
        return maximum
    per_text = counts.reshape(-1, *[1] * (row_outputs.ndim - 1)).astype(row_outputs.dtype)
    if pooling == "mean":
        total = np.zeros(shape, dtype=row_outputs.dtype)
        np.add.at(total, source, row_outputs)
        return total / per_text
    if pooling == "logsumexp":
        total = np.zeros(shape, dtype=row_outputs.dtype)
        np.add.at(total, source, np.exp(row_outputs - maximum[source]))
        return maximum + np.log(total / per_text)
    raise ValueError(f"unknown window pooling {pooling!r}: choose from {', '.join(WINDOW_POOLINGS)}")


def blank_texts(texts: Sequence[str]) -> list[bool]:
    """Which texts are blank (empty or only white space): they have nothing to label, so every
    consumer gives them no labels, the answer predict.py gives a blank line (an empty row)."""
    return [not text.strip() for text in texts]


def marked_text_index(source: np.ndarray, blank: Sequence[bool]) -> np.ndarray:
    """Triton's `text_index` tensor: the text of each row, as -1 - text for the rows of a blank text, so
    the postprocess (which never sees the texts) knows which texts get no labels."""
    source = np.asarray(source, dtype=np.int64)
    return np.where(np.asarray(blank, dtype=bool)[source], -1 - source, source)


def unmarked_text_index(text_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the text of each row, which texts are blank) from a `marked_text_index`."""
    text_index = np.asarray(text_index, dtype=np.int64).reshape(-1)
    source = np.where(text_index < 0, -1 - text_index, text_index)
    blank = np.zeros(int(source.max()) + 1, dtype=bool)
    blank[source[text_index < 0]] = True
    return source, blank


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return expit(logits)


@functools.lru_cache(maxsize=None)
def shared_token_encoder(tokenizer) -> TokenEncoder:
    """One token encoder per tokenizer (the native one is built once), named once in the log."""
    encoder = token_encoder(tokenizer)
    logging.getLogger("PaddleNLP").info(f"Tokenizer: {encoder.name}")
    return encoder


def row_builders(tokenizer) -> tuple[Callable[[list], list], Callable[[list, list], list]]:
    """(ids -> model input row, (ids, row) -> its token type ids), as the tokenizer builds them.

    When the tokenizer wraps a sequence as fixed prefix + ids + fixed suffix with one token type
    throughout (ERNIE, ERNIE-M), rows are built from that layout: calling the tokenizer per row costs
    more than the native tokenization itself. Any other layout calls the tokenizer.
    """
    probe = [-7, -8]  # ids no vocabulary has, to find where the sequence sits
    wrapped = tokenizer.build_inputs_with_special_tokens(probe)
    types = tokenizer.create_token_type_ids_from_sequences(probe)
    at = wrapped.index(probe[0]) if probe[0] in wrapped else -1
    if at < 0 or wrapped[at:at + 2] != probe or len(set(types)) != 1 or len(types) != len(wrapped):
        return (tokenizer.build_inputs_with_special_tokens,
                lambda ids, row: tokenizer.create_token_type_ids_from_sequences(ids))
    prefix, suffix, token_type = wrapped[:at], wrapped[at + 2:], types[0]
    return (lambda ids: prefix + ids + suffix), (lambda ids, row: [token_type] * len(row))


class TextPipeline:
    """Texts to model feeds and back, in input order, for any `Runner`.

    One pipeline serves any number of runners of the same model (the parity check runs them all on
    one encoding). Subclasses change how texts become rows (`encode`) or what a padded batch holds
    (`pad`); batching, running and pooling stay here.
    """

    def __init__(self, tokenizer, input_names: Sequence[str], max_seq_length: int = 128, batch_size: int = 32,
                 long_text: LongText = LongText()):
        long_text.check(max_seq_length, tokenizer.num_special_tokens_to_add(pair=False))
        self.tokenizer = tokenizer
        self.token_ids = shared_token_encoder(tokenizer)
        self.wrap_row, self.row_token_types = row_builders(tokenizer)
        self.input_names = tuple(input_names)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.long_text = long_text

    def encode(self, texts: Sequence[str]) -> EncodedRows:
        """Rows of token ids: one per text cut to `max_seq_length` tokens, or with `--long_text
        window` one per window of the text (`EncodedRows.source` names the text), with their length
        counts: the pipeline keeps no state, so one pipeline serves calibration and labelling alike."""
        tokenizer = self.tokenizer
        body = self.max_seq_length - tokenizer.num_special_tokens_to_add(pair=False)
        overlap = self.long_text.overlap(self.max_seq_length)
        max_windows = self.long_text.max_windows if self.long_text.mode == "window" else 1  # truncate: window 1
        features: dict[str, list] = {name: [] for name in self.input_names}
        source = []
        counts = LengthCounts()
        wrap, token_types = self.wrap_row, self.row_token_types
        for index, ids in enumerate(self.token_ids(texts) if texts else []):
            spans = window_spans(len(ids), body, overlap, max_windows)
            counts.add(len(spans), len(ids) - spans[-1][1], empty=not ids)
            for start, end in spans:
                row = wrap(ids[start:end])
                features["input_ids"].append(row)
                if "token_type_ids" in features:
                    features["token_type_ids"].append(token_types(ids[start:end], row))
            source += [index] * len(spans)
        return EncodedRows(features, np.asarray(source, dtype="int64"), len(texts), counts)

    def length_summary(self, counts: LengthCounts) -> str:
        """The log line of what encoding cut or windowed (the `counts` of one `encode` or their sum)."""
        return counts.summary(self.long_text, self.max_seq_length)

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
        return pool_rows(row_outputs, rows.source, rows.num_texts, self.long_text.pooling)

    def probs(self, runner: Runner, texts: Sequence[str], decision: Decision | None = None) -> np.ndarray:
        """Probabilities [texts, labels] of a runner that outputs logits: the decision's (calibrated)
        ones, or the plain sigmoid without a decision."""
        logits = self.outputs(runner, self.encode(texts))
        return sigmoid(logits) if decision is None else decision.probabilities(logits)
