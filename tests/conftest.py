"""Shared fixtures: generated keyword data, a tiny scratch model and one trained checkpoint.

Under pytest-xdist (`make test`) each model fixture is built by the first worker that needs it and
read by the others (`built_once`); data sets are cheap and made per worker.

The data is made here so the suite runs on any fresh clone: each label has its own keywords, so a
model that learns at all must reach a high F1 on it. Scripts run in this process through their
`main(argv)` (`run_main`); `run_script` starts a new interpreter only where the process boundary
is what a test checks (exit status and message of a real command, distributed launch, servers).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import pickle
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import paddle
import pytest
from filelock import FileLock

from backends import create_backend
from exporting import load_export, load_export_tokenizer
from pipeline import TextPipeline, blank_texts
from utils import DataError, logger

ROOT = Path(__file__).resolve().parents[1]

# xdist's workers share the cores as a launch's processes do, so each takes its share of Paddle's CPU threads
# (utils.cpu_threads_per_process), as do the scripts the tests start: when other work shares the machine, three
# workers of two threads each on two cores spend much of their time waiting for each other's threads
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("PADDLE_LOCAL_SIZE", os.environ["PYTEST_XDIST_WORKER_COUNT"])

LABELS = ["体育", "财经", "科技", "娱乐", "教育"]
KEYWORDS = {
    "体育": ["足球", "篮球", "比赛", "冠军"],
    "财经": ["股票", "银行", "利率", "基金"],
    "科技": ["芯片", "手机", "软件", "电脑"],
    "娱乐": ["电影", "明星", "综艺", "歌手"],
    "教育": ["学校", "考试", "老师", "学生"],
}
FILLER = "的了在是我有和就不人都一个上也很到说要去你会着没有看好自己这那里天年月日今明后前中"


def in_a_venv(path: Path) -> bool:
    """Whether a file of the checkout belongs to a virtual environment: .venv, or an annotation tool's
    .venv-doccano / .venv-labelstudio (`make test-live`), whose packages are not the suite's."""
    return any(part.startswith(".venv") for part in path.relative_to(ROOT).parts)


def keyword_lines(n: int, seed: int) -> list[str]:
    """`text<TAB>labels` lines whose labels follow from keywords; ~5% carry no label."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        k = 0 if rng.random() < 0.05 else rng.choice([1, 1, 2, 2, 3])
        labels = sorted(rng.sample(LABELS, k), key=LABELS.index)
        parts = [rng.choice(KEYWORDS[label]) for label in labels]
        parts += ["".join(rng.choices(FILLER, k=rng.randint(2, 5))) for _ in range(rng.randint(1, 3))]
        rng.shuffle(parts)
        text = "".join(parts)
        lines.append(f"{text}\t{','.join(labels)}" if labels else text)
    return lines


def make_keyword_dataset(path: Path, n_train: int = 800, n_dev: int = 100, seed: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "label.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    for name, n, offset in (("train.txt", n_train, 0), ("dev.txt", n_dev, 1), ("test.txt", n_dev, 2)):
        (path / name).write_text("\n".join(keyword_lines(n, seed * 10 + offset)) + "\n", encoding="utf-8")
    dev_texts = [line.split("\t")[0] for line in keyword_lines(n_dev, seed * 10 + 2)]
    (path / "data.txt").write_text("\n".join(dev_texts) + "\n", encoding="utf-8")
    return path


# few-shot/: a label.txt out of order and partly with words, so tests see the `==` syntax and the model's sorted order
LABEL_LINES = ["科技", "体育==运动", "财经==金融", "娱乐==明星", "教育"]
# few-shot/train.py's options in the tests: a short run at the tiny model's learning rates, no dropout
PROMPT_TRAIN_ARGS = ["--device", "cpu", "--max_seq_length", "64", "--learning_rate", "1e-3", "--ppt_learning_rate", "1e-2",
                     "--per_device_train_batch_size", "16", "--warmup_steps", "20", "--dropout", "0", "--logging_steps", "10"]


def few_shot_data(keyword_data: Path, target: Path, files=("train.txt", "dev.txt", "test.txt", "data.txt")) -> Path:
    """The keyword data in few-shot/'s layout: the same texts, label.txt with label words."""
    target.mkdir(parents=True)
    for name in files:
        shutil.copy(keyword_data / name, target / name)
    (target / "label.txt").write_text("\n".join(LABEL_LINES) + "\n", encoding="utf-8")
    return target


