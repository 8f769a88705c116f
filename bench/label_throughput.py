"""Batch-labelling throughput of predict.py: every backend and precision, 1 and 2 processes, the engine's
ceiling, where the time goes, and the native tokenizers (ERNIE and ERNIE-M) against paddlenlp's.

Usage: python bench/label_throughput.py --dataset_dir divorce

The input is sentences of the data set (train, dev and test texts in turn, repeated): `--lines` of them
per shape for the static backends, `--dygraph_lines` for the dygraph model. For each model shape
(tiny, and random classifiers of the ernie-3.0-mini-zh and ernie-3.0-medium-zh shapes with the data
set's labels) and each backend/precision:
- end to end: predict.py's labelling (labelling.label_file on the objects predict.py builds) in this
  process, after a warm-up pass over the first WARMUP_LINES lines; start-up (imports, model load,
  export) is not counted;
- ceiling: the same batches tokenized and padded beforehand, engine time alone;
- stages: reading the file, tokenizing, the engine and formatting + writing, each timed alone, as
  shares of their sum (end to end overlaps reading and tokenizing with the engine).
Tokenizers: token ids of the tiny checkpoint's ERNIE tokenizer and of an ERNIE-M tokenizer (a
SentencePiece model scratch_model.py trains on the data set), native against paddlenlp's, on the tiny
shape's static input, median of TOKENIZER_REPEATS passes each. Processes: predict.py as a command, one
process and under paddle.distributed.launch with two, timed from start to exit minus the same command
on a one-line file (start-up). All cases run one after another; the tables go to
bench/results/<--result>.json.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from benchtools import ROOT, save_result, seconds

from backends import variants
from data_io import iter_examples, read_label_list
from decision import Decision
from labelling import label_file
from modeling import dygraph_pipeline, load_model, load_tokenizer, load_trained, save_checkpoint
from native_tokenizer import PaddleNLPEncoder, token_encoder
from pipeline import pool_rows, sigmoid
from predict import make_labeller, output_options
from predict import parser as predict_parser
from scratch_model import create_scratch_model
from utils import set_device

SHAPES = ("tiny", "ernie-3.0-mini-zh", "ernie-3.0-medium-zh")
WARMUP_LINES = 200
SECTIONS = ("tokenizers", "backends", "commands")
TOKENIZER_REPEATS = 5

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--dataset_dir", required=True, help="The divorce dataset directory.")
parser.add_argument("--lines", type=int, nargs=3, default=[20000, 3000, 1000],
                    help="Lines labelled per case by the static backends, per shape (tiny, mini, medium).")
parser.add_argument("--dygraph_lines", type=int, nargs=3, default=[20000, 500, 200],
                    help="Lines labelled per case by the dygraph model, per shape (it is slow on the larger ones).")
parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS,
                    help="The tables to measure: tokenizers, backends (in process), commands (processes).")
parser.add_argument("--out_dir", default=str(ROOT / "bench/out/label_throughput"), help="Models, inputs and outputs of the cases.")
parser.add_argument("--result", default="label_throughput", help="The tables go to bench/results/<result>.json.")


def input_file(dataset: Path, lines: int, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    texts = [e.text for name in ("train.txt", "dev.txt", "test.txt") for e in iter_examples(dataset / name)]
    path.write_text("".join(texts[i % len(texts)] + "\n" for i in range(lines)), encoding="utf-8")
    return path


def checkpoint_of(shape: str, dataset: Path, work: Path, overrides: dict | None = None) -> Path:
    """A classifier of this shape (a scratch_model.py preset with `overrides` of its configuration) with the data
    set's labels (random weights: speed does not depend on them)."""
    name = "-".join([shape, *map(str, (overrides or {}).values())])
    checkpoint = work / f"{name}_checkpoint"
    if not (checkpoint / "config.json").is_file():
        labels = read_label_list(dataset / "label.txt")
        scratch = create_scratch_model(str(dataset), str(work / f"{name}_scratch"), shape, overrides)
        model = load_model(str(scratch), num_labels=len(labels))
        save_checkpoint(model, load_tokenizer(str(scratch)), checkpoint, labels,
                        Decision.stored(None, None, len(labels)))
    return checkpoint


