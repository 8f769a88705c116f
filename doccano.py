"""Convert an annotation tool's export into the suite's data files.

The reference's command line and outputs: `--splits` of 1, 2 or 3 ratios summing to exactly 1 write
train.txt (+ dev.txt, + test.txt), data.txt (the texts of the last split) and label.txt (sorted);
`--valid` writes valid.txt and `--dirty` train_dirty.txt, the relabelled texts the sparse and dirty
data strategies sent out, checked against the existing label.txt. Every export shape of doccano
1.6-1.8 (JSONL, JSON, its zip, CSV, fastText) and Label Studio (JSON, JSON_MIN, CSV, TSV) is read,
detected from the content (annotation.py).

Unlike the reference: `--is_shuffle` shuffles what is split; `--is_shuffle False` means false; a bad
label, line or missing text is one line naming file:line; examples nobody annotated are counted and
written to unlabelled.txt (or, with `--unlabelled keep`, into the splits as examples without labels,
the reference's behaviour); files that exist in `--save_dir` are not overwritten without `--overwrite`,
and nothing else there is touched. Everything is checked before the first file is written.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from annotation import FORMATS, Record, one_line_text, read_export
from cli import SEED, ArgumentParser, true_or_false
from data_io import read_label_list
from utils import DataError, logger, run_cli, write_text_atomic

UNLABELLED_FILE = "unlabelled.txt"

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--doccano_file", "--input_file", dest="doccano_file", default="doccano.jsonl", type=str, help="The export of doccano or Label Studio (a doccano zip too).")
parser.add_argument("--save_dir", default="./data", type=str, help="The directory the data files are written to.")
parser.add_argument("--splits", default=None, type=str, nargs="*", help="Ratios of train, dev and test (1, 2 or 3 values summing to exactly 1). Default: 0.8 0.2; with --valid or --dirty: 1.")
parser.add_argument("--task_type", choices=["multi_class", "multi_label", "hierarchical"], default="multi_label", type=str, help="multi_label; multi_class (exactly one label per example); hierarchical (labels A##B also give their parents A).")
parser.add_argument("--is_shuffle", default=True, type=true_or_false, help="Shuffle the examples before splitting them: True or False.")
parser.add_argument("--seed", type=SEED, default=3, help="Random seed of the shuffle.")
parser.add_argument("--separator", type=str, default="##", help="Separator of the levels of a hierarchical label.")
parser.add_argument("--valid", action="store_true", help="Write the relabelled texts of the sparse data strategy to valid.txt.")
parser.add_argument("--dirty", action="store_true", help="Write the relabelled texts of the dirty data strategy to train_dirty.txt.")
parser.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="The export's format; auto: told from the content.")
parser.add_argument("--from_name", default=None, help="Label Studio: the name of the Choices control holding the labels (default: the only one, or 'label').")
parser.add_argument("--text_key", default="text", help="The field holding the text (Label Studio: the task data key; doccano 1.6's 'data' is found by itself).")
parser.add_argument("--zip_member", default=None, help="The member of a doccano zip to read when it holds one file per annotator.")
parser.add_argument("--unlabelled", choices=("separate", "keep", "drop"), default="separate", help=f"Examples nobody annotated: separate: write their texts to {UNLABELLED_FILE}; keep: into the splits as examples without labels (the reference); drop: only count them.")
parser.add_argument("--overwrite", action="store_true", help="Replace output files that already exist in --save_dir.")
# yapf: enable


def parse_splits(values: list[str] | None, single: bool) -> list[Decimal]:
    """The split ratios as exact decimals (0.7 + 0.2 + 0.1 is 1 here, not 0.9999999999999999)."""
    if values is None:
        return [Decimal(1)] if single else [Decimal("0.8"), Decimal("0.2")]
    try:
        ratios = [Decimal(value) for value in values]
    except InvalidOperation:
        raise DataError(f"--splits {' '.join(values)}: ratios must be numbers") from None
    if len(ratios) not in (1, 2, 3):
        raise DataError(f"--splits has {len(ratios)} values; give 1, 2 or 3 (train, dev, test)")
    if any(not ratio.is_finite() or ratio < 0 or ratio > 1 for ratio in ratios) or sum(ratios) != 1:
        raise DataError(f"--splits {' '.join(values)}: ratios in [0, 1] that sum to exactly 1 are needed")
    if single and len(ratios) != 1:
        raise DataError("--valid and --dirty write every example to one file; leave out --splits or give 1")
    return ratios


def hierarchy(labels: list[str], separator: str) -> list[str]:
    """A hierarchical example's labels and all their parents (A##B##C gives A, A##B, A##B##C)."""
    expanded: list[str] = []
    for label in labels:
        levels = label.split(separator)
        for depth in range(1, len(levels) + 1):
            name = separator.join(levels[:depth])
            if name not in expanded:
                expanded.append(name)
    return expanded


