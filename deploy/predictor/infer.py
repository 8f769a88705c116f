"""Label texts with an exported model on ONNX Runtime, Paddle Inference or OpenVINO.

Same command line and log lines as PaddleNLP's multi_label/deploy/predictor/infer.py. The
tokenizer, labels and thresholds come from the export directory; INT8 and FP16 models are built
once and cached there. `--check_parity` compares every backend and precision with the trained
dygraph model on the dev file.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
from pathlib import Path

import psutil

from backends import BACKENDS, calibration_texts, create_backend, variants
from cli import NON_NEGATIVE_INT, POSITIVE_INT, SEQ_LENGTH, ArgumentParser
from data_io import ReadStats, load_examples, multi_hot, text_windows
from decision import Decision
from exporting import ExportInfo, load_export, load_export_tokenizer
from labelling import Labeller, label_file
from modeling import check_max_seq_length, load_model, load_tokenizer, text_probs, tokenizer_positions
from parity import check_fp32_parity, log_parity, parity_rows
from pipeline import TextPipeline
from script_options import add_decision_arguments, add_long_text_arguments, resolve_decision, resolve_long_text
from utils import DataError, logger, run_cli, set_device

from predictor import Predictor

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--model_path_prefix", type=str, required=True, help="The path prefix of inference model to be used, e.g. ../../export/float32.")
parser.add_argument("--model_name_or_path", default=None, type=str, help="The tokenizer to use; defaults to the one saved in the export directory (the reference's default was ernie-3.0-medium-zh).")
parser.add_argument("--max_seq_length", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization. Sequences longer than this will be truncated, sequences shorter will be padded.")
parser.add_argument("--use_fp16", action='store_true', help="Whether to use fp16 inference, only takes effect when deploying on gpu.")
parser.add_argument("--use_quantize", action='store_true', help="Whether to use INT8 quantization (dynamic with onnxruntime, calibrated with openvino), only takes effect when deploying on cpu.")
parser.add_argument("--use_bf16", action='store_true', help="Whether to use bfloat16 on cpu (openvino or paddle backend; needs AVX-512 BF16 or AMX).")
parser.add_argument("--backend", default="onnxruntime", choices=list(BACKENDS), help="Inference engine running the exported model.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Texts per forward pass of the model.")
parser.add_argument("--num_threads", default=psutil.cpu_count(logical=False), type=POSITIVE_INT, help="num_threads for cpu.")
parser.add_argument("--device", choices=["cpu", "gpu"], default="gpu", help="Select which device runs the model, defaults to gpu.")
parser.add_argument("--device_id", default=0, type=NON_NEGATIVE_INT, help="Select which gpu runs the model.")
parser.add_argument("--perf", action='store_true', help="Whether to compute the latency and f1 score of the test set.")
parser.add_argument("--dataset_dir", required=True, type=str, help="The dataset directory including data.txt, label.txt (optional: checked against the export's labels), dev.txt and test.txt.")
parser.add_argument("--perf_dataset", choices=['dev', 'test'], default='dev', type=str, help="evaluate the performance on dev dataset or test dataset")
parser.add_argument('--multilingual', action='store_true', help='Checked only: the export records its inputs (ERNIE-M: input_ids only), so an export made without --multilingual is refused with this flag.')
parser.add_argument("--data_file", type=str, default="data.txt", help="Unlabeled data file name inside dataset_dir.")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name inside dataset_dir.")
parser.add_argument("--output_file", type=str, default=None, help="Write the predictions here as predict.py does (header, then `text<TAB>name, name` per input line) instead of logging each one.")
parser.add_argument("--output_probs", action="store_true", help="With --output_file: add every label's probability as JSON.")
parser.add_argument("--check_parity", action="store_true", help="Compare every backend and precision with the dygraph model of --params_path on the perf_dataset file.")
parser.add_argument("--params_path", type=str, default="./checkpoint/", help="With --check_parity: the trained dygraph checkpoint that was exported.")
add_long_text_arguments(parser)
add_decision_arguments(parser)
# yapf: enable


def precision_of(args: argparse.Namespace) -> str:
    chosen = [name for flag, name in ((args.use_fp16, "fp16"), (args.use_quantize, "int8"), (args.use_bf16, "bf16"))
              if flag]
    if len(chosen) > 1:
        raise DataError("choose at most one of --use_fp16, --use_quantize and --use_bf16")
    return chosen[0] if chosen else "fp32"


def check_args(args: argparse.Namespace, export: ExportInfo) -> None:
    if args.multilingual and "token_type_ids" in export.input_names:
        raise DataError(f"--multilingual was given but {export.directory} was exported without it "
                        f"(it takes token_type_ids); drop the flag or re-export with --multilingual")


def predict_file(args: argparse.Namespace, predictor: Predictor, data_path: Path) -> str:
    """Write `text<TAB>labels` lines with --output_file, else log each prediction as the reference does;
    returns the log line of what reading the texts cut or windowed."""
    if args.output_file:
        labeller = Labeller(predictor.pipeline, predictor.backend, predictor.decision, predictor.labels,
                            args.output_probs)
        label_file(labeller, data_path, args.output_file, args.batch_size, options={})
        logger.info(f"Prediction results save in {args.output_file}.")
        return labeller.length_summary()
    stats = ReadStats()
    for window in text_windows(data_path, args.batch_size, stats):
        texts = [e.text for e in window]
        predictor.printer(texts, predictor.predict(texts)[1])
    logger.info(stats.summary(data_path))
    return predictor.pipeline.length_summary(predictor.lengths)


def check_parity(args: argparse.Namespace, export: ExportInfo, pipeline: TextPipeline, decision: Decision) -> None:
    examples = load_examples(Path(args.dataset_dir) / f"{args.perf_dataset}.txt", export.labels)
    texts, labels = [e.text for e in examples], multi_hot(examples, len(export.labels))
    if not Path(args.params_path).is_dir():
        raise DataError(f"--check_parity needs the trained checkpoint: --params_path {args.params_path} "
                        f"is not a directory")
    model = load_model(args.params_path)
    reference = text_probs(model, load_tokenizer(args.params_path), texts, args.max_seq_length, args.batch_size,
                           pipeline.long_text, decision)
    perf_file = Path(args.dataset_dir) / f"{args.perf_dataset}.txt"
    probs = {}
    for backend, precision in variants(args.device):
        engine = create_backend(export, backend, precision, args.device, args.device_id, args.num_threads,
                                lambda: pipeline.feeds(pipeline.encode(calibration_texts(perf_file.parent,
                                                                                         perf_file))))
        probs[engine.label] = pipeline.probs(engine, texts, decision)
    rows = parity_rows(reference, probs, decision, labels)
    log_parity(rows)
    check_fp32_parity(rows)


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    precision = precision_of(args)
    if args.device == "cpu" or args.backend == "paddle" or args.check_parity:
        set_device(args.device)  # ONNX Runtime on GPU needs onnxruntime-gpu, not a CUDA build of Paddle
    dataset = Path(args.dataset_dir)
    if not dataset.is_dir():
        raise DataError(f"--dataset_dir {dataset} is not a directory")
    export = load_export(args.model_path_prefix, dataset / args.label_file)
    check_args(args, export)
    tokenizer = load_export_tokenizer(export, args.model_name_or_path)
    check_max_seq_length(args.max_seq_length, export.max_positions or tokenizer_positions(tokenizer), export.directory)
    decision = resolve_decision(args, export.decision)
    long_text = resolve_long_text(args, export.long_text, args.max_seq_length)
    pipeline = TextPipeline(tokenizer, export.input_names, args.max_seq_length, args.batch_size, long_text)
    if args.check_parity:
        check_parity(args, export, pipeline, decision)
        return

    data_path = dataset / (f"{args.perf_dataset}.txt" if args.perf else args.data_file)
    backend = create_backend(export, args.backend, precision, args.device, args.device_id, args.num_threads,
                             lambda: pipeline.feeds(pipeline.encode(calibration_texts(dataset, data_path))))
    predictor = Predictor(pipeline, backend, export.labels, decision)
    if args.perf:
        examples = load_examples(data_path, export.labels)
        texts = [e.text for e in examples]
        predictor.evaluate(texts, multi_hot(examples, len(export.labels)))
        logger.info(pipeline.length_summary(predictor.lengths))
        predictor.performance(texts)
    else:
        logger.info(predict_file(args, predictor, data_path))


if __name__ == "__main__":
    run_cli(main)
