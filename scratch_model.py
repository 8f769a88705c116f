"""Create a randomly initialised ERNIE with a character vocabulary built from a dataset.

Pretrained weights cannot be downloaded everywhere; the directory written here is a valid
`--model_name` for every script of the suite. Presets copy the shapes of the real ERNIE 3.0
models, so speed measurements made with them carry over to the pretrained ones. `--mlm_epochs`
pretrains the new model as a masked LM on the same texts (and `--corpus`), the offline stand-in for
pretraining: a shortcut into pretrain.py's code (mlm.py). With `--corpus` the character vocabulary
also covers the unlabelled corpus, so later pretraining on it does not meet [UNK] for its characters.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import tempfile
from collections import Counter
from itertools import chain
from pathlib import Path
from typing import Iterable

import paddle
import sentencepiece as spm
from paddlenlp.transformers import (
    AutoTokenizer,
    BasicTokenizer,
    ErnieConfig,
    ErnieMConfig,
    ErnieMModel,
    ErnieModel,
    ErnieMTokenizer,
    ErnieTokenizer,
)

from cli import (
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    SEQ_LENGTH,
    UNIT_INTERVAL_OPEN,
    ArgumentParser,
)
from corpus import corpus_files, iter_pieces, text_pieces
from data_io import iter_examples
from mlm import MASKINGS, MLMSettings, RunOptions, pretrain
from utils import DataError, logger, run_cli

# Shapes of the released ERNIE 3.0 models (paddlenlp's configuration.py); `tiny` is the scratch
# recipe's model: small enough to learn from a few thousand sentences on a CPU in minutes. Without
# dropout it learns much faster from random weights (keyword data, lr 1e-3: dev micro F1 0.96 after
# 8 epochs instead of 0.87 with dropout 0.1); on thousands of real sentences `--dropout 0.1`
# generalises better (the divorce benchmarks of docs/benchmarks.md use it).
PRESETS = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=512,
                 max_position_embeddings=512, use_task_id=False, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0),
    "ernie-3.0-nano-zh": dict(num_hidden_layers=4, hidden_size=312, num_attention_heads=12, intermediate_size=1248),
    "ernie-3.0-micro-zh": dict(num_hidden_layers=4, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    "ernie-3.0-mini-zh": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    "ernie-3.0-medium-zh": dict(num_hidden_layers=6, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "ernie-3.0-base-zh": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}
COMMON = dict(max_position_embeddings=2048, type_vocab_size=4, use_task_id=True, task_type_vocab_size=16,
              hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
              initializer_range=0.02, pad_token_id=0)
SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--dataset_dir", required=True, type=str, help="Directory with the training file (and dev file) to build the vocabulary from.")
parser.add_argument("--output_dir", required=True, type=str, help="Where to write the model and tokenizer.")
parser.add_argument("--preset", default="tiny", choices=list(PRESETS), help="Architecture: tiny (the scratch recipe), or the shape of a released ERNIE 3.0 model.")
parser.add_argument("--num_hidden_layers", default=None, type=POSITIVE_INT, help="Override the preset's number of layers.")
parser.add_argument("--hidden_size", default=None, type=POSITIVE_INT, help="Override the preset's hidden size.")
parser.add_argument("--num_attention_heads", default=None, type=POSITIVE_INT, help="Override the preset's number of attention heads.")
parser.add_argument("--intermediate_size", default=None, type=POSITIVE_INT, help="Override the preset's feed-forward width.")
parser.add_argument("--dropout", default=None, type=UNIT_INTERVAL_OPEN, help="Override the preset's hidden and attention dropout.")
parser.add_argument("--train_file", default="train.txt", type=str, help="Training file name inside dataset_dir.")
parser.add_argument("--dev_file", default="dev.txt", type=str, help="Dev file name inside dataset_dir (used if present).")
parser.add_argument("--seed", default=3, type=SEED, help="Random seed of the initial weights.")
parser.add_argument("--model_type", default="ernie", choices=["ernie", "ernie-m"], help="ernie (character WordPiece vocabulary) or ernie-m (SentencePiece, no token_type_ids), for multilingual set-ups.")
parser.add_argument("--corpus", nargs="+", default=None, help="Unlabelled texts whose characters join the vocabulary (and, with --mlm_epochs, the pretraining): files, directories or globs as for pretrain.py --corpus.")
parser.add_argument("--text_field", default="text", help="The field of a .jsonl --corpus record that holds its text.")
parser.add_argument("--mlm_epochs", default=0, type=NON_NEGATIVE_INT, help="Pretrain the new ERNIE as a masked language model on the texts of the training and dev files (labels unused) and --corpus for this many epochs (pretrain.py's code); 0 leaves it random.")
parser.add_argument("--mlm_masking", default="token", choices=MASKINGS, help="Masking of the masked-LM pretraining (pretrain.py --masking).")
parser.add_argument("--mlm_batch_size", default=32, type=POSITIVE_INT, help="Batch size of the masked-LM pretraining.")
parser.add_argument("--mlm_learning_rate", default=5e-4, type=POSITIVE_FLOAT, help="Peak learning rate of the masked-LM pretraining (10%% warmup, then linear decay).")
parser.add_argument("--mlm_max_seq_length", default=128, type=SEQ_LENGTH, help="Tokens per packed block of the masked-LM pretraining (longer texts are split into blocks).")
# yapf: enable


def build_vocab(texts: Iterable[str]) -> list[str]:
    """ERNIE character vocabulary: every piece the tokenizer's pre-splitting yields, by frequency.

    Chinese text splits into single characters already; other words (numbers, Latin) are covered
    by their first character plus `##c` continuation pieces, so WordPiece never needs [UNK] for
    anything seen in the data.
    """
    basic = BasicTokenizer(do_lower_case=True)
    counts: Counter = Counter()
    for text in texts:
        for word in basic.tokenize(text):
            counts[word[0]] += 1
            counts.update("##" + char for char in word[1:])
    return SPECIAL_TOKENS + [token for token, _ in counts.most_common() if token not in SPECIAL_TOKENS]


def write_ernie_tokenizer(texts: Iterable[str], output: Path, max_length: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp, "vocab.txt")
        vocab_file.write_text("\n".join(build_vocab(texts)) + "\n", encoding="utf-8")
        ErnieTokenizer(str(vocab_file), model_max_length=max_length).save_pretrained(str(output))
    return reload_tokenizer(output)


def write_ernie_m_tokenizer(texts: list[str], output: Path, max_length: int) -> int:
    """SentencePiece model trained on the texts, and a vocabulary of every piece ERNIE-M's tokenizer emits."""
    with tempfile.TemporaryDirectory() as tmp:
        corpus, prefix = Path(tmp, "corpus.txt"), Path(tmp, "sp")
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
        # SentencePiece needs a piece for every character it covers, and Chinese data has thousands
        distinct_chars = len(set("".join(texts)))
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), vocab_size=2000 + distinct_chars,
                                       character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
        vocab_file = Path(tmp, "vocab.txt")
        vocab_file.write_text("\n".join(SPECIAL_TOKENS) + "\n", encoding="utf-8")
        sp_file = str(prefix) + ".model"
        counts = Counter(token for text in texts
                         for token in ErnieMTokenizer(str(vocab_file), sp_file).tokenize(text))
        vocab_file.write_text("\n".join(SPECIAL_TOKENS + [t for t, _ in counts.most_common()
                                                          if t not in SPECIAL_TOKENS]) + "\n", encoding="utf-8")
        ErnieMTokenizer(str(vocab_file), sp_file, model_max_length=max_length).save_pretrained(str(output))
    return reload_tokenizer(output)


