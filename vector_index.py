"""Nearest-neighbour search over corpus embeddings: one interface, two engines.

The retrieval route indexes corpus entries (label names, or labelled training texts) and looks up the
nearest ones for each query. `HnswIndex` (hnswlib, embedded in the process, the reference's
default) keeps the index in a directory; `MilvusIndex` keeps it in Milvus through pymilvus: a local
path runs the embedded Milvus Lite, an http(s) address a Milvus standalone or cluster deployment
(signed in with `MilvusCredentials` when it has authentication on).
Both return cosine similarities (the embeddings are L2-normalised), nearest first, and both store
with the vectors each entry's text and labels and the identity of the encoder that made them, so a
search with another model's vectors, or of another width, is refused instead of answered.

Ids are the caller's: re-inserting an id replaces its entry (a re-run adds no duplicates).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from utils import DataError, write_text_atomic

MILVUS_COLLECTION = "multi_label"  # the reference's collection name
MILVUS_TEXT_LENGTH = 65535  # VARCHAR limit of the text and labels fields, in bytes
INSERT_CHUNK = 50000  # the reference inserts in chunks of this many rows
COUNT_PROPERTY = "entries"  # Milvus Lite: the collection's entry count at its last save
# Every read sees the writes made before it. Milvus's default ("Bounded") reads a snapshot up to
# seconds old: on a server, a search right after an upsert found nothing and count(*) was 0.
READ_YOUR_WRITES = {"consistency_level": "Strong"}
ID_PAGE = 10000  # ids read per query (Milvus caps a query's offset + limit at 16384)
SERVER_SCHEMES = ("http://", "https://", "tcp://", "unix:")


@dataclass
class Entry:
    """A corpus entry: its text (a label name or a training text) and the labels it stands for."""

    text: str
    labels: list[str]


@dataclass
class IndexInfo:
    """What an index was built with: the embedding width and the encoder's fingerprint."""

    dim: int
    encoder: str

    def check(self, dim: int, encoder: str, where: str) -> None:
        if dim != self.dim:
            raise DataError(f"{where} holds {self.dim}-dimensional vectors, but the encoder makes {dim}-dimensional "
                            f"ones; rebuild the index with this model")
        if encoder != self.encoder:
            raise DataError(f"{where} was built with another model (encoder {self.encoder}, this one is {encoder}); "
                            f"rebuild the index with this model")


class VectorIndex:
    """upsert entries with their vectors, search the nearest, read entries back."""

    info: IndexInfo

    def upsert(self, ids: Sequence[int], vectors: np.ndarray, entries: Sequence[Entry]) -> None:
        raise NotImplementedError

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosine similarities), each [queries, min(k, count)], nearest first."""
        raise NotImplementedError

    def entries(self, ids: Sequence[int]) -> dict[int, Entry]:
        raise NotImplementedError

    def ids(self) -> set[int]:
        """Every entry's id: what a corpus is compared with to find entries it no longer has."""
        raise NotImplementedError

    def delete(self, ids: Sequence[int]) -> None:
        """Remove these entries (ids not in the index are ignored)."""
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def save(self) -> None:
        """Make what was inserted durable."""

    def _check_vectors(self, ids: Sequence[int], vectors: np.ndarray, entries: Sequence[Entry]) -> np.ndarray:
        vectors = np.asarray(vectors, dtype="float32")
        if vectors.ndim != 2 or vectors.shape[1] != self.info.dim:
            raise DataError(f"vectors of shape {vectors.shape} do not fit this {self.info.dim}-dimensional index")
        if not len(ids) == len(vectors) == len(entries):
            raise DataError(f"{len(ids)} ids, {len(vectors)} vectors and {len(entries)} entries: they must match")
        return vectors


