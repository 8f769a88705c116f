"""The benchmark page shows what bench/results/ records: bench/render_tables.py's blocks, the result
files bench/benchtools.py writes, and runs a benchmark keeps only under the settings it reports."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import benchtools
import distill_bench
import pretrain_bench
import pytest
import render_tables

import distill
import train
from utils import write_settings

from conftest import ROOT


def result_files() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((ROOT / "bench" / "results").glob("*.json"))}


def test_the_benchmark_page_is_rendered_from_the_result_files():
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert render_tables.render(page, result_files()) == page, "run python bench/render_tables.py"


def test_every_result_file_says_how_and_when_it_was_measured_or_that_this_is_unknown():
    for name, record in result_files().items():
        assert record["benchmark"] == name and record["command"] and record["tables"].startswith("|"), name
        assert {"measured_at", "commit", "hardware"} <= set(record), name
        if record["measured_at"] is None:  # taken over from the page before result files existed
            assert record["commit"] is None and (record.get("source") or name == "decision"), name


def test_a_block_without_its_result_file_and_a_result_file_without_a_block_are_named():
    page = "a\n<!-- bench:one -->\nold\n<!-- /bench:one -->\nb\n"
    record = {"command": ["python bench/x.py"], "hardware": None, "tables": "| a |\n|---|\n| 1 |\n"}
    assert render_tables.render(page, {"one": record}) == (
        "a\n<!-- bench:one -->\n```bash\npython bench/x.py\n```\n\n测量环境：未记录。\n\n| a |\n|---|\n| 1 |\n"
        "<!-- /bench:one -->\nb\n")
    with pytest.raises(SystemExit, match=r"without a result file: \['one'\].*without a block: \['two'\]"):
        render_tables.render(page, {"two": record})


def test_a_result_records_the_command_the_time_the_commit_and_only_the_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(benchtools, "RESULTS", tmp_path)
    monkeypatch.setattr("sys.argv", [str(ROOT / "bench" / "x.py"), "--dataset_dir", "divorce"])
    report = "#### Setting: 3 seeds\n\n" + benchtools.markdown_table(["a", "b"], [(1, "2.00")]) + "\nnote\n\n| c |\n|---|\n"
    record = json.loads(benchtools.save_result("x", report).read_text(encoding="utf-8"))
    assert record["command"] == ["python bench/x.py --dataset_dir divorce"]
    assert record["notes"] == ["Setting: 3 seeds", "note"]
    assert record["tables"] == "| a | b |\n|---|---|\n| 1 | 2.00 |\n\n| c |\n|---|\n"
    assert record["measured_at"].startswith("20") and record["hardware"].endswith(")")
    assert record["commit"] is None or len(record["commit"].split("+")[0]) == 40
    kept = benchtools.runs_provenance([{"measured_at": "t1", "commit": "c", "hardware": "h"}, {"measured_at": "t0"}])
    assert kept == {"measured_at": "t0 .. t1", "commit": None, "hardware": None}


def test_a_pretraining_run_is_kept_with_when_and_from_which_commit_it_was_measured(tmp_path):
    results_file = tmp_path / "results.json"
    pretrain_bench.record_run(results_file, "c", 1, {"tuned": [0.8, 0.6]})
    pretrain_bench.record_run(results_file, "4 c", 1, {"f1": [0.5, 0.4]})
    stored = json.loads(results_file.read_text(encoding="utf-8"))
    assert stored["c"]["1"]["tuned"] == [0.8, 0.6] and stored["4 c"]["1"]["f1"] == [0.5, 0.4]
    assert stored["c"]["1"]["measured_at"].startswith("20") and "commit" in stored["4 c"]["1"]
    stored["c"]["2"] = {"tuned": [0.7, 0.5]}  # a run kept from before runs were recorded with their time
    measured_at = stored["4 c"]["1"]["measured_at"]
    assert benchtools.runs_provenance(pretrain_bench.runs_in(stored, ["4 c"]))["measured_at"] == \
        f"{measured_at} .. {measured_at}"
    assert benchtools.runs_provenance(pretrain_bench.runs_in(stored, ["c", "4 c"]))["measured_at"] is None


def test_tabulating_pretraining_reuses_the_measured_speeds_and_their_provenance(tmp_path):
    run = tmp_path / "cost" / "pretrain_tiny"
    run.mkdir(parents=True)
    (run / "pretrain_results.json").write_text(json.dumps(
        {"train_tokens": 6000, "steps_per_epoch": 30, "global_steps": 20, "loop_time_s": 4.0}), encoding="utf-8")
    args = pretrain_bench.parser.parse_args(["--dataset_dir", "unused", "--corpus", "unused", "--tabulate_only",
                                             "--cost_presets", "tiny"])
    table, measured = pretrain_bench.cost_table(args, tmp_path / "unused", tmp_path)
    assert table.splitlines()[-1] == "| tiny | 6000 | 5.00 | 1000 | 0.1 |" and measured == {}
    (tmp_path / "cost" / "measured.json").write_text('{"measured_at": "t", "commit": "c", "hardware": "h"}')
    assert pretrain_bench.cost_table(args, tmp_path / "unused", tmp_path)[1]["measured_at"] == "t"


def test_a_kept_student_run_is_reused_only_with_the_settings_it_was_trained_with(tmp_path, monkeypatch):
    monkeypatch.setattr(distill_bench, "run_script", lambda *args, **kwargs: pytest.fail("retrained a kept run"))
    bench_args = distill_bench.parser.parse_args(["--dataset_dir", "d", "--corpus", "c.txt", "--student_args",
                                                  "--batch_size 32 --epochs 8"])
    save_dir = tmp_path / "students" / "4x192_e_seed2"
    moved = Path("/elsewhere")  # trained in another checkout, then copied here
    command = distill_bench.student_options(bench_args, "4x192:e", 2, Path("d"), moved / "teacher",
                                            moved / "corpus.txt.gz", moved / "students" / save_dir.name)
    save_dir.mkdir(parents=True)
    (save_dir / "results.json").write_text("{}", encoding="utf-8")
    write_settings(distill.parser.parse_args(command), save_dir)
    settings = (save_dir / "setting.txt").read_text(encoding="utf-8")
    assert "\nintermediate : none\n" in settings  # a run older than --intermediate learned without it
    (save_dir / "setting.txt").write_text(settings.replace("\nintermediate : none\n", "\n"), encoding="utf-8")
    assert distill_bench.student_run(bench_args, "4x192:e", 2, Path("d"), tmp_path / "teacher",
                                     tmp_path / "corpus.txt.gz", tmp_path) == save_dir

    bench_args.student_args += " --learning_rate 1e-3"
    with pytest.raises(SystemExit, match=r"4x192_e_seed2 was trained with learning_rate 0\.0005 \(asked 0\.001\)"):
        distill_bench.student_run(bench_args, "4x192:e", 2, Path("d"), tmp_path / "teacher",
                                  tmp_path / "corpus.txt.gz", tmp_path)


def test_the_kept_teacher_is_reused_only_with_the_settings_it_was_trained_with(tmp_path, monkeypatch):
    monkeypatch.setattr(distill_bench, "run_script", lambda *args, **kwargs: pytest.fail("retrained a kept run"))
    bench_args = distill_bench.parser.parse_args(["--dataset_dir", "d", "--corpus", "c.txt"])
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "results.json").write_text("{}", encoding="utf-8")
    write_settings(train.parser.parse_args(["--dataset_dir", "d", "--model_name", str(tmp_path / "teacher_scratch"),
                                            "--save_dir", str(teacher), "--max_seq_length", "64", "--device", "gpu",
                                            *shlex.split(bench_args.teacher_args)]), teacher)
    assert distill_bench.teacher(bench_args, Path("d"), tmp_path) == teacher

    bench_args.teacher_args += " --seed 5"
    with pytest.raises(SystemExit, match=r"teacher was trained with seed 3 \(asked 5\)"):
        distill_bench.teacher(bench_args, Path("d"), tmp_path)
