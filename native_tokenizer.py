"""Token ids of texts at native speed, exactly the ids of the checkpoint's paddlenlp tokenizer.

paddlenlp's `ErnieTokenizer` is pure Python (about 3,000 short texts/s here, bench/label_throughput.py)
and is what limits batch labelling on small models. `token_encoder` rebuilds the same WordPiece tokenizer in Hugging Face `tokenizers` (Rust)
from the tokenizer's own vocabulary and settings. Its character tables (what is removed, what is
whitespace, punctuation or a symbol, which marks are stripped) are generated from the running
Python's `unicodedata`, the tables the paddlenlp tokenizer itself consults, because the Rust
library's built-in tables follow a newer Unicode version. tests/test_native_tokenizer.py compares every
code point outside category C (and a sample of the removed ones), random text and the repository's data.

ERNIE-M's tokenizer already segments in C++ (SentencePiece) but then splits every piece again in
Python, character by character; `SentencePieceEncoder` segments whole batches to piece ids and
looks each piece's split and vocabulary ids up in a table filled on first use.

Any tokenizer this module cannot reproduce exactly (a tokenizer with its own `_tokenize` or
`tokenize`, added tokens outside a WordPiece vocabulary) and any environment without `tokenizers`
uses the paddlenlp tokenizer itself; `TokenEncoder.name` says which one runs. The module needs no
Paddle, so Triton's tokenizer model loads a copy of it beside pipeline.py.
"""
from __future__ import annotations

import functools
import os
import re
import sys
import unicodedata
from typing import Callable, Sequence

import numpy as np

# paddlenlp's BasicTokenizer treats these as symbols besides Unicode category S* (tokenizer_utils._is_symbol)
EXTRA_SYMBOLS = frozenset(chr(cp) for cp in (0x00AD, 0x00B2, 0x00BA, 0x3007, 0x00B5, 0x00D8, 0x014B, 0x01B1))
# The code point ranges BasicTokenizer._is_chinese_char surrounds with spaces, so each is one token
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
WORD_START = "\u2581"  # SentencePiece's mark of a piece that begins a word


class TokenEncoder:
    """texts -> token ids per text, without special tokens and without truncation."""

    name: str

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError


class PaddleNLPEncoder(TokenEncoder):
    """The paddlenlp tokenizer itself, text by text in Python."""

    def __init__(self, tokenizer, reason: str):
        self.tokenizer = tokenizer
        self.name = f"paddlenlp {type(tokenizer).__name__} ({reason})"

    def __call__(self, texts):
        tokenizer = self.tokenizer
        return [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)) for text in texts]