def in_process_case(checkpoint: Path, data: Path, backend: str, precision: str, lines: int, work: Path) -> dict:
    args = predict_parser.parse_args(["--device", "cpu", "--dataset_dir", str(data.parent), "--data_file", data.name,
                                      "--params_path", str(checkpoint), "--backend", backend, "--precision", precision])
    labeller = make_labeller(args, load_trained(args), data, os.cpu_count() or 1)
    options = output_options(args, labeller)
    warmup = work / "warmup.txt"
    warmup.write_text("".join(data.read_text(encoding="utf-8").splitlines(True)[:WARMUP_LINES]), encoding="utf-8")
    label_file(labeller, warmup, work / "warmup_out.txt", args.batch_size, options)
    end_to_end = seconds(lambda: label_file(labeller, data, work / "out.txt", args.batch_size, options))
    pipeline = labeller.pipeline
    texts = [e.text for e in iter_examples(data)]
    rows = pipeline.encode(texts)
    batches = pipeline.batches(rows)
    feeds = [pipeline.pad(rows, batch) for batch in batches]
    results = []
    engine = seconds(lambda: results.extend(labeller.runner.run(feed) for feed in feeds))
    row_logits = np.zeros((len(rows), results[0].shape[1]), dtype="float32")
    for batch, result in zip(batches, results):
        row_logits[batch] = result
    probs = sigmoid(pool_rows(row_logits, rows.source, rows.num_texts, pipeline.long_text.pooling))
    write = seconds(lambda: (work / "rows.txt").write_text("\n".join(labeller.rows(texts, probs)), encoding="utf-8"))
    return {"end_to_end": lines / end_to_end, "ceiling": lines / engine, "engine_s": engine, "write_s": write}


def stage_times(checkpoint: Path, data: Path) -> dict:
    """Reading and tokenizing, the same for every backend of a shape."""
    pipeline = dygraph_pipeline(load_tokenizer(str(checkpoint)), 128)
    read = seconds(lambda: list(iter_examples(data)))
    texts = [e.text for e in iter_examples(data)]
    tokenize = seconds(lambda: pipeline.encode(texts))
    return {"read_s": read, "tokenize_s": tokenize}


def tokenizer_rows(model_dir: Path, data: Path) -> list[str]:
    """Table rows: paddlenlp's tokenizer of `model_dir`, then the native encoder, texts/s (median of
    TOKENIZER_REPEATS passes taken in turns) and the ratio."""
    tokenizer = load_tokenizer(str(model_dir))
    texts = [e.text for e in iter_examples(data)]
    native, python = token_encoder(tokenizer), PaddleNLPEncoder(tokenizer, "baseline")
    native(texts[:500])
    assert native(texts) == python(texts), "the native tokenizer's ids differ"
    native_seconds, python_seconds = zip(*[(seconds(lambda: native(texts)), seconds(lambda: python(texts)))
                                           for _ in range(TOKENIZER_REPEATS)])
    native_rate, python_rate = len(texts) / np.median(native_seconds), len(texts) / np.median(python_seconds)
    return [f"| paddlenlp {type(tokenizer).__name__} (Python) | {python_rate:,.0f} | 1.00x |",
            f"| {native.name} | {native_rate:,.0f} | {native_rate / python_rate:.2f}x |"]


