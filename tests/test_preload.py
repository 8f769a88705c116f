"""Every script imports `preload` before anything else: third-party console noise a user cannot act on
never reaches the console of a direct run, and MKL takes its AVX2 path on AMD processors."""
from __future__ import annotations

import preload

import ast
import os
import subprocess
import sys

import pytest

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


def test_every_script_imports_preload_first():
    assert len(SCRIPTS) > 30
    late = [str(path.relative_to(ROOT)) for path in [*SCRIPTS, TRITON_TOKENIZER] if first_import(path) != "preload"]
    assert late == []


def test_a_direct_run_prints_no_third_party_warnings():
    result = subprocess.run([sys.executable, str(ROOT / "export_model.py"), "--help"], capture_output=True, text=True,
                            env=clean_environment(), cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "--params_path" in result.stdout
    assert [noise for noise in NOISE if noise in result.stderr] == [], result.stderr[-2000:]


def test_saving_an_empty_state_and_paddles_cpp_warnings_are_silent(tmp_path):
    """--save_last saves a disabled loss scaler's empty state; glog reads its level when Paddle loads."""
    code = ("import preload, os, paddle; paddle.save({}, os.path.join(r'%s', 'scaler.pdparams')); "
            "print(os.environ['GLOG_minloglevel'])" % tmp_path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_environment(),
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["2"] and (tmp_path / "scaler.pdparams").is_file()
    assert [noise for noise in NOISE if noise in result.stderr] == [], result.stderr[-2000:]


def test_triton_gets_preload_beside_its_tokenizer_model(tmp_path):
    """Triton's python backend imports a model's modules from its directory, not from the repository."""
    load_script("deploy/triton_serving/build_repo.py").copy_pipeline(tmp_path)
    assert (tmp_path / "preload.py").read_bytes() == (ROOT / "preload.py").read_bytes()


CPUINFO = "processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu sse2 {extra}\n\nprocessor\t: 1\nvendor_id\t: other\n"


@pytest.mark.parametrize("vendor, extra, chosen", [("AuthenticAMD", "avx avx2 fma", "5"), ("AuthenticAMD", "avx", None),
                                                   ("GenuineIntel", "avx2 avx512f", None)])
def test_mkl_takes_its_avx2_path_only_on_amd_processors_with_avx2(tmp_path, monkeypatch, vendor, extra, chosen):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(vendor=vendor, extra=extra), encoding="utf-8")
    monkeypatch.delenv("MKL_DEBUG_CPU_TYPE", raising=False)
    preload.use_mkl_avx2_path_on_amd(str(cpuinfo))
    assert os.environ.get("MKL_DEBUG_CPU_TYPE") == chosen


def test_a_users_mkl_setting_and_a_missing_cpuinfo_are_left_alone(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(vendor="AuthenticAMD", extra="avx2"), encoding="utf-8")
    monkeypatch.setenv("MKL_DEBUG_CPU_TYPE", "4")
    preload.use_mkl_avx2_path_on_amd(str(cpuinfo))
    assert os.environ["MKL_DEBUG_CPU_TYPE"] == "4"
    monkeypatch.delenv("MKL_DEBUG_CPU_TYPE")
    preload.use_mkl_avx2_path_on_amd(str(tmp_path / "missing"))
    assert "MKL_DEBUG_CPU_TYPE" not in os.environ