class HnswIndex(VectorIndex):
    """hnswlib in cosine space, persisted as a directory of generations.

    `CURRENT` names the complete generation, `gen-NNNNNN/`, which holds index.bin (hnswlib's graph),
    entries.jsonl (id, text and labels of each entry) and index.json (width, encoder, capacity, entry
    count, removed ids, and the byte size of the other two files). A save writes a new generation
    beside the current one, switches `CURRENT` atomically, then deletes the old one, so a kill at any
    moment leaves the previous index or the new one, never a mix. Opening checks that the files are the
    ones index.json describes and that entries and vectors have the same ids: a damaged index is
    refused with one line, never read as empty or half. The earlier layout (the three files directly
    in the directory) is read with the same checks, except the sizes it did not record, and the next
    save rewrites it as a generation."""

    def __init__(self, directory: str | os.PathLike, info: IndexInfo, m: int = 100, ef: int = 100,
                 max_elements: int = 1000000):
        import hnswlib

        self.directory = Path(directory)
        self.max_elements = max_elements
        self.ef = ef
        self.info = info
        self._deleted: set[int] = set()  # removed ids, still labels of hnswlib's graph (marked deleted)
        location = self._load_current()
        self._opened = None if location is None else location.name  # what a save must still find current
        if location is None:
            self.index = hnswlib.Index(space="cosine", dim=info.dim)
            self.index.init_index(max_elements=min(1024, max_elements), ef_construction=ef, M=m)
            self._entries: dict[int, Entry] = {}
        self.index.set_ef(ef)

    def _load_current(self) -> Path | None:
        """Load the current generation; when another process's save replaced it while it was being read
        (its files deleted under the reader), read the new one instead of calling it damaged."""
        for _ in range(3):
            location = current_generation(self.directory)
            if location is None:
                return None
            try:
                self._load(location)
                return location
            except DataError:
                if current_generation(self.directory) == location:
                    raise
        raise DataError(f"the index {self.directory} changes faster than it can be read: another process keeps "
                        f"saving it; try again when it is done")

    def _load(self, location: Path) -> None:
        legacy = location == self.directory
        meta = _read_meta(self.directory, location, legacy)
        IndexInfo(meta["dim"], meta["encoder"]).check(self.info.dim, self.info.encoder, f"The index {self.directory}")
        _check_file_sizes(self.directory, location, None if legacy else meta["files"])
        self.index = _load_hnsw(self.directory, location / "index.bin", meta)
        self._entries = _read_entries(self.directory, location / "entries.jsonl")
        self._deleted = set(meta.get("deleted", []))
        _check_agreement(self.directory, meta, self._entries, self._deleted, self.index.get_ids_list())

    def upsert(self, ids, vectors, entries):
        vectors = self._check_vectors(ids, vectors, entries)
        ids = np.asarray(ids, dtype="int64")
        new = len(set(ids.tolist()) - self._entries.keys() - self._deleted)  # a removed id gets its slot back
        needed = self.index.get_current_count() + new
        if needed > self.max_elements:
            raise DataError(f"{needed} entries exceed --hnsw_max_elements {self.max_elements}")
        if needed > self.index.get_max_elements():
            self.index.resize_index(min(self.max_elements, max(needed, 2 * self.index.get_max_elements())))
        if len(ids):
            self.index.add_items(vectors, ids)  # an existing id has its vector replaced, a removed one is restored
        self._entries.update(zip(ids.tolist(), entries))
        self._deleted -= set(ids.tolist())

    def delete(self, ids):
        for i in ids:
            if self._entries.pop(i, None) is not None:
                self.index.mark_deleted(i)  # searches skip it; the slot is reused if the id comes back
                self._deleted.add(i)

    def search(self, vectors, k):
        vectors = np.asarray(vectors, dtype="float32")
        k = min(k, self.count())
        if k == 0 or not len(vectors):
            return np.zeros((len(vectors), 0), dtype="int64"), np.zeros((len(vectors), 0), dtype="float32")
        self.index.set_ef(max(self.ef, k))  # hnswlib needs ef >= k to return k neighbours
        ids, distances = self.index.knn_query(vectors, k=k)
        return ids.astype("int64"), (1.0 - distances).astype("float32")

    def entries(self, ids):
        return {i: self._entries[i] for i in ids}

    def ids(self):
        return set(self._entries)

    def count(self):
        return len(self._entries)

    def save(self):
        """A new generation, then the pointer, then the old generations' removal (see the class)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(f"cannot save the index {self.directory}: {err}") from None
        with _save_lock(self.directory):
            self._check_still_current()
            name = _next_generation_name(self.directory)
            try:
                self._write_generation(name)
                write_text_atomic(self.directory / POINTER, name + "\n")
            except (OSError, DataError) as err:
                _remove(self.directory / f"{name}.partial")
                _remove(self.directory / name)
                raise DataError(f"cannot save the index {self.directory}: {err}; the index saved there before is "
                                f"unchanged") from None
            _fsync_directory(self.directory)
            _remove_stale(self.directory, keep=name)
            self._opened = name

    def _check_still_current(self) -> None:
        """Saving over what another process saved since this one opened the index would drop its entries."""
        location = current_generation(self.directory)
        if (None if location is None else location.name) != self._opened:
            raise DataError(f"the index {self.directory} was saved by another process after this one opened it; "
                            f"nothing was written here: run this again to add to what is there now")

    def _write_generation(self, name: str) -> None:
        """All files of generation `name`, written and flushed in `name`.partial/, then renamed to `name`."""
        partial = self.directory / f"{name}.partial"
        _remove(partial)
        partial.mkdir()
        _save_hnsw(self.index, partial / "index.bin")
        _write_lines(partial / "entries.jsonl", (json.dumps({"id": i, "text": entry.text, "labels": entry.labels},
                                                            ensure_ascii=False) + "\n"
                                                 for i, entry in self._entries.items()))
        meta = {"dim": self.info.dim, "encoder": self.info.encoder, "capacity": self.index.get_max_elements(),
                "engine": "hnswlib", "generation": name, "count": len(self._entries),
                "deleted": sorted(self._deleted), "files": {file: (partial / file).stat().st_size
                                                            for file in ("index.bin", "entries.jsonl")}}
        _write_lines(partial / "index.json", [json.dumps(meta) + "\n"])
        _fsync_directory(partial)
        os.rename(partial, self.directory / name)


POINTER = "CURRENT"  # the name of the complete generation of an hnswlib index directory
LOCK = ".lock"  # held by a save
GENERATION = re.compile(r"gen-(\d+)")
INDEX_FILES = ("index.bin", "entries.jsonl", "index.json")
REBUILD = "delete the directory and build it again (recall.py --index_path or utils/vector_insert.py --index_path)"


def _damaged(directory: Path, reason: str) -> DataError:
    return DataError(f"the index {directory} is damaged ({reason}); {REBUILD}")


def current_generation(directory: Path) -> Path | None:
    """Where the index of `directory` is: the generation `CURRENT` names, the directory itself for the
    earlier layout, or None when no index was ever saved there (missing, empty, or holding only what an
    interrupted first save left). Any other content is refused: it is not an index, or lost its pointer."""
    if not directory.exists():
        return None
    if not directory.is_dir():
        raise DataError(f"the index path {directory} is a file, not an index directory")
    pointer = directory / POINTER
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8", errors="replace").strip()
        if not GENERATION.fullmatch(name) or not (directory / name).is_dir():
            raise _damaged(directory, f"{POINTER} names {name[:80]!r}, which is not a generation directory there")
        return directory / name
    if any((directory / file).exists() for file in INDEX_FILES):
        return directory
    others = sorted(path.name for path in directory.iterdir() if not _left_by_a_save(path.name) and path.name != LOCK)
    if others:
        raise DataError(f"the index directory {directory} holds no index pointer ({POINTER}) but {len(others)} other "
                        f"files (e.g. {others[0]!r}): it is not an hnswlib index, or its pointer was lost; "
                        f"give an empty or new directory, or {REBUILD}")
    return None


def _left_by_a_save(name: str) -> bool:
    """A generation being written, or the pointer's temporary file, left by a save that was killed."""
    return name.endswith(".partial") or (name.startswith(f".{POINTER}.") and name.endswith(".tmp"))