def run_script(script: str, *args, env: dict | None = None, cwd: Path | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
    """Run one of the project's scripts as a user would; returns the finished process."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout)


@dataclass
class Completed:
    """What a script run in-process left behind, shaped like subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str  # everything it logged and wrote to stderr


_SCRIPTS: dict[str, object] = {}


def load_script(script: str):
    """A script of the project as a module, loaded once; scripts in sub-directories get a module name of
    their own (few-shot/train.py and train.py, two infer.py) and find their neighbours through the
    pytest pythonpath, as they do when run."""
    if script not in _SCRIPTS:
        if "/" not in script:
            _SCRIPTS[script] = importlib.import_module(script.removesuffix(".py"))
        else:
            name = script.removesuffix(".py").replace("/", "__").replace("-", "_")
            spec = importlib.util.spec_from_file_location(name, ROOT / script)
            module = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
            spec.loader.exec_module(module)
            _SCRIPTS[script] = module
    return _SCRIPTS[script]


def run_main(script: str, *args, cwd: Path | None = None) -> Completed:
    """Run `python <script> args` in this process through the script's main(argv).

    The log goes where the process's stderr goes, formatted as on the console; a DataError becomes
    exit status 2 with its message logged (what run_cli does); argparse's exits keep their status;
    any other exception fails the test with its traceback.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    console = [h for h in logger.logger.handlers
               if isinstance(h, logging.StreamHandler) and h.stream in (sys.stderr, sys.__stderr__)]
    streams = [handler.setStream(stderr) for handler in console]
    returncode = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
                contextlib.chdir(cwd or ROOT):
            try:
                load_script(script).main([str(arg) for arg in args])
            except DataError as err:
                logger.error(str(err))
                returncode = 2
            except SystemExit as exit_:
                returncode = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        for handler, stream in zip(console, streams):
            handler.setStream(stream)
    return Completed(returncode, stdout.getvalue(), stderr.getvalue())


# Fixtures that train a model (directly or through one of these): every test that uses one is marked
# `slow` by pytest_collection_modifyitems, so `pytest -m "not slow"` runs without training. Tests
# that train or start a server themselves carry the marker in their module.
TRAINING_FIXTURES = {"trained", "ernie_m_trained", "window_checkpoint", "truncate_checkpoint", "prompt_run",
                     "uninterrupted", "two_process_run", "saved_run", "many_labels"}


# The test modules that take longest from start to end (processes, servers, waits), longest first, as
# measured. `make test` hands whole modules to xdist's workers in collection order (--no-loadscope-reorder):
# started first, none of them is left running on one worker after the others have finished.
LONGEST_FIRST = ["test_retrieval.py", "test_labelling.py", "test_resume.py", "test_milvus_server.py",
                 "test_simple_serving.py", "test_long_text.py", "test_decision_consumers.py", "test_distill.py",
                 "test_index_damage.py", "test_triton_serving.py", "test_export.py", "test_few_shot.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TRAINING_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # LONGEST_FIRST's modules in its order, then the others by their number of tests (xdist's own order);
    # the sort is stable, so a module's tests keep their order
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    test_counts = Counter(item.path.name for item in items)
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -test_counts[item.path.name]))


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]):
    """`build(directory)`'s value, built once per test run: under pytest-xdist the first worker that asks
    builds it in the workers' common temporary directory, under a file lock, and the others wait for it
    and read its pickled value. A build that failed leaves no record, so the next worker tries again."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent
    directory, record = root / f"built_{name}", root / f"built_{name}.pickle"
    with FileLock(f"{record}.lock"):
        if record.is_file():
            return pickle.loads(record.read_bytes())
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
        value = build(directory)
        record.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session")
def keyword_data(tmp_path_factory) -> Path:
    return make_keyword_dataset(tmp_path_factory.mktemp("keyword_data"))


@pytest.fixture(scope="session")
def scratch_model(keyword_data, tmp_path_factory) -> Path:
    def build(directory: Path) -> Path:
        result = run_main("scratch_model.py", "--dataset_dir", keyword_data, "--output_dir", directory / "model")
        assert result.returncode == 0, result.stderr
        return directory / "model"

    return built_once(tmp_path_factory, "scratch", build)


# The tiny preset's recipe (README): batch 16, lr 1e-3, linear warmup then decay.
RECIPE = ["--batch_size", "16", "--learning_rate", "1e-3", "--warmup", "--warmup_steps", "20"]


@pytest.fixture(scope="session")
def trained(keyword_data, scratch_model, tmp_path_factory):
    """One real training run of the tiny recipe; its checkpoint and log serve several tests."""
    def build(directory: Path) -> tuple[Path, str]:
        result = run_main("train.py", "--device", "cpu", "--dataset_dir", keyword_data, "--model_name", scratch_model,
                          "--save_dir", directory / "checkpoint", "--epochs", "8", "--logging_steps", "5",
                          "--tune_thresholds", *RECIPE)
        assert result.returncode == 0, result.stderr[-3000:]
        return directory / "checkpoint", result.stderr

    return built_once(tmp_path_factory, "trained", build)


@pytest.fixture(scope="session")
def ernie_m_scratch(keyword_data, tmp_path_factory) -> Path:
    """An untrained ERNIE-M-style model (SentencePiece, no token_type_ids): its tokenizer is all some
    tests need."""
    def build(directory: Path) -> Path:
        result = run_main("scratch_model.py", "--dataset_dir", keyword_data, "--output_dir", directory / "model",
                          "--model_type", "ernie-m")
        assert result.returncode == 0, result.stderr[-2000:]
        return directory / "model"

    return built_once(tmp_path_factory, "ernie_m_scratch", build)


@pytest.fixture(scope="session")
def ernie_m_trained(keyword_data, ernie_m_scratch, tmp_path_factory) -> Path:
    """The ERNIE-M-style model after one epoch."""
    def build(directory: Path) -> Path:
        result = run_main("train.py", "--device", "cpu", "--dataset_dir", keyword_data, "--model_name",
                          ernie_m_scratch, "--save_dir", directory / "checkpoint", "--epochs", "1", "--batch_size", "32",
                          "--learning_rate", "1e-3")
        assert result.returncode == 0, result.stderr[-2000:]
        assert "macro f1 score" in result.stderr
        return directory / "checkpoint"

    return built_once(tmp_path_factory, "ernie_m", build)


@pytest.fixture(scope="session")
def exported(trained, keyword_data, tmp_path_factory) -> tuple[Path, str]:
    """export_model.py on the trained checkpoint, with the dev file for the parity check."""
    def build(directory: Path) -> tuple[Path, str]:
        result = run_main("export_model.py", "--params_path", trained[0], "--output_path", directory / "export",
                          "--dataset_dir", keyword_data)
        assert result.returncode == 0, result.stderr[-3000:]
        return directory / "export", result.stderr

    return built_once(tmp_path_factory, "export", build)


def crash_at_optimizer_step(monkeypatch, step: int) -> None:
    """Make the step-th optimizer step of the next run raise, as a pre-empted process would stop."""
    original, calls = paddle.optimizer.AdamW.step, [0]

    def step_or_crash(self):
        calls[0] += 1
        if calls[0] == step:
            raise KeyboardInterrupt("simulated pre-emption")
        return original(self)

    monkeypatch.setattr(paddle.optimizer.AdamW, "step", step_or_crash)


def finish_launch(process, log_dir: Path, expect_ok: bool = True) -> dict[str, str]:
    """Wait for a `paddle.distributed.launch` started with --log_dir; its worker logs by name, and on an
    unexpected exit status the end of each in the failure message."""
    output, _ = process.communicate(timeout=300)
    logs = {p.name: p.read_text(errors="replace") for p in log_dir.glob("workerlog.*")}
    tails = "\n".join(f"--- {n} (end)\n{t[-1500:]}" for n, t in sorted(logs.items()))
    assert (process.returncode == 0) == expect_ok, output[-1500:] + tails
    return logs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_simple_server(module: str, export_dir: Path, log: Path, directory: str = "deploy/simple_serving",
                          route: str = "models/cls_multi_label"):
    """`paddlenlp server <module>:app`, run in `directory`, on an ephemeral port and on the CPU, serving
    `export_dir`; yields the URL of its `route`."""
    port = free_port()
    env = {**os.environ, "EXPORT_DIR": str(export_dir), "DEVICE": "cpu", "PYTHONWARNINGS": "ignore"}
    with open(log, "w") as log_file:
        process = subprocess.Popen([str(Path(sys.executable).parent / "paddlenlp"), "server", f"{module}:app",
                                    "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT / directory, env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    assert process.poll() is None, log.read_text()[-3000:]
    try:
        yield f"http://127.0.0.1:{port}/{route}"
    finally:
        process.terminate()
        process.wait(timeout=30)


# ------------------------------------------------------------------ long documents (--long_text window)

WINDOW = 24  # --max_seq_length of these tests: 22 text tokens per window
DOCUMENT = 60  # characters (= tokens) per document


def document_lines(count: int, seed: int, late: bool = False) -> list[str]:
    """`text<TAB>labels` documents of filler with one or two label keywords; with `late` a single
    keyword that starts after the first window's 22 tokens, so truncation never sees it."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        labels = sorted(rng.sample(LABELS, 1 if late else rng.choice([1, 2])), key=LABELS.index)
        text = list(rng.choices(FILLER, k=DOCUMENT))
        for label in labels:
            start = rng.randint(30, DOCUMENT - 2) if late else rng.randint(0, DOCUMENT - 2)
            text[start:start + 2] = rng.choice(KEYWORDS[label])
        lines.append(f"{''.join(text)}\t{','.join(labels)}")
    return lines


@pytest.fixture(scope="session")
def documents(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("documents")
    (path / "label.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    for name, lines in (("train.txt", document_lines(400, 1)), ("dev.txt", document_lines(60, 2)),
                        ("test.txt", document_lines(60, 3, late=True))):
        (path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train_on_documents(documents: Path, scratch_model: Path, save_dir: Path, *long_text: str) -> str:
    result = run_main("train.py", "--device", "cpu", "--dataset_dir", documents, "--model_name", scratch_model,
                      "--save_dir", save_dir, "--epochs", "5", "--max_seq_length", WINDOW, "--logging_steps", "50",
                      *RECIPE, *long_text)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


@pytest.fixture(scope="session")
def window_checkpoint(documents, scratch_model, tmp_path_factory) -> tuple[Path, str]:
    def build(directory: Path) -> tuple[Path, str]:
        return directory / "checkpoint", train_on_documents(documents, scratch_model, directory / "checkpoint",
                                                            "--long_text", "window")

    return built_once(tmp_path_factory, "window", build)


@pytest.fixture(scope="session")
def window_exported(window_checkpoint, documents, tmp_path_factory) -> Path:
    """export_model.py on the windowed checkpoint: the export reads documents in windows too."""
    def build(directory: Path) -> Path:
        result = run_main("export_model.py", "--params_path", window_checkpoint[0], "--output_path",
                          directory / "export", "--dataset_dir", documents, "--max_seq_length", WINDOW)
        assert result.returncode == 0, result.stderr[-3000:]
        return directory / "export"

    return built_once(tmp_path_factory, "window_export", build)



def offline_predictions(export_dir: Path, texts: list[str], max_seq_length: int = 128):
    """deploy/predictor's answer for these texts (ONNX Runtime FP32, exported decision, long texts read
    as the export says, blank texts without labels): the servers must give the same. Returns (label
    names per text, probabilities; 0 for a blank text)."""
    export = load_export(export_dir / "float32")
    pipeline = TextPipeline(load_export_tokenizer(export), export.input_names, max_seq_length,
                            long_text=export.long_text)
    probs = pipeline.probs(create_backend(export, "onnxruntime", "fp32"), texts, export.decision)
    blank = np.asarray(blank_texts(texts), dtype=bool)
    return [[] if is_blank else names for names, is_blank in zip(chosen_names(export, probs), blank)], \
        np.where(blank[:, None], 0.0, probs)


def chosen_names(export, probs) -> list[list[str]]:
    """The names of the labels the export's decision gives each text."""
    return [[export.labels[i] for i in ids] for ids in export.decision.label_ids(probs)]


def predict_py_labels(checkpoint: Path, dataset: Path, data_file: str, output: Path, *options) -> list[list[str]]:
    """predict.py's label names per line of `data_file` (the answer every server must repeat)."""
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", dataset, "--data_file", data_file,
                      "--params_path", checkpoint, "--output_file", output, *options)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in output.read_text(encoding="utf-8").splitlines()[1:]]
    return [row[1].split(", ") if row[1] else [] for row in rows]


