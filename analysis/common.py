"""What the analysis scripts share: the trained model with its labels, and the 1-3 column files.

The interpret scripts read `bad_case.txt` (Text<TAB>Label<TAB>Prediction, written by evaluate.py),
a data file (text<TAB>labels) or bare texts; this module reads all three the same way.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cli import POSITIVE_INT, SEED, SEQ_LENGTH
from data_io import read_lines
from modeling import (
    DygraphRunner,
    add_long_text_arguments,
    check_max_seq_length,
    checkpoint_long_text,
    checkpoint_thresholds,
    dygraph_pipeline,
    load_model,
    load_tokenizer,
    resolve_label_list,
    resolve_long_text,
)
from pipeline import TextPipeline
from utils import DataError, logger, set_device, set_seed

BAD_CASE_HEADER = "Text\tLabel\tPrediction"


def add_model_arguments(parser: argparse.ArgumentParser, batch_size: int | None, seed_help: str | None) -> None:
    """The reference's arguments of every analysis script that runs the trained model (names and defaults
    as in the reference); `batch_size` / `seed_help` None leave that argument out."""
    parser.add_argument("--device", default="gpu", help="Device that runs the model: gpu (the reference's default) or cpu.")
    parser.add_argument("--dataset_dir", required=True, type=str, help="The dataset directory: the input files are read from it and the outputs written to it.")
    parser.add_argument("--params_path", default="../checkpoint/", type=str, help="The trained checkpoint directory (train.py --save_dir).")
    parser.add_argument("--max_seq_length", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization; longer texts are truncated (or, with --long_text window, read in windows of this length).")
    if batch_size is not None:
        parser.add_argument("--batch_size", default=batch_size, type=POSITIVE_INT, help="Texts per forward pass of the model.")
    if seed_help is not None:
        parser.add_argument("--seed", type=SEED, default=3, help=seed_help)
    add_long_text_arguments(parser)


@dataclass
class TrainedModel:
    """The checkpoint with its labels, thresholds and the pipeline that reads texts as it was trained to
    (or as the long-text options say)."""

    model: object
    tokenizer: object
    labels: list[str]
    thresholds: np.ndarray
    pipeline: TextPipeline

    def probs(self, texts: list[str]) -> np.ndarray:
        """Probabilities per text, in input order (what was truncated or windowed is logged, here and in
        `features`)."""
        probs = self.pipeline.probs(DygraphRunner(self.model, self.tokenizer.pad_token_id), texts)
        logger.info(self.pipeline.length_summary())
        return probs

    def features(self, texts: list[str]) -> np.ndarray:
        """The classifier's input (pooled [CLS] vector) per text, the windows of a text pooled like its
        logits: the space in which the analysis scripts compare examples (similar training examples,
        sparse dev data, representer points)."""
        rows = self.pipeline.encode(texts)
        logger.info(self.pipeline.length_summary())
        return self.pipeline.outputs(DygraphRunner(self.model, self.tokenizer.pad_token_id, pooled=True), rows)


def load_trained(args: argparse.Namespace) -> TrainedModel:
    """The checkpoint of --params_path on --device, with its labels checked against the dataset's label file."""
    set_device(args.device)
    if getattr(args, "seed", None) is not None:
        set_seed(args.seed)
    if not Path(args.params_path).is_dir():
        raise DataError(f"--params_path {args.params_path} is not a checkpoint directory")
    model = load_model(args.params_path)
    model.eval()
    check_max_seq_length(args.max_seq_length, model.config.max_position_embeddings, args.params_path)
    labels = resolve_label_list(model, Path(args.dataset_dir) / getattr(args, "label_file", "label.txt"))
    threshold = getattr(args, "threshold", None)
    thresholds = (np.full(len(labels), threshold, dtype="float32") if threshold is not None
                  else checkpoint_thresholds(model))
    tokenizer = load_tokenizer(args.params_path)
    long_text = resolve_long_text(args, checkpoint_long_text(model), args.max_seq_length)
    pipeline = dygraph_pipeline(tokenizer, args.max_seq_length, getattr(args, "batch_size", 32), long_text)
    return TrainedModel(model, tokenizer, labels, thresholds, pipeline)


@dataclass
class InterpretRow:
    text: str
    label: str = ""
    prediction: str = ""


def read_interpret_rows(path: str | Path) -> list[InterpretRow]:
    """Rows of a bad-case file (header skipped), a labelled data file, or bare texts; blank lines skipped."""
    rows = []
    for line_no, line in read_lines(path):
        if not line.strip() or (line_no == 1 and line.split("\t")[0] == "Text"):
            continue
        fields = line.split("\t")
        if len(fields) > 3:
            raise DataError(f"{path}:{line_no}: {len(fields)} TAB-separated columns; expected text, "
                            f"text<TAB>label or text<TAB>label<TAB>prediction")
        if not fields[0].strip():
            raise DataError(f"{path}:{line_no}: empty text")
        rows.append(InterpretRow(*(field.strip() for field in fields)))
    if not rows:
        raise DataError(f"{path}: no texts to interpret")
    return rows


def top_k_similar(queries: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of each query's k most similar pool rows, best first."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    similarity = unit(queries) @ unit(pool).T
    k = min(k, pool.shape[0])
    index = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return index, np.take_along_axis(similarity, index, axis=1)


def write_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    """`text<TAB>labels` lines (`text` alone when there is no label column)."""
    with open(path, "w", encoding="utf-8") as out:
        for text, labels in rows:
            out.write(f"{text}\t{labels}\n" if labels else f"{text}\n")
