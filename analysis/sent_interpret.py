"""Sentence-level interpretation: the training examples most similar to each input.

Same command line and output as PaddleNLP's multi_label/analysis/sent_interpret.py. Similarity is
the cosine of the classifier's input features (the pooled [CLS] vector), so the listed training
examples are the ones the model sees as closest; reading their labels next to a bad case often
shows a labelling inconsistency or a missing kind of example.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

from pathlib import Path

from cli import POSITIVE_INT, ArgumentParser
from data_io import format_labels, load_examples
from utils import atomic_output, logger, run_cli

from common import add_model_arguments, load_model, read_interpret_rows, top_k_similar

# yapf: disable
parser = ArgumentParser(description=__doc__)
add_model_arguments(parser, batch_size=16, seed_help="Random seed.")
parser.add_argument("--top_k", type=POSITIVE_INT, default=3, help="Top K training examples")
parser.add_argument("--train_file", type=str, default="train.txt", help="Train dataset file name")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name")
parser.add_argument("--interpret_input_file", type=str, default="bad_case.txt", help="interpretation file name")
parser.add_argument("--interpret_result_file", type=str, default="sent_interpret.txt", help="interpreted file name")
# yapf: enable


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    dataset = Path(args.dataset_dir)
    trained = load_model(args)
    rows = read_interpret_rows(dataset / args.interpret_input_file)
    train = load_examples(dataset / args.train_file, trained.labels)
    texts = [row.text for row in rows]
    index, scores = top_k_similar(trained.features(texts), trained.features([e.text for e in train]), args.top_k)
    probs = trained.probs(texts)
    out_path = dataset / args.interpret_result_file
    with atomic_output(out_path) as out:
        for row, row_probs, neighbours, neighbour_scores in zip(rows, probs, index, scores):
            prediction = row.prediction or format_labels(trained.decision.label_ids(row_probs[None])[0], trained.labels)
            out.write(f"text: {row.text}\npredict label: {prediction}\nlabel: {row.label}\n"
                      f"examples with positive influence\n")
            for rank, (i, score) in enumerate(zip(neighbours, neighbour_scores), start=1):
                out.write(f"support{rank} text: {train[i].text}\tlabel: "
                          f"{format_labels(train[i].labels, trained.labels)}\tscore: {score:.5f}\n")
            out.write("\n")
    logger.info(f"Top {args.top_k} similar training examples of {len(rows)} inputs saved in {out_path}")


if __name__ == "__main__":
    run_cli(main)
