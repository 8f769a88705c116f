"""Labelling state on disk that survives damage: truncated or garbage parts and records, an input edited
behind the size and mtime, a kill while the output is written, a missing output directory, a damaged
export cache. The labelling tests run `label_file` on a stand-in model (no checkpoint needed); the ones
marked slow run predict.py on the trained checkpoint."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import labelling
import parity
from decision import Decision
from exporting import cached
from labelling import Labeller, label_file
from pipeline import LengthCounts
from utils import DataError, file_records, write_json

from conftest import run_main

OPTIONS = {"model": "stand-in"}


class Texts(list):
    """The stand-in's encoded rows: the texts themselves, with (empty) length counts as a pipeline's have."""

    counts = LengthCounts()


class CharacterModel:
    """A stand-in for pipeline and model: the logits follow from each text's characters, so every row
    depends on its own line and a misaligned or stale row shows."""

    def encode(self, texts: list[str]) -> Texts:
        return Texts(texts)

    def outputs(self, runner, texts: list[str]) -> np.ndarray:
        return np.array([[len(text) % 3 - 1.0, ord(text[-1]) % 5 - 2.0] for text in texts], dtype="float32")


LABELLER = Labeller(CharacterModel(), None, Decision(np.full(2, 0.5, dtype="float32")), ["甲", "乙"])


def label(data: Path, output: Path, resume: bool = True, part_lines: int = 10) -> None:
    label_file(LABELLER, data, output, batch_size=2, options=OPTIONS, resume=resume, part_lines=part_lines)


@pytest.fixture
def data(tmp_path) -> Path:
    """55 lines of Chinese text (3 bytes a character) with two blank lines: six parts of 10 lines."""
    lines = [f"第{i}行的文本{'长' * (i % 4)}" for i in range(55)]
    lines[12] = lines[40] = ""
    path = tmp_path / "data.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def fresh(data: Path, tmp_path: Path) -> str:
    """What an uninterrupted run without parts writes for `data` now."""
    output = tmp_path / "fresh" / "output.txt"
    label(data, output, resume=False)
    return output.read_text(encoding="utf-8")


def interrupted(data: Path, output: Path, monkeypatch, in_part: int = 3) -> list[int]:
    """A --resume run killed while part `in_part` is written: the parts before it are finished. Returns
    the list that the next runs fill with the parts they label."""
    original = labelling.write_rows
    calls: list[int] = []

    def killed(labeller, data_path, out, part, *args):
        if part.index == in_part:
            raise KeyboardInterrupt
        return original(labeller, data_path, out, part, *args)

    monkeypatch.setattr(labelling, "write_rows", killed)
    with pytest.raises(KeyboardInterrupt):
        label(data, output)
    monkeypatch.setattr(labelling, "write_rows", lambda *args: calls.append(args[3].index) or original(*args))
    return calls


def parts_of(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def test_stand_in_rows_differ_between_lines(data, tmp_path):
    rows = fresh(data, tmp_path).splitlines()[1:]
    assert len(rows) == 55 and rows[12] == "" and len(set(rows)) > 20


@pytest.mark.parametrize("cut", ["line boundary", "mid-character"])
def test_a_truncated_finished_part_is_labelled_again_never_joined(data, tmp_path, monkeypatch, caplog, cut):
    output = tmp_path / "output.txt"
    calls = interrupted(data, output, monkeypatch)
    rows = parts_of(output) / "part-00001.txt"
    content = rows.read_bytes()
    end = content.rstrip(b"\n").rfind(b"\n") + 1 if cut == "line boundary" else len(content) - 5
    rows.write_bytes(content[:end])  # the record still says 10 rows
    label(data, output)
    assert calls == [1, 3, 4, 5]
    assert output.read_text(encoding="utf-8") == fresh(data, tmp_path)
    assert "Part 1: lines 11-20 not kept" in caplog.text
    assert not parts_of(output).exists() and not output.with_name("output.txt.partial").exists()


def test_an_input_edited_with_same_size_and_restored_mtime_invalidates_its_part(data, tmp_path, monkeypatch, caplog):
    output = tmp_path / "output.txt"
    calls = interrupted(data, output, monkeypatch)
    status = data.stat()
    text = data.read_text(encoding="utf-8")
    edited = text.replace("第15行的文本", "第15行的新本")
    assert edited != text and len(edited.encode()) == status.st_size
    data.write_text(edited, encoding="utf-8")
    os.utime(data, ns=(status.st_atime_ns, status.st_mtime_ns))
    label(data, output)
    assert calls == [1, 3, 4, 5]
    assert output.read_text(encoding="utf-8") == fresh(data, tmp_path)
    assert "第15行的新本" in output.read_text(encoding="utf-8")
    assert "Part 1: lines 11-20 not kept" in caplog.text


@pytest.mark.parametrize("record", [b"{\"options\": tru", b"\xff\xfe garbage", b"[1, 2]", b"null"])
def test_a_garbage_record_makes_its_part_labelled_again(data, tmp_path, monkeypatch, record):
    output = tmp_path / "output.txt"
    calls = interrupted(data, output, monkeypatch)
    (parts_of(output) / "part-00002.json").write_bytes(record)
    label(data, output)
    assert calls == [2, 3, 4, 5]
    assert output.read_text(encoding="utf-8") == fresh(data, tmp_path)


def test_a_row_changed_in_place_is_caught_by_the_checksum(data, tmp_path, monkeypatch, caplog):
    output = tmp_path / "output.txt"
    calls = interrupted(data, output, monkeypatch)
    rows = parts_of(output) / "part-00000.txt"
    rows.write_bytes(rows.read_bytes().replace("甲".encode(), "乙".encode(), 1))  # same size
    label(data, output)
    assert calls == [0, 3, 4, 5]
    assert "Part 0: lines 1-10 not kept" in caplog.text and "checksum" in caplog.text
    assert output.read_text(encoding="utf-8") == fresh(data, tmp_path)


def test_a_part_damaged_after_it_was_kept_is_relabelled_at_the_join(data, tmp_path, monkeypatch, caplog):
    """One process: the join verifies every part again and labels a damaged one itself."""
    output = tmp_path / "output.txt"
    calls = interrupted(data, output, monkeypatch)
    original = labelling.write_part

    def damage_part_0_after(labeller, run, part, batch_size):
        original(labeller, run, part, batch_size)
        if part.index == 5:  # the last part is written: now part 0 (kept at the start) is damaged
            rows = parts_of(output) / "part-00000.txt"
            rows.write_bytes(rows.read_bytes().replace("甲".encode(), "乙".encode(), 1))

    monkeypatch.setattr(labelling, "write_part", damage_part_0_after)
    label(data, output)
    assert calls == [3, 4, 5, 0]
    assert "Part 0: lines 1-10 not kept" in caplog.text
    assert output.read_text(encoding="utf-8") == fresh(data, tmp_path)


def test_a_kill_while_the_output_is_written_keeps_the_old_output(data, tmp_path, monkeypatch):
    output = tmp_path / "output.txt"
    output.write_text("text\tlabel\nthe old complete output\n", encoding="utf-8")
    original = labelling.write_rows

    def killed_half_way(labeller, data_path, out, part, *args):
        out.write("第0行\t甲\n第1行的文")
        raise KeyboardInterrupt

    monkeypatch.setattr(labelling, "write_rows", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        label(data, output, resume=False)
    assert output.read_text(encoding="utf-8") == "text\tlabel\nthe old complete output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt", "output.txt"]

    monkeypatch.setattr(labelling, "write_rows", original)
    copy = shutil.copyfileobj
    copied: list[int] = []

    def killed_in_the_join(source, target, *args):
        copied.append(1)
        if len(copied) == 3:
            target.write(source.read(7))
            raise KeyboardInterrupt
        copy(source, target, *args)

    monkeypatch.setattr(labelling.shutil, "copyfileobj", killed_in_the_join)
    with pytest.raises(KeyboardInterrupt):
        label(data, output)
    assert output.read_text(encoding="utf-8") == "text\tlabel\nthe old complete output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt", "output.txt", "output.txt.parts"]
    monkeypatch.setattr(labelling.shutil, "copyfileobj", copy)
    label(data, output)  # the parts were all finished: joined now
    assert output.read_text(encoding="utf-8") == fresh(data, tmp_path)


@pytest.mark.parametrize("resume", [False, True])
def test_a_missing_output_directory_is_created(data, tmp_path, resume):
    output = tmp_path / "new" / "deeper" / "output.txt"
    label(data, output, resume=resume)
    assert output.read_text(encoding="utf-8") == fresh(data, tmp_path)


@pytest.mark.parametrize("resume", [False, True])
def test_an_output_directory_that_cannot_be_made_is_one_line(data, tmp_path, resume):
    (tmp_path / "plain").write_text("a file, not a directory\n", encoding="utf-8")
    for output in (tmp_path / "plain" / "output.txt", tmp_path / "plain" / "sub" / "output.txt"):
        with pytest.raises(DataError, match=r"--output_file .*plain.*: cannot create the directory"):
            label(data, output, resume=resume)


# ------------------------------------------------------------------ the export cache of predict.py --backend


def write_cache(cache: Path, source: dict) -> None:
    """A stand-in export cache: two files and the stamp cached_export writes."""
    cache.mkdir()
    (cache / "float32.pdiparams").write_bytes(b"weights" * 100)
    (cache / "model.onnx").write_bytes(b"graph" * 100)
    write_json(cache / parity.CACHE_STAMP,
               {"source": source, "files": file_records(cache, ["float32.pdiparams", "model.onnx"])})


@pytest.mark.parametrize("damage, problem", [
    (lambda cache: (cache / "float32.pdiparams").write_bytes(b"weights" * 50), "float32.pdiparams has 350 bytes"),
    (lambda cache: (cache / "model.onnx").write_bytes(b"GRAPH" * 100), "model.onnx does not match its recorded"),
    (lambda cache: (cache / "model.onnx").unlink(), "model.onnx is missing"),
    (lambda cache: (cache / "source.json").write_bytes(b"\x00\xff{"), "source.json is unreadable"),
    (lambda cache: (cache / "source.json").unlink(), "it has no stamp"),
    (lambda cache: write_json(cache / "source.json", {"weights_size": 1, "weights_mtime_ns": 2}),
     "made from other weights"),  # the stamp of an earlier version
])
def test_a_damaged_or_stale_export_cache_is_not_used(tmp_path, damage, problem):
    cache = tmp_path / "export_cache"
    write_cache(cache, {"weights_size": 1, "weights_mtime_ns": 2})
    assert parity.cache_problem(cache, {"weights_size": 1, "weights_mtime_ns": 2}) is None
    assert "made from other weights" in parity.cache_problem(cache, {"weights_size": 1, "weights_mtime_ns": 3})
    damage(cache)
    assert problem in parity.cache_problem(cache, {"weights_size": 1, "weights_mtime_ns": 2})


@pytest.mark.parametrize("damage", ["truncated", "garbage", "record"])
def test_a_damaged_derived_model_is_built_again(tmp_path, damage, caplog):
    source, target = tmp_path / "model.onnx", tmp_path / "int8_model.onnx"
    source.write_text("model")
    builds = []

    def build(out: Path) -> None:
        builds.append(out)
        out.write_text("int8 model")

    cached(target, source, build, "INT8 model")
    {"truncated": lambda: target.write_text("int8"), "garbage": lambda: target.write_text("INT8 MODEL"),
     "record": lambda: target.with_name("int8_model.onnx.built.json").write_text("[")}[damage]()
    cached(target, source, build, "INT8 model")
    assert len(builds) == 2 and target.read_text() == "int8 model"
    assert "Cached INT8 model" in caplog.text and "building it again" in caplog.text
    cached(target, source, build, "INT8 model")
    assert len(builds) == 2


def test_a_derived_model_of_an_earlier_version_without_a_record_is_still_used(tmp_path):
    source, target = tmp_path / "model.onnx", tmp_path / "int8_model.onnx"
    source.write_text("model")
    target.write_text("int8 model built before builds were recorded")
    cached(target, source, lambda out: pytest.fail("rebuilt"), "INT8 model")


# ------------------------------------------------------------------ predict.py on the trained checkpoint


def predict(checkpoint: Path, data: Path, output: Path, *options):
    return run_main("predict.py", "--device", "cpu", "--dataset_dir", data, "--params_path", checkpoint,
                    "--output_file", output, *options)


@pytest.mark.slow
def test_predict_py_keeps_the_old_output_when_killed_and_makes_its_directory(trained, keyword_data, tmp_path,
                                                                               monkeypatch):
    output = tmp_path / "new" / "output.txt"
    result = predict(trained[0], keyword_data, output)
    assert result.returncode == 0, result.stderr[-2000:]
    complete = output.read_text(encoding="utf-8")
    assert len(complete.splitlines()) == 1 + 100

    def killed(labeller, data_path, out, *args):
        out.write("半行")
        raise KeyboardInterrupt

    monkeypatch.setattr(labelling, "write_rows", killed)
    with pytest.raises(KeyboardInterrupt):
        predict(trained[0], keyword_data, output)
    assert output.read_text(encoding="utf-8") == complete
    assert [p.name for p in output.parent.iterdir()] == ["output.txt"]
    (tmp_path / "plain").write_text("", encoding="utf-8")
    for resume in ([], ["--resume"]):
        result = predict(trained[0], keyword_data, tmp_path / "plain" / "output.txt", *resume)
        assert result.returncode == 2 and "cannot create the directory" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_damaged_export_cache_is_exported_again_and_an_unwritable_one_is_one_line(trained, keyword_data,
                                                                                     tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(trained[0], checkpoint, ignore=shutil.ignore_patterns("export_cache*"))
    cache = checkpoint / "export_cache"
    result = predict(checkpoint, keyword_data, tmp_path / "first.txt", "--backend", "onnxruntime")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Exporting" in result.stderr
    expected = (tmp_path / "first.txt").read_text(encoding="utf-8")

    params = cache / "float32.pdiparams"
    params.write_bytes(params.read_bytes()[:1000])  # a kill or a full disk: "Cannot read tensor desc size"
    result = predict(checkpoint, keyword_data, tmp_path / "paddle.txt", "--backend", "paddle")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "float32.pdiparams has 1000 bytes" in result.stderr and "exporting again" in result.stderr
    assert (tmp_path / "paddle.txt").read_text(encoding="utf-8") == expected

    onnx_file = cache / "model.onnx"
    content = bytearray(onnx_file.read_bytes())
    content[len(content) // 2:len(content) // 2 + 64] = b"\x00" * 64
    onnx_file.write_bytes(bytes(content))
    result = predict(checkpoint, keyword_data, tmp_path / "onnx.txt", "--backend", "onnxruntime")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model.onnx does not match its recorded checksum" in result.stderr
    assert (tmp_path / "onnx.txt").read_text(encoding="utf-8") == expected

    (checkpoint / "export_cache.lock").unlink()
    (checkpoint / "export_cache.lock").mkdir()  # as root a read-only directory cannot be made: no lock file either
    result = predict(checkpoint, keyword_data, tmp_path / "kept.txt", "--backend", "onnxruntime")
    assert result.returncode == 0 and "Using the export" in result.stderr  # a good cache needs no lock
    (cache / "float32.json").unlink()
    result = predict(checkpoint, keyword_data, tmp_path / "none.txt", "--backend", "paddle")
    assert result.returncode == 2 and "cannot write the export cache of --params_path" in result.stderr
    assert "float32.json is missing" in result.stderr and not (tmp_path / "none.txt").exists()


def test_an_input_that_starts_with_the_output_header_resumes_its_kept_parts(data, tmp_path, monkeypatch, caplog):
    """The header line gets no row, so a part's rows are not one per line: its record, not the line
    count, says how many rows a complete part has."""
    data.write_text("text\tlabel\n" + data.read_text(encoding="utf-8"), encoding="utf-8")
    output = tmp_path / "output.txt"
    calls = interrupted(data, output, monkeypatch)
    label(data, output)
    assert calls == [3, 4, 5] and "not kept" not in caplog.text
    assert output.read_text(encoding="utf-8") == fresh(data, tmp_path)
