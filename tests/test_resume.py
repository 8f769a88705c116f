"""Exact resume, gradient accumulation, mixed precision, the metrics history, and distributed runs
that span two launchers or lose a rank."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import psutil
import pytest
from paddlenlp.transformers import AutoModelForSequenceClassification

import resume
from data_io import load_examples, read_label_list
from history import COLUMNS
from modeling import dygraph_pipeline, load_tokenizer, stored_config
from training import (
    FixedBatches,
    MixedPrecision,
    StepState,
    TrainingLoop,
    build_optimizer,
    encode_examples,
    labelled_batch,
)

from conftest import ROOT, crash_at_optimizer_step, finish_launch, free_port, make_keyword_dataset, run_main

pytestmark = pytest.mark.slow

# 96 texts / batch 16 = 6 batches an epoch; states every 4 steps: mid-epoch (4, 8, 16) and at epoch ends
RUN = ["--device", "cpu", "--batch_size", "16", "--learning_rate", "1e-3", "--warmup_steps", "4", "--epochs", "3",
       "--logging_steps", "1", "--save_last_steps", "4"]
LR_LINE = r"global step (\d+), epoch: \d+, batch: \d+, loss: ([\d.]+), speed: [\d.]+ step/s, lr: ([\d.e+-]+)"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    return make_keyword_dataset(tmp_path_factory.mktemp("resume_data"), n_train=96, n_dev=16, seed=5)


@pytest.fixture(scope="module")
def dropout_model(small_data, tmp_path_factory) -> Path:
    """A scratch model with dropout, so a resume that lost the random state would train differently."""
    out = tmp_path_factory.mktemp("resume_model") / "model"
    result = run_main("scratch_model.py", "--dataset_dir", small_data, "--output_dir", out, "--dropout", "0.1")
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def uninterrupted(small_data, dropout_model, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("uninterrupted") / "ckpt"
    result = run_main("train.py", *RUN, "--dataset_dir", small_data, "--model_name", dropout_model,
                      "--save_dir", save_dir, "--visualdl")
    assert result.returncode == 0, result.stderr[-3000:]
    return save_dir, result.stderr


def final_weights(save_dir: Path) -> dict[str, np.ndarray]:
    state_dir = resume.find_state(save_dir)
    assert state_dir.name == "step-18"  # 3 epochs x 6 steps
    return {name: value.numpy() for name, value in paddle.load(str(state_dir / "model_state.pdparams")).items()}


def assert_same_weights(left: dict, right: dict, tolerance: float = 1e-6) -> None:
    assert left.keys() == right.keys()
    assert max(float(np.abs(left[name] - right[name]).max()) for name in left) <= tolerance


def interrupted_then_resumed(monkeypatch, small_data, dropout_model, save_dir: Path, crash_step: int):
    with monkeypatch.context() as patch:
        crash_at_optimizer_step(patch, crash_step)
        with pytest.raises(KeyboardInterrupt):
            run_main("train.py", *RUN, "--dataset_dir", small_data, "--model_name", dropout_model,
                     "--save_dir", save_dir)
    return run_main("train.py", *RUN, "--dataset_dir", small_data, "--model_name", dropout_model,
                    "--save_dir", save_dir, "--resume_from_checkpoint", save_dir)


def test_interrupted_run_resumes_to_the_same_weights_lr_and_history(uninterrupted, small_data, dropout_model,
                                                                     tmp_path, monkeypatch):
    reference_dir, reference_log = uninterrupted
    save_dir = tmp_path / "ckpt"
    result = interrupted_then_resumed(monkeypatch, small_data, dropout_model, save_dir, crash_step=11)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from {save_dir / 'resume' / 'step-8'} at global step 8 (epoch 2, batch 2)" in result.stderr
    assert_same_weights(final_weights(save_dir), final_weights(reference_dir))
    # the resumed run logs steps 9..18 exactly as the uninterrupted run did (loss and learning rate)
    reference_steps = re.findall(LR_LINE, reference_log)
    resumed_steps = re.findall(LR_LINE, result.stderr)
    assert [s[0] for s in resumed_steps] == [str(n) for n in range(9, 19)]
    assert [(s[0], s[2]) for s in resumed_steps] == [(s[0], s[2]) for s in reference_steps[8:]]
    assert [float(s[1]) for s in resumed_steps] == pytest.approx([float(s[1]) for s in reference_steps[8:]], abs=2e-5)
    # the best checkpoint, its score and the history read as one uninterrupted run
    results = json.loads((save_dir / "results.json").read_text(encoding="utf-8"))
    reference = json.loads((reference_dir / "results.json").read_text(encoding="utf-8"))
    assert results["best_dev"] == reference["best_dev"] and results["best_epoch"] == reference["best_epoch"]
    assert results["resumed_from"] == str(save_dir / "resume" / "step-8")
    history = list(csv.DictReader(open(save_dir / "metrics_history.csv", encoding="utf-8")))
    reference_history = list(csv.DictReader(open(reference_dir / "metrics_history.csv", encoding="utf-8")))
    assert [(r["global_step"], r["learning_rate"], r["micro_f1"]) for r in history] == \
        [(r["global_step"], r["learning_rate"], r["micro_f1"]) for r in reference_history]


def test_resume_without_the_random_state_would_differ(uninterrupted, small_data, dropout_model, tmp_path,
                                                       monkeypatch):
    """The check above can fail: with dropout, skipping the generators' restore changes the weights."""
    monkeypatch.setattr(resume, "set_rng_states", lambda states: None)
    save_dir = tmp_path / "ckpt"
    result = interrupted_then_resumed(monkeypatch, small_data, dropout_model, save_dir, crash_step=11)
    assert result.returncode == 0, result.stderr[-3000:]
    reference, resumed = final_weights(uninterrupted[0]), final_weights(save_dir)
    assert max(float(np.abs(reference[name] - resumed[name]).max()) for name in reference) > 1e-4


