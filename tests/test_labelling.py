"""predict.py's batch labelling: every backend gives the same file, the stages overlap in order, the
lines are shared among processes and machines, and an interrupted run resumes to the same output."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import labelling
from labelling import ahead, plan_parts

from conftest import ROOT, finish_launch, free_port, keyword_lines, run_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_data(keyword_data, tmp_path_factory) -> Path:
    """600 unlabelled lines with blank lines among them, beside the keyword data's label.txt."""
    data = tmp_path_factory.mktemp("big_data")
    lines = [line.split("\t")[0] for line in keyword_lines(600, seed=7)]
    for blank in (5, 77, 300, 301):
        lines[blank] = ""
    (data / "data.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data / "label.txt").write_text((keyword_data / "label.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (data / "dev.txt").write_text((keyword_data / "dev.txt").read_text(encoding="utf-8"), encoding="utf-8")
    return data


def predict(checkpoint: Path, data: Path, output: Path, *options) -> str:
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", data, "--params_path", checkpoint,
                      "--output_file", output, *options)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


@pytest.fixture(scope="module")
def single_process_output(trained, big_data, tmp_path_factory) -> str:
    """The dygraph default in one process: what every other path must write, byte for byte."""
    output = tmp_path_factory.mktemp("single") / "output.txt"
    predict(trained[0], big_data, output)
    return output.read_text(encoding="utf-8")


def test_every_backend_writes_the_same_file_at_fp32(trained, big_data, single_process_output, tmp_path):
    checkpoint = trained[0]
    for backend in ("onnxruntime", "paddle", "openvino"):
        output = tmp_path / f"{backend}.txt"
        log = predict(checkpoint, big_data, output, "--backend", backend)
        assert output.read_text(encoding="utf-8") == single_process_output, backend
        assert "Tokenizer: native WordPiece" in log
        cached = f"Using the export of {checkpoint} cached in {checkpoint / 'export_cache'}"
        assert (cached in log) == (backend != "onnxruntime"), backend  # exported once, on first use
    assert (checkpoint / "export_cache" / "parity.json").is_file()  # with the export's parity check


def test_backend_and_precision_that_do_not_go_together_are_refused(trained, big_data, tmp_path):
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", big_data, "--params_path", trained[0],
                      "--output_file", tmp_path / "out.txt", "--precision", "int8")
    assert result.returncode == 2
    assert "--backend dygraph" in result.stderr and "--precision int8" in result.stderr
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", big_data, "--params_path", trained[0],
                      "--output_file", tmp_path / "out.txt", "--backend", "onnxruntime", "--precision", "bf16")
    assert result.returncode == 2
    assert "--backend onnxruntime with bf16 on cpu is not available" in result.stderr


def test_work_ahead_keeps_order_raises_the_workers_error_and_stops_when_left():
    rng = random.Random(0)

    def slow_square(value: int) -> int:
        time.sleep(rng.random() / 500)
        return value * value

    assert list(ahead(iter(range(50)), slow_square)) == [(i, i * i) for i in range(50)]

    def fails_at_3(value: int) -> int:
        if value == 3:
            raise ValueError("bad line 3")
        return value

    seen = []
    with pytest.raises(ValueError, match="bad line 3"):
        for item, _ in ahead(iter(range(10)), fails_at_3):
            seen.append(item)
    assert seen == [0, 1, 2]
    produced = []
    generator = ahead(iter(range(1000)), lambda value: produced.append(value) or value, depth=2)
    next(generator)
    generator.close()  # the consumer leaves early: the thread stops a few items ahead, not at the end
    assert len(produced) <= 5
    assert not [thread for thread in threading.enumerate() if thread.name == "read-and-tokenize"]


def test_parts_cover_every_line_once():
    for total, world, size in ((600, 2, 50), (7, 3, 50_000), (1, 2, 10), (0, 2, 10), (1000, 1, 1000)):
        parts = plan_parts(total, world, size)
        assert parts[0].first_line == 1 and parts[-1].end_line is None
        assert all(a.end_line == b.first_line for a, b in zip(parts, parts[1:]))
        assert all(p.end_line is None or p.end_line - p.first_line <= size for p in parts)
        assert len(parts) >= min(world, max(total, 1))


