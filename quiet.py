"""Console noise of third-party packages that a user cannot act on, silenced before those packages load.

Importing Paddle warns that ccache is missing (it matters only when compiling C++ extensions, which the
suite never does) and, through setuptools, that distutils is being replaced; saving the state of a
disabled loss scaler (`--save_last` on CPU) warns that the state dict is empty; Paddle's C++ side logs
warnings such as "Paddle static graph(PIR) not support input out tensor for now!!!!!" while exporting.
None of them says anything about the user's data, command or result.

Every script imports this module before any third-party package (ruff's isort section "quiet" keeps
the import first), so `silence_third_party_noise` runs once, before Paddle is imported. Setting
GLOG_minloglevel (0 shows Paddle's C++ info and warning lines again) overrides the C++ default.
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


def silence_third_party_noise() -> None:
    """Ignore the warnings above and Paddle's C++ info/warning log lines (unless GLOG_minloglevel is set).

    glog reads GLOG_minloglevel when Paddle's shared library loads, so this must run before `import paddle`.
    """
    for message in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    os.environ.setdefault("GLOG_minloglevel", GLOG_ERRORS_ONLY)


silence_third_party_noise()
