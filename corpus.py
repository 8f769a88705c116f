"""Unlabelled corpora for masked-LM pretraining: documents streamed from files, directories and globs
(plain text or gzip, one document a line; JSON lines with a text field), split into sentences and
packed into token blocks on disk.

A corpus may be larger than memory, so nothing here holds more than one document (and a plain-text
line longer than `CHUNK_CHARS` is read in pieces): documents are tokenized one at a time and their
blocks appended to flat binary files, which training reads back through memory maps. A block holds
whole sentences of one document (a sentence longer than a block is cut), so the model never learns
to predict across an unrelated document boundary unless packing across documents is asked for.
"""
from __future__ import annotations

import glob
import gzip
import json
import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from utils import DataError

CORPUS_SUFFIXES = (".txt", ".gz", ".jsonl")
CHUNK_CHARS = 1 << 20  # a longer plain-text line is read (and packed) in pieces of this many characters
SENTENCE_END = re.compile(r"(?<=[。！？!?；;…\n])")
TOKENS_FILE, WORDS_FILE, OFFSETS_FILE = "tokens.bin", "words.bin", "offsets.npy"


@dataclass
class Piece:
    """A document, or one piece of a document too long to read whole; pieces of one document share `document`."""

    document: int  # running number of the document in the corpus
    source: str  # file:line, for messages
    text: str


def corpus_files(patterns: Sequence[str]) -> list[Path]:
    """The files of `--corpus`: each entry a file, a directory (its .txt/.gz/.jsonl files, recursively) or a glob."""
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(CORPUS_SUFFIXES))
            if not found:
                raise DataError(f"--corpus {pattern}: the directory holds no {'/'.join(CORPUS_SUFFIXES)} file")
        elif path.is_file():
            found = [path]
        elif glob.has_magic(pattern):
            found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not found:
                raise DataError(f"--corpus {pattern}: the pattern matches no file")
        else:
            raise DataError(f"--corpus {pattern}: no such file or directory")
        files += found
    return files


def _is_jsonl(path: Path) -> bool:
    return path.name.removesuffix(".gz").endswith(".jsonl")


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8-sig") if path.suffix == ".gz" else open(path, encoding="utf-8-sig")


