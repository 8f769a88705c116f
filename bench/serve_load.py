"""Load test of the two servers that run here: SimpleServing and Triton, on loopback.

Usage: python bench/serve_load.py [--export_dir bench/out/infer/trained_export_0] [--clients 8 --requests 200]

Each server is started by this script on 127.0.0.1, then --clients threads each send --requests
requests of one dev text (cycling through dev.txt), as fast as answers come back. Every answer is
compared with the offline predictor's labels for the same text (ONNX Runtime FP32, exported
thresholds). Reported: throughput, p50/p95 latency, errors (exceptions or non-200) and
mismatches; a request that never returns counts as an error. Between the load runs a few malformed
requests are sent, and the load afterwards shows whether the server survived them.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from benchtools import ROOT, free_port, load_script, markdown_table, save_result

from backends import create_backend
from data_io import load_examples
from exporting import export_prefix_in, load_export, load_export_tokenizer
from http_json import post
from pipeline import TextPipeline

run_server = load_script("deploy/triton_serving/run_server.py")

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--export_dir", default=str(ROOT / "bench/out/infer/trained_export_0"))
parser.add_argument("--dataset_dir", required=True, help="The divorce dataset directory (README 2.3).")
parser.add_argument("--clients", type=int, default=8)
parser.add_argument("--requests", type=int, default=200, help="requests per client")


def wait_until(ready, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            if ready():
                return
        except Exception:  # not listening yet
            pass
        time.sleep(1)
    raise RuntimeError("server did not become ready")


class SimpleServingTarget:
    name = "SimpleServing (paddlenlp server, Paddle Inference FP32)"

    def __init__(self, export_dir: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/models/cls_multi_label"
        env = {**os.environ, "EXPORT_DIR": str(export_dir.resolve()), "DEVICE": "cpu", "PYTHONWARNINGS": "ignore"}
        self.process = subprocess.Popen([str(Path(sys.executable).parent / "paddlenlp"), "server", "server:app",
                                         "--host", "127.0.0.1", "--port", str(self.port)],
                                        cwd=ROOT / "deploy/simple_serving", env=env, stdout=log.open("w"),
                                        stderr=subprocess.STDOUT)
        wait_until(lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close() or True,
                   self.process)

    def client(self):
        return self

    def labels(self, text: str) -> list[str] | None:
        status, answer = post(self.url, {"data": {"text": [text]}})
        return answer["result"]["label_names"][0] if status == 200 else None

    def malformed(self) -> list[int]:
        bodies = [b"not json", {"data": {"text": [1]}}, {"data": {"text": []}}, {"data": {"text": ["a"] * 10000}}]
        return [post(self.url, body)[0] for body in bodies]


class TritonTarget:
    name = "Triton (python backend: tokenizer → ONNX Runtime FP32 → postprocess)"

    def __init__(self, export_dir: Path, log: Path, work: Path):
        subprocess.run([sys.executable, str(ROOT / "deploy/triton_serving/build_repo.py"), "--export_dir",
                        str(export_dir), "--output_dir", str(work / "models"), "--platform", "python"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = run_server.prepare_server(work / "server")
        self.http_port, grpc_port = free_port(), free_port()
        self.process = subprocess.Popen(
            run_server.server_command(server, work / "models", "127.0.0.1", self.http_port, grpc_port),
            env=run_server.server_environment(), stdout=log.open("w"), stderr=subprocess.STDOUT)
        wait_until(lambda: self.client().client.is_server_ready(), self.process)

    def client(self):
        return TritonClient(f"127.0.0.1:{self.http_port}")

    def malformed(self) -> list[int]:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{self.http_port}")
        codes = []
        for name, data, kind in (("TEXT", np.array([[b"a"]], dtype=object), "BYTES"),
                                 ("INPUT", np.ones((1, 1), dtype=np.int64), "INT64"),
                                 ("INPUT", np.array([[b"a"]] * 65, dtype=object), "BYTES")):
            infer_input = httpclient.InferInput(name, list(data.shape), kind)
            infer_input.set_data_from_numpy(data)
            try:
                client.infer("seqcls", [infer_input])
                codes.append(200)
            except Exception as err:
                codes.append(int(getattr(err, "status", lambda: 0)() or 0))
        return codes


class TritonClient:
    """One connection per load thread (tritonclient's HTTP client is not shared across threads)."""

    def __init__(self, url: str):
        self.client = httpclient.InferenceServerClient(url)

    def labels(self, text: str) -> list[str] | None:
        infer_input = httpclient.InferInput("INPUT", [1, 1], "BYTES")
        infer_input.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=object))
        label = self.client.infer("seqcls", [infer_input]).as_numpy("label_names")[0][0].decode("utf-8")
        return label.split(",") if label else []