@contextlib.contextmanager
def _save_lock(directory: Path) -> Iterator[None]:
    """One save at a time per directory, across processes (two would pick the same generation name);
    the kernel releases the lock of a killed process."""
    try:
        lock = open(directory / LOCK, "a")
    except OSError as err:
        raise DataError(f"cannot save the index {directory}: {err}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_meta(directory: Path, location: Path, legacy: bool) -> dict:
    """index.json, with every field the loader relies on present and of the right type."""
    try:
        meta = json.loads((location / "index.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _damaged(directory, "index.json is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(directory, f"index.json is not valid JSON: {err}") from None
    fields = {"dim": int, "encoder": str, "capacity": int}
    if not legacy:
        fields.update(generation=str, count=int, deleted=list, files=dict)
    wrong = [key for key, kind in fields.items() if not isinstance(meta, dict) or not isinstance(meta.get(key), kind)]
    if wrong:
        raise _damaged(directory, f"index.json is not valid: no proper {', '.join(wrong)}")
    if not legacy and meta["generation"] != location.name:
        raise _damaged(directory, f"{location.name}/index.json was written for {meta['generation'][:80]!r}")
    return meta


def _check_file_sizes(directory: Path, location: Path, sizes: dict | None) -> None:
    """index.bin and entries.jsonl are there and, when index.json records them, of the recorded sizes
    (a truncated or replaced file is caught before hnswlib or the JSON reader sees it)."""
    for file in ("index.bin", "entries.jsonl"):
        path = location / file
        if not path.is_file():
            raise _damaged(directory, f"{file} is missing")
        if sizes is not None and path.stat().st_size != sizes.get(file):
            raise _damaged(directory, f"{file} has {path.stat().st_size} bytes, index.json records {sizes.get(file)}: "
                                      f"it was truncated or replaced")


def _load_hnsw(directory: Path, path: Path, meta: dict):
    import hnswlib

    index = hnswlib.Index(space="cosine", dim=meta["dim"])
    try:
        index.load_index(str(path), max_elements=meta["capacity"])
    except RuntimeError as err:
        raise _damaged(directory, f"index.bin cannot be read: {err}") from None
    return index


def _read_entries(directory: Path, path: Path) -> dict[int, Entry]:
    entries = {}
    try:
        lines = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:  # deleted since its size was checked: a concurrent save (see _load_current)
        raise _damaged(directory, "entries.jsonl is missing") from None
    with lines:
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                entries[int(row["id"])] = Entry(str(row["text"]), [str(name) for name in row["labels"]])
            except (ValueError, KeyError, TypeError):
                raise _damaged(directory, f"entries.jsonl line {number} is not an entry") from None
    return entries


def _check_agreement(directory: Path, meta: dict, entries: dict[int, Entry], deleted: set[int],
                     labels: Sequence[int]) -> None:
    """Entries and vectors describe the same ids: every entry has a vector, every vector an entry or a removal."""
    if "count" in meta and meta["count"] != len(entries):
        raise _damaged(directory, f"entries.jsonl holds {len(entries)} entries, index.json records {meta['count']}")
    labels = set(map(int, labels))
    if labels != entries.keys() | deleted or entries.keys() & deleted:
        raise _damaged(directory, f"the ids of entries.jsonl and index.bin differ ({len(entries)} entries, "
                                  f"{len(labels - deleted)} vectors)")


def _next_generation_name(directory: Path) -> str:
    """A generation name above any in the directory (a killed save may have left a higher one)."""
    numbers = [int(match.group(1)) for path in directory.iterdir()
               if (match := GENERATION.fullmatch(path.name.removesuffix(".partial")))]
    return f"gen-{max(numbers, default=0) + 1:06d}"


def _save_hnsw(index, path: Path) -> None:
    index.save_index(str(path))
    _fsync_path(path)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    """A file of one generation, flushed to disk (the generation as a whole is what is made atomic)."""
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(lines)
        out.flush()
        os.fsync(out.fileno())


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(path: Path) -> None:
    """Make renames in `path` durable; best effort (some filesystems refuse to sync a directory)."""
    with contextlib.suppress(OSError):
        _fsync_path(path)


def _remove(path: Path) -> None:
    """A generation directory or a leftover file, if it is there; best effort."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _remove_stale(directory: Path, keep: str) -> None:
    """After the pointer names `keep`: the other generations, killed saves' leftovers and the earlier
    layout's files. Best effort: what stays is removed by the next save and never read."""
    for path in directory.iterdir():
        name = path.name
        if name == keep:
            continue
        if GENERATION.fullmatch(name.removesuffix(".partial")) or _left_by_a_save(name) or name in INDEX_FILES:
            _remove(path)


CREDENTIAL_ENVIRONMENT = {"token": "MILVUS_TOKEN", "user": "MILVUS_USER", "password": "MILVUS_PASSWORD"}


@dataclass(frozen=True)
class MilvusCredentials:
    """How to sign in to a Milvus server that has authentication on, as pymilvus takes it: a token
    (`user:password`, or a cloud API key), or a user and a password. Never shown: not in repr, logs or
    error messages (a command line is visible to other users of the machine; the environment is not)."""

    token: str = field(default="", repr=False)
    user: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @classmethod
    def given(cls, token: str | None = None, user: str | None = None, password: str | None = None
              ) -> MilvusCredentials:
        """The values given, each else its environment variable (CREDENTIAL_ENVIRONMENT)."""
        given = {"token": token, "user": user, "password": password}
        values = {name: value if value is not None else os.environ.get(CREDENTIAL_ENVIRONMENT[name], "")
                  for name, value in given.items()}
        if bool(values["user"]) != bool(values["password"]):
            raise DataError("Milvus sign-in needs both a user and a password (--milvus_user/--milvus_password or "
                            "MILVUS_USER/MILVUS_PASSWORD), or a token (--milvus_token or MILVUS_TOKEN)")
        return cls(**values)


def add_milvus_credential_options(parser: argparse.ArgumentParser) -> None:
    """--milvus_token, --milvus_user, --milvus_password: the options of every script that takes --milvus_uri."""
    parser.add_argument("--milvus_token", type=str, default=None, help="Sign in to a Milvus server with authentication: user:password or an API key (default: $MILVUS_TOKEN; the environment variable keeps it out of the process list).")
    parser.add_argument("--milvus_user", type=str, default=None, help="Sign in with this user instead of a token (default: $MILVUS_USER).")
    parser.add_argument("--milvus_password", type=str, default=None, help="The password of --milvus_user (default: $MILVUS_PASSWORD).")


def milvus_credentials(args: argparse.Namespace) -> MilvusCredentials:
    return MilvusCredentials.given(args.milvus_token, args.milvus_user, args.milvus_password)


def _without_userinfo(uri: str) -> str:
    """The URI as messages show it: pymilvus also takes `https://user:password@host`."""
    return re.sub(r"(?<=://)[^/@]*@", "", uri)


def _server_failure(err) -> str:
    """pymilvus words every failed connection alike ('illegal connection params or server unavailable');
    the gRPC status under it tells a refused sign-in from a server that is not there."""
    code = getattr(err.__cause__, "code", None)
    if callable(code) and getattr(code(), "name", "") in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return (f"it refused the sign-in ({err.__cause__.details()}); sign in with --milvus_token user:password, or "
                f"--milvus_user and --milvus_password, or their environment variables MILVUS_TOKEN, MILVUS_USER, "
                f"MILVUS_PASSWORD")
    return err.message


INDEX_TYPE_KEYS = ("index_type", "metric_type", "params")
_UPSTREAM: dict = {}  # what send_index_params_as_json replaced


def send_index_params_as_json() -> None:
    """Patch pymilvus.client.prepare.Prepare.create_index_request so that an index's build parameters
    are sent in both forms; applied by MilvusIndex, once per process (tests/test_compat.py's canary
    fails when the defect is gone).

    Defect (pymilvus 3.0.2 with milvus-lite 3.2.2): pymilvus sends an index's build parameters (HNSW's
    M and efConstruction) as separate key-value pairs, and Milvus Lite reads them only from the JSON
    `params` pair that older pymilvus sent, so it silently built every index with its defaults (M 16).
    A Milvus server (standalone 2.3.5) reads the key-value pairs and accepts the extra JSON pair: it
    does not need the patch, and is not hurt by it.
    """
    from pymilvus.client.prepare import Prepare

    if "create_index_request" in _UPSTREAM:
        return
    _UPSTREAM["create_index_request"] = upstream = Prepare.create_index_request.__func__

    def create_index_request_with_params_json(cls, collection_name: str, field_name: str, params, **kwargs):
        if isinstance(params, dict) and "params" not in params:
            build = {key: value for key, value in params.items() if key not in INDEX_TYPE_KEYS}
            params = {**params, "params": build} if build else params
        return upstream(cls, collection_name, field_name, params, **kwargs)

    Prepare.create_index_request = classmethod(create_index_request_with_params_json)


class MilvusIndex(VectorIndex):
    """A Milvus collection: id (INT64, primary), vector (FLOAT_VECTOR), text and labels (VARCHAR), with an
    HNSW index (M, efConstruction) in the IP metric, which on normalised vectors is the cosine. The
    collection's property `encoder` holds the encoder's fingerprint; it is set when the collection is
    created, because a Milvus server forgets properties set later (alter_collection_properties) when it
    restarts, and the check against another encoder would silently disappear."""

    def __init__(self, uri: str, info: IndexInfo, collection: str = MILVUS_COLLECTION, m: int = 100, ef: int = 100,
                 credentials: MilvusCredentials | None = None):
        from pymilvus import MilvusException

        send_index_params_as_json()
        for chatty in ("milvus_lite", "faiss.loader"):  # server ports and CPU-feature probing, at INFO
            logging.getLogger(chatty).setLevel(logging.WARNING)
        for reported in ("grpc._server", "milvus_lite.adapter.grpc.servicer", "pymilvus.decorators"):  # failures are reported here, in one line, not as logged tracebacks
            logging.getLogger(reported).setLevel(logging.CRITICAL)
        self.lite = not uri.startswith(SERVER_SCHEMES)
        self.uri = uri
        self.where = f"The Milvus collection {collection} at {_without_userinfo(uri)}"
        self.client = _milvus_client(uri, credentials or MilvusCredentials())
        self.collection = collection
        self.ef = ef
        try:
            self._open_collection(info, m, ef)
        except MilvusException as err:
            raise DataError(f"{self.where} cannot be read: {err.message}; "
                            + (f"delete {uri} and build it again" if self.lite else "check the Milvus server")) from None
        self.info = info

    def _open_collection(self, info: IndexInfo, m: int, ef: int) -> None:
        from pymilvus import DataType, MilvusClient

        if self.client.has_collection(self.collection):
            description = self.client.describe_collection(self.collection)
            dim = next(field["params"]["dim"] for field in description["fields"] if field["name"] == "vector")
            properties = description.get("properties", {})
            IndexInfo(int(dim), properties.get("encoder", "unknown")).check(info.dim, info.encoder, self.where)
            self.client.load_collection(self.collection)
            self._check_count(properties.get(COUNT_PROPERTY))
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=info.dim)
        schema.add_field("text", DataType.VARCHAR, max_length=MILVUS_TEXT_LENGTH)
        schema.add_field("labels", DataType.VARCHAR, max_length=MILVUS_TEXT_LENGTH)
        index_params = self.client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type="HNSW", metric_type="IP",
                               params={"M": m, "efConstruction": ef})
        self.client.create_collection(self.collection, schema=schema, index_params=index_params,
                                      properties={"encoder": info.encoder})
        self.client.load_collection(self.collection)

    def _check_count(self, recorded: str | None) -> None:
        """Milvus Lite reads a collection whose data or manifest files were lost as empty or smaller;
        the entry count recorded at the last save tells. More entries than recorded is no damage: an
        upsert whose process ended before its save. (A Milvus server keeps its own data, and other
        clients may change it: there the count is not checked.)"""
        if self.lite and recorded is not None and self.count() < int(recorded):
            raise DataError(f"{self.where} holds {self.count()} entries, {recorded} when it was last saved: its files "
                            f"are damaged; delete it and build it again")

    def upsert(self, ids, vectors, entries):
        vectors = self._check_vectors(ids, vectors, entries)
        rows = [{"id": int(i), "vector": vector.tolist(), "text": entry.text, "labels": json.dumps(entry.labels,
                                                                                                   ensure_ascii=False)}
                for i, vector, entry in zip(ids, vectors, entries)]
        for start in range(0, len(rows), INSERT_CHUNK):
            self.client.upsert(self.collection, rows[start:start + INSERT_CHUNK])

    def search(self, vectors, k):
        vectors = np.asarray(vectors, dtype="float32")
        if not len(vectors):
            return np.zeros((0, 0), dtype="int64"), np.zeros((0, 0), dtype="float32")
        hits = self.client.search(self.collection, data=vectors.tolist(), limit=k,
                                  search_params={"metric_type": "IP", "params": {"ef": max(self.ef, k)}},
                                  **READ_YOUR_WRITES)
        found = min(map(len, hits))  # fewer than k only when the collection holds fewer entries
        ids = np.array([[hit["id"] for hit in row[:found]] for row in hits], dtype="int64").reshape(len(hits), found)
        similarities = np.array([[hit["distance"] for hit in row[:found]] for row in hits], dtype="float32")
        return ids, similarities.reshape(len(hits), found)

    def entries(self, ids):
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        rows = self.client.get(self.collection, ids=ids, output_fields=["text", "labels"], **READ_YOUR_WRITES)
        return {row["id"]: Entry(row["text"], json.loads(row["labels"])) for row in rows}

    def count(self):
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"], **READ_YOUR_WRITES)
        return int(rows[0]["count(*)"])

    def ids(self):
        """All ids, read in pages. Milvus Lite: pymilvus's query_iterator. A Milvus 2.3 server: that
        iterator cannot get a read timestamp from it, falls back to one of its own and misses what was
        upserted just before, so pages of ids above the last one seen are queried with the other reads'
        consistency (the server returns a page in id order; Milvus Lite does not, hence two ways)."""
        if self.lite:
            rows = self.client.query_iterator(self.collection, batch_size=ID_PAGE, filter="id >= 0",
                                              output_fields=["id"], **READ_YOUR_WRITES)
            found = set()
            while batch := rows.next():
                found.update(row["id"] for row in batch)
            rows.close()
            return found
        found, above = set(), ""  # the first page: no bound (any int64 id)
        while True:
            page = [row["id"] for row in self.client.query(self.collection, filter=above, output_fields=["id"],
                                                            limit=ID_PAGE, **READ_YOUR_WRITES)]
            found.update(page)
            if len(page) < ID_PAGE:
                return found
            above = f"id > {max(page)}"

    def delete(self, ids):
        if len(ids):
            self.client.delete(self.collection, ids=[int(i) for i in ids])

    def close(self) -> None:
        """Let other processes open a Milvus Lite file: this process holds it until it ends or closes it."""
        self.client.close()
        if self.lite:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)

    def save(self):
        self.client.flush(self.collection)
        if self.lite:
            self.client.alter_collection_properties(self.collection, {COUNT_PROPERTY: str(self.count())})


