"""Embed a corpus with the exported encoder: `{output_dir}/{data_name}_embedding.npy` for vector_insert.py.

Same command line as PaddleNLP's retrieval_based/utils/feature_extract.py. The corpus is label.txt
(one label name per line) or labelled texts (`text<TAB>label,label`). Beside the array,
`{data_name}_embedding.json` records the entries (text and labels, in row order) and the encoder's
fingerprint, so vector_insert.py can store them with their vectors and refuse an index of another model.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
from pathlib import Path

from cli import POSITIVE_INT, SEQ_LENGTH, ArgumentParser, true_or_false
from retrieval import check_label_names, read_corpus, write_corpus_vectors
from semantic_index import EncoderExport, check_predictor_options, embedding_pipeline, load_encoder_export
from utils import logger, run_cli, set_device
from vector_index import Entry

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--model_dir", type=str, required=True, help="The directory of the exported encoder (export_model.py --output_path).")
parser.add_argument("--corpus_file", type=str, required=True, help="label.txt, or labelled texts (text<TAB>label,label).")
parser.add_argument("--output_dir", type=str, required=True, help="Where the embeddings are written.")
parser.add_argument("--max_seq_length", default=64, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization. Sequences longer than that will be truncated.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Batch size for predict.")
parser.add_argument('--device', choices=['cpu', 'gpu', 'xpu'], default="gpu", help="Select which device to run the model on, defaults to gpu.")
parser.add_argument("--data_name", type=str, required=True, help="The name of the embedding file: {data_name}_embedding.npy.")
parser.add_argument("--use_tensorrt", default=False, type=true_or_false, help="TensorRT is not supported here; False is the only value accepted.")
parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="fp32; fp16 on GPU; bf16 on CPU.")
parser.add_argument("--model_name_or_path", default='rocketqa-zh-dureader-query-encoder', type=str, help="The tokenizer, when the export directory holds none.")
parser.add_argument("--cpu_threads", default=10, type=POSITIVE_INT, help="Number of threads to predict when using cpu.")
parser.add_argument("--enable_mkldnn", default=False, type=true_or_false, help="Kept for the reference's command line: oneDNN is always on for CPU.")
# yapf: enable


def extract(args: argparse.Namespace) -> Path:
    check_predictor_options(args.device, args.use_tensorrt)
    set_device(args.device)
    entries = read_corpus(args.corpus_file)
    exported = load_encoder_export(args.model_dir, args.device, args.precision, args.cpu_threads,
                                   args.model_name_or_path)
    check_corpus_label_names(exported, entries, args.max_seq_length)
    vectors = exported.embed([entry.text for entry in entries], args.max_seq_length, args.batch_size)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    npy = output / f"{args.data_name}_embedding.npy"
    write_corpus_vectors(npy, vectors, entries, exported.encoder, args.corpus_file)
    logger.info(f"{len(entries)} embeddings of {args.corpus_file} saved in {npy}")
    return npy


def check_corpus_label_names(exported: EncoderExport, entries: list[Entry], max_seq_length: int) -> None:
    """The label names of the corpus pass recall.py's check: names the tokenizer turns into the same
    tokens get the same vector, and each would score alike for every text."""
    names = [entry.text for entry in entries if entry.labels == [entry.text]]
    if names:
        check_label_names(embedding_pipeline(exported.tokenizer, max_seq_length, len(names)), names)


def main(argv: list[str] | None = None) -> None:
    extract(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
