"""Send texts to annotators: import files for doccano and Label Studio, pre-annotated.

The texts come from a file of the dataset directory: what `analysis/sparse.py --annotate` selected
(support.txt, texts alone), what `analysis/dirty.py` suspects (train_dirty.txt, with the labels to
check), or data.txt; `--uncertain N` keeps the N texts a checkpoint is least sure of (closest to its
thresholds), `--spread_labels` taking them in turn from each label. Written to `--output_dir`:

- doccano_import.jsonl: `text`, `label` (the pre-annotation) and `meta` (source file and line, the
  file's labels, the model's labels and probabilities, the distance to the nearest threshold);
- label_studio_tasks.json: `data.text` and `data.source`, the pre-annotation as a `prediction`
  (`model_version`, `score`, a `choices` result);
- label_studio_config.xml: the labelling config whose multiple Choices are the labels.

The pre-annotation is the file's own labels when it has them (relabelling checks them), else the
model's labels (decision.py, the checkpoint's calibrated probabilities and thresholds). After
annotation, `doccano.py --valid` / `--dirty` bring the export back, from either tool.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import json
from pathlib import Path

import numpy as np

from annotation import (
    decision_confidence,
    doccano_task,
    label_studio_config,
    label_studio_task,
    least_sure,
)
from cli import NON_NEGATIVE_INT, POSITIVE_INT, SEQ_LENGTH, ArgumentParser
from data_io import Example, ReadStats, iter_examples, read_label_list
from modeling import TrainedModel, load_trained
from script_options import add_decision_arguments, add_long_text_arguments
from utils import DataError, atomic_output, logger, run_cli, set_device, write_text_atomic

OUTPUTS = ("doccano_import.jsonl", "label_studio_tasks.json", "label_studio_config.xml")
PRELABELS = ("auto", "file", "model", "none")

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--dataset_dir", required=True, type=str, help="The dataset directory holding label.txt and the file of texts.")
parser.add_argument("--data_file", default="data.txt", type=str, help="The file of texts in --dataset_dir: support.txt (sparse.py --annotate), train_dirty.txt (dirty.py), data.txt, or any text<TAB>labels file.")
parser.add_argument("--label_file", default="label.txt", type=str, help="The label file in --dataset_dir: the choices of the labelling config.")
parser.add_argument("--output_dir", default="./annotation_tasks", type=str, help="Where the import files are written.")
parser.add_argument("--params_path", default=None, type=str, help="A trained checkpoint whose labels and probabilities pre-annotate the texts (needed by --uncertain).")
parser.add_argument("--uncertain", default=0, type=NON_NEGATIVE_INT, help="Keep only the N texts the checkpoint is least sure of (closest to a threshold); 0: every text of the file.")
parser.add_argument("--spread_labels", action="store_true", help="With --uncertain: take the texts in turn from each label's own queue.")
parser.add_argument("--prelabels", default="auto", choices=PRELABELS, help="The pre-annotation: the file's labels, the model's, none; auto: the file's when it has labels, else the model's.")
parser.add_argument("--device", default="gpu", help="Device that runs the checkpoint.")
parser.add_argument("--max_seq_length", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Texts per forward pass of the model.")
parser.add_argument("--overwrite", action="store_true", help="Replace import files that already exist in --output_dir.")
add_long_text_arguments(parser)
add_decision_arguments(parser)
# yapf: enable


def read_texts(path: Path, labels: list[str]) -> tuple[list[Example], bool]:
    """The file's examples and whether it carries labels (a label column on any line)."""
    stats = ReadStats()
    examples = list(iter_examples(path, {name: i for i, name in enumerate(labels)}, stats))
    if not examples:
        raise DataError(f"{path}: no texts to export (the file has only blank lines)")
    logger.info(stats.summary(path))
    return examples, stats.unlabelled < stats.examples


