"""Index state on disk that survives damage: the hnswlib directory and the Milvus Lite file.

Each case damages an index the way a disk, a kill or a second process would (truncate, delete, garbage,
a failure in the middle of a save, a concurrent open) and checks that the index either loads complete
(old or new) or is refused with one line saying what to do, never read as empty or half.
Indexes are built directly from random unit vectors: no model is trained here.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hnswlib
import numpy as np
import pytest

import vector_index
from utils import DataError
from vector_index import Entry, HnswIndex, IndexInfo, MilvusIndex

from conftest import run_main

INFO = IndexInfo(8, "encoder-a")


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, INFO.dim)).astype("float32")
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def entries_of(count: int, start: int = 0) -> list[Entry]:
    return [Entry(f"text {i}", [f"label {i % 3}"]) for i in range(start, start + count)]


def saved_index(directory: Path, count: int = 11) -> HnswIndex:
    """An hnswlib index of `count` entries (ids 0..count-1), saved in `directory`."""
    index = HnswIndex(directory, INFO)
    index.upsert(list(range(count)), unit_vectors(count, 0), entries_of(count))
    index.save()
    return index


def only_generation(directory: Path) -> Path:
    """The one generation directory an index directory holds."""
    generations = [path for path in directory.iterdir() if path.is_dir()]
    assert len(generations) == 1, sorted(directory.iterdir())
    return generations[0]


def assert_holds(directory: Path, count: int) -> None:
    """The index at `directory` opens with entries 0..count-1 and finds each entry's own vector first."""
    index = HnswIndex(directory, INFO)
    assert index.count() == count
    assert index.entries(list(range(count))) == dict(enumerate(entries_of(count)))
    ids, similarities = index.search(unit_vectors(count, 0), 1)
    assert ids[:, 0].tolist() == list(range(count))
    np.testing.assert_allclose(similarities[:, 0], 1.0, atol=1e-5)


def write_insert_input(work: Path, count: int, start: int = 0) -> Path:
    """What feature_extract.py writes for vector_insert.py: the vectors and their entries' sidecar."""
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "label_embedding.npy", unit_vectors(start + count, 0)[start:])
    (work / "label_embedding.json").write_text(json.dumps(
        {"encoder": INFO.encoder, "entries": [{"text": e.text, "labels": e.labels} for e in entries_of(count, start)]},
        ensure_ascii=False), encoding="utf-8")
    return work / "label_embedding.npy"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file()}


# ---- hnswlib: damaged files are refused with one line, never read as empty ----

