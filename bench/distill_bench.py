"""Distillation on divorce: students of four shapes, five recipes, against their ERNIE 3.0-mini-shaped teacher.

Usage: python bench/distill_bench.py --dataset_dir divorce --corpus legal_corpus/corpus.txt.gz

1. Teacher: a random ERNIE 3.0-mini-shaped model (scratch_model.py, dropout 0.1) fine-tuned by train.py
   with --teacher_args, once; later runs reuse <out_dir>/teacher (if trained with the same settings).
   With --labelled_texts N, teacher and students learn from the first N training texts only, and the
   other training texts join the unlabelled texts without their labels (a run that fits a shared CPU); its runs
   are kept in <out_dir>/labelled_N.
2. Corpus: the lines of --corpus split into sentences (at 。；;！？!?, as divorce's texts are sentences);
   sentences equal to a test text are dropped, and --corpus_sentences of them are drawn (seeded); the
   unlabelled training texts of --labelled_texts come first.
3. Cells (--cells student:recipe, run in the order given; a run kept from an earlier call is reused if
   it was trained with the same settings), each for every --seeds at the shape's learning rate: (a) labels
   only (--alpha 0), (b) distilled on the labelled texts, (c) (b) plus the corpus, (d) (c) plus intermediate
   transfer (hidden states and attention maps), (e) (c) with the teacher's repeat-factor sampling (the corpus
   texts counted with the teacher's labels).
4. Test micro/macro F1 of every checkpoint (dygraph, its tuned thresholds), mean ± std over the seeds run, and
   the F1 per label (mean over the seeds) beside each label's training and test texts; the 95% interval of each
   cell's gap to the teacher by the paired bootstrap over the test texts (the test set's noise, not the seeds').
5. Speed: predict.py's labelling end to end (in process, as bench/label_throughput.py measures it) with
   --backend openvino --precision int8 on --speed_lines divorce sentences, for classifiers of the teacher's
   and the students' shapes and of the ERNIE 3.0-medium shape (random weights and the data set's labels:
   the weights do not change the speed, so this section runs without any training), measured in turns
   --speed_rounds times (the best round of each is kept: the CPU is shared).
The speed section keeps its rates in --speed_out; the F1 section writes the table, with the speeds measured
by then, to bench/results/distill.json (bench/render_tables.py puts it into docs/benchmarks.md).
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import gzip
import json
import random
import re
import shlex
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from benchtools import check_kept_run, markdown_table, mean_std, measured_now, run_script, runs_provenance, save_result

from data_io import iter_corpus, label_matrix, load_examples, multi_hot, read_label_list
from distill import SHAPE_OPTIONS, STUDENT_PRESETS
from distill import parser as distill_parser
from metric import MetricReport
from modeling import load_trained
from predict import parser as predict_parser
from train import parser as train_parser
from utils import atomic_output, set_device, write_text_atomic

from label_throughput import checkpoint_of, in_process_case, input_file

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "a": ("labels only", ["--alpha", "0"]),
    "b": ("distilled, labelled texts", ["--alpha", "0.5"]),
    "c": ("distilled, labelled + corpus", ["--alpha", "0.5", "CORPUS"]),
    "d": ("(c) + intermediate transfer", ["--alpha", "0.5", "CORPUS", "--intermediate", "both"]),
    "e": ("(c) + repeat-factor sampling", ["--alpha", "0.5", "CORPUS", "--sampling", "repeat_factor",
                                           "--repeat_threshold", "0.1"]),
}


class Student(NamedTuple):
    preset: str  # distill.py's --student_preset
    overrides: dict  # the shape's changes to the preset's configuration
    learning_rate: str  # distill.py's --learning_rate


# the 4x192 shape diverged at tiny's 1e-3 in 2 of 3 seeds (dev macro F1 0.10 and 0.26 after 4 epochs)
STUDENTS = {"micro": Student("micro", {}, "1e-3"), "nano": Student("nano", {}, "1e-3"),
            "tiny": Student("tiny", {}, "1e-3"),
            "4x192": Student("tiny", {"num_hidden_layers": 4, "hidden_size": 192, "num_attention_heads": 4,
                                      "intermediate_size": 768}, "5e-4")}
BOOTSTRAP_ROUNDS = 1000
SENTENCE_END = re.compile(r"(?<=[。；;！？!?])")

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset_dir", required=True, help="The divorce dataset directory.")
parser.add_argument("--corpus", required=True, help="Unlabelled in-domain texts (.txt or .gz).")
parser.add_argument("--out_dir", default=str(ROOT / "bench/out/distill"))
parser.add_argument("--max_seq_length", type=int, default=64, help="for the teacher, the students and the F1s")
parser.add_argument("--teacher_args", default="--batch_size 32 --learning_rate 5e-4 --warmup --warmup_steps 100 "
                    "--epochs 8 --loss db --sampling repeat_factor --repeat_threshold 0.1 --tune_thresholds "
                    "--logging_steps 20", help="train.py options of the teacher")
parser.add_argument("--student_args", default="--batch_size 32 --epochs 8 --loss db --logging_steps 20",
                    help="distill.py options of every student, after its shape's --learning_rate (so one here wins)")
parser.add_argument("--cells", nargs="+", default=[f"{s}:{r}" for s in STUDENTS for r in RECIPES],
                    help="student:recipe pairs, run in this order")
parser.add_argument("--seeds", type=int, nargs="+", default=[1])
parser.add_argument("--corpus_sentences", type=int, default=0, help="sentences of the corpus used (0: all)")
parser.add_argument("--labelled_texts", type=int, default=0, help="labelled training texts used (0: all)")
parser.add_argument("--speed_lines", type=int, default=1000)
parser.add_argument("--speed_rounds", type=int, default=3)
parser.add_argument("--speed_out", default=str(ROOT / "bench/out/distill_speed.json"))
parser.add_argument("--sections", nargs="+", choices=["speed", "f1"], default=["speed", "f1"])


def teacher(args, dataset: Path, out: Path) -> Path:
    """The teacher checkpoint: trained once, then kept while --teacher_args stay the same."""
    checkpoint = out / "teacher"
    options = ["--device", "cpu", "--dataset_dir", str(dataset), "--model_name", str(out / "teacher_scratch"),
               "--save_dir", str(checkpoint), "--max_seq_length", str(args.max_seq_length),
               *shlex.split(args.teacher_args)]
    if (checkpoint / "results.json").is_file():
        check_kept_run(checkpoint, train_parser, options)
        return checkpoint
    run_script("scratch_model.py", "--dataset_dir", dataset, "--output_dir", out / "teacher_scratch", "--preset",
               "ernie-3.0-mini-zh", "--dropout", "0.1", log=out / "teacher_scratch.log")
    run_script("train.py", *options, log=out / "teacher.log")
    return checkpoint


def labelled_dataset(args, dataset: Path, out: Path) -> tuple[Path, list[str]]:
    """The data set the runs learn from (the first --labelled_texts training texts) and the training texts
    left over, without labels."""
    if not args.labelled_texts:
        return dataset, []
    subset = out / f"dataset_{args.labelled_texts}"
    subset.mkdir(parents=True, exist_ok=True)
    lines = (dataset / "train.txt").read_text(encoding="utf-8").splitlines()
    (subset / "train.txt").write_text("\n".join(lines[:args.labelled_texts]) + "\n", encoding="utf-8")
    for name in ("dev.txt", "test.txt", "label.txt"):
        (subset / name).write_text((dataset / name).read_text(encoding="utf-8"), encoding="utf-8")
    return subset, [line.split("\t")[0] for line in lines[args.labelled_texts:]]


def corpus_sentences(args, dataset: Path, out: Path, unlabelled: list[str]) -> Path:
    """The unlabelled training texts, then the corpus as sentences sampled to --corpus_sentences, without
    the test texts."""
    path = out / f"corpus_{len(unlabelled)}_{args.corpus_sentences or 'all'}.txt.gz"
    if path.is_file():
        return path
    test = {e.text for e in load_examples(dataset / "test.txt", None)}
    sentences = [s.strip() for line in iter_corpus(args.corpus) for s in SENTENCE_END.split(line)]
    sentences = [s for s in sentences if len(s) >= 5 and s not in test]
    if args.corpus_sentences:
        sentences = random.Random(0).sample(sentences, min(args.corpus_sentences, len(sentences)))
    sentences = unlabelled + sentences
    with atomic_output(path, "wb") as raw, gzip.open(raw, "wt", encoding="utf-8") as handle:  # runs side by side
        handle.write("\n".join(sentences) + "\n")
    print(f"corpus: {len(sentences)} sentences in {path}", file=sys.stderr, flush=True)
    return path


def student_options(args, cell: str, seed: int, dataset: Path, teacher_dir: Path, corpus: Path,
                    save_dir: Path) -> list[str]:
    """distill.py's arguments for one seed of a cell."""
    student, recipe = cell.split(":")
    recipe_options = [item for option in RECIPES[recipe][1]
                      for item in (["--corpus", str(corpus)] if option == "CORPUS" else [option])]
    preset, overrides, learning_rate = STUDENTS[student]
    shape = [item for key, value in overrides.items() for item in (f"--{SHAPE_OPTIONS[key]}", str(value))]
    return ["--device", "cpu", "--teacher", str(teacher_dir), "--dataset_dir", str(dataset), "--save_dir",
            str(save_dir), "--student_preset", preset, *shape, "--seed", str(seed), "--max_seq_length",
            str(args.max_seq_length), *recipe_options, "--learning_rate", learning_rate, *shlex.split(args.student_args)]


