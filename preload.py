"""Process settings that third-party libraries read once, when they load: applied on import, before Paddle.

Noise: importing Paddle warns that ccache is missing (it matters only when compiling C++ extensions,
which the suite never does) and, through setuptools, that distutils is being replaced; saving the state
of a disabled loss scaler (`--save_last` on CPU) warns that the state dict is empty; Paddle's C++ side
logs warnings such as "Paddle static graph(PIR) not support input out tensor for now!!!!!" while
exporting. None of them says anything about the user's data, command or result.

Speed: the MKL inside Paddle's CPU wheel picks a generic code path on AMD processors; told that the
processor is an AVX2 one, it makes a training step 1.6-1.9 times as fast (bench/cpu_math_bench.py).

Every script imports this module before any third-party package (ruff's isort section "preload" keeps
the import first). Setting GLOG_minloglevel (0 shows Paddle's C++ info and warning lines again) or
MKL_DEBUG_CPU_TYPE yourself overrides the value chosen here (MKL_DEBUG_CPU_TYPE= , empty, keeps MKL's
own choice).
"""
from __future__ import annotations

import os
import warnings

# Messages (their beginnings) of the Python warnings silenced, with the package that issues them.
SILENCED_WARNINGS = (
    "No ccache found",  # paddle.utils.cpp_extension, on every `import paddle`
    "Setuptools is replacing distutils",  # setuptools' distutils hack, on every `import paddle`
    "The input state dict is empty",  # paddle.save of a disabled GradScaler's (empty) state
    # paddlenlp's export_model (few-shot --do_export) passes input_spec to to_static without full_graph;
    # the export is still checked against the dygraph model on texts of every length
    "full_graph=False don't support input_spec",
)
GLOG_ERRORS_ONLY = "2"  # glog levels: 0 info, 1 warning, 2 error
MKL_AVX2_CPU_TYPE = "5"  # MKL_DEBUG_CPU_TYPE's value for "a processor with AVX2"


def silence_third_party_noise() -> None:
    """Ignore the warnings above and Paddle's C++ info/warning log lines (unless GLOG_minloglevel is set).

    glog reads GLOG_minloglevel when Paddle's shared library loads, so this must run before `import paddle`.
    """
    for message in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    os.environ.setdefault("GLOG_minloglevel", GLOG_ERRORS_ONLY)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """The processor's vendor id and instruction-set flags ("", set() where /proc/cpuinfo is missing)."""
    fields = {}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields.get("vendor_id", ""), set(fields.get("flags", "").split())


def use_mkl_avx2_path_on_amd(cpuinfo: str = "/proc/cpuinfo") -> None:
    """On an AMD processor with AVX2, have MKL use its AVX2 kernels (unless MKL_DEBUG_CPU_TYPE is set).

    MKL reads the variable when it loads, with Paddle; Intel processors keep MKL's own choice (AVX-512).
    """
    vendor, flags = cpu_flags(cpuinfo)
    if vendor == "AuthenticAMD" and "avx2" in flags:
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", MKL_AVX2_CPU_TYPE)


silence_third_party_noise()
use_mkl_avx2_path_on_amd()
