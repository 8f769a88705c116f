"""Fault injection on the state the suite keeps on disk: resumable states that are cut, emptied, garbled,
deleted or half written by a killed save, resumed against changed data; damaged checkpoint configs and
export metadata; option files and options that would otherwise be ignored without a word.

Every fault must end in one line that names the file and says what to do, never a traceback and never a
silent restart. The resumable state is saved once per test module (a tiny layer, or one short training
run for the end-to-end checks) and damaged in copies.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest

import exporting
import losses
import resume
from decision import Decision
from modeling import load_model, load_tokenizer, save_checkpoint, stored_config
from pipeline import LongText
from script_options import resolve_long_text
from training import MixedPrecision, build_optimizer
from utils import DataError

from conftest import LABELS, make_keyword_dataset, run_main

DELETE_ADVICE = "delete"
FRESH_START = "without --resume_from_checkpoint"


# ------------------------------------------------------------------ resumable states, at the resume.py level


def tiny_training_objects():
    """A layer with an optimizer that has taken one step (so it has moments to save) and a loss scaler."""
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(4, 8), paddle.nn.Linear(8, 3))
    optimizer = build_optimizer(model, 1e-3, 0.0)
    model(paddle.ones([2, 4])).mean().backward()
    optimizer.step()
    optimizer.clear_grad()
    return model, optimizer, MixedPrecision().scaler


def save_tiny_state(save_dir: Path, step: int = 1) -> Path:
    model, optimizer, scaler = tiny_training_objects()
    progress = {"global_step": step, "epoch": 1, "step": step, "args": {}}
    return resume.save_state(save_dir, model, optimizer, scaler, progress)


def resume_tiny(save_dir: Path) -> dict:
    """What train.py does with --resume_from_checkpoint, on the tiny layer."""
    state_dir = resume.find_state(save_dir)
    resume.read_progress(state_dir)
    model, optimizer, scaler = tiny_training_objects()
    return resume.load_state(state_dir, model, optimizer, scaler)


@pytest.fixture(scope="module")
def tiny_state(tmp_path_factory) -> Path:
    save_dir = tmp_path_factory.mktemp("tiny_state") / "run"
    save_tiny_state(save_dir)
    return save_dir


def damaged_copy(tiny_state: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the saved run to damage; returns it and its state directory."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_state, copy)
    return copy, copy / "resume" / "step-1"


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def assert_one_line_refusal(err: DataError, *fragments: str) -> None:
    message = str(err)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_a_saved_state_records_size_and_sha256_of_its_files_and_resumes(tiny_state):
    state_dir = resume.find_state(tiny_state)
    recorded = resume.read_progress(state_dir)["files"]
    assert sorted(recorded) == ["model_state.pdparams", "optimizer.pdopt", "rng-rank0.pkl", "scaler.pdparams"]
    model_file = state_dir / "model_state.pdparams"
    assert recorded["model_state.pdparams"]["bytes"] == model_file.stat().st_size
    assert len(recorded["model_state.pdparams"]["sha256"]) == 64
    assert resume_tiny(tiny_state)["global_step"] == 1


DAMAGES = {
    "model_truncated": (lambda state: truncate(state / "model_state.pdparams"), ["model_state.pdparams has"]),
    "model_empty": (lambda state: (state / "model_state.pdparams").write_bytes(b""),
                    ["model_state.pdparams has 0 bytes"]),
    "model_byte_flipped": (lambda state: flip_last_byte(state / "model_state.pdparams"),
                           ["model_state.pdparams differs from what was saved"]),
    "optimizer_deleted": (lambda state: (state / "optimizer.pdopt").unlink(), ["optimizer.pdopt is missing"]),
    "rng_deleted": (lambda state: (state / "rng-rank0.pkl").unlink(), ["rng-rank0.pkl is missing"]),
    "rng_truncated": (lambda state: truncate(state / "rng-rank0.pkl"), ["rng-rank0.pkl has"]),
    "trainer_state_truncated": (lambda state: truncate(state / "trainer_state.json"), ["trainer_state.json: "]),
    "trainer_state_binary": (lambda state: (state / "trainer_state.json").write_bytes(b"\xff\xfe\x00garbage"),
                             ["trainer_state.json: "]),
    "trainer_state_not_an_object": (lambda state: (state / "trainer_state.json").write_text("[1, 2]"),
                                    ["trainer_state.json lacks"]),
    "latest_binary": (lambda state: (state.parent / "latest").write_bytes(b"\x80\x81\x00step"),
                      ["latest does not name a state"]),
    "latest_empty": (lambda state: (state.parent / "latest").write_bytes(b""), ["latest does not name a state"]),
    "latest_names_a_deleted_state": (lambda state: shutil.rmtree(state), ["latest names step-1, which has no"]),
}


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_state_is_one_line_that_says_what_to_do(damage, tiny_state, tmp_path):
    copy, state_dir = damaged_copy(tiny_state, tmp_path)
    apply, fragments = DAMAGES[damage]
    apply(state_dir)
    with pytest.raises(DataError) as refused:
        resume_tiny(copy)
    assert_one_line_refusal(refused.value, "is damaged", *fragments, DELETE_ADVICE, FRESH_START)


def test_a_state_saved_without_checksums_still_fails_in_one_line_when_cut(tiny_state, tmp_path):
    """States written before checksums were recorded: the loaders' own errors (EOFError, UnpicklingError)
    become the same one line."""
    copy, state_dir = damaged_copy(tiny_state, tmp_path)
    progress = json.loads((state_dir / "trainer_state.json").read_text())
    del progress["files"]
    (state_dir / "trainer_state.json").write_text(json.dumps(progress))
    for name in ("rng-rank0.pkl", "model_state.pdparams"):
        truncate(state_dir / name)
        with pytest.raises(DataError) as refused:
            resume_tiny(copy)
        assert_one_line_refusal(refused.value, "is damaged", DELETE_ADVICE)
        shutil.copy(tiny_state / "resume" / "step-1" / name, state_dir / name)


def fail_at_save_of(monkeypatch, file_name: str) -> None:
    """paddle.save dies (as a killed process would stop) when it writes `file_name`."""
    original = paddle.save

    def save_or_die(obj, path, *args, **kwargs):
        if Path(path).name == file_name:
            Path(path).write_bytes(b"\x80partial")
            raise KeyboardInterrupt("killed while saving")
        return original(obj, path, *args, **kwargs)

    monkeypatch.setattr(resume.paddle, "save", save_or_die)


def test_a_save_killed_midway_leaves_the_previous_state_whole(tmp_path, monkeypatch):
    save_dir = tmp_path / "run"
    save_tiny_state(save_dir, step=1)
    with monkeypatch.context() as patch:
        fail_at_save_of(patch, "optimizer.pdopt")
        with pytest.raises(KeyboardInterrupt):
            save_tiny_state(save_dir, step=2)
    assert sorted(p.name for p in (save_dir / "resume").iterdir()) == ["latest", "step-1", "step-2.partial"]
    assert resume_tiny(save_dir)["global_step"] == 1
    save_tiny_state(save_dir, step=3)  # the next save clears what the killed one left
    assert sorted(p.name for p in (save_dir / "resume").iterdir()) == ["latest", "step-3"]


def test_a_first_save_killed_midway_is_named_when_resuming(tmp_path, monkeypatch):
    save_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        fail_at_save_of(patch, "model_state.pdparams")
        with pytest.raises(KeyboardInterrupt):
            save_tiny_state(save_dir, step=4)
    with pytest.raises(DataError) as refused:
        resume_tiny(save_dir)
    assert_one_line_refusal(refused.value, "no resumable state there", "step-4.partial was not finished",
                            FRESH_START)


def test_saving_over_a_damaged_pointer_replaces_it_and_clears_old_states(tiny_state, tmp_path):
    """The advice 'train again without --resume_from_checkpoint' must work in the same save_dir."""
    copy, state_dir = damaged_copy(tiny_state, tmp_path)
    (state_dir.parent / "latest").write_bytes(b"\xff\xff")
    save_tiny_state(copy, step=2)
    assert sorted(p.name for p in (copy / "resume").iterdir()) == ["latest", "step-2"]
    assert resume_tiny(copy)["global_step"] == 2


# ------------------------------------------------------------------ data fingerprints


def test_the_data_check_names_the_changed_file_and_its_lines(tmp_path):
    data = make_keyword_dataset(tmp_path / "data", n_train=240, n_dev=20)
    files = {"train_file": data / "train.txt", "dev_file": data / "dev.txt", "label_file": data / "label.txt"}
    saved = resume.data_fingerprint(files)
    resume.check_data(tmp_path, saved, resume.data_fingerprint(files), files)  # unchanged: accepted
    lines = (data / "train.txt").read_text(encoding="utf-8").splitlines()
    (data / "train.txt").write_text("\n".join(lines[:40]) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as refused:
        resume.check_data(tmp_path, saved, resume.data_fingerprint(files), files)
    assert_one_line_refusal(refused.value, "saved for a different train.txt", "now 40 lines", "then 240 lines",
                            FRESH_START, "restore the file")


# ------------------------------------------------------------------ --pos_weight files and ignored options


def test_pos_weight_file_faults_name_file_and_line(tmp_path):
    weights = tmp_path / "weights.txt"
    cases = [(b"1.0\n\xff\xfe\n1\n", f"{weights}:2: not valid UTF-8"),
             (b"1\n2\nabc\n", f"{weights}:3: could not convert 'abc'"),
             (b"1\n\n-2\n4\n", f"{weights}:3: -2: weights must be positive"),
             (b"1\n2\n", "2 weights for the 3 labels")]
    for content, fragment in cases:
        weights.write_bytes(content)
        with pytest.raises(DataError) as refused:
            losses.read_pos_weights(weights, "label.txt", 3)
        assert_one_line_refusal(refused.value, fragment)
    weights.write_bytes(b"\xef\xbb\xbf1\n\n2.5\n3\n\n")  # BOM and blank lines
    assert losses.read_pos_weights(weights, "label.txt", 3).tolist() == [1.0, 2.5, 3.0]


def test_a_bad_pos_weight_file_is_refused_whichever_loss(tmp_path):
    import train

    weights = tmp_path / "weights.txt"
    weights.write_text("1\n2\nx\n4\n5\n", encoding="utf-8")
    targets = np.eye(len(LABELS), dtype="float32")
    for loss in ("bce", "focal", "bce_pos_weight"):
        args = train.parser.parse_args(["--dataset_dir", str(tmp_path), "--loss", loss, "--pos_weight", str(weights)])
        with pytest.raises(DataError, match=f"{weights}:3: could not convert"):
            train.loss_settings(args, targets, tmp_path / "label.txt")


def test_options_the_chosen_setting_does_not_read_are_named_once(caplog):
    import train

    args = train.parser.parse_args(["--dataset_dir", "data", "--pos_weight", "w.txt", "--focal_gamma", "1",
                                    "--repeat_threshold", "0.2", "--early_stop_nums", "2", "--asl_clip", "0.1"])
    train.warn_ignored_options(args)
    for line in ("--pos_weight w.txt is ignored: it acts only with --loss bce_pos_weight",
                 "--focal_gamma 1.0 is ignored: it acts only with --loss focal or db",
                 "--repeat_threshold 0.2 is ignored: it acts only with --sampling repeat_factor",
                 "--early_stop_nums 2 is ignored: it acts only with --early_stop",
                 "--asl_clip 0.1 is ignored: it acts only with --loss asl"):
        assert caplog.text.count(line) == 1, caplog.text
    caplog.clear()
    args = train.parser.parse_args(["--dataset_dir", "data", "--loss", "bce_pos_weight", "--pos_weight", "w.txt",
                                    "--focal_gamma", "1", "--sampling", "repeat_factor", "--repeat_threshold", "0.2",
                                    "--early_stop", "--early_stop_nums", "2"])
    train.warn_ignored_options(args)
    assert "--pos_weight w.txt is ignored" not in caplog.text and "--repeat_threshold" not in caplog.text
    assert "--early_stop_nums" not in caplog.text and "--focal_gamma 1.0 is ignored" in caplog.text


def long_text_args(**given) -> argparse.Namespace:
    return argparse.Namespace(**{"long_text": None, "window_stride": None, "max_windows": None,
                                 "window_pooling": None, **given})


def test_window_options_under_truncation_are_named_once_each(caplog):
    resolve_long_text(long_text_args(window_stride=4, max_windows=3, window_pooling="mean"), LongText(), 32)
    for name, value in (("window_stride", 4), ("max_windows", 3), ("window_pooling", "mean")):
        assert caplog.text.count(f"--{name} {value} is ignored: it acts only with --long_text window") == 1
    caplog.clear()
    resolve_long_text(long_text_args(window_stride=4), LongText(mode="window"), 32)  # a windowed checkpoint
    resolve_long_text(long_text_args(long_text="window", max_windows=3), LongText(), 32)
    assert "is ignored" not in caplog.text
    resolve_long_text(long_text_args(long_text="truncate", window_pooling="mean"), LongText(mode="window"), 32)
    assert "--window_pooling mean is ignored" in caplog.text


# ------------------------------------------------------------------ checkpoint configs and export metadata


@pytest.mark.parametrize("content", [b'{"multi_label_thresholds": [0.5, 0.', b"", b"\xff\xfe{}", b"[0.5]"])
def test_a_damaged_checkpoint_config_is_one_line(content, tmp_path):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(DataError) as refused:
        stored_config(tmp_path)
    assert_one_line_refusal(refused.value, f"{tmp_path / 'config.json'}: damaged", "train it again")


def test_damaged_export_metadata_is_one_line(tmp_path):
    (tmp_path / exporting.META_FILE).write_text('{"model_prefix": "flo', encoding="utf-8")
    with pytest.raises(DataError) as refused:
        exporting.export_prefix_in(tmp_path)
    assert_one_line_refusal(refused.value, "export_meta.json: damaged", "export_model.py again")


def test_a_checkpoint_save_killed_midway_keeps_the_previous_config(scratch_model, tmp_path, monkeypatch):
    model, tokenizer = load_model(str(scratch_model), len(LABELS)), load_tokenizer(str(scratch_model))
    save_checkpoint(model, tokenizer, tmp_path, LABELS, Decision(np.full(len(LABELS), 0.5, dtype="float32")))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(type(tokenizer), "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, tokenizer, tmp_path, LABELS, Decision(np.full(len(LABELS), 0.3, dtype="float32")))
    assert stored_config(tmp_path)["multi_label_thresholds"] == [0.5] * len(LABELS)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ end to end through the scripts

RUN = ["--device", "cpu", "--batch_size", "16", "--learning_rate", "1e-3", "--epochs", "2", "--logging_steps", "50",
       "--max_seq_length", "32", "--save_last", "--window_stride", "4", "--repeat_threshold", "0.2"]


@pytest.fixture(scope="module")
def saved_run(scratch_model, tmp_path_factory):
    """One short run with --save_last (and options its setting ignores): its data, save_dir and log."""
    root = tmp_path_factory.mktemp("saved_run")
    data = make_keyword_dataset(root / "data", n_train=96, n_dev=16, seed=7)
    weights = root / "weights.txt"
    weights.write_text("\n".join(["2"] * len(LABELS)) + "\n", encoding="utf-8")
    save_dir = root / "ckpt"
    result = run_main("train.py", *RUN, "--dataset_dir", data, "--model_name", scratch_model, "--save_dir", save_dir,
                      "--pos_weight", weights)
    assert result.returncode == 0, result.stderr[-3000:]
    return data, save_dir, result.stderr, weights


def resume_run(saved_run, scratch_model, data: Path, save_dir: Path, *options):
    return run_main("train.py", *RUN, "--dataset_dir", data, "--model_name", scratch_model, "--save_dir", save_dir,
                    "--resume_from_checkpoint", save_dir, *options)


def assert_refused(result, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    line = next(line for line in result.stderr.splitlines() if "ERROR" in line)
    for fragment in fragments:
        assert fragment in line, result.stderr[-2000:]
    return line


@pytest.mark.slow
def test_the_run_named_the_options_it_ignored(saved_run):
    _, _, log, weights = saved_run
    for line in (f"--pos_weight {weights} is ignored: it acts only with --loss bce_pos_weight",
                 "--window_stride 4 is ignored: it acts only with --long_text window",
                 "--repeat_threshold 0.2 is ignored: it acts only with --sampling repeat_factor"):
        assert log.count(line) == 1, log[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("changed", ["train.txt", "dev.txt", "label.txt"])
def test_resume_on_changed_data_is_refused_naming_the_file(changed, saved_run, scratch_model, tmp_path):
    data, save_dir, _, _ = saved_run
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    lines = (copy / changed).read_text(encoding="utf-8").splitlines()
    cut = lines[::-1] if changed == "label.txt" else lines[:8]  # labels reordered; texts cut
    (copy / changed).write_text("\n".join(cut) + "\n", encoding="utf-8")
    before = sorted(p.name for p in save_dir.iterdir())
    line = assert_refused(resume_run(saved_run, scratch_model, copy, save_dir),
                          f"saved for a different {changed} ({copy / changed}: now {len(cut)} lines",
                          FRESH_START, "restore the file")
    assert f"then {len(lines)} lines" in line
    assert sorted(p.name for p in save_dir.iterdir()) == before  # refused before writing anything


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["model_truncated", "rng_deleted", "trainer_state_truncated", "latest_binary"])
def test_train_py_refuses_a_damaged_state_in_one_line(damage, saved_run, scratch_model, tmp_path):
    data, save_dir, _, _ = saved_run
    copy = tmp_path / "ckpt"
    shutil.copytree(save_dir, copy)
    apply, fragments = DAMAGES[damage]
    apply(resume.find_state(copy))
    assert_refused(resume_run(saved_run, scratch_model, data, copy), "is damaged", *fragments, DELETE_ADVICE,
                   FRESH_START)


@pytest.mark.slow
def test_train_py_refuses_a_bad_pos_weight_file_under_bce(saved_run, scratch_model, tmp_path):
    data, _, _, _ = saved_run
    weights = tmp_path / "weights.txt"
    for content, fragment in ((b"1\n1\n\xff\n1\n1\n", ":3: not valid UTF-8"), (b"1\n1\n1\nnan?\n1\n", ":4: could not")):
        weights.write_bytes(content)
        result = run_main("train.py", "--device", "cpu", "--dataset_dir", data, "--model_name", scratch_model,
                          "--save_dir", tmp_path / "out", "--max_seq_length", "32", "--pos_weight", weights)
        assert_refused(result, f"--pos_weight {weights}{fragment}")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["predict.py", "export_model.py"])
def test_a_checkpoint_with_a_cut_config_is_refused_in_one_line(script, saved_run, tmp_path):
    data, save_dir, _, _ = saved_run
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(save_dir, checkpoint, ignore=shutil.ignore_patterns("resume"))
    truncate(checkpoint / "config.json", 0.6)
    options = (["--device", "cpu", "--output_file", tmp_path / "out.txt"] if script == "predict.py"
               else ["--output_path", tmp_path / "export"])
    result = run_main(script, "--dataset_dir", data, "--params_path", checkpoint, *options)
    assert_refused(result, f"{checkpoint / 'config.json'}: damaged, not valid JSON", "train it again")
