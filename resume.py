"""Resumable training state: what a run needs to continue exactly where it stopped, written atomically.

`--init_from_ckpt` (the reference's) restores weights only, so a resumed run restarts its schedule,
optimizer moments and data order and ends somewhere else. A resumable state holds everything else
too: weights, optimizer moments with the LR scheduler, the fp16 loss scaler, the position in the
data (epoch and batch; the batch order itself follows from seed and epoch), every random generator
of every process (Python, NumPy, Paddle), and the script's own progress (best score, early-stopping
counter, rows of the metrics history).

Layout, under `<save_dir>/resume/`:

    step-<N>/       model_state.pdparams, optimizer.pdopt, scaler.pdparams, trainer_state.json,
                    rng-rank<R>.pkl (one per process)
    latest          the name of the newest complete step-<N>

trainer_state.json also records the size and SHA-256 of every other file of the step, and a fingerprint
of the data the run trained on (train, dev and label files): a state truncated by a full disk or a
copy, or resumed against edited data, is refused with one line before anything is loaded, instead of
failing deep inside a loader or silently continuing a different run.

A state is written into `step-<N>.partial/` and renamed when every process has written its part
(with several machines, `--save_dir` must be a filesystem they share);
only then is `latest` replaced (write a temporary file, then `os.replace`, atomic on POSIX), and only
after that is the previous state deleted. A crash at any point leaves `latest` naming a complete state.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import paddle
import paddle.distributed as dist

from utils import DataError, logger

RESUME_DIR = "resume"
POINTER = "latest"
STATE_FILE = "trainer_state.json"
STATE_NAME = re.compile(r"step-\d+")
CHUNK = 1 << 20


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


def _unwrapped(model: paddle.nn.Layer) -> paddle.nn.Layer:
    return model._layers if isinstance(model, paddle.DataParallel) else model


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _renamed_optimizer_state(state: dict, model: paddle.nn.Layer, to_structured: bool) -> dict:
    """Optimizer state keyed by the parameters' structured names ("ernie.encoder.layers.0...") instead
    of their unique names ("linear_12.w_0"), which depend on how many layers the process created
    before; the keys are the parameter's name followed by the accumulator's suffix."""
    named = {param.name: name for name, param in _unwrapped(model).named_parameters()}
    mapping = named if to_structured else {name: unique for unique, name in named.items()}
    prefixes = sorted(mapping, key=len, reverse=True)  # longest first: "linear_1.w_0" is not "linear_1.w_01"
    renamed = {}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p + "_")), None)
        renamed[mapping[prefix] + key[len(prefix):] if prefix else key] = value
    return renamed


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "paddle_cpu": paddle.get_rng_state("cpu")}
    if paddle.get_device() != "cpu":
        states["paddle_device"] = paddle.get_rng_state()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    paddle.set_rng_state(states["paddle_cpu"], "cpu")
    if "paddle_device" in states and paddle.get_device() != "cpu":
        paddle.set_rng_state(states["paddle_device"])


def save_state(save_dir: str | os.PathLike, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer,
               scaler: paddle.amp.GradScaler, progress: dict, rank: int = 0, world_size: int = 1) -> Path:
    """Write the resumable state of every process (call it in all of them at the same step) and
    return its directory. `progress` is JSON data; it must hold `global_step`."""
    root = Path(save_dir, RESUME_DIR)
    name = f"step-{progress['global_step']}"
    partial = root / f"{name}.partial"
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
    _barrier(world_size)
    partial.mkdir(parents=True, exist_ok=True)
    _fsync_write(partial / f"rng-rank{rank}.pkl", pickle.dumps(rng_states()))
    _barrier(world_size)
    if rank == 0:
        missing = [f"rng-rank{r}.pkl" for r in range(world_size) if not (partial / f"rng-rank{r}.pkl").is_file()]
        if missing:
            raise DataError(f"--save_dir {save_dir}: the other machines' parts of the resumable state "
                            f"({', '.join(missing)}) are not there; with several machines --save_dir must be on "
                            f"a filesystem they all share")
        paddle.save(_unwrapped(model).state_dict(), str(partial / "model_state.pdparams"))
        paddle.save(_renamed_optimizer_state(optimizer.state_dict(), model, to_structured=True),
                    str(partial / "optimizer.pdopt"))
        paddle.save(scaler.state_dict(), str(partial / "scaler.pdparams"))
        state = {**progress, "world_size": world_size, "files": file_checksums(partial)}
        _fsync_write(partial / STATE_FILE, json.dumps(state, ensure_ascii=False, indent=2).encode("utf-8"))
    _barrier(world_size)
    final = root / name
    if rank == 0:
        if final.exists():  # the same step saved again by a resumed run
            shutil.rmtree(final)
        os.rename(partial, final)
        pointer_tmp = root / f"{POINTER}.tmp"
        _fsync_write(pointer_tmp, name.encode("utf-8"))
        os.replace(pointer_tmp, root / POINTER)
        _remove_other_states(root, name)
    _barrier(world_size)
    return final


class ResumableState:
    """TrainingLoop callback writing the resumable state (`save_state`): every `every_steps` optimizer
    steps (0: never mid-epoch; never at an epoch's last batch, whose state is written at the epoch end)
    and at every epoch end, after the callbacks before it (evaluation, best checkpoint), so the state
    holds their outcome. `progress()` gives the script's own part of the state (best score, counters,
    options, data fingerprint), taken at the moment of the save."""

    def __init__(self, save_dir: str | os.PathLike, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer,
                 scaler: paddle.amp.GradScaler, progress: Callable[[], dict], batches_per_epoch: int,
                 every_steps: int = 0, rank: int = 0, world_size: int = 1):
        self.save_dir, self.model, self.optimizer, self.scaler = save_dir, model, optimizer, scaler
        self.progress, self.batches_per_epoch, self.every_steps = progress, batches_per_epoch, every_steps
        self.rank, self.world_size = rank, world_size

    def save(self, state) -> None:
        saved = save_state(self.save_dir, self.model, self.optimizer, self.scaler,
                           {**state.position(), **self.progress()}, self.rank, self.world_size)
        logger.info(f"Resumable state saved in {saved}")

    def on_step_end(self, state) -> bool:
        if not self.every_steps or state.global_step % self.every_steps or state.step == self.batches_per_epoch:
            return False
        self.save(state)
        return True

    def on_epoch_end(self, state) -> bool:
        self.save(state)
        return True


@contextlib.contextmanager
def stop_on_sigterm(resume_dir: Path | None):
    """A pre-empted run (SIGTERM from a scheduler or the launcher) ends with one line saying where its
    last resumable state is, and a non-zero exit, instead of dying silently mid-epoch."""
    def handler(signum, frame):
        where = (f"continue from the last state in {resume_dir} with --resume_from_checkpoint {resume_dir.parent}"
                 if resume_dir else "no resumable state was written (train with --save_last)")
        logger.error(f"Terminated by signal {signum} during training; {where}")
        sys.exit(128 + signum)

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove_other_states(root: Path, keep: str) -> None:
    """Delete every state but `keep` once the pointer names it: the previous one, and any left behind by
    a run whose pointer was damaged or that was killed while saving."""
    for entry in root.iterdir():
        if entry.name != keep and STATE_NAME.fullmatch(entry.name.removesuffix(".partial")):
            shutil.rmtree(entry, ignore_errors=True)


def file_checksum(path: Path, count_lines: bool = False) -> dict:
    """Size and SHA-256 of a file (and its number of lines), read in chunks (model states are hundreds of MB)."""
    digest, lines = hashlib.sha256(), 0
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            lines += chunk.count(b"\n") if count_lines else 0
    checksum = {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    return {**checksum, "lines": lines} if count_lines else checksum


def data_fingerprint(files: dict[str, Path]) -> dict:
    """{option: checksum with line count} of the data files a run trains on, to be saved with its states;
    a file that is not there has none (reading it reports that)."""
    return {option: file_checksum(path, count_lines=True) if path.is_file() else None
            for option, path in files.items()}


def check_data(state_dir: Path, saved: dict | None, current: dict, files: dict[str, Path]) -> None:
    """Refuse to resume on data that differs from the data the state was saved for: the data position,
    label columns and best score would belong to other texts (a train file cut from 240 to 40 lines
    resumed past its end and trained nothing)."""
    if saved is None:
        logger.warning(f"{state_dir} was saved without a fingerprint of its data (an older version): the data files "
                       f"are not checked")
        return
    for option, now in current.items():
        before = saved.get(option)
        if now is None or before is None or now["sha256"] == before["sha256"]:
            continue
        same_size = ", other content" if now["bytes"] == before["bytes"] else ""
        raise DataError(f"--resume_from_checkpoint {state_dir}: the state was saved for a different "
                        f"{files[option].name} ({files[option]}: now {now['lines']} lines, {now['bytes']} bytes; "
                        f"then {before['lines']} lines, {before['bytes']} bytes{same_size}); "
                        f"start without --resume_from_checkpoint or restore the file")


def check_options(state_dir: Path, save_dir: str | os.PathLike, options: dict) -> None:
    """Refuse a resume that would continue in another directory than the run's own (where its outputs so far
    are) or with other values of the options that fix its data order and schedule (it would not be exact)."""
    run_dir = state_dir.parent.parent
    if state_dir.parent.name == RESUME_DIR and run_dir.resolve() != Path(save_dir).resolve():
        raise DataError(f"--resume_from_checkpoint {state_dir}: the run continues in its own directory; "
                        f"write into {run_dir}")
    saved = read_progress(state_dir).get("args", {})
    changed = [f"--{name} {value} (the saved run used {saved.get(name)})" for name, value in options.items()
               if saved.get(name) != value]
    if changed:
        raise DataError(f"--resume_from_checkpoint {state_dir}: resume with the saved run's options; changed: "
                        + ", ".join(changed))


def file_checksums(state_dir: Path) -> dict:
    """Checksums of every file of a state but trainer_state.json (which holds them)."""
    return {path.name: file_checksum(path) for path in sorted(state_dir.iterdir())
            if path.is_file() and path.name != STATE_FILE}


def _damaged(state_dir: Path, problem: str) -> DataError:
    """The one line for a state that cannot be resumed: what is wrong and what to do instead."""
    return DataError(f"--resume_from_checkpoint: the resumable state in {state_dir} is damaged ({problem}); it cannot "
                     f"be resumed: delete {state_dir} and train again without --resume_from_checkpoint")


def read_pointer(root: Path) -> str | None:
    """The state name in `root/latest` (None without a pointer); a pointer that does not hold a state
    name (binary bytes, an empty or cut file) is a DataError."""
    pointer = root / POINTER
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        name = None
    if not name or not STATE_NAME.fullmatch(name):
        raise _damaged(root, f"{pointer} does not name a state (step-<N>)")
    return name


def find_state(path: str | os.PathLike) -> Path:
    """The state directory for --resume_from_checkpoint: a save_dir, its resume/ folder or a step-<N>."""
    path = Path(path)
    for root in (path / RESUME_DIR, path):
        name = read_pointer(root)
        if name:
            if not (root / name / STATE_FILE).is_file():
                raise _damaged(root, f"{root / POINTER} names {name}, which has no {STATE_FILE}")
            return root / name
    if (path / STATE_FILE).is_file():
        return path
    unfinished = sorted(p.name for root in (path / RESUME_DIR, path) if root.is_dir() for p in root.glob("*.partial"))
    detail = (f"{', '.join(unfinished)} was not finished: the run stopped while saving its first state; train again "
              f"without --resume_from_checkpoint" if unfinished else
              f"train with --save_last to write one into <save_dir>/{RESUME_DIR}/")
    raise DataError(f"--resume_from_checkpoint {path}: no resumable state there ({detail})")


def read_progress(state_dir: Path) -> dict:
    """trainer_state.json of a state; a cut or garbled file is a DataError, never a JSON traceback."""
    try:
        progress = json.loads((state_dir / STATE_FILE).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(state_dir, f"{STATE_FILE}: {err}") from None
    missing = [key for key in ("global_step", "epoch", "step", "world_size") if key not in progress] \
        if isinstance(progress, dict) else ["every entry"]
    if missing:
        raise _damaged(state_dir, f"{STATE_FILE} lacks {', '.join(missing)}")
    return progress


def verify_files(state_dir: Path, progress: dict, names: list[str]) -> None:
    """Refuse a state whose files are missing, or differ in size or SHA-256 from what was saved (a cut copy,
    a full disk): caught before a loader fails on it. States saved before checksums were recorded are
    checked for presence only."""
    recorded = progress.get("files", {})
    for name in names:
        path = state_dir / name
        if not path.is_file():
            raise _damaged(state_dir, f"{name} is missing")
        if name not in recorded:
            continue
        actual = file_checksum(path)
        if actual["bytes"] != recorded[name]["bytes"]:
            raise _damaged(state_dir, f"{name} has {actual['bytes']} bytes, {recorded[name]['bytes']} were saved")
        if actual["sha256"] != recorded[name]["sha256"]:
            raise _damaged(state_dir, f"{name} differs from what was saved (SHA-256)")


def load_state(state_dir: Path, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer,
               scaler: paddle.amp.GradScaler, rank: int = 0, world_size: int = 1) -> dict:
    """Restore weights, optimizer (with its LR schedule), loss scaler and this process's random
    generators; returns the saved progress. Call it after everything that draws random numbers
    at start-up (model creation), right before the loop."""
    progress = read_progress(state_dir)
    if progress["world_size"] != world_size:
        raise DataError(f"--resume_from_checkpoint {state_dir}: saved by {progress['world_size']} processes, resumed "
                        f"with {world_size}; each process's data position and random state belong to its rank, "
                        f"so resume with {progress['world_size']} processes")
    files = ["model_state.pdparams", "optimizer.pdopt", "scaler.pdparams", f"rng-rank{rank}.pkl"]
    verify_files(state_dir, progress, files)
    try:
        _unwrapped(model).set_state_dict(paddle.load(str(state_dir / files[0])))
        optimizer_state = paddle.load(str(state_dir / files[1]))
        optimizer.set_state_dict(_renamed_optimizer_state(optimizer_state, model, to_structured=False))
        scaler_state = paddle.load(str(state_dir / files[2]))
        if scaler_state:
            scaler.load_state_dict(scaler_state)
        set_rng_states(pickle.loads((state_dir / files[3]).read_bytes()))
    except Exception as err:  # a file damaged the same way when saved: loaders raise anything (EOFError, KeyError...)
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise _damaged(state_dir, f"{type(err).__name__}: {first_line}") from None
    logger.info(f"Resumed from {state_dir} at global step {progress['global_step']} (epoch {progress['epoch']}, "
                f"batch {progress['step']})")
    return progress
