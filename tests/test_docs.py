"""The Markdown files: every documented `python X.py --flag` names a script that exists and a flag it
accepts, and no document holds pasted tool output or paths outside a user's clone."""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT, in_a_venv, load_script

SKIPPED_DIRS = {"demo_out", "out", ".pytest_cache", "node_modules"}
DOCS = sorted(path for path in ROOT.rglob("*.md")
              if not SKIPPED_DIRS & set(path.relative_to(ROOT).parts) and not in_a_venv(path))
# Scripts whose parser cannot be built here: Paddle Serving does not install on Python 3.11, and
# importing the SimpleServing module builds its app (that is how `paddlenlp server server:app` runs it).
UNLOADABLE = {"deploy/paddle_serving/service.py", "deploy/paddle_serving/rpc_client.py",
              "deploy/paddle_serving/http_client.py", "deploy/simple_serving/server.py"}
TOOL_OUTPUT = re.compile(r"^\[Paddle2ONNX\]|Folding Constants|/tmp/tmp[a-z0-9_]{4,}|^\[[IWE]\] ", re.M)
# Options naming a file or directory a command reads (a value without "/" or a leading "." is a model
# name or a file name inside the dataset directory) and options naming what it writes.
PATH_INPUTS = {"--dataset_dir", "--data_dir", "--params_path", "--params_dir", "--model_path_prefix", "--export_dir",
               "--model_name", "--model_name_or_path", "--init_from_ckpt", "--model_repository", "--input_file",
               "--trained_checkpoint", "--teacher"}
PATH_OUTPUTS = {"--output_dir", "--save_dir", "--output_path", "--output_file", "--log_dir", "--out_dir", "--out"}
MAKE_DEMO_OUTPUT = ROOT / "demo_out"  # what `make demo` writes, for documents that build on it
OUTSIDE_PATH = re.compile(r"(^|[ (`])/(root|work|home|tmp|usr|opt)/|\.\./shared/", re.M)
# Documents describe the software, not the machine they were written on or their own history: no
# "this machine", before/after comparisons with an earlier revision, commit hashes (hex with letters and digits).
HISTORY = re.compile(r"本机|this machine|改动前|上一版|git worktree|"
                     r"(?<![\w/.-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![\w/.-])", re.I)
HISTORY_CHECKED = [doc for doc in DOCS if doc != ROOT / "docs/benchmarks.md"]  # the benchmark report has its own check
README_MAX_LINES = 250
QUICK_START_SECTIONS = ("简介", "快速开始", "运行环境", "数据准备", "模型训练", "模型预测", "模型分析", "模型压缩", "模型部署")


def code_blocks(doc: Path) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", doc.read_text(encoding="utf-8"), re.M | re.S)


def shell_commands(doc: Path) -> Iterator[tuple[Path, list[str]]]:
    """(working directory, words) of each command in the document's code blocks, in reading order,
    following `cd` (a block starts in the document's directory)."""
    for block in code_blocks(doc):
        cwd = doc.parent
        for line in block.replace("\\\n", " ").splitlines():
            for segment in re.split(r"&&|;|\|\||\||(?<![>0-9])&|\(|\)", line.split("#")[0]):
                try:
                    words = shlex.split(segment)
                except ValueError:
                    continue
                if words[:1] == ["cd"] and len(words) > 1:
                    cwd = cwd / words[1] if (cwd / words[1]).is_dir() else ROOT / words[1]
                    continue
                if words:
                    yield cwd, words


def python_script(words: list[str]) -> int | None:
    """The index of the script in `python X.py ...` (also `python -m paddle.distributed.launch ... X.py`)."""
    if not re.fullmatch(r"(\S*/)?python3?", words[0]):
        return None
    return next((i for i, word in enumerate(words) if word.endswith(".py")), None)


