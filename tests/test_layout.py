"""The code's layout promises: core modules import only core modules below them (no cycles, never a
script), every core module states its job, no file manipulates sys.path; and the test modules that
`make test` starts first exist."""
from __future__ import annotations

import ast

import tomllib

from conftest import LONGEST_FIRST, ROOT, in_a_venv

# Lowest first: a module may import only modules before it in this list.
CORE_LAYERS = ["preload", "cli", "http_json", "decision", "utils", "metric", "native_tokenizer", "pipeline", "script_options", "data_io", "corpus", "annotation", "labelling", "losses", "pruning", "modeling",
               "exporting", "backends", "parity", "history", "resume", "training", "mlm", "dynabert", "vector_index", "semantic_index", "retrieval", "serving",
               "compat"]
SCRIPTS = ["train", "predict", "export_model", "prune", "scratch_model", "calibrate", "doccano", "annotation_export", "pretrain", "distill"]


def imported_project_modules(module: str) -> set[str]:
    tree = ast.parse((ROOT / f"{module}.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(CORE_LAYERS + SCRIPTS)


def test_core_modules_import_only_lower_core_modules():
    for position, module in enumerate(CORE_LAYERS):
        imported = imported_project_modules(module)
        assert imported <= set(CORE_LAYERS[:position]), f"{module} imports {sorted(imported - set(CORE_LAYERS[:position]))}"


def test_every_root_module_is_installed_and_has_a_docstring():
    installed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["py-modules"])
    root_modules = {path.stem for path in ROOT.glob("*.py")}
    assert root_modules == installed == set(CORE_LAYERS + SCRIPTS)
    for module in root_modules:
        assert ast.get_docstring(ast.parse((ROOT / f"{module}.py").read_text(encoding="utf-8"))), module


def test_no_file_manipulates_sys_path():
    offenders = [str(path.relative_to(ROOT)) for path in ROOT.rglob("*.py")
                 if not in_a_venv(path) and "sys.path" in path.read_text(encoding="utf-8")
                 and path.name != "test_layout.py"]
    assert offenders == []


def test_no_benchmark_shadows_a_suite_module():
    """`python bench/x.py` puts bench/ first on the import path: a bench/losses.py would be imported by
    modeling.py in place of the suite's losses module and break every benchmark that loads a model."""
    bench_names = {path.stem for path in (ROOT / "bench").glob("*.py")}
    assert bench_names & set(CORE_LAYERS + SCRIPTS) == set()


def test_the_modules_run_first_exist():
    """A renamed test module left in conftest.LONGEST_FIRST would silently lose its early start."""
    assert [name for name in LONGEST_FIRST if not (ROOT / "tests" / name).is_file()] == []