def example_lines(records: list[Record], args: argparse.Namespace) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(annotated examples as (text, labels), texts nobody annotated) in file order, with the counts logged."""
    examples, unannotated, joined, dropped = [], [], 0, 0
    for record in records:
        text, was_joined, was_dropped = one_line_text(record.text, args.dirty)
        joined, dropped = joined + was_joined, dropped + was_dropped
        if record.labels is None:
            unannotated.append(text)
            continue
        labels = hierarchy(record.labels, args.separator) if args.task_type == "hierarchical" else record.labels
        if args.task_type == "multi_class" and len(labels) != 1:
            raise DataError(f"{record.where}: {len(labels)} labels ({', '.join(labels) or 'none'}); "
                            f"--task_type multi_class needs exactly one per example")
        examples.append((text, labels))
    if joined:
        logger.warning(f"{joined} texts held a TAB or line break; each was replaced by a space")
    if dropped:
        logger.info(f"{dropped} texts were whole train_dirty.txt lines; their last column (the old labels) was dropped")
    return examples, unannotated


def check_known_labels(examples: list[tuple[str, list[str]]], records_where: list[str], label_path: Path) -> None:
    """Relabelled texts go back into a data set whose label.txt is fixed: a new name is a typo or a new
    label the model cannot have, and is refused."""
    if not label_path.is_file():
        logger.warning(f"{label_path} does not exist: the labels are not checked against a label file")
        return
    known = set(read_label_list(label_path))
    for (_, labels), where in zip(examples, records_where):
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise DataError(f"{where}: label {unknown[0]!r} is not in {label_path}")


def split_outputs(rows: list[str], texts: list[str], ratios: list[Decimal]) -> dict[str, list[str]]:
    """train/dev/test at the ratios (cut points rounded down, as the reference cuts), and data.txt the
    texts of the last split."""
    cuts = [int(len(rows) * sum(ratios[:i + 1])) for i in range(len(ratios) - 1)]
    bounds = list(zip([0, *cuts], [*cuts, len(rows)]))
    names = ["train.txt", "dev.txt", "test.txt"][:len(ratios)]
    outputs = {name: rows[start:end] for name, (start, end) in zip(names, bounds)}
    outputs["data.txt"] = texts[bounds[-1][0]:]
    return outputs


def plan_outputs(args: argparse.Namespace, examples: list[tuple[str, list[str]]], unannotated: list[str],
                 ratios: list[Decimal]) -> dict[str, list[str]]:
    """Every file to write and its lines, decided before anything is written."""
    if args.unlabelled == "keep":
        examples = examples + [(text, []) for text in unannotated]
    if args.is_shuffle:
        order = np.random.RandomState(args.seed).permutation(len(examples))
        examples = [examples[i] for i in order]
    rows = [f"{text}\t{','.join(labels)}" if labels else text for text, labels in examples]
    if args.valid or args.dirty:
        outputs = {"valid.txt" if args.valid else "train_dirty.txt": rows}
    else:
        outputs = split_outputs(rows, [text for text, _ in examples], ratios)
        outputs["label.txt"] = sorted({label for _, labels in examples for label in labels})
    if args.unlabelled == "separate" and unannotated:
        outputs[UNLABELLED_FILE] = unannotated
    return outputs


def check_save_dir(save_dir: Path, names: list[str], overwrite: bool) -> None:
    if save_dir.exists() and not save_dir.is_dir():
        raise DataError(f"--save_dir {save_dir} is a file, not a directory")
    existing = [name for name in names if (save_dir / name).exists()]
    if existing and not overwrite:
        raise DataError(f"{save_dir} already holds {', '.join(existing)}; give --overwrite to replace "
                        f"{'it' if len(existing) == 1 else 'them'} or choose another --save_dir")


def convert(args: argparse.Namespace) -> None:
    single = args.valid or args.dirty
    if args.valid and args.dirty:
        raise DataError("--valid and --dirty exclude each other: one export is relabelled sparse or dirty data")
    ratios = parse_splits(args.splits, single)
    fmt, records = read_export(args.doccano_file, args.format, args.from_name, args.text_key, args.zip_member)
    examples, unannotated = example_lines(records, args)
    logger.info(f"Read {args.doccano_file} ({fmt}): {len(records)} examples, {len(examples)} annotated, "
                f"{len(unannotated)} not annotated by anyone")
    save_dir = Path(args.save_dir)
    if single:
        check_known_labels(examples, [r.where for r in records if r.labels is not None], save_dir / "label.txt")
    outputs = plan_outputs(args, examples, unannotated, ratios)
    check_save_dir(save_dir, list(outputs), args.overwrite)
    if not any(outputs[name] for name in outputs if name not in ("label.txt", UNLABELLED_FILE)):
        raise DataError(f"{args.doccano_file}: no annotated example (use --unlabelled keep to write the "
                        f"{len(unannotated)} examples without labels)")
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create --save_dir {save_dir}: {err.strerror}") from None
    for name in [name for name, lines in outputs.items() if not lines and name != UNLABELLED_FILE]:
        logger.warning(f"{name} will be empty: too few examples for --splits")
    for name, lines in outputs.items():
        write_text_atomic(save_dir / name, "".join(line + "\n" for line in lines))
        what = "labels" if name == "label.txt" else "texts nobody annotated" if name == UNLABELLED_FILE else "examples"
        logger.info(f"Save {len(lines)} {what} to {save_dir / name}.")
    if unannotated and args.unlabelled != "separate":
        logger.info(f"{len(unannotated)} examples nobody annotated were "
                    f"{'written without labels' if args.unlabelled == 'keep' else 'dropped'} (--unlabelled {args.unlabelled})")


def main(argv: list[str] | None = None) -> None:
    convert(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