def student_run(args, cell: str, seed: int, dataset: Path, teacher_dir: Path, corpus: Path, out: Path) -> Path:
    """The checkpoint of one seed of a cell: trained by distill.py, or the kept one if it was trained with the same
    settings (a kept run with other settings stops the benchmark rather than be reported under these)."""
    student, recipe = cell.split(":")
    save_dir = out / "students" / f"{student}_{recipe}_seed{seed}"
    options = student_options(args, cell, seed, dataset, teacher_dir, corpus, save_dir)
    if (save_dir / "results.json").is_file():
        check_kept_run(save_dir, distill_parser, options)
        return save_dir
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    run_script("distill.py", *options, log=save_dir.parent / f"{save_dir.name}.log")
    return save_dir


def test_f1(checkpoint: Path, dataset: Path, max_seq_length: int) -> dict:
    """Test micro / macro F1 and the F1 per label of the dygraph checkpoint with its stored decision, and when
    they were measured (kept beside the checkpoint for reruns)."""
    stored = checkpoint / f"test_f1_{max_seq_length}.json"
    if stored.is_file() and stored.stat().st_mtime > (checkpoint / "config.json").stat().st_mtime:
        record = json.loads(stored.read_text(encoding="utf-8"))
        if "test_labels" in record:
            return record
    trained = load_trained(predict_parser.parse_args(["--device", "cpu", "--dataset_dir", str(dataset), "--params_path",
                                                      str(checkpoint), "--max_seq_length", str(max_seq_length)]))
    examples = load_examples(dataset / "test.txt", trained.labels)
    probs = trained.probs([e.text for e in examples])
    metric = MetricReport(decision=trained.decision)
    metric.update(probs, multi_hot(examples, len(trained.labels)))
    figures = metric.figures()
    record = {"f1": [figures["micro_f1"], figures["macro_f1"]], "per_label_f1": figures["per_class"]["f1"],
              "test_labels": trained.decision.label_ids(probs), **measured_now()}
    write_text_atomic(stored, json.dumps(record))
    return record