class WordPieceEncoder(TokenEncoder):
    """A `tokenizers` WordPiece tokenizer equal to a paddlenlp BERT-style tokenizer (ERNIE 1.0-3.0).

    paddlenlp lowercases the text outside special tokens, splits out the special tokens, then per
    piece: removes control characters, maps whitespace to spaces, isolates CJK characters, splits on
    whitespace, lowercases and strips accents (NFD, then drop category Mn), isolates punctuation and
    symbols, and runs greedy longest-match WordPiece. The same steps are expressed here as normalizers
    and pre-tokenizers. Lowercasing the whole text before splitting is equal because paddlenlp
    lowercases one character at a time (no context-dependent final sigma); whitespace needs no mapping
    to spaces because the split removes every kind. The few characters on which Rust's case or
    decomposition tables disagree with Python's get Python's result first, in Python (a Replace
    normalizer per character would cost a third of the throughput).
    """

    def __init__(self, tokenizer):
        import tokenizers
        from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
        from tokenizers.models import WordPiece

        basic, wordpiece = tokenizer.basic_tokenizer, tokenizer.wordpiece_tokenizer
        tables = unicode_tables()
        steps = [normalizers.Replace(Regex(tables["removed"]), "")]
        self.python_first: dict[str, str] = {}
        if basic.do_lower_case:
            steps.append(normalizers.Lowercase())
            self.python_first.update(disagreements(normalizers.Lowercase(), str.lower))
        if basic.strip_accents or (basic.do_lower_case and basic.strip_accents is not False):
            steps += [normalizers.NFD(), normalizers.Replace(Regex(tables["nonspacing_mark"]), "")]
            self.python_first.update(disagreements(normalizers.NFD(), functools.partial(unicodedata.normalize, "NFD")))
        self.python_first_pattern = re.compile("|".join(map(re.escape, self.python_first)) or "(?!)")
        isolated = tables["punctuation_or_symbol"]
        if basic.tokenize_chinese_chars:
            isolated = isolated[:-1] + class_body(CJK_RANGES) + "]"
        native = tokenizers.Tokenizer(WordPiece(dict(tokenizer.vocab.token_to_idx), unk_token=wordpiece.unk_token,
                                                max_input_chars_per_word=wordpiece.max_input_chars_per_word))
        native.normalizer = normalizers.Sequence(steps)
        native.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(tables["whitespace"] + "+"), behavior="removed"),
            pre_tokenizers.Split(Regex(isolated), behavior="isolated")])
        native.add_special_tokens([AddedToken(token, normalized=False, special=True)
                                   for token in tokenizer.unique_no_split_tokens])
        self.native = native
        self.name = f"native WordPiece (tokenizers {tokenizers.__version__}), ids equal to {type(tokenizer).__name__}"

    def with_python_results(self, text: str) -> str:
        """The text with the characters Rust's tables treat differently already mapped as Python does."""
        if self.python_first_pattern.search(text) is None:
            return text
        return self.python_first_pattern.sub(lambda match: self.python_first[match.group()], text)

    def __call__(self, texts):
        texts = [self.with_python_results(text) for text in texts]
        try:
            encodings = self.native.encode_batch(texts, add_special_tokens=False)
        except TypeError:  # a lone surrogate (JSON can carry one) is not UTF-8; paddlenlp drops it as a control
            encodings = self.native.encode_batch([LONE_SURROGATE.sub("", text) for text in texts],
                                                 add_special_tokens=False)
        return [encoding.ids for encoding in encodings]


