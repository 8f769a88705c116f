"""What every script shares around its work: the logger, user-facing errors, seeds, devices, files of
settings and results.

Argument parsing conventions live in `cli`, the data format in `data_io`, models and checkpoints in `modeling`, the text pipeline in
`pipeline`, training in `training`; this module holds only the plumbing of a command-line run.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

import numpy as np
import paddle
from paddlenlp.utils.log import logger  # the one logger of every script, as in the reference


class DataError(Exception):
    """A problem with the user's input: reported as one clear line and exit status 2."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's main so that bad input ends with a message and exit 2, never a traceback."""
    try:
        main()
    except DataError as err:
        logger.error(str(err))
        sys.exit(2)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def set_device(device: str, num_threads: int | None = None) -> None:
    """Select the device; on CPU use `num_threads`, by default an equal share of the cores per local process."""
    try:
        paddle.set_device(device)
    except ValueError as err:
        raise DataError(f"--device {device}: {err} (use --device cpu on a machine without GPU)") from None
    if paddle.get_device() == "cpu":
        paddle.base.core.set_num_threads(num_threads or cpu_threads_per_process())


def cpu_threads_per_process() -> int:
    """This process's equal share of the machine's cores among the local processes of a launch."""
    local_procs = int(os.environ.get("PADDLE_LOCAL_SIZE", os.environ.get("PADDLE_TRAINERS_NUM", "1")))
    return max(1, (os.cpu_count() or 1) // max(1, local_procs))


def local_device_id() -> int:
    """The GPU that paddle.distributed.launch gave this process (FLAGS_selected_gpus), else 0."""
    return int(os.environ.get("FLAGS_selected_gpus", "0").split(",")[0] or 0)


def write_settings(args, save_dir: str | os.PathLike) -> None:
    """setting.txt of the resolved arguments, in the reference's layout."""
    lines = ["------------------ start ------------------"]
    lines += [f"{name} : {value}" for name, value in sorted(vars(args).items())]
    lines.append("------------------- end -------------------")
    write_text_atomic(Path(save_dir, "setting.txt"), "\n".join(lines))


def write_json(path: str | os.PathLike, value) -> None:
    """A JSON file for people and programs: UTF-8, labels unescaped, indented."""
    write_text_atomic(path, json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def read_json_object(path: str | os.PathLike, remedy: str) -> dict:
    """A JSON object the suite wrote (a checkpoint's config, an export's metadata); a file cut by a full disk
    or garbled by a copy is one line naming it, what is wrong and `remedy`, never a JSONDecodeError."""
    try:
        value = json.loads(Path(path).read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: damaged, not UTF-8 ({err.reason} at byte {err.start}); {remedy}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: damaged, not valid JSON ({err}); {remedy}") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: damaged, a JSON object was expected, not {type(value).__name__}; {remedy}")
    return value


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """A file handle whose content replaces `path` only when the block ends without an exception:
    it writes a temporary file in the same directory, flushes it to disk and renames it over `path`
    (atomic on POSIX), so a kill at any moment leaves either the old complete file or the new one.
    A directory that is missing or not writable is a DataError naming it, not a traceback."""
    path = Path(path)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise DataError(f"cannot write {path}: {err.strerror} ({path.parent})") from None
    try:
        with open(descriptor, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """`path` holds exactly `text` (UTF-8) or, after a crash, what it held before."""
    with atomic_output(path) as handle:
        handle.write(text)


def file_sha256(path: str | os.PathLike) -> str:
    """The file's sha256 (hex): what a record of a written file keeps to tell a damaged copy later."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_records(directory: Path, names: Iterable[str]) -> dict[str, dict]:
    """Size and sha256 of the named files in `directory`, recorded when they are written."""
    return {name: {"size": (directory / name).stat().st_size, "sha256": file_sha256(directory / name)}
            for name in names}


def records_problem(directory: Path, records) -> str | None:
    """Why the files in `directory` are not the ones `file_records` recorded (missing, truncated,
    changed), or None when they all are; sizes first, as they are cheap and catch truncation."""
    if not isinstance(records, dict) or not records:
        return "no record of its files"
    for name, record in records.items():
        path = directory / name
        size = path.stat().st_size if path.is_file() else None
        if not isinstance(record, dict) or size != record.get("size"):
            return f"{name} is missing" if size is None else f"{name} has {size} bytes, not the recorded size"
    for name, record in records.items():
        if file_sha256(directory / name) != record.get("sha256"):
            return f"{name} does not match its recorded checksum"
    return None


def _umask() -> int:
    """The process's file-creation mask (mkstemp creates files readable by the owner only)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