@pytest.mark.parametrize("crash_in", ["rename", "replace"])
def test_a_crash_while_saving_leaves_the_previous_state_usable(crash_in, uninterrupted, small_data, dropout_model,
                                                                tmp_path, monkeypatch):
    """Killed between writing the new state and renaming it (or replacing the pointer): `latest` still
    names the complete previous state, and resuming from it ends where the uninterrupted run ended."""
    save_dir = tmp_path / "ckpt"
    original, saves = getattr(resume.os, crash_in), []

    def crash_on_second_state(source, target):
        if Path(target).parent.name != "resume":  # the atomic writes of settings, results and checkpoint files
            return original(source, target)
        saves.append(target)
        if len(saves) == 2:  # the state of step 6 (end of epoch 1); step 4's is complete
            raise KeyboardInterrupt("killed while saving")
        return original(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(resume.os, crash_in, crash_on_second_state)
        with pytest.raises(KeyboardInterrupt):
            run_main("train.py", *RUN, "--dataset_dir", small_data, "--model_name", dropout_model,
                     "--save_dir", save_dir)
    root = save_dir / "resume"
    assert (root / "latest").read_text() == "step-4"
    assert sorted(p.name for p in root.iterdir()) == (
        ["latest", "step-4", "step-6.partial"] if crash_in == "rename" else ["latest", "latest.tmp", "step-4", "step-6"])
    result = run_main("train.py", *RUN, "--dataset_dir", small_data, "--model_name", dropout_model,
                      "--save_dir", save_dir, "--resume_from_checkpoint", save_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at global step 4 (epoch 1, batch 4)" in result.stderr
    assert_same_weights(final_weights(save_dir), final_weights(uninterrupted[0]))
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith("latest")) == ["step-18"]


def test_resume_refuses_what_would_not_be_exact(uninterrupted, small_data, dropout_model, tmp_path):
    save_dir, _ = uninterrupted
    state_dir = save_dir / "resume" / "step-18"

    def attempt(*options, into: Path = save_dir):  # every attempt is refused before it writes anything
        result = run_main("train.py", *RUN, "--dataset_dir", small_data, "--model_name", dropout_model,
                          "--save_dir", into, *options)
        assert result.returncode == 2
        return result.stderr

    message = attempt("--resume_from_checkpoint", save_dir, "--batch_size", "8", "--epochs", "4")
    assert f"--resume_from_checkpoint {state_dir}" in message
    assert "--batch_size 8 (the saved run used 16)" in message and "--epochs 4 (the saved run used 3)" in message
    assert (f"--save_dir {save_dir}"
            in attempt("--resume_from_checkpoint", save_dir, into=tmp_path / "elsewhere"))
    assert (f"--resume_from_checkpoint {tmp_path}: no resumable state"
            in attempt("--resume_from_checkpoint", tmp_path))
    assert "drop --init_from_ckpt" in attempt("--resume_from_checkpoint", save_dir, "--init_from_ckpt", save_dir)
    copied = tmp_path / "copied"
    copied.mkdir()
    for file in state_dir.iterdir():
        (copied / file.name).write_bytes(file.read_bytes())
    state = json.loads((copied / "trainer_state.json").read_text())
    (copied / "trainer_state.json").write_text(json.dumps({**state, "world_size": 2}))
    refused = attempt("--resume_from_checkpoint", copied)
    assert "saved by 2 processes, resumed with 1" in refused and "resume with 2 processes" in refused


def test_history_csv_curves_png_and_visualdl(uninterrupted):
    save_dir, log = uninterrupted
    with open(save_dir / "metrics_history.csv", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    assert reader.fieldnames == COLUMNS
    steps = [r for r in rows if r["loss"]]
    evals = [r for r in rows if r["macro_f1"]]
    assert [int(r["global_step"]) for r in steps] == list(range(1, 19))
    assert [(int(r["global_step"]), int(r["epoch"])) for r in evals] == [(6, 1), (12, 2), (18, 3)]
    logged = re.findall(r"eval loss: ([\d.]+), micro f1 score: ([\d.]+), macro f1 score: ([\d.]+)", log)
    assert [tuple(float(r[k]) for k in ("eval_loss", "micro_f1", "macro_f1")) for r in evals] == \
        [pytest.approx(tuple(float(x) for x in line), abs=6e-6) for line in logged]
    png = (save_dir / "training_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    from visualdl import LogReader

    records = list((save_dir / "visualdl").glob("vdlrecords.*"))
    reader = LogReader(file_path=str(records[0]))
    assert {"train/loss", "train/learning_rate", "eval/macro_f1"} <= set(reader.get_tags()["scalar"])
    assert [record.id for record in reader.get_data("scalar", "eval/macro_f1")] == [6, 12, 18]


def one_optimizer_step(model_dir: Path, data, groups: list[list[int]], accumulation: int, pipeline) -> dict:
    paddle.seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_classes=5)
    initial = {name: param.numpy().copy() for name, param in model.named_parameters()}
    optimizer = paddle.optimizer.SGD(learning_rate=1.0, parameters=model.parameters())

    def train_step(batch, backward):
        loss = paddle.nn.functional.binary_cross_entropy_with_logits(model(input_ids=batch["input_ids"],
                                                                         token_type_ids=batch["token_type_ids"]),
                                                                   batch["labels"])
        backward(loss)
        return loss

    batches = FixedBatches([labelled_batch(pipeline, data, group) for group in groups])
    state = TrainingLoop(model, batches, train_step, optimizer, None, 1, accumulation_steps=accumulation).run()
    assert state.global_step == 1
    return {name: initial[name] - param.numpy() for name, param in model.named_parameters()}  # = the gradient


def test_accumulating_4_batches_of_4_equals_one_batch_of_16(small_data, tmp_path):
    model_dir = tmp_path / "model"
    result = run_main("scratch_model.py", "--dataset_dir", small_data, "--output_dir", model_dir, "--dropout", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    labels = read_label_list(small_data / "label.txt")
    pipeline = dygraph_pipeline(load_tokenizer(str(model_dir)), 64, 16)
    data = encode_examples(pipeline, load_examples(small_data / "train.txt", labels)[:16], len(labels))
    accumulated = one_optimizer_step(model_dir, data, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]],
                                     4, pipeline)
    whole = one_optimizer_step(model_dir, data, [list(range(16))], 1, pipeline)
    assert max(float(np.abs(accumulated[n] - whole[n]).max()) for n in whole) < 1e-6
    assert max(float(np.abs(whole[n]).max()) for n in whole) > 1e-3  # there was a gradient to compare


def test_accumulation_counts_optimizer_steps_in_log_and_schedule(small_data, dropout_model, tmp_path):
    save_dir = tmp_path / "ckpt"
    result = run_main("train.py", "--device", "cpu", "--dataset_dir", small_data, "--model_name", dropout_model,
                      "--save_dir", save_dir, "--batch_size", "16", "--learning_rate", "1e-3", "--warmup_steps", "2",
                      "--epochs", "2", "--logging_steps", "1", "--gradient_accumulation_steps", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    # 6 batches an epoch in groups of 4: steps after batches 4 and 6 (the short last group still steps)
    steps = re.findall(r"global step (\d+), epoch: (\d+), batch: (\d+), loss: [\d.]+, speed: [\d.]+ step/s, "
                       r"lr: ([\d.e+-]+)", result.stderr)
    assert [s[:3] for s in steps] == [("1", "1", "4"), ("2", "1", "6"), ("3", "2", "4"), ("4", "2", "6")]
    assert [float(s[3]) for s in steps] == pytest.approx([5e-4, 1e-3, 5e-4, 0.0], rel=2e-3)  # warmup 2 of 4 steps
    assert json.loads((save_dir / "results.json").read_text())["global_steps"] == 4


def test_mixed_precision_is_refused_on_cpu_with_the_reason(small_data, dropout_model, tmp_path, trained):
    for amp in ("fp16", "bf16"):
        result = run_main("train.py", "--device", "cpu", "--dataset_dir", small_data, "--model_name", dropout_model,
                          "--save_dir", tmp_path / "x", "--amp", amp)
        assert result.returncode == 2
        assert f"--amp {amp}" in result.stderr and "GPU only" in result.stderr
    result = run_main("prune.py", "--device", "cpu", "--dataset_dir", small_data, "--params_dir", trained[0],
                      "--output_dir", tmp_path / "pruned", "--amp", "bf16")
    assert result.returncode == 2 and "runs on GPU only" in result.stderr


def test_cpu_mixed_precision_refusal_is_still_needed():
    """When this fails, Paddle has learnt CPU mixed precision: lift the refusal in training.check_amp."""
    paddle.set_device("cpu")
    layer = paddle.nn.Linear(8, 8)
    with pytest.warns(UserWarning, match="amp_guard can only be enabled on CUDAPlace"):
        with paddle.amp.auto_cast(dtype="bfloat16"):
            assert layer(paddle.ones([2, 8])).dtype == paddle.float32
    with pytest.raises(RuntimeError, match="kernel `matmul` is not registered"):
        paddle.matmul(paddle.ones([2, 8]).astype("bfloat16"), paddle.ones([8, 2]).astype("bfloat16"))


def test_fp16_loss_scaler_state_round_trips_through_a_resumable_state(small_data, dropout_model, tmp_path):
    """The GPU path's scaler is saved and restored with the rest (here with a state dict made by hand:
    Paddle's GradScaler is inactive on CPU and has no state there)."""
    precision = MixedPrecision("fp16")
    model = AutoModelForSequenceClassification.from_pretrained(str(dropout_model), num_classes=5)
    optimizer = build_optimizer(model, 1e-3, 0.0)
    precision.scaler.state_dict = lambda: {"scale": np.array([1024.0]), "incr_count": 3}
    resume.save_state(tmp_path, model, optimizer, precision.scaler, {**StepState().position(), "args": {}})
    loaded = {}
    precision.scaler.load_state_dict = loaded.update
    resume.load_state(resume.find_state(tmp_path), model, optimizer, precision.scaler)
    assert loaded["incr_count"] == 3 and float(loaded["scale"][0]) == 1024.0


# ------------------------------------------------------------------ distributed: two nodes, a killed rank

SLOW_TRAIN = """
import os, runpy, sys, time
import paddle
original = paddle.optimizer.AdamW.step
def slow_step(self):  # time for the test to kill a rank mid-run
    time.sleep(float(os.environ.get("STEP_SECONDS", "0")))
    return original(self)
paddle.optimizer.AdamW.step = slow_step
sys.argv = [{train!r}] + sys.argv[1:]
runpy.run_path({train!r}, run_name="__main__")
"""
# texts of 4-21 characters read in windows of 10 tokens, texts with rarer labels repeated, gradients of 2
# batches accumulated (all-reduced at the second only): the state must carry the sampler's position over all of it
DIST_RUN = ["--device", "cpu", "--batch_size", "4", "--gradient_accumulation_steps", "2", "--learning_rate", "1e-3",
            "--warmup_steps", "4", "--epochs", "2", "--logging_steps", "1", "--save_last_steps", "2",
            "--max_seq_length", "12", "--long_text", "window", "--sampling", "repeat_factor", "--repeat_threshold", "0.5"]


def launch(tmp_path: Path, name: str, data: Path, model: Path, *options, launcher: list[str], env=None):
    """Start `paddle.distributed.launch` (its collective mode; gloo on CPU) on train.py with a step slowed
    down by STEP_SECONDS; returns the process and its paths."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "slow_train.py"
    script.write_text(SLOW_TRAIN.format(train=str(ROOT / "train.py")), encoding="utf-8")
    save_dir, log_dir = tmp_path / "ckpt", tmp_path / f"log_{name}"
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--log_dir", str(log_dir),
           *launcher, str(script), *DIST_RUN, "--dataset_dir", str(data), "--model_name", str(model),
           "--save_dir", str(save_dir), *map(str, options)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                               env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    return process, save_dir, log_dir


@pytest.fixture(scope="module")
def two_process_run(small_data, dropout_model, tmp_path_factory) -> tuple[Path, int]:
    """One launcher with two processes (the README's command), uninterrupted: the result the other
    launches must reproduce. Returns the save_dir and the number of optimizer steps."""
    tmp_path = tmp_path_factory.mktemp("two_process")
    process, save_dir, log_dir = launch(tmp_path, "one_launcher", small_data, dropout_model,
                                        launcher=["--nproc_per_node", "2", "--backend", "gloo"])
    logs = finish_launch(process, log_dir)
    assert sorted(logs) == ["workerlog.0", "workerlog.1"]
    assert (save_dir / "model_state.pdparams").is_file()  # one checkpoint, written by rank 0
    assert "Model weights saved" in logs["workerlog.0"] and "Model weights saved" not in logs["workerlog.1"]
    assert stored_config(save_dir)["long_text"]["mode"] == "window"
    windows = [int(n) for n in re.findall(r"train.txt: .*96 texts read as (\d+) windows", logs["workerlog.1"])]
    assert len(windows) == 1 and windows[0] > 96
    epoch_texts = {int(re.search(r"an epoch has (\d+) texts", log).group(1)) for log in logs.values()}
    assert len(epoch_texts) == 1 and epoch_texts.pop() > 96  # rarer labels repeated, the same on both ranks
    # whole texts per batch, batches shared out evenly: every rank runs the same optimizer steps; only rank 0 logs
    steps = [int(n) for n in re.findall(r"global step (\d+), epoch", logs["workerlog.0"])]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) % 2 == 0
    assert not re.findall(r"global step (\d+), epoch", logs["workerlog.1"])
    assert [len(re.findall(r"micro f1 score", log)) for log in logs.values()] == [2, 2]
    return save_dir, len(steps)


def final_weights_of(save_dir: Path, total_steps: int) -> dict[str, np.ndarray]:
    state_dir = resume.find_state(save_dir)
    assert state_dir.name == f"step-{total_steps}"
    assert sorted(p.name for p in state_dir.iterdir()) == [
        "model_state.pdparams", "optimizer.pdopt", "rng-rank0.pkl", "rng-rank1.pkl", "scaler.pdparams",
        "trainer_state.json"]
    return {name: value.numpy() for name, value in paddle.load(str(state_dir / "model_state.pdparams")).items()}


def launch_two_nodes(tmp_path: Path, name: str, data: Path, model: Path, *options, env=None) -> list:
    """Two launchers of one process each (`--nnodes 2` on loopback: the multi-node path), one save_dir
    (a shared filesystem)."""
    master = f"127.0.0.1:{free_port()}"
    return [launch(tmp_path, f"{name}_node{rank}", data, model, *options, env=env,
                   launcher=["--nnodes", "2", "--nproc_per_node", "1", "--master", master, "--rank", str(rank)])
            for rank in (0, 1)]


def test_two_nodes_lose_a_rank_mid_epoch_and_resume_to_the_result_of_one_launcher(two_process_run, small_data,
                                                                                 dropout_model, tmp_path):
    nodes = launch_two_nodes(tmp_path, "killed", small_data, dropout_model, env={"STEP_SECONDS": "0.15"})
    save_dir = nodes[0][1]
    deadline = time.time() + 240
    while resume.read_pointer(save_dir / "resume") in (None, "step-2") and time.time() < deadline:
        time.sleep(0.2)
    workers = [p for p in psutil.Process(nodes[1][0].pid).children(recursive=True)
               if p.environ().get("PADDLE_TRAINER_ID") == "1" and "slow_train.py" in " ".join(p.cmdline())]
    assert len(workers) == 1, "rank 1 not found"
    workers[0].send_signal(signal.SIGTERM)  # mid-epoch: 8 steps an epoch, states every 2
    logs = [finish_launch(process, log_dir, expect_ok=False) for process, _, log_dir in nodes]  # both launchers fail
    assert [sorted(node_logs) for node_logs in logs] == [["workerlog.0"], ["workerlog.0"]]
    assert f"signal {int(signal.SIGTERM)}" in logs[1]["workerlog.0"]
    assert f"{save_dir / 'resume'} with --resume_from_checkpoint {save_dir}" in logs[1]["workerlog.0"]
    saved = resume.find_state(save_dir)  # complete: written by both ranks, never half
    reference_dir, total_steps = two_process_run
    assert saved.name != f"step-{total_steps}" and (saved / "rng-rank1.pkl").is_file()

    nodes = launch_two_nodes(tmp_path, "resumed", small_data, dropout_model, "--resume_from_checkpoint", save_dir)
    logs = [finish_launch(process, log_dir) for process, _, log_dir in nodes]
    assert f"Resumed from {saved}" in logs[1]["workerlog.0"]
    assert (save_dir / "model_state.pdparams").is_file()
    assert_same_weights(final_weights_of(save_dir, total_steps), final_weights_of(reference_dir, total_steps))
