"""Word-level interpretation: which words made the model give (or not give) each label.

The reference offers this only as a notebook (word_interpret.ipynb, kept as a short front end to
these functions). For every input (by default evaluate.py's bad_case.txt) and every label of
interest (predicted or gold; the most probable label when there is neither), it attributes the
label's logit to the words of the text and writes `word_interpret.html` (coloured marks) and
`word_interpret.txt` (the key words), both into the dataset directory.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import html
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cli import POSITIVE_INT, ArgumentParser
from modeling import TrainedModel
from utils import DataError, logger, run_cli, write_text_atomic

from common import InterpretRow, add_model_arguments, load_model, read_interpret_rows
from interpret import HTML_HEAD, INTERPRETERS, encode, html_marks, key_words, word_scores

# yapf: disable
parser = ArgumentParser(description=__doc__)
add_model_arguments(parser, batch_size=None, seed_help="Random seed (lime's word maskings).")
parser.add_argument("--interpret_input_file", type=str, default="bad_case.txt", help="Texts to explain: a bad-case file, a labelled data file or one text per line.")
parser.add_argument("--interpreter", choices=list(INTERPRETERS), default="ig", help="ig (integrated gradients), lime or grad (gradient x input).")
parser.add_argument("--key_words_num", type=POSITIVE_INT, default=5, help="Number of key words listed per text and label.")
parser.add_argument("--ig_steps", type=POSITIVE_INT, default=50, help="Integration steps of integrated gradients.")
parser.add_argument("--label_file", type=str, default="label.txt", help="Label file name")
parser.add_argument("--output_prefix", type=str, default="word_interpret", help="Name of the .html and .txt reports.")
# yapf: enable


def parse_names(names: str, labels: list[str], path: Path, text: str) -> set[int]:
    ids = set()
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in labels:
            raise DataError(f"{path}: unknown label {name!r} in the row of {text[:30]!r}")
        ids.add(labels.index(name))
    return ids


def labels_of_interest(row: InterpretRow, probs: np.ndarray, trained: TrainedModel, path: Path
                       ) -> tuple[set[int], set[int], list[int]]:
    """(gold, predicted, labels to explain): predicted as written in the file, else by the model."""
    gold = parse_names(row.label, trained.labels, path, row.text)
    predicted = (parse_names(row.prediction, trained.labels, path, row.text) if row.prediction
                 else set(trained.decision.label_ids(probs[None])[0]))
    return gold, predicted, sorted(gold | predicted) or [int(np.argmax(probs))]


def refuse_windowed_texts(rows: list[InterpretRow], trained: TrainedModel, path: Path) -> None:
    """Word attributions explain one model input. A text the checkpoint reads in several windows has
    logits pooled from windows that overlap, so a word would get several attributions, none of which
    alone explains the document's decision: such texts are refused, not explained half-way."""
    if trained.pipeline.long_text.mode != "window":
        return
    encoded = trained.pipeline.encode([row.text for row in rows])
    windowed = np.flatnonzero(np.bincount(encoded.source, minlength=encoded.num_texts) > 1)
    if windowed.size:
        raise DataError(f"{path}: {windowed.size} texts need more than one window of --max_seq_length "
                        f"{trained.pipeline.max_seq_length} tokens (the first: {rows[windowed[0]].text[:30]!r}), and "
                        f"word attributions explain one window: split such documents into passages, or pass "
                        f"--long_text truncate to explain their first {trained.pipeline.max_seq_length} tokens only")


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    dataset = Path(args.dataset_dir)
    trained = load_model(args)
    input_path = dataset / args.interpret_input_file
    rows = read_interpret_rows(input_path)
    refuse_windowed_texts(rows, trained, input_path)
    probs = trained.probs([r.text for r in rows])
    html_rows, text_lines = [], []
    for number, (row, row_probs) in enumerate(tqdm(list(zip(rows, probs)), desc="Interpreting", disable=None), 1):
        gold, predicted, explain = labels_of_interest(row, row_probs, trained, input_path)
        item = encode(trained.tokenizer, row.text, args.max_seq_length)
        for label in explain:
            scores = word_scores(trained.model, trained.tokenizer, item, label, args.interpreter, args.ig_steps)
            words = key_words(item.words, scores, args.key_words_num)
            name, prob = trained.labels[label], float(row_probs[label])
            status = (f"{'gold' if label in gold else 'not gold'} / "
                      f"{'predicted' if label in predicted else 'not predicted'}")
            text_lines.append(f"{row.text}\t{name}\t{prob:.4f}\t{status}\t"
                              + ", ".join(f"{w} ({s:+.3f})" for w, s in words))
            html_rows.append(f"<tr><td>{number}</td><td>{html.escape(name)}</td><td>{prob:.3f}</td><td>{status}</td>"
                             f"<td>{html.escape(', '.join(w for w, _ in words))}</td>"
                             f"<td>{html_marks(item.words, scores)}</td></tr>")
    html_path, text_path = dataset / f"{args.output_prefix}.html", dataset / f"{args.output_prefix}.txt"
    write_text_atomic(html_path, HTML_HEAD.replace("{interpreter}", args.interpreter) + "\n".join(html_rows)
                      + "\n</table></body></html>\n")
    write_text_atomic(text_path, "Text\tLabel\tProbability\tGold / Predicted\tKey words\n" + "\n".join(text_lines)
                      + "\n")
    logger.info(f"{len(text_lines)} explanations ({args.interpreter}) of {len(rows)} texts saved in {html_path}")
    logger.info(f"The same explanations as text saved in {text_path}")


if __name__ == "__main__":
    run_cli(main)
