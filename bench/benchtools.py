"""What every benchmark shares: running the suite's scripts, timing, medians, Markdown tables, and the
result file that records a benchmark's tables with the command, hardware, time and commit they come from.

bench/results/<name>.json is the published record (bench/render_tables.py copies its tables into
docs/benchmarks.md); bench/out/ is scratch space for models, logs and data.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from utils import logger, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "bench" / "out"


def run_script(script: str, *args, log: Path, cwd: Path | None = None, append: bool = False) -> None:
    """Run a script of the suite with this interpreter; its output goes to `log` (the command is printed,
    so a failed run can be repeated by hand)."""
    cmd = [sys.executable, str(ROOT / script), *map(str, args)]
    print("$ python", " ".join(cmd[1:]), f"  (log: {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a" if append else "w", encoding="utf-8") as handle:
        subprocess.run(cmd, check=True, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd or ROOT)


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The median wall time of `repeats` calls (robust to another job's burst on a shared machine)."""
    return statistics.median(seconds(fn) for _ in range(repeats))


def interleaved_medians(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per case, the cases run in turns (the order rotating each round) so that a slow
    phase of the machine falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            times[name].append(seconds(cases[name]))
    return {name: statistics.median(values) for name, values in times.items()}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; cells are printed as given (format numbers before)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hardware() -> str:
    """CPU model and core count, as the page states them next to the tables."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def current_commit() -> str | None:
    """HEAD, with "+changes" when the checkout differs from it; None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if dirty else "")


def save_result(name: str, tables: str, setting: str = "", argv: Sequence[str] | None = None) -> Path:
    """Write bench/results/<name>.json: the tables (Markdown) and a one-line description of the setting,
    with the command that made them, the hardware, the time and the commit; also print the tables."""
    argv = sys.argv if argv is None else argv
    command = "python " + " ".join(shlex.quote(os.path.relpath(arg, ROOT) if os.path.isabs(arg) else arg)
                                   for arg in argv)
    record = {"benchmark": name, "command": [command], "hardware": hardware(),
              "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": current_commit(), "setting": setting, "tables": tables}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_text_atomic(path, json.dumps(record, ensure_ascii=False, indent=1) + "\n")
    print((setting + "\n\n" if setting else "") + tables, flush=True)
    logger.info(f"Result written to {path}; `python bench/render_tables.py` puts it into docs/benchmarks.md")
    return path