# ------------------------------------------------------------------ index engines: hnswlib, Milvus Lite, Milvus server

# Every test of the retrieval index runs on the three engines a user can pick; the server's runs are slow.
ENGINES = ["hnswlib", "milvus_lite", pytest.param("milvus_server", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    """A Milvus standalone server (tests/milvus_server.py) for the tests of one module, with authentication
    on, so every server test also signs in; stopped when the module's tests end, also when they failed (an
    idle server keeps taking CPU time from the other workers' tests)."""
    from milvus_server import MilvusStandalone

    server = MilvusStandalone(tmp_path_factory.mktemp("milvus_server"), authorization=True)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class IndexStore:
    """Where a test keeps its index: `args` are the scripts' options for it, `open(info)` opens it
    (again) in this process."""

    engine: str
    args: list
    open: Callable


@pytest.fixture(params=ENGINES)
def index_store(request, tmp_path) -> IndexStore:
    """An empty index of each engine: an hnswlib directory, a Milvus Lite file, or a collection of its
    own on the session's server (dropped afterwards)."""
    from vector_index import MILVUS_COLLECTION, HnswIndex, MilvusCredentials, MilvusIndex

    from milvus_server import ROOT_TOKEN

    engine = request.param
    if engine == "hnswlib":
        yield IndexStore(engine, ["--index_path", tmp_path / "hnsw"], lambda info: HnswIndex(tmp_path / "hnsw", info))
    elif engine == "milvus_lite":
        path = str(tmp_path / "m.db")
        yield IndexStore(engine, ["--milvus_uri", path],
                         lambda info: MilvusIndex(path, info, MILVUS_COLLECTION))
    else:
        uri, collection = request.getfixturevalue("milvus_server").uri, f"test_{os.urandom(8).hex()}"
        credentials = MilvusCredentials(token=ROOT_TOKEN)
        yield IndexStore(engine, ["--milvus_uri", uri, "--collection_name", collection, "--milvus_token", ROOT_TOKEN],
                         lambda info: MilvusIndex(uri, info, collection, credentials=credentials))
        from pymilvus import MilvusClient

        client = MilvusClient(uri, token=ROOT_TOKEN)
        client.drop_collection(collection)
        client.close()
