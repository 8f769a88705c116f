"""Create a randomly initialised ERNIE with a character vocabulary built from a dataset.

Pretrained weights cannot be downloaded everywhere; the directory written here is a valid
`--model_name` for every script of the suite. Presets copy the shapes of the real ERNIE 3.0
models, so speed measurements made with them carry over to the pretrained ones.
"""
from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable

import paddle
import sentencepiece as spm
from paddlenlp.transformers import (AutoTokenizer, BasicTokenizer, ErnieConfig, ErnieMConfig, ErnieMModel,
                                    ErnieMTokenizer, ErnieModel, ErnieTokenizer)

from utils import DataError, iter_examples, logger, run_cli


# Shapes of the released ERNIE 3.0 models (paddlenlp's configuration.py); `tiny` is the scratch
# recipe's model: small enough to learn from a few thousand sentences on a CPU in minutes. Without
# dropout it learns much faster from random weights (keyword data, lr 1e-3: dev micro F1 0.96 after
# 8 epochs instead of 0.87 with dropout 0.1); on thousands of real sentences `--dropout 0.1`
# generalises better (README, "tiny 预设的训练配方").
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
parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--dataset_dir", required=True, type=str, help="Directory with the training file (and dev file) to build the vocabulary from.")
parser.add_argument("--output_dir", required=True, type=str, help="Where to write the model and tokenizer.")
parser.add_argument("--preset", default="tiny", choices=list(PRESETS), help="Architecture: tiny (the scratch recipe), or the shape of a released ERNIE 3.0 model.")
parser.add_argument("--num_hidden_layers", default=None, type=int, help="Override the preset's number of layers.")
parser.add_argument("--hidden_size", default=None, type=int, help="Override the preset's hidden size.")
parser.add_argument("--num_attention_heads", default=None, type=int, help="Override the preset's number of attention heads.")
parser.add_argument("--intermediate_size", default=None, type=int, help="Override the preset's feed-forward width.")
parser.add_argument("--dropout", default=None, type=float, help="Override the preset's hidden and attention dropout.")
parser.add_argument("--train_file", default="train.txt", type=str, help="Training file name inside dataset_dir.")
parser.add_argument("--dev_file", default="dev.txt", type=str, help="Dev file name inside dataset_dir (used if present).")
parser.add_argument("--seed", default=3, type=int, help="Random seed of the initial weights.")
parser.add_argument("--model_type", default="ernie", choices=["ernie", "ernie-m"], help="ernie (character WordPiece vocabulary) or ernie-m (SentencePiece, no token_type_ids), for multilingual set-ups.")
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


def write_ernie_tokenizer(texts: list[str], output: Path, max_length: int) -> int:
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
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), vocab_size=2000,
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
                         model_type: str = "ernie") -> Path:
    """Write a random ERNIE (or ERNIE-M) + tokenizer to output_dir and return its path."""
    files = [Path(dataset_dir, train_file)] + [p for p in [Path(dataset_dir, dev_file)] if p.is_file()]
    config = model_config(preset, overrides or {})
    texts = [example.text for path in files for example in iter_examples(path)]
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paddle.seed(seed)
    if model_type == "ernie-m":
        vocab_size = write_ernie_m_tokenizer(texts, output, config["max_position_embeddings"])
        model = ErnieMModel(ErnieMConfig(**{**config, "vocab_size": vocab_size}))
    else:
        vocab_size = write_ernie_tokenizer(texts, output, config["max_position_embeddings"])
        model = ErnieModel(ErnieConfig(**{**config, "vocab_size": vocab_size}))
    model.save_pretrained(str(output))
    logger.info(f"Scratch {model_type} model ({preset}: {config['num_hidden_layers']} layers, hidden "
                f"{config['hidden_size']}, {config['num_attention_heads']} heads, ffn {config['intermediate_size']}; "
                f"vocabulary {vocab_size} from {', '.join(f.name for f in files)}) saved in {output}")
    return output


def main() -> None:
    args = parser.parse_args()
    overrides = {name: getattr(args, name) for name in
                 ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")}
    overrides["hidden_dropout_prob"] = overrides["attention_probs_dropout_prob"] = args.dropout
    create_scratch_model(args.dataset_dir, args.output_dir, args.preset, overrides, args.train_file,
                         args.dev_file, args.seed, args.model_type)


if __name__ == "__main__":
    run_cli(main)
