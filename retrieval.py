"""The retrieval route's corpus, recall and label decision, shared by retrieval_based/'s scripts.

Two corpora (`--recall_mode`): `label` indexes the label names (the reference's mode; a query's
neighbours are its candidate labels, scored by their cosine similarity) and `text` indexes the
labelled training texts (each label scores the similarity-weighted share of the neighbours that
carry it). A label is predicted when its score is above `--threshold`; the scores go to the suite's
MetricReport, so micro and macro F1 are the multi-label ones (the reference's flattened matrix
reported cell accuracy and a two-class average under those names).

The recall file keeps the reference's rows, `query<TAB>corpus entry<TAB>similarity`, the same
number per query in query order; the text corpus adds a fourth field, the entry's labels, so the file
alone can be scored.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from data_io import Example, read_lines
from pipeline import TextPipeline
from semantic_index import SemanticIndexModel, embed, file_digest
from utils import DataError, atomic_output, logger, write_text_atomic
from vector_index import Entry, VectorIndex

RECALL_MODES = ("label", "text")


def label_corpus(labels: Sequence[str]) -> list[Entry]:
    """One entry per label name, standing for that label."""
    return [Entry(name, [name]) for name in labels]


def check_label_names(pipeline: TextPipeline, labels: Sequence[str]) -> None:
    """Label names are what the label corpus indexes: two names the tokenizer turns into the same ids
    (characters outside its vocabulary become [UNK]) get the same vector and can never be told apart."""
    rows = pipeline.encode(labels).features["input_ids"]
    seen: dict[tuple, str] = {}
    for name, ids in zip(labels, rows):
        if tuple(ids) in seen:
            raise DataError(f"the label names {seen[tuple(ids)]!r} and {name!r} get the same tokens "
                            f"{pipeline.tokenizer.convert_ids_to_tokens(ids)}: the encoder cannot tell them apart. "
                            f"Use a model whose vocabulary covers the label names, or --recall_mode text")
        seen[tuple(ids)] = name


def merged_entries(labelled_texts: Iterable[tuple[str, Sequence[str]]]) -> list[Entry]:
    """One entry per distinct text, with every label any of its lines gives it (the reference's
    train.txt repeats a text once per label), in first-seen order; texts without a label are left out."""
    merged: dict[str, list[str]] = {}
    for text, names in labelled_texts:
        known = merged.setdefault(text, [])
        known += [name for name in names if name not in known]
    return [Entry(text, names) for text, names in merged.items() if names]


def text_corpus(examples: Sequence[Example], labels: Sequence[str]) -> list[Entry]:
    """The labelled training texts as entries."""
    entries = merged_entries((example.text, [labels[i] for i in example.labels]) for example in examples)
    if not entries:
        raise DataError("the text corpus is empty: no training line has a label")
    return entries


def entry_id(text: str) -> int:
    """An entry's id, from its text: indexing the same entry again replaces it, and entries added
    later (a new label, new examples) never take the id of another."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1  # a non-negative int64


def build_index(model: SemanticIndexModel, pipeline: TextPipeline, index: VectorIndex, entries: Sequence[Entry],
                prune: bool = False) -> None:
    """Embed the entries and upsert them (by `entry_id`); entries of a reused index that are not in
    `entries` are reported, or removed with `prune` (see `reconcile_index`)."""
    if not entries:
        raise DataError("the corpus is empty: nothing to index")
    logger.info("start build index..........")
    vectors = embed(model, pipeline, [entry.text for entry in entries])
    index.upsert([entry_id(entry.text) for entry in entries], vectors, entries)
    reconcile_index(index, entries, prune)
    logger.info("Total index number:%d" % index.count())