class SentencePieceEncoder(TokenEncoder):
    """ERNIE-M's tokenizer with its per-character Python step replaced by a table lookup per piece.

    paddlenlp segments each text with the SentencePiece model, then splits every piece again (CJK
    characters and ERNIE-M's punctuation alone, digit runs apart from what surrounds them, a bare
    word-start mark dropped) and looks the results up in vocab.txt. That split depends on the piece
    alone, so here whole batches are segmented to piece ids in C++ and each id's vocabulary ids are
    computed once, by `split_piece` and the tokenizer's own `convert_tokens_to_ids`. Two kinds of text
    take the tokenizer's slower exact path: a text holding a special token (paddlenlp cuts it out and
    strips the whitespace around it), and a text with an unknown piece, whose text is its surface, not
    its id. A lone surrogate, on which SentencePiece fails, is dropped as the WordPiece path drops it.
    """

    def __init__(self, tokenizer):
        import sentencepiece

        self.tokenizer = tokenizer
        self.model = tokenizer.sp_model
        self.unknown_piece = self.model.unk_id()
        self.ids_of_piece: list[tuple[int, ...] | None] = [None] * self.model.get_piece_size()
        self.lowercase = bool(getattr(tokenizer, "do_lower_case", False))
        specials = sorted(tokenizer.unique_no_split_tokens, key=len, reverse=True)
        self.special_pattern = re.compile("|".join(map(re.escape, specials)) or "(?!)")
        self.name = (f"native SentencePiece (sentencepiece {sentencepiece.__version__}), "
                     f"ids equal to {type(tokenizer).__name__}")

    def split_piece(self, piece: str) -> list[str]:
        """The tokens ErnieMTokenizer._tokenize makes of one piece, with the tokenizer's own character tests."""
        if piece == WORD_START:
            return []
        tokens, start = [], 0
        for i, char in enumerate(piece):
            if char == WORD_START:
                continue
            isolated = self.tokenizer.is_ch_char(char) or self.tokenizer.is_punct(char)
            if isolated or (i > 0 and char.isdigit() != piece[i - 1].isdigit()):
                if piece[start:i] not in ("", WORD_START):
                    tokens.append(piece[start:i])
                if isolated:
                    tokens.append(char)
                start = i + 1 if isolated else i
        if piece[start:]:
            tokens.append(piece[start:])
        return tokens

    def piece_ids(self, piece_id: int) -> tuple[int, ...]:
        ids = self.ids_of_piece[piece_id]
        if ids is None:
            tokens = self.split_piece(self.model.id_to_piece(piece_id))
            ids = self.ids_of_piece[piece_id] = tuple(self.tokenizer.convert_tokens_to_ids(tokens))
        return ids

    def exact_ids(self, text: str) -> list[int]:
        """The tokenizer's own path, for the texts the table cannot serve."""
        lowered = self.lowercased(text)
        if self.has_special_token(text, lowered):
            return self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(text))
        tokens = [token for piece in self.model.encode(lowered, out_type=str) for token in self.split_piece(piece)]
        return self.tokenizer.convert_tokens_to_ids(tokens)

    def lowercased(self, text: str) -> str:
        """paddlenlp lowercases one character at a time (so no final sigma) when do_lower_case is set."""
        return "".join(map(str.lower, text)) if self.lowercase else text

    def has_special_token(self, text: str, lowered: str) -> bool:
        """paddlenlp keeps special tokens' case, then cuts them out of the lowercased text, so a text
        can hold one before lowercasing or, for a lowercase special token, only after."""
        return bool(self.special_pattern.search(text) or self.special_pattern.search(lowered))

    def __call__(self, texts):
        texts = [LONE_SURROGATE.sub("", text) for text in texts]
        plain = [self.lowercased(text) for text in texts]
        rows: list[list[int] | None] = [None if self.has_special_token(text, lowered) else []
                                        for text, lowered in zip(texts, plain)]
        batch = [index for index, row in enumerate(rows) if row is not None]
        threads = 1 if os.environ.get("TOKENIZERS_PARALLELISM") == "false" else -1  # see tokenize_on_calling_threads
        table = self.ids_of_piece
        for index, piece_ids in zip(batch, self.model.encode([plain[index] for index in batch], num_threads=threads)):
            if self.unknown_piece in piece_ids:
                rows[index] = None
                continue
            row = rows[index]
            for piece_id in piece_ids:  # the hot loop: a table entry is None only before its first use
                row += table[piece_id] or self.piece_ids(piece_id)
        return [self.exact_ids(text) if row is None else row for text, row in zip(texts, rows)]


def tokenize_on_calling_threads() -> None:
    """For servers, before their first request: a request is a small batch, and the `tokenizers`
    thread pool, once started, keeps its threads spinning on the cores the model needs (Triton served
    fewer requests with it, deploy/README.md); without the pool each request is tokenized on the thread
    that handles it. SentencePieceEncoder reads the same switch and then encodes on one thread."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def token_encoder(tokenizer) -> TokenEncoder:
    """The native encoder when it reproduces `tokenizer` exactly, else the paddlenlp tokenizer."""
    from paddlenlp.transformers import ErnieMTokenizer

    reason = unsupported_reason(tokenizer)
    if reason is not None:
        return PaddleNLPEncoder(tokenizer, reason)
    if isinstance(tokenizer, ErnieMTokenizer):
        return SentencePieceEncoder(tokenizer)
    return WordPieceEncoder(tokenizer)


def unsupported_reason(tokenizer) -> str | None:
    """Why neither native encoder would give this tokenizer's ids, or None when one does."""
    from paddlenlp.transformers import BertTokenizer, ErnieMTokenizer, ErnieTokenizer
    from paddlenlp.transformers.tokenizer_utils import PretrainedTokenizer

    cls = type(tokenizer)
    if getattr(cls, "_tokenize", None) not in (ErnieTokenizer._tokenize, BertTokenizer._tokenize,
                                               ErnieMTokenizer._tokenize):
        return f"no native equivalent of {cls.__name__}"
    if cls.tokenize is not PretrainedTokenizer.tokenize or (
            cls.prepare_for_tokenization is not PretrainedTokenizer.prepare_for_tokenization):
        return f"{cls.__name__} changes how text is split"
    if isinstance(tokenizer, ErnieMTokenizer):
        return None
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return "the tokenizers package is not installed"
    if tokenizer.basic_tokenizer.never_split:
        return "the tokenizer has never_split words"
    if tokenizer.basic_tokenizer.do_lower_case != bool(getattr(tokenizer, "do_lower_case", False)):
        return "the tokenizer lowercases in only one of its two steps"
    vocab = tokenizer.vocab.token_to_idx
    outside = [token for token in tokenizer.unique_no_split_tokens
               if tokenizer.convert_tokens_to_ids(token) != vocab.get(token)]
    if outside:
        return f"added tokens outside the vocabulary: {outside[:3]}"
    return None