def command_seconds(command: list[str], cwd: Path) -> float:
    return seconds(lambda: subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"}))


def predict_command_rate(script: Path, checkpoint: Path, data: Path, one_line: Path, processes: int,
                         options: list[str], work: Path) -> float:
    """Lines/s of predict.py as a command, start-up (timed on a one-line file) taken off."""
    launcher = ([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(processes),
                 "--log_dir", str(work / "launch_log")] if processes > 1 else [sys.executable])

    def run(file: Path) -> float:
        return command_seconds([*launcher, str(script), "--device", "cpu", "--dataset_dir", str(file.parent),
                                "--data_file", file.name, "--params_path", str(checkpoint), "--output_file",
                                str(work / f"cmd_{processes}.txt"), *options], cwd=script.parent)

    run(one_line)  # the export cache and INT8 models are built before anything is timed
    startup = min(run(one_line) for _ in range(2))
    lines = sum(1 for _ in open(data, encoding="utf-8"))
    return lines / max(run(data) - startup, 1e-9)


def main() -> None:
    args = parser.parse_args()
    if "commands" in args.sections and "backends" not in args.sections:
        parser.error("--sections commands runs each shape's fastest path, which the backends section finds")
    set_device("cpu")
    dataset, work = Path(args.dataset_dir), Path(args.out_dir)
    work.mkdir(parents=True, exist_ok=True)
    counts = {shape: (static, dygraph) for shape, static, dygraph in zip(SHAPES, args.lines, args.dygraph_lines)}
    inputs = {(shape, kind): input_file(dataset, count, work / f"data_{shape}_{kind}" / "data.txt")
              for shape in args.shapes for kind, count in zip(("static", "dygraph"), counts[shape])}
    one_line = work / "one" / "data.txt"
    one_line.parent.mkdir(exist_ok=True)
    one_line.write_text(next(iter(inputs.values())).read_text(encoding="utf-8").splitlines()[0] + "\n",
                        encoding="utf-8")
    for directory in [one_line.parent, *(path.parent for path in inputs.values())]:
        for name in ("label.txt", "dev.txt"):
            (directory / name).write_text((dataset / name).read_text(encoding="utf-8"), encoding="utf-8")
    out = [f"Labelling divorce sentences on {os.cpu_count()} CPU cores, lines/s (higher is better); lines per case: "
           + ", ".join(f"{shape} {static} (dygraph {dygraph})" for shape, (static, dygraph) in counts.items()
                       if shape in args.shapes), ""]

    if "tokenizers" in args.sections:
        ernie_m = work / "ernie-m_scratch"
        if not (ernie_m / "config.json").is_file():
            create_scratch_model(str(dataset), str(ernie_m), "tiny", model_type="ernie-m")
        out += ["| tokenizer | texts/s | vs paddlenlp |", "|---|---|---|"]
        for model_dir in (checkpoint_of("tiny", dataset, work), ernie_m):
            out += tokenizer_rows(model_dir, inputs["tiny", "static"])
            print("\n".join(out[-2:]), flush=True)
        out.append("")
    if "backends" in args.sections:
        rows, fastest = backend_table(args.shapes, dataset, work, inputs)
        out += rows
    if "commands" in args.sections:
        out += command_table(args.shapes, fastest, dataset, work, inputs, one_line)
    save_result(args.result, "\n".join(out) + "\n")


def backend_table(shapes: list[str], dataset: Path, work: Path, inputs: dict) -> tuple[list[str], dict]:
    """In-process labelling of every backend and precision per shape: end to end, ceiling and stages;
    and each shape's fastest (backend, precision) end to end."""
    out = ["| shape | backend | precision | end to end | engine ceiling | end to end / ceiling | read | tokenize | "
            "engine | write |", "|---|---|---|---|---|---|---|---|---|---|"]
    fastest: dict[str, tuple[str, str, float]] = {}
    for shape in shapes:
        checkpoint = checkpoint_of(shape, dataset, work)
        for backend, precision in [("dygraph", "fp32"), *variants("cpu")]:
            data = inputs[shape, "dygraph" if backend == "dygraph" else "static"]
            lines = sum(1 for _ in open(data, encoding="utf-8"))
            stages = stage_times(checkpoint, data)
            case = in_process_case(checkpoint, data, backend, precision, lines, work)
            seconds = [stages["read_s"], stages["tokenize_s"], case["engine_s"], case["write_s"]]
            shares = " | ".join(f"{100 * s / sum(seconds):.0f}%" for s in seconds)
            out.append(f"| {shape} | {backend} | {precision} | {case['end_to_end']:,.0f} | {case['ceiling']:,.0f} | "
                       f"{case['end_to_end'] / case['ceiling']:.0%} | {shares} |")
            print(out[-1], flush=True)
            if case["end_to_end"] > fastest.get(shape, ("", "", 0.0))[2]:
                fastest[shape] = (backend, precision, case["end_to_end"])
    return out + [""], {shape: (backend, precision) for shape, (backend, precision, _) in fastest.items()}


def command_table(shapes: list[str], fastest: dict, dataset: Path, work: Path, inputs: dict,
                  one_line: Path) -> list[str]:
    """predict.py as a command with 1 and 2 processes: the dygraph default (tiny) and each shape's
    fastest in-process path (start-up taken off)."""
    out = ["| shape | predict.py | processes | lines/s |", "|---|---|---|---|"]
    for shape in shapes:
        checkpoint = checkpoint_of(shape, dataset, work)
        backend, precision = fastest[shape]
        cases = [(["--backend", backend, "--precision", precision], inputs[shape, "static"])]
        if shape == "tiny":
            cases.insert(0, (["--backend", "dygraph"], inputs[shape, "dygraph"]))
        for options, data in cases:
            for processes in (1, 2):
                rate = predict_command_rate(ROOT / "predict.py", checkpoint, data, one_line, processes, options, work)
                out.append(f"| {shape} | {' '.join(options[1::2])} | {processes} | {rate:,.0f} |")
                print(out[-1], flush=True)
    return out


if __name__ == "__main__":
    main()