def test_an_interrupted_run_resumes_from_its_finished_parts(trained, big_data, single_process_output, tmp_path,
                                                            monkeypatch):
    output = tmp_path / "output.txt"
    original = labelling.write_rows
    calls = []

    def killed_in_part_3(labeller, data_path, out, part, *args):
        calls.append(part.index)
        if part.index == 3:
            out.write("half a part\n")
            raise KeyboardInterrupt  # the process dies while writing part 3
        return original(labeller, data_path, out, part, *args)

    monkeypatch.setattr(labelling, "write_rows", killed_in_part_3)
    with pytest.raises(KeyboardInterrupt):
        predict(trained[0], big_data, output, "--resume", "--part_lines", "100")
    parts_dir = tmp_path / "output.txt.parts"
    assert sorted(p.name for p in parts_dir.iterdir()) == [
        "part-00000.json", "part-00000.txt", "part-00001.json", "part-00001.txt", "part-00002.json",
        "part-00002.txt", "part-00003.partial"]
    assert not output.exists()

    monkeypatch.setattr(labelling, "write_rows", lambda *args: calls.append(args[3].index) or original(*args))
    calls.clear()
    log = predict(trained[0], big_data, output, "--resume", "--part_lines", "100")
    assert calls == [3, 4, 5]  # parts 0-2 kept, the half part labelled again
    assert "Part 1: lines 101-200 already labelled, kept (--resume)" in log
    assert output.read_text(encoding="utf-8") == single_process_output
    assert not parts_dir.exists()

    monkeypatch.setattr(labelling, "write_rows", killed_in_part_3)
    with pytest.raises(KeyboardInterrupt):
        predict(trained[0], big_data, output, "--resume", "--part_lines", "100")
    monkeypatch.setattr(labelling, "write_rows", lambda *args: calls.append(args[3].index) or original(*args))
    calls.clear()  # parts written with other options are labelled again
    predict(trained[0], big_data, output, "--resume", "--part_lines", "100", "--threshold", "0.3")
    assert calls == [0, 1, 2, 3, 4, 5]
    predict(trained[0], big_data, tmp_path / "fresh.txt", "--threshold", "0.3")
    assert output.read_text(encoding="utf-8") == (tmp_path / "fresh.txt").read_text(encoding="utf-8")


SLOW_PREDICT = """
import os, runpy, sys, time
import labelling
original = labelling.write_rows
def slow_rows(*args):  # time for the test to kill a rank with a part half written
    stats = original(*args)
    time.sleep(float(os.environ.get("PART_SECONDS", "0")))
    return stats
labelling.write_rows = slow_rows
sys.argv = [{script!r}] + sys.argv[1:]
runpy.run_path({script!r}, run_name="__main__")
"""


