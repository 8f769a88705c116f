"""Label new texts with a trained checkpoint.

Writes what the reference writes: the header `text<TAB>label`, then one `text<TAB>name, name` row per
input line, in input order (the suite's reader reads it back as data). `--output_probs` adds every
label's probability and `--top_k k` the k most probable labels as columns; `--min_labels` and
`--max_labels` bound how many labels a text gets (decision.py). The input is streamed window
by window, so files larger than memory work; inside a window texts are batched by length for speed,
and the next window is read and tokenized while the model runs (labelling.py).

The dygraph model runs by default, as in the reference. `--backend paddle|onnxruntime|openvino`
exports the checkpoint once into `<params_path>/export_cache/` (with export_model.py's parity check)
and labels on that engine at `--precision`. Under `python -m paddle.distributed.launch` the input's
lines are shared among the processes and rank 0 joins their parts; `--resume` keeps the parts an
interrupted run finished.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import os
from pathlib import Path

import paddle.distributed as dist

from backends import BACKENDS, calibration_texts, check_variant, create_backend
from cli import POSITIVE_INT, SEQ_LENGTH, ArgumentParser
from labelling import PART_LINES, Labeller, label_file
from modeling import TrainedModel, load_trained
from parity import cached_export
from pipeline import TextPipeline
from script_options import add_decision_arguments, add_long_text_arguments
from utils import DataError, cpu_threads_per_process, local_device_id, logger, run_cli, set_device

PRECISIONS = ("fp32", "fp16", "bf16", "int8")

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument('--device', default="gpu", help="Select which device runs the model, defaults to gpu.")
parser.add_argument("--dataset_dir", required=True, type=str, help="Local dataset directory should include data.txt and label.txt")
parser.add_argument("--output_file", default="output.txt", type=str, help="Save prediction result")
parser.add_argument("--params_path", default="./checkpoint/", type=str, help="The path to model parameters to be loaded.")
parser.add_argument("--max_seq_length", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization. Sequences longer than this will be truncated, sequences shorter will be padded.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Texts per forward pass of the model.")
parser.add_argument("--data_file", type=str, default="data.txt", help="Unlabeled data file name")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name (optional: checked against the labels stored in the checkpoint)")
parser.add_argument("--output_probs", action="store_true", help="Add a third column with every label's probability as JSON.")
parser.add_argument("--backend", default="dygraph", choices=["dygraph", *BACKENDS], help="Engine that runs the model: the dygraph checkpoint, or its export (made once, cached in params_path/export_cache).")
parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="Precision of a static backend (cpu: onnxruntime fp32/int8, paddle fp32/bf16, openvino fp32/bf16/int8; gpu: fp16 too).")
parser.add_argument("--num_threads", type=POSITIVE_INT, default=None, help="CPU threads of this process (default: the machine's cores shared among its launched processes).")
parser.add_argument("--resume", action="store_true", help="Label in parts beside the output and keep the parts an interrupted run finished with the same options.")
parser.add_argument("--part_lines", type=POSITIVE_INT, default=PART_LINES, help="Most input lines in one part (with --resume or several processes): what an interrupted run may have to label again.")
add_long_text_arguments(parser)
add_decision_arguments(parser)
# yapf: enable


def make_labeller(args: argparse.Namespace, trained: TrainedModel, data_path: Path, threads: int) -> Labeller:
    """The dygraph model, or the cached export on the chosen engine, behind the checkpoint's pipeline."""
    if args.backend == "dygraph":
        if args.precision != "fp32":
            raise DataError(f"--backend dygraph runs fp32 only; --precision {args.precision} needs a static "
                            f"backend (--backend {' or '.join(BACKENDS)})")
        return Labeller(trained.pipeline, trained.runner(), trained.decision, trained.labels, args.output_probs)
    device = "gpu" if args.device.startswith("gpu") else "cpu"
    check_variant(args.backend, args.precision, device)
    export = cached_export(trained.model, trained.tokenizer, args.params_path, trained.labels, args.max_seq_length,
                           args.dataset_dir)
    pipeline = TextPipeline(trained.tokenizer, export.input_names, args.max_seq_length, args.batch_size,
                            trained.pipeline.long_text)
    engine = create_backend(export, args.backend, args.precision, device, local_device_id(), threads,
                            lambda: pipeline.feeds(pipeline.encode(calibration_texts(Path(args.dataset_dir),
                                                                                     data_path))))
    return Labeller(pipeline, engine, trained.decision, trained.labels, args.output_probs)


def output_options(args: argparse.Namespace, labeller: Labeller) -> dict:
    """Everything that changes the output rows: a part written with other values is labelled again."""
    weights = (Path(args.params_path) / "model_state.pdparams").stat()
    return {"params_path": str(Path(args.params_path).resolve()), "weights_mtime_ns": weights.st_mtime_ns,
            "backend": args.backend, "precision": args.precision, "batch_size": args.batch_size,
            "max_seq_length": args.max_seq_length, "long_text": labeller.pipeline.long_text.as_dict(),
            "labels": labeller.labels, "thresholds": [float(t) for t in labeller.decision.thresholds],
            "decision": labeller.decision.settings(),
            "output_probs": args.output_probs}


def predict(args: argparse.Namespace) -> None:
    rank, world_size = dist.get_rank(), dist.get_world_size()
    threads = args.num_threads or cpu_threads_per_process()
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # the native tokenizer's thread pool
    set_device(args.device, args.num_threads)
    trained = load_trained(args)
    data_path = Path(args.dataset_dir) / args.data_file
    labeller = make_labeller(args, trained, data_path, threads)
    label_file(labeller, data_path, args.output_file, args.batch_size, output_options(args, labeller), args.resume,
               rank, world_size, args.part_lines)
    logger.info(labeller.length_summary())
    if rank == 0:
        logger.info(f"Prediction results save in {args.output_file}.")


def main(argv: list[str] | None = None) -> None:
    predict(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