def _milvus_client(uri: str, credentials: MilvusCredentials):
    """A MilvusClient; a Milvus Lite file another process has open (Milvus Lite allows one process
    per file) or that cannot be opened, a server that does not answer or refuses the credentials, is
    one line, not the traceback Milvus Lite logs."""
    from pymilvus import MilvusClient, MilvusException

    failures = _CapturedFailure()
    lite_log = logging.getLogger("milvus_lite.server_manager")
    lite_log.addHandler(failures)
    lite_log.propagate = False  # its records reach only `failures`
    try:
        return MilvusClient(uri, user=credentials.user, password=credentials.password, token=credentials.token)
    except MilvusException as err:
        if failures.locked:
            raise DataError(f"the Milvus Lite database {uri} is open in another process (Milvus Lite allows one "
                            f"process per file): wait until it ends, or use a Milvus server for several processes "
                            f"(--milvus_uri http://host:19530)") from None
        if uri.startswith(SERVER_SCHEMES):
            raise DataError(f"cannot use the Milvus server at {_without_userinfo(uri)}: {_server_failure(err)}") from None
        raise DataError(f"cannot open the Milvus database {uri}: {failures.reason or err.message}") from None
    finally:
        lite_log.removeHandler(failures)
        lite_log.propagate = True


class _CapturedFailure(logging.Handler):
    """Keeps the exception Milvus Lite logs when its server does not start (pymilvus then raises
    only 'Open local milvus failed')."""

    def __init__(self):
        super().__init__()
        self.locked, self.reason = False, None

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            self.locked = self.locked or type(error).__name__ == "DataDirLockedError"
            self.reason = str(error).splitlines()[0]


def open_index(info: IndexInfo, index_path: str | os.PathLike | None = None, milvus_uri: str | None = None,
               m: int = 100, ef: int = 100, max_elements: int = 1000000,
               collection: str = MILVUS_COLLECTION, credentials: MilvusCredentials | None = None) -> VectorIndex:
    """The Milvus collection when `milvus_uri` is given, else the hnswlib index at `index_path` (either
    existing, checked against `info`, or new and empty)."""
    if milvus_uri:
        return MilvusIndex(milvus_uri, info, collection, m, ef, credentials)
    if index_path is None:
        raise DataError("give an index directory (hnswlib) or --milvus_uri")
    return HnswIndex(index_path, info, m, ef, max_elements)
