"""Third-party console noise a user cannot act on never reaches the console of a direct run: every
script imports `quiet` before anything else, and what `quiet` silences stays silent."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

from conftest import ROOT, in_a_venv, load_script

# What Paddle, setuptools and Paddle's C++ log print on a run without the Makefile's PYTHONWARNINGS.
NOISE = ("UserWarning", "No ccache found", "Setuptools is replacing distutils", "state dict is empty",
         "not support input out tensor", "don't support input_spec")
# Entry points of the suite (benchmarks and the standard-library data generator excepted).
SCRIPTS = sorted(path for path in ROOT.rglob("*.py") if not {"tests", "bench", "data"} & set(path.relative_to(ROOT).parts)
                 and not in_a_venv(path) and '__name__ == "__main__"' in path.read_text(encoding="utf-8"))
TRITON_TOKENIZER = ROOT / "deploy/triton_serving/python_models/tokenizer.py"  # imports paddlenlp in Triton's stub


def first_import(path) -> str:
    """The module named by the file's first import after `from __future__`."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            return node.names[0].name
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            return node.module or ""
    return ""


def clean_environment() -> dict[str, str]:
    """The environment of a user's shell: none of the variables that hide the noise."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONWARNINGS", "GLOG_minloglevel")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_every_script_imports_quiet_first():
    assert len(SCRIPTS) > 30
    late = [str(path.relative_to(ROOT)) for path in [*SCRIPTS, TRITON_TOKENIZER] if first_import(path) != "quiet"]
    assert late == []


def test_a_direct_run_prints_no_third_party_warnings():
    result = subprocess.run([sys.executable, str(ROOT / "export_model.py"), "--help"], capture_output=True, text=True,
                            env=clean_environment(), cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "--params_path" in result.stdout
    assert [noise for noise in NOISE if noise in result.stderr] == [], result.stderr[-2000:]


def test_saving_an_empty_state_and_paddles_cpp_warnings_are_silent(tmp_path):
    """--save_last saves a disabled loss scaler's empty state; glog reads its level when Paddle loads."""
    code = ("import quiet, os, paddle; paddle.save({}, os.path.join(r'%s', 'scaler.pdparams')); "
            "print(os.environ['GLOG_minloglevel'])" % tmp_path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_environment(),
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["2"] and (tmp_path / "scaler.pdparams").is_file()
    assert [noise for noise in NOISE if noise in result.stderr] == [], result.stderr[-2000:]


def test_triton_gets_quiet_beside_its_tokenizer_model(tmp_path):
    """Triton's python backend imports a model's modules from its directory, not from the repository."""
    load_script("deploy/triton_serving/build_repo.py").copy_pipeline(tmp_path)
    assert (tmp_path / "quiet.py").read_bytes() == (ROOT / "quiet.py").read_bytes()