def reload_tokenizer(output: Path) -> int:
    """Save again through AutoTokenizer (a tokenizer built from bare files splits "[SEP]" inside text)."""
    tokenizer = AutoTokenizer.from_pretrained(str(output))
    tokenizer.save_pretrained(str(output))
    return len(tokenizer.vocab)


def model_config(preset: str, overrides: dict) -> dict:
    config = {**COMMON, **PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    if config["hidden_size"] % config["num_attention_heads"]:
        raise DataError(f"hidden_size {config['hidden_size']} is not a multiple of "
                        f"num_attention_heads {config['num_attention_heads']}")
    return config


def create_scratch_model(dataset_dir: str, output_dir: str, preset: str = "tiny", overrides: dict | None = None,
                         train_file: str = "train.txt", dev_file: str = "dev.txt", seed: int = 3,
                         model_type: str = "ernie", mlm: MLMSettings | None = None,
                         corpus: list[str] | None = None, text_field: str = "text") -> Path:
    """Write a random ERNIE (or ERNIE-M) + tokenizer to output_dir and return its path.

    `corpus` (files, directories, globs) adds its characters to the vocabulary; `mlm` then pretrains
    the model on the dataset's texts and the corpus (streamed, as pretrain.py does).
    """
    if (mlm or corpus) and model_type != "ernie":
        raise DataError(f"{'--mlm_epochs' if mlm else '--corpus'} needs --model_type ernie (paddlenlp has no "
                        f"ERNIE-M masked-LM head)")
    files = [Path(dataset_dir, train_file)] + [p for p in [Path(dataset_dir, dev_file)] if p.is_file()]
    corpus_paths = corpus_files(corpus) if corpus else []
    config = model_config(preset, overrides or {})
    texts = [example.text for path in files for example in iter_examples(path)]
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paddle.seed(seed)
    if model_type == "ernie-m":
        vocab_size = write_ernie_m_tokenizer(texts, output, config["max_position_embeddings"])
        model = ErnieMModel(ErnieMConfig(**{**config, "vocab_size": vocab_size}))
    else:
        corpus_texts = (piece.text for piece in iter_pieces(corpus_paths, text_field))
        vocab_size = write_ernie_tokenizer(chain(texts, corpus_texts), output, config["max_position_embeddings"])
        model = ErnieModel(ErnieConfig(**{**config, "vocab_size": vocab_size}))
    model.save_pretrained(str(output))
    if mlm:
        pieces = chain(text_pieces(texts), iter_pieces(corpus_paths, text_field, first_document=len(texts)))
        pretrain(str(output), str(output), pieces, mlm, RunOptions(device=paddle.get_device()))
    sources = ", ".join([f.name for f in files] + [str(p) for p in corpus_paths])
    logger.info(f"Scratch {model_type} model ({preset}: {config['num_hidden_layers']} layers, hidden "
                f"{config['hidden_size']}, {config['num_attention_heads']} heads, ffn {config['intermediate_size']}; "
                f"vocabulary {vocab_size} from {sources}"
                f"{'; masked-LM pretrained for %d epochs' % mlm.epochs if mlm else ''}) saved in {output}")
    return output


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    overrides = {name: getattr(args, name) for name in
                 ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")}
    overrides["hidden_dropout_prob"] = overrides["attention_probs_dropout_prob"] = args.dropout
    mlm = None if args.mlm_epochs == 0 else MLMSettings(
        epochs=args.mlm_epochs, batch_size=args.mlm_batch_size, learning_rate=args.mlm_learning_rate,
        max_seq_length=args.mlm_max_seq_length, masking=args.mlm_masking, seed=args.seed)
    create_scratch_model(args.dataset_dir, args.output_dir, args.preset, overrides, args.train_file,
                         args.dev_file, args.seed, args.model_type, mlm, args.corpus, args.text_field)


if __name__ == "__main__":
    run_cli(main)
