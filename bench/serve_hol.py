"""Head-of-line blocking in SimpleServing: how long a one-text request takes while a long request runs.

Usage:
    python bench/serve_hol.py --export_dir EXPORT --base_root OTHER_CHECKOUT [--out bench/out/serve_hol.md]

EXPORT is any export_model.py directory; the figures in deploy/README.md come from the tiny scratch
model trained one epoch on data/:

    python scratch_model.py --dataset_dir data --output_dir /tmp/hol/scratch
    python train.py --device cpu --dataset_dir data --model_name /tmp/hol/scratch --save_dir /tmp/hol/ckpt \\
        --epochs 1 --batch_size 32 --learning_rate 1e-3
    python export_model.py --params_path /tmp/hol/ckpt --output_path /tmp/hol/export --dataset_dir data

OTHER_CHECKOUT is a checkout of the code to compare with (e.g. `git worktree add --detach /tmp/base
<commit>`); its server runs with its own defaults. This checkout's server runs twice: with its caps
raised so that the long request is served, and with its default caps.

The servers run side by side on 127.0.0.1 (CPU). First, without a long request, in alternating rounds:
the one-text latency with nothing else sent, and the throughput of 8 clients sending one-text
requests back to back. Then, server after server, for each scenario a long request is sent and,
while it is in progress, one one-text request every --interval seconds, each from its own thread
(open loop: a request is sent on time whether or not the ones before it were answered). Reported per
server and scenario: the long request's status and seconds, and the one-text requests sent while it
was in progress: how many, their latency p50 and max, and when the first of them was answered
relative to the long one. Every answer is compared with the first server's: labels and probabilities
must be equal.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from benchtools import ROOT, free_port, markdown_table, save_result

from http_json import post

SHORT_TEXT = "学校考试老师足球比赛"
RAISED_CAPS = {"MAX_TEXT_CHARS": "10000000", "MAX_REQUEST_BYTES": str(2**30)}

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--export_dir", required=True, help="An export_model.py directory.")
parser.add_argument("--base_root", required=True, help="A checkout of the code to compare with.")
parser.add_argument("--dataset_dir", default=str(ROOT / "data"), help="Texts the long requests are made of.")
parser.add_argument("--interval", type=float, default=0.5, help="Seconds between one-text requests.")
parser.add_argument("--out", default=str(ROOT / "bench/out/serve_hol.md"), help="Server logs go beside it.")


@dataclass
class Scenario:
    name: str
    texts: list[str]
    parameters: dict


@dataclass
class Server:
    name: str
    root: Path
    env: dict = field(default_factory=dict)


def text_of_bytes(pieces: list[str], size: int, rng: random.Random) -> str:
    """Dataset texts joined up to `size` bytes of UTF-8."""
    parts, total = [], 0
    while total < size:
        piece = rng.choice(pieces)
        parts.append(piece)
        total += len(piece.encode("utf-8"))
    return "".join(parts).encode("utf-8")[:size].decode("utf-8", "ignore")


def scenarios(dataset_dir: Path) -> list[Scenario]:
    """20 texts of 1 MB (tokenizing dominates) and 256 texts read as 256 model batches (running the
    model dominates)."""
    pieces = [line.split("\t")[0] for line in (dataset_dir / "train.txt").read_text(encoding="utf-8").splitlines()]
    rng = random.Random(0)
    return [Scenario("20 texts × 1 MB", [text_of_bytes(pieces, 1_000_000, rng) for _ in range(20)],
                     {"return_probs": True}),
            Scenario("256 texts × 2,000 chars, batch_size 1, max_seq_len 512",
                     [text_of_bytes(pieces, 6_000, rng) for _ in range(256)],
                     {"return_probs": True, "batch_size": 1, "max_seq_len": 512})]


def start(server: Server, export_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(server.root), "EXPORT_DIR": str(export_dir.resolve()), "DEVICE": "cpu",
           "PYTHONWARNINGS": "ignore", **server.env}
    process = subprocess.Popen([str(Path(sys.executable).parent / "paddlenlp"), "server", "server:app", "--host",
                                "127.0.0.1", "--port", str(port)], cwd=server.root / "deploy/simple_serving", env=env,
                               stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        try:
            if short_request(port)[0] == 200:
                return process
        except RuntimeError:
            time.sleep(1)
    process.terminate()
    raise RuntimeError(f"{server.name} did not start: {log.read_text()[-2000:]}")


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}/models/cls_multi_label"


def short_request(port: int) -> tuple[int, dict]:
    return post(url(port), {"data": {"text": [SHORT_TEXT]}, "parameters": {"return_probs": True}}, timeout=600)


def alone(ports: list[int], rounds: int = 10, count: int = 20) -> list[list[float]]:
    """One-text latencies per server with nothing else sent, the servers taking turns in rounds so
    that a change of load on the machine affects them alike."""
    latencies: list[list[float]] = [[] for _ in ports]
    for _ in range(rounds):
        for port, measured in zip(ports, latencies):
            for _ in range(count):
                begin = time.perf_counter()
                short_request(port)
                measured.append(time.perf_counter() - begin)
    return latencies


def send_short_requests(port: int, count: int) -> None:
    for _ in range(count):
        short_request(port)


def throughput(ports: list[int], clients: int = 8, requests: int = 25, rounds: int = 3) -> list[float]:
    """One-text requests per second per server from `clients` threads sending back to back, the
    servers taking turns in rounds: sharing the model between concurrent requests must not cost
    throughput."""
    seconds = [0.0 for _ in ports]
    for _ in range(rounds):
        for index, port in enumerate(ports):
            threads = [threading.Thread(target=send_short_requests, args=(port, requests)) for _ in range(clients)]
            begin = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds[index] += time.perf_counter() - begin
    return [rounds * clients * requests / total for total in seconds]


def during_long(port: int, scenario: Scenario, interval: float) -> dict:
    """The long request and the one-text requests sent while it is in progress."""
    long_result: dict = {}
    shorts: list[dict] = []

    def send_long() -> None:
        status, answer = post(url(port), {"data": {"text": scenario.texts}, "parameters": scenario.parameters},
                              timeout=3600)
        long_result.update(status=status, answer=answer, end=time.perf_counter())

    def send_short(record: dict) -> None:
        record["status"], record["answer"] = short_request(port)
        record["end"] = time.perf_counter()

    begin = time.perf_counter()
    long_thread = threading.Thread(target=send_long)
    long_thread.start()
    threads = []
    time.sleep(interval)
    while long_thread.is_alive():
        record = {"sent": time.perf_counter()}
        shorts.append(record)
        threads.append(threading.Thread(target=send_short, args=(record,)))
        threads[-1].start()
        time.sleep(interval)
    long_thread.join()
    for thread in threads:
        thread.join()
    return {"begin": begin, "long": long_result, "shorts": shorts}


def row(server: Server, scenario: Scenario, run: dict, reference: dict | None) -> list[str]:
    long, shorts = run["long"], run["shorts"]
    latencies = [record["end"] - record["sent"] for record in shorts]
    first_end = min((record["end"] for record in shorts), default=None)
    same = "—" if reference is None else ("yes" if same_answers(run, reference) else "NO")
    return [server.name, scenario.name, str(long["status"]), f"{long['end'] - run['begin']:.1f}", str(len(shorts)),
            f"{np.percentile(latencies, 50):.2f}" if shorts else "—", f"{max(latencies):.2f}" if shorts else "—",
            "—" if first_end is None else f"{first_end - long['end']:+.1f}", same]


def same_answers(run: dict, reference: dict) -> bool:
    """Labels and probabilities of every answer equal to the reference run's (a refused long request
    is compared only through its one-text answers)."""
    shorts = [record["answer"] for record in run["shorts"] + reference["shorts"]]
    if any(answer != shorts[0] for answer in shorts):
        return False
    return run["long"]["status"] != 200 or run["long"]["answer"] == reference["long"]["answer"]


def commit_of(root: Path) -> str:
    result = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown commit"


def main() -> None:
    args = parser.parse_args()
    export_dir = Path(args.export_dir)
    base, this = Path(args.base_root).resolve(), commit_of(ROOT)
    servers = [Server(f"base {commit_of(base)}", base),
               Server(f"{this}, caps raised", ROOT, RAISED_CAPS),
               Server(f"{this}, default caps", ROOT)]
    cases = scenarios(Path(args.dataset_dir))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in servers]
    processes = []
    try:  # all up at once (an idle server takes no CPU), the long requests sent to one at a time
        for number, (server, port) in enumerate(zip(servers, ports)):
            processes.append(start(server, export_dir, port, out.with_name(f"serve_hol_{number}.log")))
        idle = list(zip([server.name for server in servers], alone(ports), throughput(ports)))
        rows, reference = [], {}
        for server, port in zip(servers, ports):
            for scenario in cases:
                run = during_long(port, scenario, args.interval)
                rows.append(row(server, scenario, run, reference.get(scenario.name)))
                reference.setdefault(scenario.name, run)
                print("  ".join(rows[-1]), file=sys.stderr, flush=True)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=60)
    write_table(rows, idle, args)


def write_table(rows: list[list[str]], idle: list, args: argparse.Namespace) -> None:
    header = ["server", "long request", "long status", "long s", "one-text requests during it", "p50 s", "max s",
              "first answered vs long (s)", "answers equal to base"]
    idle_rows = [(name, f"{1000 * np.percentile(latencies, 50):.1f}", f"{1000 * np.percentile(latencies, 90):.1f}",
                  f"{rate:.0f}") for name, latencies, rate in idle]
    report = (f"One-text latency while a long request runs; CPU inference, one one-text request every "
              f"{args.interval} s while the long one is in progress.\n\n{markdown_table(header, rows)}\n"
              "Without a long request: one-text requests one at a time, and from 8 clients at once.\n\n"
              + markdown_table(["server", "alone p50 ms", "alone p90 ms", "8 clients, requests/s"], idle_rows))
    save_result("serve_hol", report)


if __name__ == "__main__":
    main()