def load(target, texts: list[str], expected: list[list[str]], clients: int, requests: int) -> dict:
    latencies, errors, mismatches = [], [0], [0]
    lock = threading.Lock()

    def worker(offset: int) -> None:
        client = target.client()
        for i in range(requests):
            index = (offset * requests + i) % len(texts)
            start = time.perf_counter()
            try:
                labels = client.labels(texts[index])
            except Exception:
                labels = None
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if labels is None:
                    errors[0] += 1
                elif labels != expected[index]:
                    mismatches[0] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = time.perf_counter() - start
    sent = clients * requests
    return {"sent": sent, "answered": len(latencies), "seconds": total, "throughput": sent / total,
            "p50": 1000 * np.percentile(latencies, 50), "p95": 1000 * np.percentile(latencies, 95),
            "errors": errors[0] + sent - len(latencies), "mismatches": mismatches[0]}


def main() -> None:
    args = parser.parse_args()
    export = load_export(export_prefix_in(args.export_dir))
    texts = [e.text for e in load_examples(Path(args.dataset_dir) / "dev.txt", export.labels)]
    probs = TextPipeline(load_export_tokenizer(export), export.input_names).probs(create_backend(export, "onnxruntime", "fp32"),
                                                                      texts)
    expected = [[export.labels[i] for i in ids] for ids in export.decision.label_ids(probs)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for make in (lambda: SimpleServingTarget(Path(args.export_dir), work / "simple.log"),
                     lambda: TritonTarget(Path(args.export_dir), work / "triton.log", work)):
            target = make()
            try:
                load(target, texts, expected, 2, 10)  # warm-up: kernels per shape, python stubs
                first = load(target, texts, expected, args.clients, args.requests)
                codes = target.malformed()
                second = load(target, texts, expected, args.clients, args.requests)
                rows.append((target.name, first, codes, second))
            finally:
                target.process.terminate()
                target.process.wait(timeout=60)
            print(f"  done: {target.name}", file=sys.stderr, flush=True)

    report = (f"{args.clients} concurrent clients × {args.requests} requests of one text each, twice per server "
              f"(malformed requests in between); {len(texts)} dev texts of {Path(args.dataset_dir).name}, "
              f"export {os.path.relpath(args.export_dir, ROOT)}; loopback.\n\n")
    report += markdown_table(
        ["server", "run", "requests", "answered", "throughput req/s", "p50 ms", "p95 ms", "errors",
         "label mismatches vs offline"],
        [(name, run_name, result["sent"], result["answered"], f"{result['throughput']:.1f}", f"{result['p50']:.1f}",
          f"{result['p95']:.1f}", result["errors"], result["mismatches"])
         for name, first, _, second in rows for run_name, result in (("before malformed", first),
                                                                     ("after malformed", second))])
    report += "\nMalformed requests between the runs (HTTP status of each answer):\n\n"
    report += "".join(f"- {name}: {codes}\n" for name, _, codes, _ in rows)
    save_result("serve_load", report)

if __name__ == "__main__":
    main()
