"""Every reference argument of the scripts exists with the reference default (spec §5.1, §6, §7, §10.1)."""
from __future__ import annotations

import importlib.util

import psutil
import pytest

import export_model
import predict
import prune
import train

from conftest import ROOT, load_script, run_main

TRAIN_DEFAULTS = {
    "device": "gpu", "save_dir": "./checkpoint", "max_seq_length": 128, "model_name": "ernie-3.0-medium-zh",
    "batch_size": 32, "learning_rate": 3e-5, "epochs": 10, "early_stop": False, "early_stop_nums": 4,
    "logging_steps": 5, "weight_decay": 0.0, "warmup": False, "warmup_steps": 0, "init_from_ckpt": None,
    "seed": 3, "train_file": "train.txt", "dev_file": "dev.txt", "label_file": "label.txt",
    "threshold": 0.5, "tune_thresholds": False,
}
PREDICT_DEFAULTS = {
    "device": "gpu", "output_file": "output.txt", "params_path": "./checkpoint/", "max_seq_length": 128,
    "batch_size": 32, "data_file": "data.txt", "label_file": "label.txt",
}


@pytest.mark.parametrize("module, defaults", [(train, TRAIN_DEFAULTS), (predict, PREDICT_DEFAULTS)])
def test_reference_arguments_and_defaults(module, defaults):
    args = vars(module.parser.parse_args(["--dataset_dir", "d"]))
    assert args["dataset_dir"] == "d"
    assert {name: args[name] for name in defaults} == defaults


@pytest.mark.parametrize("module", [train, predict])
def test_dataset_dir_is_required(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.parser.parse_args([])
    assert exit_info.value.code == 2
    assert "--dataset_dir" in capsys.readouterr().err


def test_export_and_infer_reference_arguments():
    assert {k: v for k, v in vars(export_model.parser.parse_args([])).items()
            if k in ("multilingual", "params_path", "output_path")} == {
        "multilingual": False, "params_path": "./checkpoint/", "output_path": "./export"}
    spec = importlib.util.spec_from_file_location("infer", ROOT / "deploy/predictor/infer.py")
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    args = vars(infer.parser.parse_args(["--model_path_prefix", "export/float32", "--dataset_dir", "d"]))
    assert {k: args[k] for k in INFER_DEFAULTS} == INFER_DEFAULTS
    assert args["num_threads"] == psutil.cpu_count(logical=False)


INFER_DEFAULTS = {
    "model_path_prefix": "export/float32", "max_seq_length": 128, "use_fp16": False, "use_quantize": False,
    "batch_size": 32, "device": "gpu", "device_id": 0, "perf": False, "dataset_dir": "d", "perf_dataset": "dev",
    "multilingual": False, "backend": "onnxruntime",
}


PRUNE_DEFAULTS = {  # paddlenlp 2.8.1 CompressionArguments defaults, as the reference's PdArgumentParser has them
    "device": "gpu", "params_dir": "./checkpoint/", "max_seq_length": 128, "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8, "learning_rate": 5e-5, "num_train_epochs": 1.0, "logging_steps": 100,
    "save_steps": 100, "seed": 42, "width_mult_list": ["3/4"], "max_steps": -1, "warmup_ratio": 0.1,
    "weight_decay": 0.0,
}


def test_prune_reference_arguments_and_defaults(capsys):
    args = vars(prune.parser.parse_args(["--dataset_dir", "d", "--output_dir", "o"]))
    assert {k: args[k] for k in PRUNE_DEFAULTS} == PRUNE_DEFAULTS
    args = prune.parser.parse_args(["--dataset_dir", "d", "--output_dir", "o", "--width_mult_list", "3/4", "2/3",
                                    "1/2"])
    assert args.width_mult_list == ["3/4", "2/3", "1/2"]
    with pytest.raises(SystemExit):
        prune.parser.parse_args(["--dataset_dir", "d"])
    assert "--output_dir" in capsys.readouterr().err


# Every script with numeric options, and the arguments it needs before argparse looks at the rest.
NUMERIC_SCRIPTS = {
    "train.py": ["--dataset_dir", "d"], "predict.py": ["--dataset_dir", "d"], "export_model.py": [],
    "scratch_model.py": ["--dataset_dir", "d", "--output_dir", "o"],
    "prune.py": ["--dataset_dir", "d", "--output_dir", "o"],
    "pretrain.py": ["--model_name", "m", "--corpus", "c", "--output_dir", "o"],
    "deploy/predictor/infer.py": ["--model_path_prefix", "p", "--dataset_dir", "d"],
    "analysis/evaluate.py": ["--dataset_dir", "d"], "analysis/dirty.py": ["--dataset_dir", "d"],
    "analysis/sparse.py": ["--dataset_dir", "d"], "analysis/sent_interpret.py": ["--dataset_dir", "d"],
    "analysis/word_interpret.py": ["--dataset_dir", "d"], "analysis/aug.py": [],
    "deploy/triton_serving/build_repo.py": [], "few-shot/infer.py": ["--model_path_prefix", "p"],
    "few-shot/train.py": [], "deploy/triton_serving/run_server.py": [], "deploy/simple_serving/client.py": [],
    "deploy/triton_serving/seqcls_grpc_client.py": [], "data/generate.py": [],
}


def numeric_options(script: str) -> list[tuple[str, object]]:
    """(option, type) of every option that takes a number."""
    module = load_script(script)
    parser = module.parser if hasattr(module, "parser") else module.build_parser("localhost:0")
    options = []
    for action in parser._actions:
        kind = getattr(action.type, "kind", action.type)
        if kind in (int, float):
            options.append((action.option_strings[0], action.type))
    return options


def bad_values(parse) -> list[str]:
    """Values just outside the option's range, and values that are no number at all."""
    low, high, low_open, high_open = parse.bounds
    step = 1 if parse.kind is int else 0.5
    values = ["abc", "nan"] if parse.kind is float else ["abc", "1.5"]
    if low is not None:
        values.append(str(low if low_open else low - step))
    if high is not None:
        values.append(str(high if high_open else high + step))
    return values


@pytest.mark.parametrize("script", sorted(NUMERIC_SCRIPTS))
def test_every_numeric_option_refuses_out_of_range_values_in_one_line(script):
    options = numeric_options(script)
    assert options, script
    for option, parse in options:
        assert hasattr(parse, "bounds"), f"{script} {option} takes any number: give it a utils.bounded type"
        for value in bad_values(parse):
            result = run_main(script, *NUMERIC_SCRIPTS[script], option, value)
            assert result.returncode == 2, (script, option, value)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and f"error: argument {option}" in lines[0], (script, option, value, lines)
            assert "(see --help)" in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("option, value, message", [
    ("--seed", "-3", "argument --seed: must be in [0, 4294967295], got -3"),
    ("--learning_rate", "-1", "argument --learning_rate: must be at least 0, got -1"),
    ("--weight_decay", "-1", "argument --weight_decay: must be at least 0, got -1"),
    ("--max_seq_length", "1", "argument --max_seq_length: must be at least 3, got 1"),
    ("--threshold", "1", "argument --threshold: must be in (0, 1), got 1"),
])
def test_train_values_that_used_to_train_anyway_or_crash(option, value, message):
    result = run_main("train.py", "--dataset_dir", "d", option, value)
    assert result.returncode == 2 and message in result.stderr