def documented_commands(doc: Path) -> list[tuple[str, str, list[str]]]:
    """(script as written, its path from the repository root, its --flags) of each `python X.py` in the blocks."""
    commands = []
    for cwd, words in shell_commands(doc):
        script_at = python_script(words)
        if script_at is None:
            continue
        flags = [word.split("=")[0] for word in words[script_at + 1:]
                 if word.startswith("--") and " " not in word]  # not a quoted argument string
        commands.append((words[script_at], resolve(words[script_at], cwd, doc), flags))
    return commands


def resolve(script: str, cwd: Path, doc: Path) -> str:
    for base in (cwd, doc.parent, ROOT):
        if (base / script).is_file():
            return str((base / script).resolve().relative_to(ROOT))
    return ""


def option_values(words: list[str], options: set[str]) -> list[str]:
    values = []
    for position, word in enumerate(words):
        name, equals, value = word.partition("=")
        if name in options:
            values.append(value if equals else words[position + 1] if position + 1 < len(words) else "")
    return values


def candidates(path: str, cwd: Path) -> list[Path]:
    """Where a relative path may point: from the command's directory, or from the repository root."""
    return [Path(os.path.normpath(base / path)) for base in (cwd, ROOT)]


def created_paths(doc: Path, created: set[Path] | None = None) -> tuple[set[Path], list[str]]:
    """What the document's commands create, in order, and the paths its commands read that neither exist
    in the repository nor were created by an earlier command (`created` seeds what already exists)."""
    created = set(created or ())
    missing = []

    def exists(path: str, cwd: Path) -> bool:
        return any(place.exists() or any(place == made or made in place.parents for made in created)
                   for place in candidates(path, cwd))

    for cwd, words in shell_commands(doc):
        if words[0] == "tar":
            created.update(place.with_name(place.name.removesuffix(".tar.gz"))
                           for archive in words[1:] if archive.endswith(".tar.gz") for place in candidates(archive, cwd))
        if words[0] == "mkdir":
            created.update(place for word in words[1:] if not word.startswith("-") for place in candidates(word, cwd))
        if python_script(words) is None:
            continue
        for path in option_values(words, PATH_INPUTS):
            if (path.startswith(".") or "/" in path) and not exists(path, cwd):
                missing.append(f"{' '.join(words[:python_script(words) + 1])} reads {path}")
        for path in option_values(words, PATH_OUTPUTS):
            created.update(candidates(path, cwd))
    return created, missing


def accepted_flags(script: str) -> set[str]:
    module = load_script(script)
    parser = module.parser if hasattr(module, "parser") else module.build_parser("localhost:0")
    return set(parser._option_string_actions)


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(ROOT)) for doc in DOCS])
def test_documented_commands_use_existing_scripts_and_flags(doc):
    for script, path, flags in documented_commands(doc):
        assert path, f"{doc.relative_to(ROOT)}: `python {script}` names no script of the repository"
        if path in UNLOADABLE:
            continue
        unknown = sorted(set(flags) - accepted_flags(path))
        assert not unknown, f"{doc.relative_to(ROOT)}: `python {script}` has no option {', '.join(unknown)}"


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(ROOT)) for doc in DOCS])
def test_no_tool_output_or_outside_paths_in_documents(doc):
    text = doc.read_text(encoding="utf-8")
    assert not TOOL_OUTPUT.search(text), f"{doc.relative_to(ROOT)}: pasted tool output: {TOOL_OUTPUT.search(text)[0]!r}"
    assert not OUTSIDE_PATH.search(text), f"{doc.relative_to(ROOT)}: path outside the clone near " \
                                          f"{text[OUTSIDE_PATH.search(text).start():][:60]!r}"


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(ROOT)) for doc in DOCS])
def test_documented_paths_exist_or_are_made_by_an_earlier_command(doc):
    """The main README is followed from a fresh clone in reading order; the other documents build on
    what it, `make demo` and the other documents' commands create."""
    everything_made = set().union(*(created_paths(other, {MAKE_DEMO_OUTPUT})[0] for other in DOCS))
    _, missing = created_paths(doc, {MAKE_DEMO_OUTPUT} if doc == ROOT / "README.md" else everything_made)
    assert not missing, f"{doc.relative_to(ROOT)}: " + "; ".join(missing)


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(ROOT)) for doc in DOCS])
def test_relative_links_point_at_files_of_the_repository(doc):
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8"))
    broken = [target for target in targets if "://" not in target and not (doc.parent / target).exists()]
    assert not broken, f"{doc.relative_to(ROOT)}: links to missing files: {broken}"