SPEED_SHAPES = {"teacher (mini)": ("mini", {}), **{name: student[:2] for name, student in STUDENTS.items()},
                "medium (random weights)": ("medium", {})}


def speed(dataset: Path, args, out: Path) -> dict:
    """Lines/s of predict.py's OpenVINO INT8 labelling per shape, the best of --speed_rounds rounds taken in turns;
    with the shapes and when they were measured."""
    models = {name: checkpoint_of(STUDENT_PRESETS[preset], dataset, out / "speed", overrides)
              for name, (preset, overrides) in SPEED_SHAPES.items()}
    data = input_file(dataset, args.speed_lines, out / "speed" / "data.txt")
    for name in ("label.txt", "dev.txt", "train.txt"):
        (data.parent / name).write_text((dataset / name).read_text(encoding="utf-8"), encoding="utf-8")
    rates: dict[str, float] = {}
    for _ in range(args.speed_rounds):
        for name, checkpoint in models.items():
            case = in_process_case(checkpoint, data, "openvino", "int8", args.speed_lines, out / "speed")
            rates[name] = max(rates.get(name, 0.0), case["end_to_end"])
            print(f"  {name}: {case['end_to_end']:.0f} lines/s", file=sys.stderr, flush=True)
    return {"lines_per_second": rates, "lines": args.speed_lines, "rounds": args.speed_rounds,
            "shapes": {name: shape_of(path) for name, path in models.items()}, **measured_now()}


