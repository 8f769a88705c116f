"""The Markdown files: every documented `python X.py --flag` names a script that exists and a flag it
accepts, and no document holds pasted tool output or paths outside a user's clone."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import ROOT, load_script

SKIPPED_DIRS = {".venv", "demo_out", "out", ".pytest_cache", "node_modules"}
DOCS = sorted(path for path in ROOT.rglob("*.md") if not SKIPPED_DIRS & set(path.relative_to(ROOT).parts))
# Scripts whose parser cannot be built here: Paddle Serving does not install on Python 3.11, and
# importing the SimpleServing module builds its app (that is how `paddlenlp server server:app` runs it).
UNLOADABLE = {"deploy/paddle_serving/service.py", "deploy/paddle_serving/rpc_client.py",
              "deploy/paddle_serving/http_client.py", "deploy/simple_serving/server.py"}
TOOL_OUTPUT = re.compile(r"^\[Paddle2ONNX\]|Folding Constants|/tmp/tmp[a-z0-9_]{4,}|^\[[IWE]\] ", re.M)
OUTSIDE_PATH = re.compile(r"(^|[ (`])/(root|work|home|tmp|usr|opt)/|\.\./shared/", re.M)


def code_blocks(doc: Path) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", doc.read_text(encoding="utf-8"), re.M | re.S)


def documented_commands(doc: Path) -> list[tuple[str, str, list[str]]]:
    """(script as written, its path from the repository root, its --flags) of each `python X.py` in the blocks."""
    commands = []
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
                if not words or not re.fullmatch(r"(\S*/)?python3?", words[0]):
                    continue
                scripts = [i for i, word in enumerate(words) if word.endswith(".py")]
                if not scripts:
                    continue
                script = words[scripts[0]]
                flags = [word.split("=")[0] for word in words[scripts[0] + 1:]
                         if word.startswith("--") and " " not in word]  # not a quoted argument string
                commands.append((script, resolve(script, cwd, doc), flags))
    return commands


def resolve(script: str, cwd: Path, doc: Path) -> str:
    for base in (cwd, doc.parent, ROOT):
        if (base / script).is_file():
            return str((base / script).resolve().relative_to(ROOT))
    return ""


def accepted_flags(script: str) -> set[str]:
    module = load_script(script)
    if hasattr(module, "parser"):
        return set(module.parser._option_string_actions)
    if hasattr(module, "build_parser"):
        return set(module.build_parser("localhost:0")._option_string_actions)
    return set()  # a script without options (data/generate.py)


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
