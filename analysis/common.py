"""What the analysis scripts share: their model arguments, loading the model, and the 1-3 column files.

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
from modeling import TrainedModel, load_trained
from script_options import add_long_text_arguments
from utils import DataError, atomic_output, set_device, set_seed

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


def load_model(args: argparse.Namespace) -> TrainedModel:
    """The checkpoint of --params_path on --device, the random state seeded with --seed: how every analysis
    script that runs the model starts (load_trained only loads)."""
    set_device(args.device)
    set_seed(args.seed)
    return load_trained(args)


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
    with atomic_output(path) as out:
        for text, labels in rows:
            out.write(f"{text}\t{labels}\n" if labels else f"{text}\n")
