"""Label the texts of data.txt with an exported few-shot prompt model on ONNX Runtime.

Same command line as PaddleNLP's multi_label/few-shot/infer.py. The template, tokenizer and
label order come from the directory written by `train.py --do_export` (the reference re-sorted the
labels and loaded the pretrained weights again just to rebuild the template); an export made by
the reference's train.py runs too. Batches of texts of any lengths are padded with the attention
mask the graph was exported for.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
from pathlib import Path

import psutil

from backends import create_backend
from cli import NON_NEGATIVE_INT, POSITIVE_INT, SEQ_LENGTH, ArgumentParser
from data_io import ReadStats, text_windows
from labelling import Labeller, label_file
from modeling import check_max_seq_length, tokenizer_positions
from utils import DataError, logger, run_cli

from prompt_io import PromptPipeline, load_prompt_export, load_template, prompt_tokenizer, read_label_words

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--model_path_prefix", type=str, required=True, help="The path prefix of inference model to be used, e.g. checkpoints/export/model.")
parser.add_argument("--model_name", default=None, type=str, help="The tokenizer to use; defaults to the one saved in the export directory, or (for an export made by the reference) in the training output directory above it.")
parser.add_argument("--data_dir", default=None, type=str, help="The directory with data.txt to label (and label.txt, checked against the export's labels when present).")
parser.add_argument("--max_length", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization, prompt included.")
parser.add_argument("--use_fp16", action="store_true", help="Whether to use fp16 inference, only takes effect when deploying on gpu.")
parser.add_argument("--batch_size", default=200, type=POSITIVE_INT, help="Batch size per GPU/CPU for predicting.")
parser.add_argument("--num_threads", default=psutil.cpu_count(logical=False), type=POSITIVE_INT, help="num_threads for cpu.")
parser.add_argument("--device", choices=["cpu", "gpu"], default="gpu", help="Select which device to run model, defaults to gpu.")
parser.add_argument("--device_id", default=0, type=NON_NEGATIVE_INT, help="Select which gpu device to run model.")
parser.add_argument("--output_file", default=None, type=str, help="Write the predictions here as predict.py does (header, then `text<TAB>name, name` per input line) instead of logging each one.")
# yapf: enable


def check_args(args: argparse.Namespace) -> Path:
    """The data file to label."""
    if args.use_fp16 and args.device != "gpu":
        raise DataError("--use_fp16 needs --device gpu (FP16 inference runs on the GPU only)")
    if args.data_dir is None:
        raise DataError("--data_dir is required: the directory holding data.txt, one text per line")
    return Path(args.data_dir) / "data.txt"


def check_label_file(label_file: Path, export_labels: list[str]) -> None:
    """label.txt next to data.txt must name the labels the model was trained on."""
    file_labels = set(read_label_words(label_file))
    if file_labels != set(export_labels):
        raise DataError(f"{label_file} does not match the exported model's labels: only in the file: "
                        f"{sorted(file_labels - set(export_labels))}, only in the model: "
                        f"{sorted(set(export_labels) - file_labels)}")


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    data_file = check_args(args)
    prompt_export = load_prompt_export(args.model_path_prefix)
    export = prompt_export.export
    if (data_file.parent / "label.txt").is_file():
        check_label_file(data_file.parent / "label.txt", export.labels)
    tokenizer = prompt_tokenizer(export, args.model_name)
    check_max_seq_length(args.max_length, export.max_positions or tokenizer_positions(tokenizer), export.directory,
                         "--max_length", windows=False)
    pipeline = PromptPipeline(export, load_template(prompt_export, tokenizer, args.max_length), args.batch_size,
                              prompt_export.mask_heads)
    backend = create_backend(export, "onnxruntime", "fp16" if args.use_fp16 else "fp32", args.device,
                             args.device_id, args.num_threads)

    if args.output_file:
        label_file(Labeller(pipeline, backend, export.decision, export.labels), data_file, args.output_file,
                   args.batch_size, options={})
        logger.info(f"Predictions written to {args.output_file}")
        return
    stats = ReadStats()
    for window in text_windows(data_file, args.batch_size, stats):
        texts = [example.text for example in window]
        for text, ids in zip(texts, export.decision.label_ids(pipeline.probs(backend, texts, export.decision))):
            logger.info(f"input data: {text}")
            logger.info(f"labels: {', '.join(export.labels[i] for i in ids)}")
            logger.info("-----------------------------")
    logger.info(stats.summary(data_file))

if __name__ == "__main__":
    run_cli(main)