def check_options(args: argparse.Namespace, has_labels: bool) -> str:
    """The pre-annotation source the options and file allow, or one line saying what is missing."""
    if args.uncertain and args.params_path is None:
        raise DataError("--uncertain needs a checkpoint: give --params_path")
    prelabels = args.prelabels if args.prelabels != "auto" else "file" if has_labels else "model"
    if prelabels == "model" and args.params_path is None:
        if args.prelabels == "model":
            raise DataError("--prelabels model needs a checkpoint: give --params_path")
        prelabels = "none"
    if prelabels == "file" and not has_labels:
        raise DataError(f"--prelabels file: {args.data_file} has no label column")
    return prelabels


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise DataError(f"--output_dir {output_dir} is a file, not a directory")
    existing = [name for name in OUTPUTS if (output_dir / name).exists()]
    if existing and not overwrite:
        raise DataError(f"{output_dir} already holds {', '.join(existing)}; give --overwrite to replace them")


def export(args: argparse.Namespace) -> None:
    dataset = Path(args.dataset_dir)
    output_dir = Path(args.output_dir)
    check_output_dir(output_dir, args.overwrite)
    trained = None
    if args.params_path is not None:
        set_device(args.device)
        trained = load_trained(args)
    labels = trained.labels if trained else read_label_list(dataset / args.label_file)
    examples, has_labels = read_texts(dataset / args.data_file, labels)
    prelabels = check_options(args, has_labels)
    model = model_view(trained, [e.text for e in examples]) if trained else None
    order = list(range(len(examples)))
    if args.uncertain:
        order = least_sure(model["distances"], args.uncertain, args.spread_labels)
        logger.info(f"The {len(order)} of {len(examples)} texts closest to a threshold"
                    + (", taken in turn from each label" if args.spread_labels else ""))
    source = f"{dataset / args.data_file}"
    doccano, studio = [], []
    for i in order:
        example = examples[i]
        file_labels = [labels[j] for j in example.labels]
        meta: dict = {"source": f"{source}:{example.line_no}"}
        if has_labels:
            meta["file_labels"] = file_labels
        if model is not None:
            meta.update(model_labels=model["names"][i], probs=model["probs"][i],
                        threshold_distance=round(float(model["distances"][i].min()), 4))
        pre = {"file": file_labels, "model": model["names"][i] if model else None, "none": None}[prelabels]
        doccano.append(doccano_task(example.text, pre or [], meta))
        version = Path(args.params_path).name if prelabels == "model" else args.data_file
        studio.append(label_studio_task(example.text, meta["source"], pre, model["confidence"][i] if model and
                                        prelabels == "model" else None, version))
    write_outputs(output_dir, doccano, studio, labels)
    logger.info(f"Pre-annotations: {prelabels if prelabels != 'file' else 'the labels of ' + args.data_file}")


def model_view(trained: TrainedModel, texts: list[str]) -> dict:
    """What the checkpoint says of each text: chosen label names, rounded probabilities, the confidence of
    its decision and the distances to the thresholds, all from the one decision step."""
    probs = trained.probs(texts)
    chosen = trained.decision.chosen(probs)
    return {"names": [[trained.labels[j] for j in np.flatnonzero(row)] for row in chosen],
            "probs": [{name: round(float(p), 4) for name, p in zip(trained.labels, row)} for row in probs],
            "confidence": decision_confidence(probs, chosen),
            "distances": trained.decision.margins(probs)}


def write_outputs(output_dir: Path, doccano: list[dict], studio: list[dict], labels: list[str]) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create --output_dir {output_dir}: {err.strerror}") from None
    with atomic_output(output_dir / OUTPUTS[0]) as out:
        out.writelines(json.dumps(task, ensure_ascii=False) + "\n" for task in doccano)
    write_text_atomic(output_dir / OUTPUTS[1], json.dumps(studio, ensure_ascii=False, indent=2) + "\n")
    write_text_atomic(output_dir / OUTPUTS[2], label_studio_config(labels))
    for name, count in zip(OUTPUTS, (len(doccano), len(studio), len(labels))):
        logger.info(f"Save {count} {'labels' if name.endswith('.xml') else 'tasks'} to {output_dir / name}.")


def main(argv: list[str] | None = None) -> None:
    export(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
