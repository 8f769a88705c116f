"""Paddle Inference on the exported encoder: the embedding of a text, and its similarity to label names.

Same command line and printed lines as PaddleNLP's retrieval_based/deploy/python/predict.py, with
what it left out: `--max_seq_length` is used (the reference tokenized at 512 whatever it said),
segment ids are padded with the pad segment id, the tokenizer is the export's own, and the text and
label names can be given (`--text`, `--label`; the reference's samples by default). The similarity
of two L2-normalised embeddings is their dot product (the reference's 1 - cosine distance).
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse

import numpy as np

from cli import POSITIVE_INT, SEQ_LENGTH, ArgumentParser, true_or_false
from semantic_index import EncoderExport, check_predictor_options, load_encoder_export
from utils import run_cli, set_device

# yapf: disable
parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model_dir", type=str, required=True, help="The directory of the exported encoder (export_model.py --output_path).")
parser.add_argument("--max_seq_length", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization. Sequences longer than that will be truncated.")
parser.add_argument("--batch_size", default=15, type=POSITIVE_INT, help="Batch size for predict.")
parser.add_argument('--device', choices=['cpu', 'gpu', 'xpu'], default="gpu", help="Select which device to run the model on, defaults to gpu.")
parser.add_argument("--use_tensorrt", default=False, type=true_or_false, help="TensorRT is not supported here; False is the only value accepted.")
parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="fp32; fp16 on GPU; bf16 on CPU.")
parser.add_argument("--cpu_threads", default=10, type=POSITIVE_INT, help="Number of threads to predict when using cpu.")
parser.add_argument("--enable_mkldnn", default=False, type=true_or_false, help="Kept for the reference's command line: oneDNN is always on for CPU.")
parser.add_argument("--save_log_path", type=str, default="./log_output/", help="Kept for the reference's command line (it wrote nothing there either).")
parser.add_argument("--text", type=str, default="快要到期的“我的资料”怎么续日期？", help="The text to embed and compare (the reference's sample by default).")
parser.add_argument("--label", type=str, nargs="+", default=["互联网", "游戏"], help="Label names the text is compared with.")
# yapf: enable


def extract_embedding(exported: EncoderExport, data: dict, args: argparse.Namespace) -> np.ndarray:
    """The reference's function: prints its input, then the embeddings' shape and values."""
    print(data)
    embeddings = exported.embed([example["sentence"] for example in data.values()], args.max_seq_length,
                                args.batch_size)
    print(embeddings.shape)
    print(embeddings)
    return embeddings


def predict(exported: EncoderExport, pairs: list[list[str]], args: argparse.Namespace) -> list[float]:
    """Similarity of each (text, label name) pair."""
    texts = exported.embed([text for text, _ in pairs], args.max_seq_length, args.batch_size)
    names = exported.embed([name for _, name in pairs], args.max_seq_length, args.batch_size)
    return [float(score) for score in (texts * names).sum(axis=1)]


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    check_predictor_options(args.device, args.use_tensorrt)
    set_device(args.device)
    exported = load_encoder_export(args.model_dir, args.device, args.precision, args.cpu_threads)
    extract_embedding(exported, {0: {"sentence": args.text}}, args)
    print(predict(exported, [[args.text, name] for name in args.label], args))


if __name__ == "__main__":
    run_cli(main)
