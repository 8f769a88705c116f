"""doccano.py: every export shape of doccano and Label Studio becomes the same data files, and each
defect of the reference's converter is fixed (shuffle, --is_shuffle False, tracebacks, overwrites).

The fixtures in tests/fixtures/annotation/ are hand-made from the documented export formats of doccano
1.6/1.8 and Label Studio 1.x; they hold the same six texts: four annotated, one annotated with no
choice (only Label Studio can say that), one nobody annotated.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, run_main, run_script

FIXTURES = ROOT / "tests" / "fixtures" / "annotation"
DOCCANO = ["doccano_1.6.jsonl", "doccano_1.8.jsonl", "doccano_1.8.csv", "doccano_1.8_fasttext.txt"]
LABEL_STUDIO = ["label_studio.json", "label_studio_min.json", "label_studio.csv", "label_studio_min_topic.json"]
FORMAT_OF = {"doccano_1.6.jsonl": "doccano_jsonl", "doccano_1.8.jsonl": "doccano_jsonl", "doccano_1.8.csv": "doccano_csv",
             "doccano_1.8_fasttext.txt": "fasttext", "label_studio.json": "label_studio_json",
             "label_studio_min.json": "label_studio_json_min", "label_studio_min_topic.json": "label_studio_json_min",
             "label_studio.csv": "label_studio_csv"}


def convert(export: Path, save_dir: Path, *options):
    return run_main("doccano.py", "--doccano_file", export, "--save_dir", save_dir, *options)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)) + "\n"
                            for item in items), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", DOCCANO + LABEL_STUDIO)
def test_every_export_gives_the_expected_train_and_label_files(name, tmp_path):
    result = convert(FIXTURES / name, tmp_path, "--splits", "1", "--is_shuffle", "False")
    assert result.returncode == 0, result.stderr
    expected = "doccano" if name in DOCCANO else "label_studio"
    assert read(tmp_path / "train.txt") == read(FIXTURES / f"expected_train_{expected}.txt")
    assert read(tmp_path / "label.txt") == read(FIXTURES / "expected_label.txt")
    texts = [line.split("\t")[0] for line in read(tmp_path / "train.txt").splitlines()]
    assert read(tmp_path / "data.txt").splitlines() == texts
    # nobody annotated: doccano cannot tell "no label" from "not annotated", Label Studio can
    assert read(tmp_path / "unlabelled.txt").splitlines() == (["今天天气很好"] if name in DOCCANO else []) + ["学校明天考试"]
    assert f"({FORMAT_OF[name]})" in result.stderr
    assert "Save 4 labels to" in result.stderr and "texts nobody annotated to" in result.stderr


def test_label_studio_latest_annotation_counts_and_cancelled_and_predictions_do_not(tmp_path):
    """Task 21 was relabelled 财经 -> 体育 (the later updated_at wins); task 22's later but cancelled 体育 is
    ignored; task 26 has only a cancelled annotation and a prediction of 教育: not annotated."""
    convert(FIXTURES / "label_studio.json", tmp_path, "--splits", "1", "--is_shuffle", "False")
    lines = read(tmp_path / "train.txt").splitlines()
    assert lines[0].endswith("\t体育") and lines[1].endswith("\t财经")
    assert "教育" not in read(tmp_path / "label.txt")


def test_another_choices_name_needs_from_name(tmp_path):
    export = FIXTURES / "label_studio_topic.json"
    result = convert(export, tmp_path, "--splits", "1")
    assert result.returncode == 2 and "--from_name" in result.stderr and "quality, topic" in result.stderr
    assert not tmp_path.joinpath("train.txt").exists()
    result = convert(export, tmp_path, "--splits", "1", "--is_shuffle", "False", "--from_name", "topic")
    assert result.returncode == 0, result.stderr
    assert read(tmp_path / "train.txt") == read(FIXTURES / "expected_train_label_studio.txt")


def make_zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def test_doccano_zip_admin_and_collaborative_all(tmp_path):
    jsonl = read(FIXTURES / "doccano_1.8.jsonl")
    for members in ({"admin.jsonl": jsonl}, {"all.jsonl": jsonl, "admin.jsonl": "{}\n", "bob.jsonl": "{}\n"}):
        out = tmp_path / "_".join(members)
        result = convert(make_zip(tmp_path / "export.zip", members), out, "--splits", "1", "--is_shuffle", "False")
        assert result.returncode == 0, result.stderr
        assert read(out / "train.txt") == read(FIXTURES / "expected_train_doccano.txt")


@pytest.mark.parametrize("members, message", [
    ({"admin.jsonl": "{}\n", "bob.jsonl": "{}\n"}, "--zip_member"),
    ({"README.md": "hello"}, "no JSONL"),
])
def test_doccano_zip_that_cannot_be_read_is_one_line(tmp_path, members, message):
    result = convert(make_zip(tmp_path / "export.zip", members), tmp_path / "out")
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_shuffle_permutes_what_is_split(tmp_path):
    """The reference shuffled a list the split never read: its splits were always in file order."""
    export = write_jsonl(tmp_path / "doccano.jsonl", [{"text": f"文本{i}", "label": ["甲"]} for i in range(40)])
    in_order = [f"文本{i}\t甲" for i in range(40)]
    for seed in ("3", "3", "4"):
        out = tmp_path / f"seed{seed}"
        assert convert(export, out, "--splits", "0.5", "0.5", "--seed", seed, "--overwrite").returncode == 0
        train, dev = read(out / "train.txt").splitlines(), read(out / "dev.txt").splitlines()
        assert train != in_order[:20] and sorted(train + dev) == sorted(in_order)
    assert read(tmp_path / "seed3" / "train.txt") != read(tmp_path / "seed4" / "train.txt")
    assert convert(export, tmp_path / "plain", "--splits", "0.5", "0.5", "--is_shuffle", "False").returncode == 0
    assert read(tmp_path / "plain" / "train.txt").splitlines() == in_order[:20]


def test_is_shuffle_false_is_false_and_other_words_are_refused(tmp_path):
    export = write_jsonl(tmp_path / "doccano.jsonl", [{"text": f"文本{i}", "label": ["甲"]} for i in range(10)])
    assert convert(export, tmp_path / "a", "--splits", "1", "--is_shuffle", "false").returncode == 0
    assert read(tmp_path / "a" / "train.txt").splitlines() == [f"文本{i}\t甲" for i in range(10)]
    result = convert(export, tmp_path / "b", "--is_shuffle", "no")
    assert result.returncode == 2 and "expected True or False" in result.stderr


@pytest.mark.parametrize("lines, message", [
    ([{"text": "一", "label": ["甲"]}, {"text": "二", "label": ["甲,乙"]}], "doccano.jsonl:2: label '甲,乙' contains a comma"),
    ([{"text": "一", "label": ["甲\t乙"]}], "doccano.jsonl:1: label '甲\\t乙' contains a TAB"),
    ([{"text": "一", "label": ["甲"]}, '{"text": "二", "label": ["甲"]'], "doccano.jsonl:2: not valid JSON"),
    ([{"id": 3, "label": ["甲"]}], "doccano.jsonl:1: no text"),
    ([{"text": "一", "label": "甲"}], "doccano.jsonl:1: labels must be a list"),
    ([{"text": "一", "label": [[0, 1, "甲"]]}], "sequence-labelling"),
    (["[1, 2]"], "a JSON object was expected"),
])
def test_bad_export_lines_are_one_line_naming_file_and_line(tmp_path, lines, message):
    result = convert(write_jsonl(tmp_path / "doccano.jsonl", lines), tmp_path / "out")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow  # a new interpreter: the process boundary is what it tests
def test_a_bad_line_is_one_line_from_the_command_too(tmp_path):
    export = write_jsonl(tmp_path / "doccano.jsonl", [{"text": "一", "label": ["甲"]}, "not json"])
    result = run_script("doccano.py", "--doccano_file", export, "--save_dir", tmp_path / "out")
    assert result.returncode == 2 and "doccano.jsonl:2: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content, message", [
    ("", "the export is empty"),
    ("\n\n", "the export is empty"),
    ("[]", "holds no examples"),
    ("text,label\n", "holds no examples"),
])
def test_empty_export(tmp_path, content, message):
    (tmp_path / "export.json").write_text(content, encoding="utf-8")
    result = convert(tmp_path / "export.json", tmp_path / "out")
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.parametrize("splits, message", [
    (["0.5", "0.2", "0.2", "0.1"], "has 4 values"),
    (["0.5", "0.4"], "sum to exactly 1"),
    (["1.2", "-0.2"], "sum to exactly 1"),
    (["a"], "must be numbers"),
    ([], "has 0 values"),
])
def test_splits_are_checked(tmp_path, splits, message):
    result = convert(FIXTURES / "doccano_1.8.jsonl", tmp_path / "out", "--splits", *splits)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_three_splits_summing_to_one_in_decimal(tmp_path):
    export = write_jsonl(tmp_path / "doccano.jsonl", [{"text": f"文本{i}", "label": ["甲"]} for i in range(10)])
    result = convert(export, tmp_path / "out", "--splits", "0.7", "0.2", "0.1", "--is_shuffle", "False")
    assert result.returncode == 0, result.stderr
    counts = [len(read(tmp_path / "out" / name).splitlines()) for name in ("train.txt", "dev.txt", "test.txt")]
    assert counts == [7, 2, 1] and read(tmp_path / "out" / "data.txt") == "文本9\n"
    assert result.stderr.count("Save ") == 5  # one log line per file written


def test_existing_outputs_are_refused_without_overwrite_and_nothing_else_is_touched(tmp_path):
    save_dir = tmp_path / "data"
    save_dir.mkdir()
    for name in ("train.txt", "label.txt", "notes.txt"):
        (save_dir / name).write_text(f"old {name}\n", encoding="utf-8")
    result = convert(FIXTURES / "doccano_1.8.jsonl", save_dir, "--splits", "1")
    assert result.returncode == 2 and "train.txt, label.txt" in result.stderr and "--overwrite" in result.stderr
    assert read(save_dir / "train.txt") == "old train.txt\n" and not (save_dir / "data.txt").exists()
    result = convert(FIXTURES / "doccano_1.8.jsonl", save_dir, "--splits", "1", "--is_shuffle", "False", "--overwrite")
    assert result.returncode == 0
    assert read(save_dir / "train.txt") == read(FIXTURES / "expected_train_doccano.txt")
    assert read(save_dir / "notes.txt") == "old notes.txt\n"
    assert sorted(p.name for p in save_dir.iterdir()) == ["data.txt", "label.txt", "notes.txt", "train.txt",
                                                          "unlabelled.txt"]


def test_save_dir_that_is_a_file(tmp_path):
    (tmp_path / "data").write_text("x", encoding="utf-8")
    result = convert(FIXTURES / "doccano_1.8.jsonl", tmp_path / "data")
    assert result.returncode == 2 and "is a file" in result.stderr


def labelled_dir(tmp_path: Path) -> Path:
    save_dir = tmp_path / "data"
    save_dir.mkdir()
    (save_dir / "label.txt").write_text("体育\n财经\n科技\n娱乐\n", encoding="utf-8")
    return save_dir


def test_valid_writes_valid_txt_checked_against_the_label_file(tmp_path):
    save_dir = labelled_dir(tmp_path)
    result = convert(FIXTURES / "label_studio.json", save_dir, "--valid", "--is_shuffle", "False")
    assert result.returncode == 0, result.stderr
    assert read(save_dir / "valid.txt") == read(FIXTURES / "expected_train_label_studio.txt")
    assert read(save_dir / "label.txt") == "体育\n财经\n科技\n娱乐\n"
    assert not (save_dir / "train.txt").exists() and not (save_dir / "data.txt").exists()


def test_valid_or_dirty_with_a_label_not_in_label_txt_is_refused(tmp_path):
    save_dir = labelled_dir(tmp_path)
    export = write_jsonl(tmp_path / "doccano.jsonl", [{"text": "一", "label": ["体育"]}, {"text": "二", "label": ["体肓"]}])
    for option in ("--valid", "--dirty"):
        result = convert(export, save_dir, option)
        assert result.returncode == 2 and "doccano.jsonl:2: label '体肓' is not in" in result.stderr
    assert sorted(p.name for p in save_dir.iterdir()) == ["label.txt"]


def test_valid_with_several_splits_is_refused(tmp_path):
    result = convert(FIXTURES / "doccano_1.8.jsonl", labelled_dir(tmp_path), "--valid", "--splits", "0.8", "0.2")
    assert result.returncode == 2 and "--splits" in result.stderr


def test_dirty_drops_the_old_label_column_of_whole_lines(tmp_path):
    """train_dirty.txt imported into doccano line by line: each text is `text<TAB>old labels`."""
    save_dir = labelled_dir(tmp_path)
    export = write_jsonl(tmp_path / "doccano.jsonl", [{"text": "足球新闻\t财经", "label": ["体育"]},
                                                     {"text": "股票新闻", "label": ["财经"]}])
    result = convert(export, save_dir, "--dirty", "--is_shuffle", "False")
    assert result.returncode == 0, result.stderr
    assert read(save_dir / "train_dirty.txt") == "足球新闻\t体育\n股票新闻\t财经\n"
    assert "1 texts were whole train_dirty.txt lines" in result.stderr


def test_text_with_a_tab_or_line_break_is_joined_and_counted(tmp_path):
    export = write_jsonl(tmp_path / "doccano.jsonl", [{"text": "上半\t下半", "label": ["甲"]},
                                                     {"text": "第一行\n第二行", "label": ["甲"]},
                                                     {"text": "一行", "label": ["甲"]}])
    result = convert(export, tmp_path / "out", "--splits", "1", "--is_shuffle", "False")
    assert read(tmp_path / "out" / "train.txt") == "上半 下半\t甲\n第一行 第二行\t甲\n一行\t甲\n"
    assert "2 texts held a TAB or line break" in result.stderr


@pytest.mark.parametrize("choice, train_lines, unlabelled", [("keep", 6, False), ("drop", 4, False)])
def test_unlabelled_keep_or_drop(tmp_path, choice, train_lines, unlabelled):
    result = convert(FIXTURES / "doccano_1.8.jsonl", tmp_path, "--splits", "1", "--is_shuffle", "False",
                     "--unlabelled", choice)
    assert result.returncode == 0
    lines = read(tmp_path / "train.txt").splitlines()
    assert len(lines) == train_lines and (tmp_path / "unlabelled.txt").exists() == unlabelled
    assert ("学校明天考试" in lines) == (choice == "keep")
    assert f"2 examples nobody annotated were {'written without labels' if choice == 'keep' else 'dropped'}" \
        in result.stderr


def test_task_types(tmp_path):
    export = write_jsonl(tmp_path / "doccano.jsonl", [{"text": "一", "label": ["体育##足球", "体育##篮球"]}])
    assert convert(export, tmp_path / "h", "--splits", "1", "--task_type", "hierarchical").returncode == 0
    assert read(tmp_path / "h" / "train.txt") == "一\t体育,体育##足球,体育##篮球\n"
    assert read(tmp_path / "h" / "label.txt") == "体育\n体育##篮球\n体育##足球\n"
    result = convert(export, tmp_path / "c", "--task_type", "multi_class")
    assert result.returncode == 2 and "doccano.jsonl:1: 2 labels" in result.stderr


def test_input_file_alias_and_named_format(tmp_path):
    result = run_main("doccano.py", "--input_file", FIXTURES / "label_studio.csv", "--save_dir", tmp_path,
                      "--format", "label_studio_csv", "--splits", "1", "--is_shuffle", "False")
    assert result.returncode == 0, result.stderr
    assert read(tmp_path / "train.txt") == read(FIXTURES / "expected_train_label_studio.txt")


def test_only_unannotated_examples_is_refused(tmp_path):
    export = write_jsonl(tmp_path / "doccano.jsonl", [{"text": "一", "label": []}])
    result = convert(export, tmp_path / "out")
    assert result.returncode == 2 and "no annotated example" in result.stderr and not (tmp_path / "out").exists()


def test_doccano_fasttext_quoting_comments_and_unannotated_first_line(tmp_path):
    """doccano writes fastText through a CSV writer: a line with a comma or quote is quoted (quotes
    doubled), comments end the line, an unannotated line starts with a space and may come first."""
    export = tmp_path / "admin.txt"
    export.write_text(' 没人标注的文本 \n"__label__甲 __label__乙 文本, 说""好"" __comment__看过, 没问题"\n'
                      "__label__乙 第三条 \n", encoding="utf-8")
    result = convert(export, tmp_path / "out", "--splits", "1", "--is_shuffle", "False")
    assert result.returncode == 0, result.stderr
    assert "(fasttext)" in result.stderr
    assert read(tmp_path / "out" / "train.txt").splitlines() == ['文本, 说"好"\t甲,乙', "第三条\t乙"]
    assert read(tmp_path / "out" / "unlabelled.txt").splitlines() == ["没人标注的文本"]


def test_doccano_json_array_keeps_unannotated_apart(tmp_path):
    """doccano's JSON export (an array) is not Label Studio's JSON_MIN: an empty label list is an example
    nobody annotated, not one without labels."""
    export = tmp_path / "admin.json"
    export.write_text(json.dumps([{"id": 1, "text": "一", "label": ["甲"], "Comments": []},
                                  {"id": 2, "text": "二", "label": [], "Comments": []}], ensure_ascii=False))
    result = convert(export, tmp_path / "out", "--splits", "1")
    assert result.returncode == 0 and "(doccano_json)" in result.stderr, result.stderr
    assert read(tmp_path / "out" / "train.txt") == "一\t甲\n" and read(tmp_path / "out" / "unlabelled.txt") == "二\n"


@pytest.mark.parametrize("name, content", [
    ("admin.csv", "id,text,label\n1,{text},甲\n"),
    ("admin.txt", '"__label__甲 {text}, 完"\n'),
])
def test_a_document_longer_than_the_csv_modules_field_limit(tmp_path, name, content):
    text = "长" * 200_000
    export = tmp_path / name
    export.write_text(content.format(text=text), encoding="utf-8")
    result = convert(export, tmp_path / "out", "--splits", "1")
    assert result.returncode == 0, result.stderr[-500:]
    assert read(tmp_path / "out" / "train.txt").startswith(text)