def table(args, teacher: dict, results: dict[str, list[dict]], speeds: dict, gold: np.ndarray) -> str:
    """The report: F1 of the teacher and of every student cell run (mean ± std over its seeds), with each shape's
    labelling speed; shapes without a trained cell get a speed-only row."""
    rates = speeds.get("lines_per_second", {})
    base = rates.get("teacher (mini)")

    def speed_cells(name: str) -> list[str]:
        rate = rates.get(name)
        return [f"{rate:.0f}" if rate else "-", f"{rate / base:.2f}" if rate and base else "-"]

    teacher_micro, teacher_macro = teacher["f1"]
    trained_students = list(dict.fromkeys(cell.split(":")[0] for cell in results))
    rows = [["teacher (mini)", "train.py", 1, f"{100 * teacher_micro:.2f}", f"{100 * teacher_macro:.2f}", "-", "-",
             *speed_cells("teacher (mini)")]]
    for cell, runs in results.items():
        student, recipe = cell.split(":")
        micros, macros = [run["f1"][0] for run in runs], [run["f1"][1] for run in runs]
        delta = f"{100 * (np.mean(micros) - teacher_micro):+.2f} / {100 * (np.mean(macros) - teacher_macro):+.2f}"
        rows.append([student, f"({recipe}) {RECIPES[recipe][0]}", len(runs), mean_std(micros, 100),
                     mean_std(macros, 100), delta, gap_interval(gold, teacher, runs), *speed_cells(student)])
    learning_rates = ", ".join(f"{name} {STUDENTS[name].learning_rate}" for name in trained_students)
    rows += [[name, "speed only", "-", "-", "-", "-", "-", *speed_cells(name)]
             for name in rates if name != "teacher (mini)" and name not in trained_students]
    setting = (f"Test micro / macro F1 (%) on {len(gold)} divorce test texts with each checkpoint's tuned "
               f"thresholds, mean ± std over the seeds run; the 95% interval of Δ by the paired bootstrap over the "
               f"test texts ({BOOTSTRAP_ROUNDS} rounds); speed: predict.py --backend openvino --precision int8 "
               f"end to end, lines/s on {speeds.get('lines', '-')} divorce sentences, the best of "
               f"{speeds.get('rounds', '-')} rounds taken in turns. Students: distill.py {args.student_args}, "
               f"learning rate {learning_rates}.")
    header = ["model", "recipe", "seeds", "test micro F1", "test macro F1", "Δ micro / macro vs teacher",
              "Δ 95% interval", "lines/s", "× teacher"]
    shapes = "Shapes: " + "; ".join(f"{name}: {shape}" for name, shape in speeds.get("shapes", {}).items())
    return f"{setting}\n\n{markdown_table(header, rows)}\n{shapes}\n"