def reconcile_index(index: VectorIndex, corpus: Sequence[Entry], prune: bool) -> int:
    """Entries of a reused index that the corpus no longer has (a removed label, a dropped text) are
    recalled like the others, for every text: warn with their count and an example, or, with `prune`
    (--prune_index), remove them from the index (not saved here). Returns how many were removed."""
    stale = sorted(index.ids() - {entry_id(entry.text) for entry in corpus})
    if not stale:
        return 0
    example = index.entries(stale[:1])[stale[0]].text
    if not prune:
        logger.warning(f"the index holds {len(stale)} entries that are not in the corpus (e.g. {example!r}); they "
                       f"are recalled like the others: --prune_index removes them")
        return 0
    index.delete(stale)
    logger.info(f"Removed {len(stale)} index entries that are not in the corpus (e.g. {example!r})")
    return len(stale)


@dataclass
class Recall:
    """Per query: the recalled entries, nearest first, and their cosine similarities."""

    entries: list[list[Entry]]
    similarities: np.ndarray  # [queries, recalled]


def recall(model: SemanticIndexModel, pipeline: TextPipeline, index: VectorIndex, queries: Sequence[str],
           recall_num: int) -> Recall:
    return search_entries(index, embed(model, pipeline, queries), recall_num)


def search_entries(index: VectorIndex, vectors: np.ndarray, k: int) -> Recall:
    """The k nearest entries of each vector, each entry read from the index once."""
    ids, similarities = index.search(vectors, k)
    found = index.entries(sorted(set(ids.ravel().tolist())))
    return Recall([[found[i] for i in row] for row in ids.tolist()], similarities)


def label_scores(result: Recall, labels: Sequence[str], mode: str) -> np.ndarray:
    """[queries, labels] scores: `label` mode, the best similarity of an entry naming the label;
    `text` mode, the similarity-weighted share of the neighbours carrying it (negative similarities
    weigh nothing). Labels unknown to `labels` (added to the index later) are ignored."""
    label_id = {name: i for i, name in enumerate(labels)}
    scores = np.zeros((len(result.entries), len(labels)), dtype="float32")
    for query, (entries, similarities) in enumerate(zip(result.entries, result.similarities)):
        weights = np.clip(similarities, 0.0, None)
        total = float(weights.sum())
        for entry, similarity, weight in zip(entries, similarities, weights):
            for name in entry.labels:
                if name not in label_id:
                    continue
                j = label_id[name]
                if mode == "label":
                    scores[query, j] = max(scores[query, j], similarity)
                elif total > 0:
                    scores[query, j] += weight / total
    return scores