def disagreements(native_step, python_step: Callable[[str], str]) -> dict[str, str]:
    """Each character on which `native_step` (Rust's Unicode tables) disagrees with `python_step`
    (this Python's), mapped to Python's result; only characters that survive cleaning are compared.
    On Python 3.11 with tokenizers 0.23 this is U+11938, which Python decomposes under NFD and Rust
    does not; lowercasing agrees everywhere."""
    chars, category = unicode_categories()
    chars = [chars[code_point] for code_point in np.flatnonzero(category.astype("<U1") != "C").tolist()]
    native = native_step.normalize_str("\n".join(chars)).split("\n")
    if len(native) != len(chars):
        raise RuntimeError(f"{native_step} changed the number of lines; cannot compare it per character")
    return {char: python_step(char) for char, result in zip(chars, native) if result != python_step(char)}


def class_body(ranges: Sequence[tuple[int, int]]) -> str:
    """Code point ranges in Oniguruma character-class syntax, without the brackets."""
    return "".join(f"\\x{{{start:X}}}" if start == end else f"\\x{{{start:X}}}-\\x{{{end:X}}}"
                   for start, end in ranges)


@functools.cache
def unicode_categories() -> tuple[list[str], np.ndarray]:
    """Every code point as a character, and its Unicode category in this Python (surrogates: Cs)."""
    chars = list(map(chr, range(sys.maxunicode + 1)))
    return chars, np.array([unicodedata.category(char) for char in chars])


@functools.cache
def unicode_tables() -> dict[str, str]:
    """The character classes of paddlenlp's BasicTokenizer as regular-expression classes, from this
    Python's unicodedata (computed once per process, about half a second)."""
    chars, category = unicode_categories()
    major = category.astype("<U1")
    code_point = np.arange(len(chars))
    isspace = np.fromiter(map(str.isspace, chars), dtype=bool, count=len(chars))
    tab_newline_return = np.isin(code_point, [ord(c) for c in "\t\n\r"])
    ascii_punctuation = np.zeros(len(chars), dtype=bool)
    for low, high in ((33, 47), (58, 64), (91, 96), (123, 126)):  # _is_punctuation's ASCII ranges
        ascii_punctuation[low:high + 1] = True
    masks = {
        # _clean_text drops NUL, U+FFFD and _is_control (category C*, except tab, newline, carriage return)
        "removed": np.isin(code_point, [0, 0xFFFD]) | ((major == "C") & ~tab_newline_return),
        # _is_whitespace (turned into " ") and str.isspace (what whitespace_tokenize splits on)
        "whitespace": tab_newline_return | (category == "Zs") | isspace,
        "nonspacing_mark": category == "Mn",  # _run_strip_accents
        # _is_punctuation or _is_symbol
        "punctuation_or_symbol": ascii_punctuation | (major == "P") | (major == "S") | np.isin(
            code_point, [ord(char) for char in EXTRA_SYMBOLS]),
    }
    tables = {}
    for name, mask in masks.items():
        edges = np.flatnonzero(np.diff(np.concatenate([[False], mask, [False]]).astype("int8")))
        ranges = [part for start, end in zip(edges[::2], edges[1::2] - 1)
                  for part in without_surrogates(int(start), int(end))]
        tables[name] = "[" + class_body(ranges) + "]"
    return tables


def without_surrogates(start: int, end: int) -> list[tuple[int, int]]:
    """The range [start, end] without the surrogates U+D800-U+DFFF, which UTF-8 text never holds."""
    return [(low, high) for low, high in ((start, min(end, 0xD7FF)), (max(start, 0xE000), end)) if low <= high]
