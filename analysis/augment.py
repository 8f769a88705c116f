"""Word-level data augmentation that works offline.

paddlenlp.dataaug downloads a stop-word list before every augmentation, even for `custom`
dictionaries, so without network it cannot run at all. This module implements the word-level
strategies directly on jieba words: delete, swap, and substitute/insert with words from the model
vocabulary (`random`) or a user dictionary (`custom`, JSON `{word: [replacements]}`). The
dictionary types that need downloads (`synonym`, `homonym`, `mlm`) are delegated to paddlenlp and
fail with a message naming the offline alternatives.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Sequence

import jieba
from paddlenlp.dataaug import WordInsert, WordSubstitute  # importing starts no download

from utils import DataError

STRATEGIES = ("mix", "substitute", "insert", "delete", "swap")
AUG_TYPES = ("synonym", "homonym", "mlm", "random", "custom")
DOWNLOADED_TYPES = ("synonym", "homonym", "mlm")
OFFLINE_HINT = ("offline alternatives: --aug_type random (words from the model vocabulary), --aug_type custom "
                "--custom_file words.json ({\"word\": [\"replacement\", ...]}), or --aug_strategy delete / swap")

jieba.setLogLevel(60)  # no "Building prefix dict" chatter on stderr


def is_word(token: str) -> bool:
    """Words worth changing: letters, digits or CJK characters, not punctuation or spaces."""
    return any(char.isalnum() for char in token)


class WordAugmenter:
    """One strategy; `augment(text)` returns up to `create_n` distinct new texts (never empty)."""

    def __init__(self, strategy: str, aug_type: str = "random", create_n: int = 2, aug_percent: float = 0.1,
                 vocabulary: Sequence[str] = (), custom: dict[str, list[str]] | None = None, seed: int = 0):
        if strategy not in STRATEGIES[1:]:
            raise DataError(f"unknown augmentation strategy {strategy!r}")
        if strategy in ("substitute", "insert") and aug_type == "random" and not vocabulary:
            raise DataError("--aug_type random needs a vocabulary to draw words from")
        if strategy in ("substitute", "insert") and aug_type == "custom" and not custom:
            raise DataError("--aug_type custom needs a non-empty dictionary (--custom_file)")
        self.strategy, self.aug_type = strategy, aug_type
        self.create_n, self.aug_percent = create_n, aug_percent
        self.vocabulary = [w for w in vocabulary if is_word(w)]
        self.custom = custom or {}
        self.rng = random.Random(seed)

    def augment(self, text: str) -> list[str]:
        words = jieba.lcut(text)
        results: list[str] = []
        for _ in range(self.create_n * 5):  # a few extra tries: some draws repeat or change nothing
            candidate = "".join(self._once(list(words)))
            if candidate.strip() and candidate != text and candidate not in results:
                results.append(candidate)
            if len(results) == self.create_n:
                break
        return results

    def _positions(self, words: list[str], usable) -> list[int]:
        positions = [i for i, w in enumerate(words) if is_word(w) and usable(w)]
        count = min(len(positions), max(1, round(self.aug_percent * sum(map(is_word, words)))))
        return sorted(self.rng.sample(positions, count))

    def _replacement(self, word: str) -> str:
        return self.rng.choice(self.custom[word] if self.aug_type == "custom" else self.vocabulary)

    def _once(self, words: list[str]) -> list[str]:
        usable = (lambda w: w in self.custom) if self.aug_type == "custom" else (lambda w: True)
        if self.strategy == "delete":
            if sum(map(is_word, words)) < 2:
                return words  # deleting the only word would leave nothing meaningful
            drop = set(self._positions(words, lambda w: True))
            return [w for i, w in enumerate(words) if i not in drop]
        if self.strategy == "swap":
            for i in self._positions(words[:-1], lambda w: True):
                j = next((k for k in range(i + 1, len(words)) if is_word(words[k])), None)
                if j is not None:
                    words[i], words[j] = words[j], words[i]
            return words
        positions = self._positions(words, usable)
        for i in reversed(positions):
            if self.strategy == "substitute":
                words[i] = self._replacement(words[i])
            else:
                words.insert(i + 1, self._replacement(words[i]))
        return words


class MixAugmenter:
    """The reference's `mix`: `create_n` rounds, cycling substitute, insert, delete and swap."""

    def __init__(self, aug_type: str, create_n: int, aug_percent: float, vocabulary: Sequence[str],
                 custom: dict | None, seed: int = 0):
        kinds = ["delete", "swap"] + ([] if aug_type == "custom" and not custom else ["substitute", "insert"])
        self.augmenters = [WordAugmenter(kind, aug_type, 1, aug_percent, vocabulary, custom, seed + i)
                           for i, kind in enumerate(sorted(kinds, key=STRATEGIES.index))]
        self.create_n = create_n
        self.turn = 0

    def augment(self, text: str) -> list[str]:
        results: list[str] = []
        for _ in range(self.create_n * len(self.augmenters)):
            augmenter = self.augmenters[self.turn % len(self.augmenters)]
            self.turn += 1
            results += [r for r in augmenter.augment(text) if r not in results]
            if len(results) == self.create_n:
                break
        return results


class PaddleNLPAugmenter:
    """synonym / homonym / mlm through paddlenlp.dataaug (needs its downloaded dictionaries)."""

    def __init__(self, strategy: str, aug_type: str, create_n: int, aug_percent: float):
        if strategy not in ("substitute", "insert"):
            raise DataError(f"--aug_type {aug_type} applies to --aug_strategy substitute or insert only")
        cls = WordSubstitute if strategy == "substitute" else WordInsert
        try:
            self.augmenter = cls(aug_type, create_n=create_n, aug_percent=aug_percent)
        except Exception as err:  # paddlenlp raises RuntimeError/OSError/ConnectionError for failed downloads
            raise DataError(f"--aug_type {aug_type} needs PaddleNLP's downloaded dictionaries, which could not be "
                            f"fetched ({type(err).__name__}: {str(err)[:120]}); {OFFLINE_HINT}") from None

    def augment(self, text: str) -> list[str]:
        result = self.augmenter.augment(text)
        flat = result[0] if result and isinstance(result[0], list) else result  # the return shape changed over versions
        return [r for r in flat if r.strip() and r != text]


def read_custom_dictionary(path: str | Path | None) -> dict[str, list[str]]:
    if path is None:
        raise DataError('--aug_type custom needs --custom_file words.json ({"word": ["replacement", ...]})')
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"--custom_file {path} not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"--custom_file {path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)
                                             for v in data.values()):
        raise DataError(f"--custom_file {path}: expected {{\"word\": [\"replacement\", ...]}} with non-empty lists")
    return data


def build_augmenter(strategy: str, aug_type: str, create_n: int, aug_percent: float, vocabulary: Sequence[str] = (),
                    custom: dict | None = None, seed: int = 0):
    if create_n < 1 or not 0.0 < aug_percent <= 1.0:
        raise DataError(f"--create_n must be at least 1 and --aug_percent in (0, 1], got {create_n}, {aug_percent}")
    if aug_type in DOWNLOADED_TYPES and strategy in ("substitute", "insert"):
        return PaddleNLPAugmenter(strategy, aug_type, create_n, aug_percent)
    if aug_type in DOWNLOADED_TYPES and strategy == "mix":
        raise DataError(f"--aug_strategy mix with --aug_type {aug_type} is not available offline; {OFFLINE_HINT}")
    if strategy == "mix":
        return MixAugmenter(aug_type, create_n, aug_percent, vocabulary, custom, seed)
    return WordAugmenter(strategy, aug_type, create_n, aug_percent, vocabulary, custom, seed)
