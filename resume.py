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

A state is written into `step-<N>.partial/` and renamed when every process has written its part
(with several machines, `--save_dir` must be a filesystem they share);
only then is `latest` replaced (write a temporary file, then `os.replace`, atomic on POSIX), and only
after that is the previous state deleted. A crash at any point leaves `latest` naming a complete state.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import paddle
import paddle.distributed as dist

from utils import DataError, logger

RESUME_DIR = "resume"
POINTER = "latest"
STATE_FILE = "trainer_state.json"


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
        state = {**progress, "world_size": world_size}
        _fsync_write(partial / STATE_FILE, json.dumps(state, ensure_ascii=False, indent=2).encode("utf-8"))
    _barrier(world_size)
    final = root / name
    if rank == 0:
        previous = read_pointer(root)
        if final.exists():  # the same step saved again by a resumed run
            shutil.rmtree(final)
        os.rename(partial, final)
        pointer_tmp = root / f"{POINTER}.tmp"
        _fsync_write(pointer_tmp, name.encode("utf-8"))
        os.replace(pointer_tmp, root / POINTER)
        if previous and previous != name:
            shutil.rmtree(root / previous, ignore_errors=True)
    _barrier(world_size)
    return final


def read_pointer(root: Path) -> str | None:
    pointer = root / POINTER
    return pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else None


def find_state(path: str | os.PathLike) -> Path:
    """The state directory for --resume_from_checkpoint: a save_dir, its resume/ folder or a step-<N>."""
    path = Path(path)
    for root in (path / RESUME_DIR, path):
        name = read_pointer(root)
        if name and (root / name / STATE_FILE).is_file():
            return root / name
    if (path / STATE_FILE).is_file():
        return path
    raise DataError(f"--resume_from_checkpoint {path}: no resumable state there (train with --save_last to "
                    f"write one into <save_dir>/{RESUME_DIR}/)")


def read_progress(state_dir: Path) -> dict:
    return json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))


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
    _unwrapped(model).set_state_dict(paddle.load(str(state_dir / "model_state.pdparams")))
    optimizer_state = paddle.load(str(state_dir / "optimizer.pdopt"))
    optimizer.set_state_dict(_renamed_optimizer_state(optimizer_state, model, to_structured=False))
    scaler_state = paddle.load(str(state_dir / "scaler.pdparams"))
    if scaler_state:
        scaler.load_state_dict(scaler_state)
    set_rng_states(pickle.loads((state_dir / f"rng-rank{rank}.pkl").read_bytes()))
    logger.info(f"Resumed from {state_dir} at global step {progress['global_step']} (epoch {progress['epoch']}, "
                f"batch {progress['step']})")
    return progress
