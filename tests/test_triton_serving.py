"""deploy/triton_serving: the generated repository served by a real tritonserver on 127.0.0.1."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import LABELS, ROOT, WINDOW, offline_predictions, predict_py_labels, run_main, run_script

pytestmark = pytest.mark.slow
TRITON = ROOT / "deploy/triton_serving"


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(name, TRITON / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@contextlib.contextmanager
def running_triton(export_dir: Path, root: Path, *build_options):
    """build_repo.py (python platform) on an export, then tritonserver on ephemeral ports."""
    result = run_main("deploy/triton_serving/build_repo.py", "--export_dir", export_dir, "--output_dir",
                      root / "models", "--platform", "python", "--max_batch_size", "64", *build_options)
    assert result.returncode == 0, result.stderr[-2000:]
    run_server = load_module("run_server")
    server = run_server.prepare_server(root / "work")
    http_port, grpc_port = free_ports(2)
    log = root / "server.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(run_server.server_command(server, root / "models", "127.0.0.1", http_port,
                                                             grpc_port),
                                   env=run_server.server_environment(), stdout=log_file, stderr=subprocess.STDOUT)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        try:
            if client.is_server_ready():
                break
        except Exception:  # not listening yet
            pass
        time.sleep(1)
    assert process.poll() is None and client.is_server_ready(), log.read_text()[-4000:]
    try:
        yield {"http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}", "export": export_dir,
               "repo": root / "models", "log": log}
    finally:
        process.terminate()
        try:  # the server waits 30 s (its exit timeout) for the python backend stubs; nothing is in flight here
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def triton(exported, tmp_path_factory):
    with running_triton(exported[0], tmp_path_factory.mktemp("triton")) as server:
        yield server


def offline(export_dir, texts: list[str]) -> tuple[list[str], np.ndarray]:
    """The offline answer in Triton's form: comma-joined names per text, and probabilities."""
    names, probs = offline_predictions(export_dir, texts)
    return [",".join(row) for row in names], probs


def dev_texts(keyword_data) -> list[str]:
    return [line.split("\t")[0] for line in (keyword_data / "dev.txt").read_text(encoding="utf-8").splitlines()]


def test_every_row_of_a_batch_is_labelled_like_the_offline_predictor(triton, keyword_data):
    runner = load_module("seqcls_grpc_client").SyncTritonRunner(triton["grpc"], "seqcls")
    texts = ["的了在是", *dev_texts(keyword_data)[:62], ""]  # first row has no label; 64 = max_batch_size
    labels, confidences = runner.run(texts)
    expected_labels, expected_probs = offline(triton["export"], texts)
    assert labels == expected_labels
    assert labels[0] == "" and sum(bool(label) for label in labels[1:]) > 50
    expected_confidences = [[expected_probs[i][LABELS.index(name)] for name in filter(None, row.split(","))]
                            for i, row in enumerate(expected_labels)]
    assert [len(row) for row in confidences] == [len(row) for row in expected_confidences]
    assert all(abs(a - b) < 1e-4 for row, other in zip(confidences, expected_confidences) for a, b in zip(row, other))


def test_outputs_keep_the_reference_fields_and_add_names_and_probabilities(triton, keyword_data):
    """A reference client sends one text and reads `label` as ids and `confidence` as their probabilities."""
    client = httpclient.InferenceServerClient(triton["http"])
    texts = ["足球比赛股票", "学校考试老师", "的了在是"]
    data = np.array([[text.encode()] for text in texts], dtype=np.object_)
    infer_input = httpclient.InferInput("INPUT", list(data.shape), "BYTES")
    infer_input.set_data_from_numpy(data)
    result = client.infer("seqcls", [infer_input])
    names, probs = offline_predictions(triton["export"], texts)
    label, confidence = result.as_numpy("label"), result.as_numpy("confidence")
    assert label.dtype == np.int64 and label.shape == (3, 2)  # padded to the longest row with -1
    assert label.tolist() == [[LABELS.index("体育"), LABELS.index("财经")], [LABELS.index("教育"), -1], [-1, -1]]
    assert np.allclose(confidence, [[probs[0][0], probs[0][1]], [probs[1][4], 0], [0, 0]], atol=1e-5)
    assert [row[0].decode() for row in result.as_numpy("label_names")] == [",".join(row) for row in names]
    assert np.abs(result.as_numpy("probs") - probs).max() < 1e-4
    infer_input = httpclient.InferInput("INPUT", [1, 1], "BYTES")  # the reference's one-text request
    infer_input.set_data_from_numpy(data[1:2])
    one = client.infer("seqcls", [infer_input], outputs=[httpclient.InferRequestedOutput("label")])
    assert one.as_numpy("label").tolist() == [[LABELS.index("教育")]]


def test_http_client_and_malformed_requests(triton):
    client = httpclient.InferenceServerClient(triton["http"])

    def request(name: str, data: np.ndarray, datatype: str):
        infer_input = httpclient.InferInput(name, list(data.shape), datatype)
        infer_input.set_data_from_numpy(data)
        return client.infer("seqcls", [infer_input])

    good = np.array([["学校考试".encode()], ["足球比赛股票".encode()]], dtype=np.object_)
    for name, data, datatype, reason in (
            ("TEXT", good, "BYTES", "unexpected inference input 'TEXT'"),
            ("INPUT", np.ones((1, 1), dtype=np.int64), "INT64", "data-type is 'INT64', but model 'seqcls' expects"),
            ("INPUT", np.array([[b"a"]] * 65, dtype=np.object_), "BYTES", "batch-size must be <= 64")):
        with pytest.raises(InferenceServerException, match=reason):
            request(name, data, datatype)
        labels = [row[0].decode() for row in request("INPUT", good, "BYTES").as_numpy("label_names")]
        assert labels == ["教育", "体育,财经"]


