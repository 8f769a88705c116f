"""What every benchmark shares: running the suite's scripts and reusing their kept runs, timing, medians,
Markdown tables, and the result file that records a benchmark's tables with the command, hardware, time and
commit they come from.

bench/results/<name>.json is the published record (bench/render_tables.py copies its tables into
docs/benchmarks.md); bench/out/ is scratch space for models, logs and data.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
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


# settings a kept run may differ in and still be reused: how it is logged, and where it reads and writes, which
# is the benchmark's own layout under its --out_dir (a kept tree may have been moved or copied)
REUSE_IGNORES = {"device", "logging_steps", "save_last", "save_last_steps", "resume_from_checkpoint", "visualdl",
                 "save_dir", "cache_dir", "dataset_dir", "model_name", "teacher", "corpus"}


def check_kept_run(save_dir: Path, script_parser: argparse.ArgumentParser, options: Sequence[object]) -> None:
    """Stop if the run kept in save_dir was trained with settings (its setting.txt) other than the options asked
    for, rather than report it under them; a setting the kept run predates counts with its default."""
    asked = vars(script_parser.parse_args(list(map(str, options))))
    lines = (save_dir / "setting.txt").read_text(encoding="utf-8").splitlines()
    kept = dict(line.split(" : ", 1) for line in lines if " : " in line)
    differences = [f"{name} {kept.get(name)} (asked {value})" for name, value in asked.items()
                   if name not in REUSE_IGNORES and kept.get(name, str(script_parser.get_default(name))) != str(value)]
    if differences:
        raise SystemExit(f"{save_dir} was trained with {', '.join(differences)}: move it aside to train it again")


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


def mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """Mean ± standard deviation of `values` × `scale` over seeds; one value alone (no "± 0.00")."""
    scaled = [value * scale for value in values]
    if len(scaled) == 1:
        return f"{scaled[0]:.{digits}f}"
    return f"{statistics.fmean(scaled):.{digits}f} ± {statistics.pstdev(scaled):.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; cells are printed as given (format numbers before)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def load_script(relative: str):
    """A script of the suite as a module (deploy/ folders hold scripts, not packages)."""
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# CPU features that decide which precisions run fast (INT8 dot products, BF16, AMX matrix units)
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def hardware() -> str:
    """CPU model, core count and the CPU features of CPU_FLAGS it has, as the page states them."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    present = [flag for flag in CPU_FLAGS if flag in flags]
    return f"{model}, {os.cpu_count()} cores ({' '.join(present) or 'none of ' + ' '.join(CPU_FLAGS)})"


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


def measured_now() -> dict:
    """When, from which commit and on what hardware a measurement taken now is made."""
    return {"measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": current_commit(), "hardware": hardware()}


def runs_provenance(runs: list[dict]) -> dict:
    """When (first and last), from which commits and on what hardware runs stored with measured_now()
    were measured; None for what a run kept from before these were recorded does not say."""
    known = {key: sorted({run.get(key) or "" for run in runs}) for key in ("measured_at", "commit", "hardware")}
    times = known["measured_at"]
    return {"measured_at": None if "" in times else f"{times[0]} .. {times[-1]}",
            **{key: None if "" in values else ", ".join(values) for key, values in known.items()
               if key != "measured_at"}}


def split_report(text: str) -> tuple[list[str], str]:
    """A benchmark's printed report as (its prose lines: titles and settings, its Markdown tables one
    blank line apart): the page describes the setting in its own words and shows the tables as measured."""
    notes, tables, table = [], [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            tables.append("\n".join(table))
            table = []
        if line.strip():
            notes.append(line.strip().lstrip("#").strip())
    return notes, "\n\n".join(tables) + "\n"


def save_result(name: str, report: str, measured: dict | None = None) -> Path:
    """Write bench/results/<name>.json: the report's tables and its prose lines (split_report), the
    command that made them (this process's), and when, from which commit and on what hardware they were
    measured (`measured`, by default now; a benchmark that tabulates runs kept from before passes theirs,
    None where unknown); also print the report."""
    command = "python " + " ".join(shlex.quote(os.path.relpath(arg, ROOT) if os.path.isabs(arg) else arg)
                                   for arg in sys.argv)
    notes, tables = split_report(report)
    record = {"benchmark": name, "command": [command], **(measured_now() if measured is None else measured),
              "notes": notes, "tables": tables}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_text_atomic(path, json.dumps(record, ensure_ascii=False, indent=1) + "\n")
    print(report, flush=True)
    logger.info(f"Result written to {path}; `python bench/render_tables.py` puts it into docs/benchmarks.md")
    return path
