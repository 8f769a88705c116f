"""Put the benchmark tables of bench/results/*.json into docs/benchmarks.md.

Usage: python bench/render_tables.py [--check]

The page marks each benchmark's place with `<!-- bench:NAME -->` ... `<!-- /bench:NAME -->`; what lies
between is replaced by the command(s), the hardware and the tables of bench/results/NAME.json, so the
page shows exactly what the result file holds (the file also records when and from which commit the
tables were measured; the page does not). With --check nothing is written and the exit status says
whether the page is up to date.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import json
import re
import sys
from pathlib import Path

from benchtools import RESULTS, ROOT

from utils import logger, write_text_atomic

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--page", default=str(ROOT / "docs" / "benchmarks.md"))
parser.add_argument("--results_dir", default=str(RESULTS))
parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page is not up to date")

BLOCK = re.compile(r"(<!-- bench:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S)


def block_text(record: dict) -> str:
    """The Markdown that stands for one result file in the page."""
    commands = "\n".join(record["command"])
    hardware = record["hardware"] or "未记录"
    return f"```bash\n{commands}\n```\n\n测量环境：{hardware}。\n\n{record['tables'].strip()}\n"


def render(page: str, results: dict[str, dict]) -> str:
    """The page with every marked block rewritten from its result file."""
    named = [match.group("name") for match in BLOCK.finditer(page)]
    missing = sorted(set(named) - set(results))
    unused = sorted(set(results) - set(named))
    if missing or unused:
        sys.exit(f"docs/benchmarks.md and bench/results/ disagree: blocks without a result file: {missing or 'none'}; "
                 f"result files without a block: {unused or 'none'}")
    return BLOCK.sub(lambda m: m.group(1) + block_text(results[m.group("name")]) + m.group(4), page)


def main() -> None:
    args = parser.parse_args()
    page_path = Path(args.page)
    results = {path.stem: json.loads(path.read_text(encoding="utf-8"))
               for path in sorted(Path(args.results_dir).glob("*.json"))}
    page = page_path.read_text(encoding="utf-8")
    rendered = render(page, results)
    if args.check:
        if rendered != page:
            sys.exit(f"{page_path} is not up to date with {args.results_dir}: run python bench/render_tables.py")
        logger.info(f"{page_path} is up to date with {len(results)} result files")
        return
    write_text_atomic(page_path, rendered)
    logger.info(f"Wrote {len(results)} benchmark blocks into {page_path}")


if __name__ == "__main__":
    main()
