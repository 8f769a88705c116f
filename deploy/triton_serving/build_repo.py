"""Generate the Triton model repository for an export directory.

    python deploy/triton_serving/build_repo.py --export_dir ./export --output_dir deploy/triton_serving/models

Tensor names, the label count, labels, the decision (thresholds, label-count policy, calibration) and
the tokenizer all come from the export, so nothing in the repository is edited by hand:

    seqcls              ensemble: INPUT (string) -> label (int64 ids), confidence (fp32, their probabilities),
                        label_names (string), probs (fp32 x labels)
    tokenizer           python: the export's tokenizer -> input_ids[, token_type_ids], text_index (the text
                        of each row: a long text read in windows gives several rows)
    seqcls_model        the export's model.onnx: platform onnxruntime_onnx (--platform onnxruntime,
                        as in the NGC Triton image, CPU or GPU) or python running ONNX Runtime
                        (--platform python, for servers without the ONNX Runtime backend)
    seqcls_postprocess  python: rows pooled per text, the export's decision (decision.py), label ids and names

`label` and `confidence` are the reference's outputs (ids of the chosen labels and
their probabilities; in a batch, rows shorter than the longest are padded with id -1 and 0.0);
`label_names` (the names, comma-joined) and `probs` (every label's probability) are added. A stored
`top_k` has no tensor here: `probs` carries every label's score.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import json
import shutil
from pathlib import Path

import decision
import native_tokenizer
import pipeline
from cli import NON_NEGATIVE_INT, POSITIVE_INT, SEQ_LENGTH, ArgumentParser
from exporting import ONNX_FILE, OUTPUT_NAME, ensure_onnx, export_prefix_in, load_export, load_export_tokenizer
from modeling import check_max_seq_length
from script_options import add_long_text_arguments, resolve_long_text
from utils import DataError, logger, run_cli

# yapf: disable
parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--export_dir", default="./export", help="Directory written by export_model.py or prune.py.")
parser.add_argument("--output_dir", default="./models", help="The model repository to create: a new or empty directory, or one this tool built before (it is replaced).")
parser.add_argument("--platform", choices=["onnxruntime", "python"], default="onnxruntime", help="How seqcls_model runs the ONNX model.")
parser.add_argument("--device", choices=["cpu", "gpu"], default="gpu", help="Instance kind of seqcls_model (onnxruntime platform).")
parser.add_argument("--max_batch_size", type=POSITIVE_INT, default=64, help="Largest batch Triton forms.")
parser.add_argument("--max_seq_length", type=SEQ_LENGTH, default=128, help="Length of the tokenizer's model inputs (longer texts are truncated, or read in windows of this length as the export says).")
parser.add_argument("--num_threads", type=NON_NEGATIVE_INT, default=0, help="ONNX Runtime intra-op threads (0: its default).")
add_long_text_arguments(parser)
# yapf: enable

SOURCES = Path(__file__).resolve().parent / "python_models"
MARKER = ".build_repo"  # marks a directory this tool built, the only kind it deletes


ANSWER = ("label", "confidence", "label_names", "probs")  # the ensemble's outputs


def answer_tensors(num_labels: int) -> list[str]:
    return [tensor("label", "TYPE_INT64", [-1]), tensor("confidence", "TYPE_FP32", [-1]),
            tensor("label_names", "TYPE_STRING", [1]), tensor("probs", "TYPE_FP32", [num_labels])]


def tensor(name: str, data_type: str, dims: list[int]) -> str:
    return f'  {{ name: "{name}" data_type: {data_type} dims: [ {", ".join(map(str, dims))} ] }}'


def config(name: str, head: str, max_batch_size: int, inputs: list[str], outputs: list[str], tail: str = "") -> str:
    inputs_text, outputs_text = ",\n".join(inputs), ",\n".join(outputs)
    return (f'name: "{name}"\n{head}\nmax_batch_size: {max_batch_size}\n'
            f'input [\n{inputs_text}\n]\noutput [\n{outputs_text}\n]\n{tail}')


def parameter(key: str, value) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'


def ensemble_step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    maps = [f'      input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
    maps += [f'      output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
    return f'    {{\n      model_name: "{model}"\n      model_version: -1\n' + "\n".join(maps) + "\n    }"


def write_model(repo: Path, name: str, config_text: str, source: str | None = None) -> Path:
    version = repo / name / "1"
    version.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config_text, encoding="utf-8")
    if source:
        shutil.copy(SOURCES / source, version / "model.py")
    return version


def copy_pipeline(model_dir: Path) -> None:
    """The one text pipeline, its tokenizer module, the decision step and `preload` (the tokenizer model
    imports it before paddlenlp) beside a python model (Triton imports from there)."""
    for module in (preload, pipeline, native_tokenizer, decision):
        shutil.copy(module.__file__, model_dir / Path(module.__file__).name)


def clear_output_dir(repo: Path, export_dir: Path) -> None:
    """Make way for a new repository, deleting only what this tool built before.

    A directory is replaced only if it holds this tool's marker file; the export itself, any
    directory that contains it and any other non-empty directory are refused, never deleted.
    """
    resolved = repo.resolve()
    if resolved == export_dir.resolve() or resolved in export_dir.resolve().parents:
        raise DataError(f"--output_dir {repo} holds the export {export_dir}; choose a directory of its own")
    if (repo / MARKER).is_file():
        shutil.rmtree(repo)
    elif repo.exists() and (not repo.is_dir() or any(repo.iterdir())):
        raise DataError(f"--output_dir {repo} exists and was not built by build_repo.py (no {MARKER}); "
                        f"choose a new or empty directory, nothing was deleted")


def build(args: argparse.Namespace) -> None:
    export = load_export(export_prefix_in(args.export_dir))
    check_max_seq_length(args.max_seq_length, export.max_positions, export.directory)
    long_text = resolve_long_text(args, export.long_text, args.max_seq_length)
    onnx_file = ensure_onnx(export.model_prefix, export.directory)
    repo = Path(args.output_dir)
    clear_output_dir(repo, export.directory)
    num_labels, inputs = len(export.labels), export.input_names
    batch = args.max_batch_size
    rows = batch * (long_text.max_windows if long_text.mode == "window" else 1)  # model inputs of `batch` texts
    cpu = "instance_group [ { count: 1 kind: KIND_CPU } ]\n"

    tokenizer_dir = write_model(repo, "tokenizer", config(
        "tokenizer", 'backend: "python"', batch, [tensor("INPUT", "TYPE_STRING", [1])],
        [*(tensor(name, "TYPE_INT64", [-1]) for name in inputs), tensor("text_index", "TYPE_INT64", [1])],
        cpu + parameter("max_seq_length", args.max_seq_length)
        + parameter("long_text", json.dumps(long_text.as_dict()).replace('"', '\\"'))), "tokenizer.py")
    load_export_tokenizer(export).save_pretrained(str(tokenizer_dir / "tokenizer"))
    copy_pipeline(tokenizer_dir)

    model_inputs = [tensor(name, "TYPE_INT64", [-1]) for name in inputs]
    model_outputs = [tensor(OUTPUT_NAME, "TYPE_FP32", [num_labels])]
    threads = parameter("intra_op_thread_count", args.num_threads)
    if args.platform == "onnxruntime":
        kind = "KIND_GPU" if args.device == "gpu" else "KIND_CPU"
        model_dir = write_model(repo, "seqcls_model", config(
            "seqcls_model", 'platform: "onnxruntime_onnx"', rows, model_inputs, model_outputs,
            f"instance_group [ {{ count: 1 kind: {kind} }} ]\n" + threads))
    else:
        model_dir = write_model(repo, "seqcls_model", config(
            "seqcls_model", 'backend: "python"', rows, model_inputs, model_outputs, cpu + threads), "seqcls_model.py")
    shutil.copy(onnx_file, model_dir / ONNX_FILE)

    post_dir = write_model(repo, "seqcls_postprocess", config(
        "seqcls_postprocess", 'backend: "python"', rows,
        [tensor(OUTPUT_NAME, "TYPE_FP32", [num_labels]), tensor("text_index", "TYPE_INT64", [1])],
        answer_tensors(num_labels), cpu), "seqcls_postprocess.py")
    copy_pipeline(post_dir)
    (post_dir / "labels.json").write_text(json.dumps(
        {"labels": export.labels, "thresholds": [float(t) for t in export.decision.thresholds],
         decision.CONFIG_KEY: export.decision.settings(), "window_pooling": long_text.pooling}, ensure_ascii=False, indent=1), encoding="utf-8")

    steps = [ensemble_step("tokenizer", {"INPUT": "INPUT"}, {name: name for name in (*inputs, "text_index")}),
             ensemble_step("seqcls_model", {name: name for name in inputs}, {OUTPUT_NAME: OUTPUT_NAME}),
             ensemble_step("seqcls_postprocess", {OUTPUT_NAME: OUTPUT_NAME, "text_index": "text_index"},
                           {name: name for name in ANSWER})]
    write_model(repo, "seqcls", config(
        "seqcls", 'platform: "ensemble"', batch, [tensor("INPUT", "TYPE_STRING", [1])], answer_tensors(num_labels),
        "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"))
    (repo / MARKER).write_text("Built by deploy/triton_serving/build_repo.py; it may delete and rebuild this "
                               "directory.\n", encoding="utf-8")
    logger.info(f"Triton model repository for {num_labels} labels ({args.platform} seqcls_model) written to {repo}/")


def main(argv: list[str] | None = None) -> None:
    build(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