def gap_interval(gold: np.ndarray, teacher: dict, runs: list[dict]) -> str:
    """The 95% interval of a cell's Δ micro / macro F1 against the teacher (mean over its seeds) by the paired
    bootstrap over the test texts: how large a gap this test set can tell from chance."""
    def f1(labels: np.ndarray, texts: np.ndarray) -> np.ndarray:
        metric = MetricReport()
        metric.update(labels[texts], gold[texts])
        return np.array(metric.accumulate())

    teacher_labels = label_matrix(teacher["test_labels"], gold.shape[1])
    student_labels = [label_matrix(run["test_labels"], gold.shape[1]) for run in runs]
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(BOOTSTRAP_ROUNDS):
        texts = rng.integers(0, len(gold), len(gold))
        gaps.append(np.mean([f1(labels, texts) for labels in student_labels], axis=0) - f1(teacher_labels, texts))
    (micro_low, macro_low), (micro_high, macro_high) = 100 * np.percentile(gaps, [2.5, 97.5], axis=0)
    return f"{micro_low:+.2f} .. {micro_high:+.2f} / {macro_low:+.2f} .. {macro_high:+.2f}"


def per_label_table(dataset: Path, labels: list[str], gold: np.ndarray, teacher: dict,
                    results: dict[str, list[dict]]) -> str:
    """Test F1 per label of the teacher and of every cell (mean over its seeds), beside each label's training and
    test texts: where the macro gap comes from."""
    counts = {"train": multi_hot(load_examples(dataset / "train.txt", labels), len(labels)).sum(0),
              "test": gold.sum(0)}
    header = ["label", "train texts", "test texts", "teacher", *(f"{cell.replace(':', ' (')})" for cell in results)]
    rows = [[label, int(counts["train"][j]), int(counts["test"][j]), f"{100 * teacher['per_label_f1'][j]:.1f}",
             *(f"{100 * np.mean([run['per_label_f1'][j] for run in runs]):.1f}" for runs in results.values())]
            for j, label in enumerate(labels)]
    return f"Test F1 (%) per label, mean over the seeds run:\n\n{markdown_table(header, rows)}"


def shape_of(checkpoint: Path) -> str:
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    return (f"{config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
            f"{config['num_attention_heads']} heads, FFN {config['intermediate_size']}")


def main() -> None:
    args = parser.parse_args()
    set_device("cpu")
    dataset, out = Path(args.dataset_dir), Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    speed_file = Path(args.speed_out)
    if "speed" in args.sections:
        write_text_atomic(speed_file, json.dumps(speed(dataset, args, out), indent=1))
    if "f1" not in args.sections:
        return
    dataset, unlabelled = labelled_dataset(args, dataset, out)
    out = out / f"labelled_{args.labelled_texts}" if args.labelled_texts else out
    teacher_dir = teacher(args, dataset, out)
    corpus = corpus_sentences(args, dataset, out, unlabelled)
    teacher_f1 = test_f1(teacher_dir, dataset, args.max_seq_length)
    print(f"teacher: test micro / macro F1 {teacher_f1['f1']}", file=sys.stderr, flush=True)
    results: dict[str, list[dict]] = {}
    for cell in args.cells:
        for seed in args.seeds:
            save_dir = student_run(args, cell, seed, dataset, teacher_dir, corpus, out)
            results.setdefault(cell, []).append(test_f1(save_dir, dataset, args.max_seq_length))
            print(f"{cell} seed {seed}: test micro / macro F1 {results[cell][-1]['f1']}", file=sys.stderr, flush=True)
    speeds = json.loads(speed_file.read_text(encoding="utf-8")) if speed_file.is_file() else {}
    runs = [teacher_f1, *(run for cell_runs in results.values() for run in cell_runs), *([speeds] if speeds else [])]
    labels = read_label_list(dataset / "label.txt")
    gold = multi_hot(load_examples(dataset / "test.txt", labels), len(labels))
    report = [table(args, teacher_f1, results, speeds, gold), per_label_table(dataset, labels, gold, teacher_f1, results)]
    save_result("distill", "\n".join(report), measured=runs_provenance(runs))


if __name__ == "__main__":
    main()