@pytest.mark.parametrize("script, protocol", [("seqcls_grpc_client.py", "grpc"), ("seqcls_http_client.py", "http")])
def test_clients_print_label_names(triton, keyword_data, tmp_path, script, protocol):
    texts = dev_texts(keyword_data)[:40]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    result = run_script(f"deploy/triton_serving/{script}", "--url", triton[protocol], "--input_file",
                        tmp_path / "texts.txt", "--batch_size", "16")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = [line[len("label: "):] for line in result.stdout.splitlines() if line.startswith("label: ")]
    assert printed == offline(triton["export"], texts)[0]


def test_client_reports_a_server_that_is_not_there():
    (port,) = free_ports(1)
    result = run_script("deploy/triton_serving/seqcls_http_client.py", "--url", f"127.0.0.1:{port}")
    assert result.returncode == 1 and result.stderr.startswith("error: ")
    result = run_script("deploy/triton_serving/seqcls_http_client.py", "--url", f"127.0.0.1:{port}", "--wait", "2")
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "waited 2 s" in result.stderr


def test_onnxruntime_platform_repository_matches_the_export(exported, tmp_path):
    export_dir, _ = exported
    result = run_main("deploy/triton_serving/build_repo.py", "--export_dir", export_dir, "--output_dir",
                      tmp_path / "models", "--device", "gpu")
    assert result.returncode == 0, result.stderr[-2000:]
    model = (tmp_path / "models/seqcls_model/config.pbtxt").read_text(encoding="utf-8")
    assert 'platform: "onnxruntime_onnx"' in model and "kind: KIND_GPU" in model
    assert '{ name: "logits" data_type: TYPE_FP32 dims: [ 5 ] }' in model
    assert sorted(p.name for p in (tmp_path / "models/seqcls_model/1").iterdir()) == ["model.onnx"]
    labels = json.loads((tmp_path / "models/seqcls_postprocess/1/labels.json").read_text(encoding="utf-8"))
    assert labels["labels"] == LABELS and len(labels["thresholds"]) == 5
    assert (tmp_path / "models/tokenizer/1/tokenizer/vocab.txt").is_file()
    assert (tmp_path / "models/seqcls/1").is_dir()


def test_build_repo_refuses_a_directory_without_export(tmp_path):
    result = run_main("deploy/triton_serving/build_repo.py", "--export_dir", tmp_path, "--output_dir",
                      tmp_path / "models")
    assert result.returncode == 2
    assert f"{tmp_path} holds no exported model (*.pdiparams); run export_model.py first" in result.stderr


def test_build_repo_replaces_only_what_it_built(exported, tmp_path):
    export_dir, _ = exported
    repo = tmp_path / "models"
    assert run_main("deploy/triton_serving/build_repo.py", "--export_dir", export_dir, "--output_dir", repo,
                    "--platform", "python").returncode == 0
    assert (repo / ".build_repo").is_file()
    result = run_main("deploy/triton_serving/build_repo.py", "--export_dir", export_dir, "--output_dir", repo,
                      "--platform", "python")
    assert result.returncode == 0, result.stderr[-2000:]  # its own repository is rebuilt
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep me", encoding="utf-8")
    result = run_main("deploy/triton_serving/build_repo.py", "--export_dir", export_dir, "--output_dir", users)
    assert result.returncode == 2
    assert f"--output_dir {users}" in result.stderr and "not built by build_repo.py" in result.stderr
    assert (users / "notes.txt").read_text(encoding="utf-8") == "keep me"
    for target in (export_dir, export_dir.parent):
        result = run_main("deploy/triton_serving/build_repo.py", "--export_dir", export_dir, "--output_dir", target)
        assert result.returncode == 2 and f"--output_dir {target} holds the export" in result.stderr
    assert (export_dir / "model.onnx").is_file()


def test_documents_read_in_windows_are_labelled_like_predict_py(window_exported, window_checkpoint, documents,
                                                               tmp_path_factory, tmp_path):
    """The tokenizer model sends every window with its text's index; the postprocess pools them per text."""
    expected = predict_py_labels(window_checkpoint[0], documents, "test.txt", tmp_path / "predict.txt",
                                 "--max_seq_length", WINDOW)
    texts = [line.split("\t")[0] for line in (documents / "test.txt").read_text(encoding="utf-8").splitlines()]
    with running_triton(window_exported, tmp_path_factory.mktemp("window_triton"), "--max_seq_length",
                        WINDOW) as server:
        runner = load_module("seqcls_grpc_client").SyncTritonRunner(server["grpc"], "seqcls")
        labels, _ = runner.run(texts[:40])  # 40 documents, 200 windows: more rows than max_batch_size texts
        assert labels == [",".join(names) for names in expected[:40]]
        assert sum(bool(label) for label in labels) > 30