def launch(tmp_path: Path, name: str, launcher: list[str], options: list, env: dict | None = None):
    log_dir = tmp_path / f"log_{name}"
    script = tmp_path / "slow_predict.py"
    script.write_text(SLOW_PREDICT.format(script=str(ROOT / "predict.py")), encoding="utf-8")
    command = [sys.executable, "-m", "paddle.distributed.launch", "--log_dir", str(log_dir), *launcher, str(script),
               "--device", "cpu", *map(str, options)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                               env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    return process, log_dir


def test_two_machines_label_the_same_file_as_one_process(trained, big_data, single_process_output, tmp_path):
    output = tmp_path / "output.txt"
    options = ["--dataset_dir", big_data, "--params_path", trained[0], "--output_file", output]
    master = f"127.0.0.1:{free_port()}"
    nodes = [launch(tmp_path, f"node{rank}", ["--nnodes", "2", "--nproc_per_node", "1", "--master", master,
                                               "--rank", str(rank)], options) for rank in (0, 1)]
    logs = [finish_launch(*node) for node in nodes]
    assert output.read_text(encoding="utf-8") == single_process_output
    assert "Rank 0 of 2: 1 of 2 parts" in logs[0]["workerlog.0"] and "Joined 2 parts" in logs[0]["workerlog.0"]
    assert "Rank 1 of 2: 1 of 2 parts" in logs[1]["workerlog.0"] and "Joined" not in logs[1]["workerlog.0"]
    assert "Read data.txt: 298 examples, 2 blank lines kept as empty rows" in logs[1]["workerlog.0"]  # lines 301-600


def test_a_killed_rank_leaves_no_half_part_and_the_resumed_launch_writes_the_same_file(
        trained, big_data, single_process_output, tmp_path):
    output = tmp_path / "output.txt"
    options = ["--dataset_dir", big_data, "--params_path", trained[0], "--output_file", output, "--resume",
               "--part_lines", "50"]
    process, log_dir = launch(tmp_path, "killed", ["--nproc_per_node", "2"], options, env={"PART_SECONDS": "0.4"})
    parts_dir = tmp_path / "output.txt.parts"
    deadline = time.time() + 120
    while not (parts_dir / "part-00003.json").is_file() and time.time() < deadline:  # rank 1's second part
        time.sleep(0.02)
    workers = [p for p in psutil.Process(process.pid).children(recursive=True)
               if p.environ().get("PADDLE_TRAINER_ID") == "1" and "slow_predict.py" in " ".join(p.cmdline())]
    assert len(workers) == 1, "rank 1 not found"
    workers[0].send_signal(signal.SIGKILL)  # while its third part (5) is written but not yet renamed
    finish_launch(process, log_dir, expect_ok=False)
    assert (parts_dir / "part-00005.partial").is_file() and not (parts_dir / "part-00005.txt").exists()
    assert not output.exists()

    process, log_dir = launch(tmp_path, "resumed", ["--nproc_per_node", "2"], options)
    logs = finish_launch(process, log_dir)
    assert output.read_text(encoding="utf-8") == single_process_output
    assert "Part 3: lines 151-200 already labelled, kept (--resume)" in logs["workerlog.1"]
    assert "Part 5: lines 251-300 labelled" in logs["workerlog.1"]


MEMORY_RUN = """
import resource, sys
import numpy as np
from paddlenlp.transformers import AutoTokenizer
from decision import Decision
from labelling import Labeller, label_file
from pipeline import TextPipeline

class BagOfIds:  # a real runner: logits from a fixed projection of the token ids
    def __init__(self, vocab_size, labels):
        self.weights = np.random.default_rng(0).normal(size=(vocab_size, labels)).astype("float32")
    def run(self, feed):
        return self.weights[feed["input_ids"]].mean(axis=1)

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
pipeline = TextPipeline(tokenizer, ("input_ids", "token_type_ids"), 128, 256)
labeller = Labeller(pipeline, BagOfIds(len(tokenizer), 5), Decision(np.full(5, 0.5, dtype="float32")), list("abcde"))
for data, output in zip(sys.argv[2::2], sys.argv[3::2]):  # the peak so far, after each file
    label_file(labeller, data, output, 256, options={})
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_memory_stays_flat_on_a_million_lines(scratch_model, tmp_path):
    words = ["足球", "股票", "芯片", "电影", "学校", "的", "了", "比赛"]
    rng = random.Random(0)
    big = tmp_path / "million.txt"
    with open(big, "w", encoding="utf-8") as handle:
        for _ in range(1_000_000):
            handle.write("".join(rng.choices(words, k=2)) + "\n")
    small = tmp_path / "ten_thousand.txt"
    small.write_text("".join(big.open(encoding="utf-8").readlines()[:10_000]), encoding="utf-8")
    result = subprocess.run([sys.executable, "-c", MEMORY_RUN, str(scratch_model), str(small), str(tmp_path / "small.txt"),
                             str(big), str(tmp_path / "big.txt")], capture_output=True, text=True, cwd=ROOT,
                            timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    small_peak, big_peak = map(int, result.stdout.split()[-2:])
    print(f"peak RSS: {small_peak} MB after 10,000 lines, {big_peak} MB after 1,000,000 more")
    assert sum(1 for _ in open(tmp_path / "big.txt", encoding="utf-8")) == 1_000_001
    assert big_peak < 2048 and big_peak - small_peak < 100