def write_recall_file(path: str | os.PathLike, queries: Sequence[str], result: Recall, mode: str) -> None:
    """The recall file, replaced atomically (evaluate.py never reads half of one)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as out:
        for query, entries, similarities in zip(queries, result.entries, result.similarities):
            for entry, similarity in zip(entries, similarities):
                fields = [query, entry.text, str(similarity)] + ([",".join(entry.labels)] if mode == "text" else [])
                out.write("\t".join(fields) + "\n")


def read_recall_file(path: str | os.PathLike, queries: Sequence[str]) -> tuple[Recall, str]:
    """The recall of each query (rows matched by position, not by text: duplicate queries stay apart)
    and the mode the file was written in."""
    rows = [line.rstrip("\n").split("\t") for line in open(path, encoding="utf-8") if line.strip()]
    if not queries:
        raise DataError("no queries to score")
    if not rows or len(rows) % len(queries):
        raise DataError(f"{path}: {len(rows)} rows do not divide into {len(queries)} queries; "
                        f"was it recalled from another dev file?")
    widths = {len(row) for row in rows}
    if widths not in ({3}, {4}):
        raise DataError(f"{path}: rows must have 3 fields (label corpus) or 4 (text corpus), found {sorted(widths)}")
    mode = "label" if widths == {3} else "text"
    per_query = len(rows) // len(queries)
    entries, similarities = [], []
    for q, query in enumerate(queries):
        block = rows[q * per_query:(q + 1) * per_query]
        if block[0][0] != query:
            raise DataError(f"{path}: row {q * per_query + 1} is for {block[0][0]!r}, expected query {query!r}")
        entries.append([Entry(row[1], [row[1]] if mode == "label" else row[3].split(",")) for row in block])
        similarities.append([float(row[2]) for row in block])
    return Recall(entries, np.asarray(similarities, dtype="float32").reshape(len(queries), per_query)), mode


def write_corpus_vectors(npy: Path, vectors: np.ndarray, entries: Sequence[Entry], encoder: str,
                         corpus_file: str | os.PathLike) -> None:
    """feature_extract.py's output: the vectors (`npy`) and, beside them (`.json`), their entries, the
    encoder's fingerprint and the vectors file's sha256. Each file is written atomically, the array
    first: a kill between the two leaves a pair whose digest does not match, which vector_insert.py refuses."""
    with atomic_output(npy, "wb") as handle:
        np.save(handle, vectors)
    write_text_atomic(npy.with_suffix(".json"), json.dumps(
        {"encoder": encoder, "corpus_file": str(Path(corpus_file).resolve()), "vectors_sha256": file_digest(npy),
         "entries": [{"text": entry.text, "labels": entry.labels} for entry in entries]}, ensure_ascii=False) + "\n")


def read_corpus_vectors(npy: str | os.PathLike) -> tuple[np.ndarray, list[Entry], str]:
    """The vectors, entries and encoder fingerprint of a feature_extract.py output, checked to belong together."""
    npy, sidecar = Path(npy), Path(npy).with_suffix(".json")
    if not sidecar.is_file():
        raise DataError(f"{sidecar} is missing: make the vectors with feature_extract.py, which records their entries")
    redo = "run feature_extract.py again"
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        entries = [Entry(str(row["text"]), [str(name) for name in row["labels"]]) for row in meta["entries"]]
        encoder = str(meta["encoder"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{sidecar} is not a feature_extract.py record ({type(err).__name__}: {err}); {redo}") from None
    if not npy.is_file():
        raise DataError(f"{npy} is missing; {redo}")
    recorded = meta.get("vectors_sha256")  # records written before it was added have none
    if recorded is not None and recorded != file_digest(npy):
        raise DataError(f"{npy} is not the vectors {sidecar} describes (damaged, or from another run); {redo}")
    try:
        vectors = np.load(npy)
    except (OSError, ValueError) as err:
        raise DataError(f"{npy} cannot be read ({err}); {redo}") from None
    if vectors.ndim != 2 or len(entries) != len(vectors):
        raise DataError(f"{npy} holds vectors of shape {vectors.shape} but {sidecar} {len(entries)} entries; {redo}")
    return vectors, entries, encoder


def read_text_pairs(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(text, label) pairs of a `text<TAB>label[,label]` file, one pair per label: what
    retrieval_based/predict.py scores. The labels need not be in label.txt (any label text can be
    scored); a line without a label gives no pair and is counted in the log."""
    pairs, unlabelled = [], 0
    for line_no, raw in read_lines(path):
        line = raw.rstrip()
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) > 2 or not columns[0].strip():
            raise DataError(f"{path}:{line_no}: expected text<TAB>label, got {raw!r}")
        labels = [label.strip() for label in columns[1].split(",") if label.strip()] if len(columns) == 2 else []
        unlabelled += not labels
        pairs += [(columns[0].strip(), label) for label in labels]
    if unlabelled:
        logger.info(f"{path}: {unlabelled} lines without a label have no pair to score")
    if not pairs:
        raise DataError(f"{path}: no text<TAB>label pairs")
    return pairs


def read_corpus(path: str | os.PathLike) -> list[Entry]:
    """Corpus entries of a file: a line `text<TAB>label,label` is a labelled text, any other line a label
    name (label.txt). A text on several lines gets all their labels. Labels need not be in label.txt:
    this is how entries of a new label reach an index."""
    labelled_texts = []
    for line_no, raw in read_lines(path):
        line = raw.strip()
        if not line:
            continue
        text, tab, names = line.partition("\t")
        labels = [name.strip() for name in names.split(",") if name.strip()] if tab else [text]
        if not text.strip() or not labels or "\t" in names:
            raise DataError(f"{path}:{line_no}: expected a label name or text<TAB>label,label, got {raw!r}")
        labelled_texts.append((text.strip(), labels))
    if not labelled_texts:
        raise DataError(f"{path}: the corpus is empty")
    return merged_entries(labelled_texts)
