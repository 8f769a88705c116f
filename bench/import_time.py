"""What `python <script> --help` costs: wall time, and which export engines it loads.

Scripts that never run an exported model (training, prediction on the dygraph model) should not
load ONNX, ONNX Runtime, OpenVINO, NNCF or paddle2onnx. This compares checkouts side by side in one
run (e.g. a worktree of an older commit and this one), interleaving the runs so that machine noise
hits both alike, and writes a Markdown table.

    git worktree add bench/out/before <commit>
    python bench/import_time.py --roots bench/out/before . --out bench/out/import_time.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--roots", nargs="+", default=["."], help="Checkouts to compare (the first is the baseline).")
parser.add_argument("--scripts", nargs="+", default=["train.py", "predict.py", "export_model.py", "prune.py",
                                                     "deploy/predictor/infer.py", "analysis/evaluate.py"])
parser.add_argument("--repeats", type=int, default=3, help="Timed runs per script and checkout (median reported).")
parser.add_argument("--out", default="bench/out/import_time.md", help="Where the Markdown table is written.")

ENGINES = ("onnx", "onnxruntime", "openvino", "nncf", "paddle2onnx")
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def help_seconds(root: Path, script: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(root / script), "--help"], cwd=root, env=ENV, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def engines_loaded(root: Path, script: str) -> list[str]:
    """The export engines among the top-level imports of `--help` (python -X importtime)."""
    result = subprocess.run([sys.executable, "-X", "importtime", str(root / script), "--help"], cwd=root, env=ENV,
                            capture_output=True, text=True, check=True)
    loaded = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    return [name for name in ENGINES if name in loaded]


def main() -> None:
    args = parser.parse_args()
    roots = [Path(root).resolve() for root in args.roots]
    times: dict[tuple[Path, str], list[float]] = {(root, script): [] for root in roots for script in args.scripts}
    for _ in range(args.repeats):
        for script in args.scripts:
            for root in roots:
                times[root, script].append(help_seconds(root, script))
    lines = ["| script | checkout | `--help` s (median) | ratio to first | export engines imported |",
             "|---|---|---|---|---|"]
    for script in args.scripts:
        base = statistics.median(times[roots[0], script])
        for root in roots:
            seconds = statistics.median(times[root, script])
            engines = ", ".join(engines_loaded(root, script)) or "none"
            lines.append(f"| {script} | {root.name} | {seconds:.2f} | {seconds / base:.2f} | {engines} |")
    table = "\n".join(lines) + "\n"
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