def _json_text(line: str, source: str, text_field: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{source}: not a JSON object ({err.msg})") from None
    if not isinstance(record, dict) or text_field not in record:
        fields = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{source}: no field {text_field!r} (--text_field); the line has: {fields}")
    if not isinstance(record[text_field], str):
        raise DataError(f"{source}: field {text_field!r} is {type(record[text_field]).__name__}, not text")
    return record[text_field]


def _file_pieces(path: Path, text_field: str, first_document: int) -> Iterator[Piece]:
    """The non-blank documents of one file, in pieces of at most CHUNK_CHARS characters (plain text)."""
    document, line_no, line_done = first_document - 1, 0, True
    try:
        with _open_text(path) as handle:
            while True:
                piece = handle.readline() if _is_jsonl(path) else handle.readline(CHUNK_CHARS)
                if not piece:
                    return
                if line_done:
                    line_no, document = line_no + 1, document + 1
                line_done = piece.endswith("\n")
                source = f"{path}:{line_no}"
                text = _json_text(piece, source, text_field) if _is_jsonl(path) and piece.strip() else piece
                if text.strip():
                    yield Piece(document, source, text.strip("\r\n"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}:{_first_bad_line(path)}: not valid UTF-8 ({err.reason})") from None
    except (OSError, EOFError) as err:  # a cut or foreign .gz file
        raise DataError(f"{path}: cannot be read ({type(err).__name__}: {err})") from None


def _first_bad_line(path: Path) -> int:
    """The number of the first line that is not UTF-8 (the text reader decodes ahead, so its position is not it)."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return line_no
    return 0


def iter_pieces(files: Sequence[Path], text_field: str = "text", first_document: int = 0) -> Iterator[Piece]:
    """Every document of the corpus files in order, streamed; documents are numbered across files, from
    `first_document`."""
    offset = first_document
    for path in files:
        last = offset - 1
        for piece in _file_pieces(path, text_field, offset):
            last = piece.document
            yield piece
        offset = last + 1


def text_pieces(texts: Iterable[str]) -> Iterator[Piece]:
    """In-memory texts (a dataset's) as corpus documents, one each."""
    return (Piece(number, f"text {number + 1}", text) for number, text in enumerate(texts) if text.strip())


def split_sentences(text: str) -> list[str]:
    """Sentences ending at Chinese or Western end punctuation (kept with the sentence) or a line break."""
    return [sentence for sentence in (part.strip() for part in SENTENCE_END.split(text)) if sentence]


def word_starts(text: str, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """1 for each token that starts a jieba word, 0 for a token inside one (whole-word masking masks a
    word's tokens together, as Chinese-BERT-wwm does); `offsets` are the tokens' character spans."""
    import jieba  # only whole-word masking segments words; jieba loads its dictionary on first use

    jieba.setLogLevel(logging.WARNING)
    starts = {start for _, start, _ in jieba.tokenize(text)}
    return np.asarray([1 if start in starts else 0 for start, _ in offsets], dtype=np.uint8)


class Tokenization:
    """Sentence -> (token ids, word-start flags) with the model's tokenizer; flags are all 1 (every token
    its own word) unless `whole_word`."""

    def __init__(self, tokenizer, whole_word: bool):
        self.tokenizer = tokenizer
        self.whole_word = whole_word

    def __call__(self, sentence: str) -> tuple[np.ndarray, np.ndarray]:
        encoded = self.tokenizer(sentence, add_special_tokens=False, return_offsets_mapping=self.whole_word,
                                 return_token_type_ids=False, return_attention_mask=False)
        ids = np.asarray(encoded["input_ids"], dtype=np.int32)
        if not self.whole_word:
            return ids, np.ones(len(ids), dtype=np.uint8)
        return ids, word_starts(sentence, encoded["offset_mapping"])


def pack(sentences: Iterable[tuple[np.ndarray, np.ndarray]], max_tokens: int,
         carry: tuple[list, list]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Greedy packing of whole sentences into blocks of at most `max_tokens` tokens; a sentence longer
    than a block is cut into full blocks. Yields the finished blocks; `carry` ([ids], [flags]) holds the
    unfinished last one, filled in place, for the next sentences of the document (or the next document)."""
    ids, flags = carry
    for sentence_ids, sentence_flags in sentences:
        if ids and len(ids) + len(sentence_ids) > max_tokens:
            yield np.asarray(ids, np.int32), np.asarray(flags, np.uint8)
            ids.clear(), flags.clear()
        for start in range(0, len(sentence_ids), max_tokens):
            part, part_flags = sentence_ids[start:start + max_tokens], sentence_flags[start:start + max_tokens]
            if len(part) == max_tokens:
                yield part, part_flags
            else:
                ids.extend(part.tolist()), flags.extend(part_flags.tolist())


def is_validation(document: int, share: float) -> bool:
    """Whether a document belongs to the held-out slice: a fixed pseudo-random draw per document number,
    so the split is the same in every run and every process without reading the corpus twice."""
    return share > 0 and zlib.crc32(str(document).encode()) / 2**32 < share


class BlockWriter:
    """Appends blocks to flat files in `directory` (token ids, word-start flags) and keeps their offsets."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.tokens = open(directory / TOKENS_FILE, "wb")
        self.words = open(directory / WORDS_FILE, "wb")
        self.offsets = [0]

    def add(self, ids: np.ndarray, flags: np.ndarray) -> None:
        self.tokens.write(ids.astype(np.int32).tobytes())
        self.words.write(flags.astype(np.uint8).tobytes())
        self.offsets.append(self.offsets[-1] + len(ids))

    def close(self) -> Blocks:
        self.tokens.close()
        self.words.close()
        np.save(self.directory / OFFSETS_FILE, np.asarray(self.offsets, dtype=np.int64))
        return Blocks(self.directory)


class Blocks:
    """Packed blocks read back through memory maps: block i is tokens[offsets[i]:offsets[i + 1]]."""

    def __init__(self, directory: Path):
        self.offsets = np.load(directory / OFFSETS_FILE)
        size = int(self.offsets[-1])
        self.tokens = np.memmap(directory / TOKENS_FILE, np.int32, "r", shape=(size,)) if size else np.zeros(0, np.int32)
        self.words = np.memmap(directory / WORDS_FILE, np.uint8, "r", shape=(size,)) if size else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def block(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.offsets[index], self.offsets[index + 1]
        return np.asarray(self.tokens[start:end]), np.asarray(self.words[start:end])

    def token_count(self) -> int:
        return int(self.offsets[-1])


@dataclass
class PackingOptions:
    max_tokens: int  # tokens per block without [CLS] and [SEP]
    validation_split: float = 0.0
    across_documents: bool = False
    separator_id: int = 0  # between documents packed into one block


class _Stream:
    """The blocks of one split being written, with the unfinished block of its current document."""

    def __init__(self, directory: Path, options: PackingOptions):
        self.writer = BlockWriter(directory)
        self.options = options
        self.carry: tuple[list, list] = ([], [])

    def add(self, sentences: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        for block in pack(sentences, self.options.max_tokens, self.carry):
            self._write(*block)

    def flush(self) -> None:
        if self.carry[0]:
            self._write(np.asarray(self.carry[0], np.int32), np.asarray(self.carry[1], np.uint8))
            self.carry[0].clear(), self.carry[1].clear()

    def _write(self, ids: np.ndarray, flags: np.ndarray) -> None:
        """A block that ends with a document separator loses it: the block's own [SEP] follows."""
        if self.options.across_documents and len(ids) > 1 and ids[-1] == self.options.separator_id:
            ids, flags = ids[:-1], flags[:-1]
        self.writer.add(ids, flags)

    def end_document(self) -> None:
        """Close the document's last block, or with packing across documents put a separator after it."""
        if not self.options.across_documents:
            self.flush()
        elif self.carry[0]:
            self.add([(np.asarray([self.options.separator_id], np.int32), np.ones(1, np.uint8))])


def build_blocks(pieces: Iterable[Piece], tokenize: Tokenization, options: PackingOptions,
                 directory: Path) -> tuple[Blocks, Blocks, int]:
    """Pack the corpus into training and held-out blocks under `directory`; returns both and the number of
    documents. A document's pieces are consecutive; held-out documents are never packed with others."""
    streams = {False: _Stream(directory / "train", options), True: _Stream(directory / "validation", options)}
    current, documents = None, 0
    for piece in pieces:
        held_out = is_validation(piece.document, options.validation_split)
        if piece.document != (current.document if current else None):
            if current:
                streams[is_validation(current.document, options.validation_split)].end_document()
            documents += 1
        current = piece
        streams[held_out].add(tokenize(sentence) for sentence in split_sentences(piece.text))
    for stream in streams.values():
        stream.flush()
    return streams[False].writer.close(), streams[True].writer.close(), documents