def heading_anchors(doc: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to '-'."""
    headings = re.findall(r"^#+ (.+)$", doc.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(ROOT)) for doc in DOCS])
def test_links_to_a_section_name_a_heading_of_the_target(doc):
    links = re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", doc.read_text(encoding="utf-8"))
    broken = [f"{target}#{anchor}" for target, anchor in links if "://" not in target
              and anchor not in heading_anchors(doc.parent / target if target else doc)]
    assert not broken, f"{doc.relative_to(ROOT)}: links to missing sections: {broken}"


@pytest.mark.parametrize("doc", HISTORY_CHECKED, ids=[str(doc.relative_to(ROOT)) for doc in HISTORY_CHECKED])
def test_documents_describe_the_software_not_the_machine_or_their_history(doc):
    text = doc.read_text(encoding="utf-8")
    found = HISTORY.search(text)
    assert not found, f"{doc.relative_to(ROOT)}: {found[0]!r} near {text[max(found.start() - 30, 0):][:80]!r}"


def test_readme_is_a_quick_start_in_the_references_structure():
    """What it is, set-up, data, the main commands; option tables and topic guides live in docs/."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    positions = [next((i for i, heading in enumerate(headings) if section in heading), -1) for section in QUICK_START_SECTIONS]
    assert -1 not in positions and positions == sorted(positions), list(zip(QUICK_START_SECTIONS, positions))
    assert "make demo" in text and "make test" in text


def test_the_history_check_finds_hashes_and_place_words_only():
    assert HISTORY.search("基线是 predict.py（b99ba2f）") and HISTORY.search("本机 2 核")
    assert HISTORY.search("git worktree add ../base 64bb504")
    assert not HISTORY.search("sha256、1e-4、ernie-3.0-medium-zh、deadbeef、20260405、bench/out/a1b2c3d4e5/x")


def test_the_checker_finds_commands_flags_and_wrong_paths(tmp_path):
    """The checks above read what they claim to read."""
    doc = ROOT / "README.md"
    commands = documented_commands(doc)
    assert ("train.py", "train.py", [flag for flag in commands[[c[0] for c in commands].index("train.py")][2]]) \
        in commands
    assert any(path == "deploy/predictor/infer.py" and "--model_path_prefix" in flags for _, path, flags in commands)
    fake = tmp_path / "x.md"
    fake.write_text("```bash\npython nowhere.py --x 1\ncd deploy && python predictor/infer.py --bogus 2\n```\n"
                    "/tmp/tmpabcdef1 [Paddle2ONNX] Start\n", encoding="utf-8")
    found = documented_commands(fake)
    assert found[0] == ("nowhere.py", "", ["--x"]) and found[1][1:] == ("deploy/predictor/infer.py", ["--bogus"])
    assert "--bogus" not in accepted_flags("deploy/predictor/infer.py")
    assert TOOL_OUTPUT.search(fake.read_text(encoding="utf-8"))
    fake.write_text("```bash\npython predict.py --params_path ./ckpt --dataset_dir data\n"
                    "python train.py --dataset_dir data --save_dir ./ckpt\npython predict.py --params_path ./ckpt\n"
                    "python predict.py --params_path ./ckpt/sub --model_name ernie-3.0-medium-zh\n"
                    "wget x/divorce.tar.gz && tar -zxvf divorce.tar.gz\n"
                    "python train.py --dataset_dir divorce --model_name ./nowhere\n```\n", encoding="utf-8")
    _, missing = created_paths(fake)
    assert missing == ["python predict.py reads ./ckpt", "python train.py reads ./nowhere"]