DAMAGES = {
    "index.json deleted": ("index.json", lambda path: path.unlink(), "index.json is missing"),
    "index.json garbage": ("index.json", lambda path: path.write_bytes(b"\x00garbage{"), "index.json is not valid"),
    "index.bin deleted": ("index.bin", lambda path: path.unlink(), "index.bin is missing"),
    "index.bin garbage of its size": ("index.bin", lambda path: path.write_bytes(
        np.random.default_rng(0).bytes(path.stat().st_size)), "index.bin cannot be read"),
    "index.bin truncated": ("index.bin", lambda path: path.write_bytes(path.read_bytes()[:200]),
                            "index.bin has 200 bytes"),
    "entries.jsonl truncated by lines": (
        "entries.jsonl", lambda path: path.write_text("".join(path.read_text().splitlines(True)[:8])),
        "entries.jsonl has"),
    "entries.jsonl cut in a line": ("entries.jsonl", lambda path: path.write_bytes(path.read_bytes()[:-7]),
                                    "entries.jsonl has"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_hnswlib_index_is_one_line_saying_to_rebuild(damage, tmp_path):
    name, harm, reason = DAMAGES[damage]
    saved_index(tmp_path / "index")
    harm(only_generation(tmp_path / "index") / name)
    with pytest.raises(DataError) as raised:
        HnswIndex(tmp_path / "index", INFO)
    message = str(raised.value)
    assert "\n" not in message and reason in message, message
    assert f"the index {tmp_path / 'index'} is damaged" in message and "delete the directory and build it again" \
        in message


def test_vector_insert_refuses_a_damaged_index_and_leaves_it_as_it_was(tmp_path):
    """The tester's case: index.json gone, vector_insert.py rewrote 11 entries as 8 and exited 0."""
    saved_index(tmp_path / "index")
    (only_generation(tmp_path / "index") / "index.json").unlink()
    before = snapshot(tmp_path / "index")
    result = run_main("retrieval_based/utils/vector_insert.py", "--vector_path",
                      write_insert_input(tmp_path / "vectors", 8), "--index_path", tmp_path / "index")
    assert result.returncode == 2 and "index.json is missing" in result.stderr, result.stderr[-2000:]
    assert snapshot(tmp_path / "index") == before


def test_an_hnswlib_index_written_by_hand_with_other_ids_is_refused(tmp_path):
    """entries.jsonl and index.bin of one generation must name the same ids."""
    saved_index(tmp_path / "index")
    entries = only_generation(tmp_path / "index") / "entries.jsonl"
    rows = [json.loads(line) for line in entries.read_text(encoding="utf-8").splitlines()]
    rows[3]["id"] = 99  # index.json is made to match below: only the comparison of ids can tell
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    entries.write_text(text, encoding="utf-8")
    meta_path = only_generation(tmp_path / "index") / "index.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["files"]["entries.jsonl"] = len(text.encode("utf-8"))
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DataError, match="ids of entries.jsonl and index.bin differ"):
        HnswIndex(tmp_path / "index", INFO)


def test_a_directory_that_is_not_an_index_is_refused_and_an_empty_one_is_new(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(DataError, match="holds no index pointer"):
        HnswIndex(tmp_path / "other", INFO)
    (tmp_path / "empty").mkdir()
    assert HnswIndex(tmp_path / "empty", INFO).count() == 0
    assert HnswIndex(tmp_path / "missing", INFO).count() == 0


def legacy_index(directory: Path, count: int = 11) -> None:
    """An index in the earlier layout: index.bin, entries.jsonl and index.json side by side, no generations."""
    directory.mkdir(parents=True)
    index = hnswlib.Index(space="cosine", dim=INFO.dim)
    index.init_index(max_elements=1024, ef_construction=100, M=100)
    index.add_items(unit_vectors(count, 0), list(range(count)))
    index.save_index(str(directory / "index.bin"))
    (directory / "entries.jsonl").write_text("".join(
        json.dumps({"id": i, "text": e.text, "labels": e.labels}, ensure_ascii=False) + "\n"
        for i, e in enumerate(entries_of(count))), encoding="utf-8")
    (directory / "index.json").write_text(json.dumps(
        {"dim": INFO.dim, "encoder": INFO.encoder, "capacity": 1024, "engine": "hnswlib"}) + "\n", encoding="utf-8")


def test_an_index_of_the_earlier_layout_is_read_and_saved_in_the_new_one(tmp_path):
    legacy_index(tmp_path / "index")
    assert_holds(tmp_path / "index", 11)
    index = HnswIndex(tmp_path / "index", INFO)
    index.upsert([11], unit_vectors(12, 0)[11:], entries_of(1, 11))
    index.save()
    assert sorted(path.name for path in (tmp_path / "index").iterdir()) == [".lock", "CURRENT", "gen-000001"]
    assert_holds(tmp_path / "index", 12)


def test_vector_insert_refuses_an_earlier_layout_index_without_its_index_json(tmp_path):
    """The tester's reproduction on the layout of that time: 11 entries became 8 with exit code 0."""
    legacy_index(tmp_path / "index")
    (tmp_path / "index" / "index.json").unlink()
    before = snapshot(tmp_path / "index")
    result = run_main("retrieval_based/utils/vector_insert.py", "--vector_path",
                      write_insert_input(tmp_path / "vectors", 8), "--index_path", tmp_path / "index")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"the index {tmp_path / 'index'} is damaged (index.json is missing)" in result.stderr
    assert snapshot(tmp_path / "index") == before


# ---- hnswlib: a save interrupted at any point leaves the old complete index or the new one ----

class Killed(BaseException):
    """What a kill looks like to the code under test: nothing after it runs, no handler cleans up."""


def kill_in_save_hnsw(real):
    def save_hnsw(index, path):
        real(index, path)
        raise Killed
    return save_hnsw


def kill_in_writing(file: str):
    """_write_lines that writes half of `file` and is killed there."""
    def wrap(real):
        def write_lines(path, lines):
            if path.name != file:
                return real(path, lines)
            lines = list(lines)
            real(path, lines[:max(1, len(lines) // 2)])
            raise Killed
        return write_lines
    return wrap


def kill_in_pointer_switch(real):
    def write_text_atomic(path, text):
        (path.parent / f".{path.name}.x1y2.tmp").write_text(text[:3], encoding="utf-8")  # the temporary file, half
        raise Killed
    return write_text_atomic


def kill_before_cleanup(real):
    def remove_stale(directory, keep):
        raise Killed
    return remove_stale


# point: (function of vector_index replaced, its killing wrapper, entries the index holds afterwards)
KILL_POINTS = {
    "writing index.bin": ("_save_hnsw", kill_in_save_hnsw, 11),
    "writing entries.jsonl": ("_write_lines", kill_in_writing("entries.jsonl"), 11),
    "writing index.json": ("_write_lines", kill_in_writing("index.json"), 11),
    "switching the pointer": ("write_text_atomic", kill_in_pointer_switch, 11),
    "removing the old generation": ("_remove_stale", kill_before_cleanup, 12),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
@pytest.mark.parametrize("layout", ["generations", "earlier layout"])
def test_a_save_killed_at_any_point_leaves_the_old_index_or_the_new_one(point, layout, tmp_path, monkeypatch):
    directory = tmp_path / "index"
    saved_index(directory) if layout == "generations" else legacy_index(directory)
    name, kill, expected = KILL_POINTS[point]
    index = HnswIndex(directory, INFO)
    index.upsert([11], unit_vectors(12, 0)[11:], entries_of(1, 11))
    with monkeypatch.context() as patch:
        patch.setattr(vector_index, name, kill(getattr(vector_index, name)))
        with pytest.raises(Killed):
            index.save()
    assert_holds(directory, expected)
    again = HnswIndex(directory, INFO)  # the next save completes and clears what the killed one left
    again.upsert([11, 12], unit_vectors(13, 0)[11:], entries_of(2, 11))
    again.save()
    assert_holds(directory, 13)
    assert sorted(path.name for path in directory.iterdir()) == [".lock", "CURRENT", only_generation(directory).name]


def test_a_save_that_cannot_write_is_one_line_and_the_old_index_stays(tmp_path, monkeypatch):
    """The tester's case: entries.jsonl unwritable during an insert left index.bin new and entries old."""
    saved_index(tmp_path / "index")
    before = snapshot(tmp_path / "index")
    real = vector_index._write_lines

    def unwritable_entries(path, lines):
        if path.name == "entries.jsonl":
            raise PermissionError(13, "Permission denied", str(path))
        real(path, lines)

    monkeypatch.setattr(vector_index, "_write_lines", unwritable_entries)
    result = run_main("retrieval_based/utils/vector_insert.py", "--vector_path",
                      write_insert_input(tmp_path / "vectors", 3, start=11), "--index_path", tmp_path / "index")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot save the index {tmp_path / 'index'}: [Errno 13] Permission denied" in result.stderr
    assert "the index saved there before is unchanged" in result.stderr
    assert snapshot(tmp_path / "index") == before
    assert_holds(tmp_path / "index", 11)


# ---- hnswlib: two processes on one directory ----

def test_a_save_over_what_another_process_saved_meanwhile_is_refused(tmp_path):
    """Two inserts opened on the same index: the later save would silently drop the earlier one's entries."""
    saved_index(tmp_path / "index")
    first, second = HnswIndex(tmp_path / "index", INFO), HnswIndex(tmp_path / "index", INFO)
    first.upsert([11], unit_vectors(12, 0)[11:], entries_of(1, 11))
    first.save()
    second.upsert([12], unit_vectors(13, 0)[12:], entries_of(1, 12))
    with pytest.raises(DataError, match="saved by another process"):
        second.save()
    assert_holds(tmp_path / "index", 12)


def test_a_reader_whose_generation_is_replaced_while_it_reads_loads_the_new_one(tmp_path, monkeypatch):
    saved_index(tmp_path / "index")
    real, saves = vector_index._read_meta, []

    def save_meanwhile(directory, location, legacy):
        if not saves:  # another process saves (and deletes this generation) right after the pointer was read
            saves.append(1)
            writer = HnswIndex(directory, INFO)
            writer.upsert([11], unit_vectors(12, 0)[11:], entries_of(1, 11))
            writer.save()
        return real(directory, location, legacy)

    monkeypatch.setattr(vector_index, "_read_meta", save_meanwhile)
    assert HnswIndex(tmp_path / "index", INFO).count() == 12


def test_a_save_waits_while_another_process_saves(tmp_path):
    """Saves hold a lock on the directory across processes (a flock on another descriptor is another holder)."""
    import fcntl
    import threading

    saved_index(tmp_path / "index")
    index = HnswIndex(tmp_path / "index", INFO)
    index.upsert([11], unit_vectors(12, 0)[11:], entries_of(1, 11))
    with open(tmp_path / "index" / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        saving = threading.Thread(target=index.save)
        saving.start()
        saving.join(timeout=1.0)
        assert saving.is_alive()
        assert_holds(tmp_path / "index", 11)
    saving.join(timeout=30)
    assert not saving.is_alive()
    assert_holds(tmp_path / "index", 12)


# ---- Milvus Lite: a file held by another process, damaged files ----

HOLD = """
import sys, time
from pymilvus import MilvusClient
client = MilvusClient(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
"""


def saved_milvus(path: Path, count: int = 11) -> None:
    index = MilvusIndex(str(path), INFO)
    index.upsert(list(range(count)), unit_vectors(count, 0), entries_of(count))
    index.save()
    index.close()


@pytest.mark.slow  # a new interpreter: the process boundary is what it tests
def test_a_milvus_lite_file_open_in_another_process_is_one_line(tmp_path):
    saved_milvus(tmp_path / "m.db")  # and closed: this process no longer holds it
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "m.db")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        result = run_main("retrieval_based/utils/vector_insert.py", "--vector_path",
                          write_insert_input(tmp_path / "vectors", 3), "--milvus_uri", tmp_path / "m.db")
    finally:
        holder.communicate("", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"the Milvus Lite database {tmp_path / 'm.db'} is open in another process (Milvus Lite allows one " \
           "process per file)" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 2  # the shape line, the error
    index = MilvusIndex(str(tmp_path / "m.db"), INFO)  # free again once the other process ended
    assert index.count() == 11


def collection_file(path: Path, pattern: str) -> Path:
    return next((path / "collections" / "multi_label").rglob(pattern))


MILVUS_DAMAGES = {
    "schema garbage": ("schema.json", lambda file: file.write_bytes(b"{garbage"), "is not valid JSON"),
    "manifest garbage": ("manifest.json", lambda file: file.write_bytes(b"\x00garbage"), "holds 0 entries, 11 when"),
    "data deleted": ("*.parquet", lambda file: file.unlink(), "holds 0 entries, 11 when it was last saved"),
    "data truncated": ("*.parquet", lambda file: file.write_bytes(file.read_bytes()[:100]),
                       "Parquet magic bytes not found"),
    "vector index garbage": ("*.idx", lambda file: file.write_bytes(b"garbage" * 10), "not recognized"),
}


@pytest.mark.parametrize("damage", list(MILVUS_DAMAGES))
def test_a_damaged_milvus_lite_file_is_one_line(damage, tmp_path):
    pattern, harm, reason = MILVUS_DAMAGES[damage]
    saved_milvus(tmp_path / "m.db")
    harm(collection_file(tmp_path / "m.db", pattern))
    with pytest.raises(DataError) as raised:
        MilvusIndex(str(tmp_path / "m.db"), INFO)
    message = str(raised.value)
    assert "\n" not in message and reason in message, message
    assert f"The Milvus collection multi_label at {tmp_path / 'm.db'}" in message and "build it again" in message


# ---- entries a reused index holds and the corpus no longer has ----

def test_index_entries_missing_from_the_corpus_are_counted_or_pruned(index_store, caplog):
    """The tester's case: recall.py --index_path reused with a smaller label file recalled the removed
    label for every text, without a word."""
    from retrieval import entry_id, reconcile_index

    def opened():
        return index_store.open(INFO)

    corpus = entries_of(11)
    index = opened()
    index.upsert([entry_id(entry.text) for entry in corpus], unit_vectors(11, 0), corpus)
    smaller = corpus[:8]
    assert reconcile_index(index, smaller, prune=False) == 0
    assert "3 entries" in caplog.text and "(e.g. 'text" in caplog.text
    assert "--prune_index" in caplog.text and index.count() == 11
    assert reconcile_index(index, smaller, prune=True) == 3
    index.save()
    if index_store.engine != "hnswlib":
        index.close()
    index = opened()
    assert index.ids() == {entry_id(entry.text) for entry in smaller}
    found = index.entries(index.search(unit_vectors(11, 0), 8)[0].ravel().tolist())
    assert {entry.text for entry in found.values()} == {entry.text for entry in smaller}
    index.upsert([entry_id(corpus[9].text)], unit_vectors(11, 0)[9:10], corpus[9:10])  # a removed entry comes back
    assert index.count() == 9 and index.entries([entry_id(corpus[9].text)])[entry_id(corpus[9].text)] == corpus[9]


# ---- feature_extract.py's vectors and their record, vector_insert.py's input ----

def test_vector_insert_refuses_vectors_and_record_that_do_not_belong_together(tmp_path):
    from retrieval import write_corpus_vectors

    npy = tmp_path / "label_embedding.npy"
    write_corpus_vectors(npy, unit_vectors(5, 0), entries_of(5), INFO.encoder, tmp_path / "label.txt")
    insert = ["retrieval_based/utils/vector_insert.py", "--vector_path", npy, "--index_path", tmp_path / "index"]
    result = run_main(*insert)
    assert result.returncode == 0 and "Insert 5 entities, there are 5 entities" in result.stderr, result.stderr
    np.save(npy, unit_vectors(5, 1))  # a later run's array without its record (killed between the two)
    result = run_main(*insert)
    assert result.returncode == 2, result.stderr
    assert str(npy) in result.stderr and str(npy.with_suffix(".json")) in result.stderr
    npy.with_suffix(".json").write_text('{"entries": [', encoding="utf-8")
    result = run_main(*insert)
    assert result.returncode == 2 and str(npy.with_suffix(".json")) in result.stderr and "JSONDecodeError" in result.stderr
    assert HnswIndex(tmp_path / "index", INFO).count() == 5


SAVE_FOREVER = """
import sys
import numpy as np
from vector_index import Entry, HnswIndex, IndexInfo
rng = np.random.default_rng(int(sys.argv[2]))
while True:
    index = HnswIndex(sys.argv[1], IndexInfo(8, "encoder-a"))
    start = index.count()
    index.upsert(list(range(start, start + 500)), rng.normal(size=(500, 8)).astype("float32"),
                 [Entry(f"text {i}", ["x"]) for i in range(start, start + 500)])
    index.save()
    print(start + 500, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.13, 0.37])
def test_an_index_saved_over_and_over_and_killed_at_a_random_moment_loads_complete(delay, tmp_path):
    """A real SIGKILL, wherever it lands in the save loop: the index holds exactly the entries of one
    of the saves (the last reported or the next), never a mix."""
    import os
    import signal
    import time

    from conftest import ROOT

    saver = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(tmp_path / "index"), str(int(delay * 100))],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        reported = [int(saver.stdout.readline()) for _ in range(2)]
        time.sleep(delay)
    finally:
        saver.send_signal(signal.SIGKILL)
        saver.wait(timeout=60)
    index = HnswIndex(tmp_path / "index", INFO)
    count = index.count()
    assert count % 500 == 0 and count >= reported[-1], (count, reported)
    assert index.ids() == set(range(count))
    assert index.search(unit_vectors(3, 0), 5)[0].shape == (3, 5)


def test_a_milvus_lite_upsert_whose_process_ended_before_its_save_is_not_damage(tmp_path):
    saved_milvus(tmp_path / "m.db")
    index = MilvusIndex(str(tmp_path / "m.db"), INFO)
    index.upsert([11, 12], unit_vectors(13, 0)[11:], entries_of(2, 11))
    index.client.flush(index.collection)  # what Milvus Lite may persist on its own before save() records the count
    index.close()
    assert MilvusIndex(str(tmp_path / "m.db"), INFO).count() == 13
