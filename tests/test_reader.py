"""The one reader: accepted variants, exact error messages, exit status 2, no other exception."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_io import ReadStats, iter_examples, load_examples, read_label_list
from utils import DataError

from conftest import run_main, run_script

LABELS = ["离婚", "子女", "财产"]
LABEL2ID = {name: i for i, name in enumerate(LABELS)}


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_accepts_bom_crlf_trailing_space_unlabelled_and_blank(tmp_path):
    content = "\ufeff原告请求离婚\t离婚,子女  \r\n\r\n只有文本\r\n有TAB无标签\t\r\n婚后购房\t财产, 离婚\r\n"
    path = write(tmp_path, "train.txt", content)
    stats = ReadStats()
    examples = list(iter_examples(path, LABEL2ID, stats))
    assert [(e.text, e.labels, e.line_no) for e in examples] == [
        ("原告请求离婚", [0, 1], 1), ("只有文本", [], 3), ("有TAB无标签", [], 4), ("婚后购房", [2, 0], 5)]
    assert (stats.examples, stats.unlabelled, stats.blank) == (4, 2, 1)
    assert stats.summary(path) == "Read train.txt: 4 examples, 2 without labels, 1 blank lines skipped"


def test_prediction_input_ignores_and_counts_label_column(tmp_path):
    path = write(tmp_path, "data.txt", "甲\t离婚\n乙\n")
    stats = ReadStats()
    assert [e.text for e in iter_examples(path, None, stats)] == ["甲", "乙"]
    assert stats.label_columns_ignored == 1


@pytest.mark.parametrize("content, message", [
    ("原告请求离婚\t离昏\n", "train.txt:1: unknown label '离昏' (not in the label file); did you mean '离婚'?"),
    ("甲\t离婚\n乙\t离婚,,子女\n", "train.txt:2: empty label in '离婚,,子女'"),
    ("甲\t离婚\t子女\n", "train.txt:1: more than one TAB in the line (format is text<TAB>label,label; "
                         "texts must not contain TAB): '甲\\t离婚\\t子女'"),
    ("\t离婚\n", "train.txt:1: empty text before the TAB: '\\t离婚'"),
    (b"\xff\xfe\x00bad", "train.txt: not valid UTF-8 (invalid start byte at byte 0)"),
    ("\n\n", "train.txt: no examples (the file has only blank lines)"),
])
def test_data_errors_name_file_line_and_value(tmp_path, content, message):
    path = write(tmp_path, "train.txt", content)
    with pytest.raises(DataError) as err:
        load_examples(path, LABELS)
    assert str(err.value) == f"{tmp_path}/{message}"


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"^File not found: .*nope\.txt$"):
        load_examples(tmp_path / "nope.txt", LABELS)


@pytest.mark.parametrize("content, message", [
    ("离婚\n\n子女\n", "label.txt:2: blank label name (every line of the label file must name a label)"),
    ("离婚\n子女\n离婚\n", "label.txt:3: duplicate label '离婚' (first on line 1)"),
    ("\n", "label.txt: the label file is empty"),
])
def test_label_file_errors(tmp_path, content, message):
    path = write(tmp_path, "label.txt", content)
    with pytest.raises(DataError) as err:
        read_label_list(path)
    assert str(err.value) == f"{tmp_path}/{message}"


def test_label_file_allows_trailing_blank_lines_and_bom(tmp_path):
    assert read_label_list(write(tmp_path, "label.txt", "\ufeff离婚\r\n子女 \r\n\r\n")) == ["离婚", "子女"]


line_text = st.text(alphabet=st.sampled_from(list("离婚子女财产\t, \r\ufeffab")), max_size=20)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(line_text, max_size=8))
def test_random_lines_raise_nothing_but_data_error(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("prop") / "train.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        examples = list(iter_examples(path, LABEL2ID))
    except DataError:
        return
    for example in examples:  # what was accepted is well formed
        assert example.text and "\t" not in example.text
        assert all(0 <= i < len(LABELS) for i in example.labels)


@pytest.mark.slow
@pytest.mark.parametrize("train_content, label_content, message", [
    ("甲\t离昏\n", "离婚\n子女\n", "train.txt:1: unknown label '离昏' (not in the label file); did you mean '离婚'?"),
    ("甲\t离婚,\n", "离婚\n子女\n", "train.txt:1: empty label in '离婚,'"),
    ("甲\t离婚\t子女\n", "离婚\n子女\n", "train.txt:1: more than one TAB in the line"),
    ("甲\t离婚\n", "离婚\n离婚\n", "label.txt:2: duplicate label '离婚' (first on line 1)"),
    ("甲\t离婚\n", "离婚\n\n子女\n", "label.txt:2: blank label name"),
    (None, "离婚\n", "File not found: "),
])
def test_train_cli_reports_bad_data_with_exit_code_2(tmp_path, train_content, label_content, message):
    if train_content is not None:
        write(tmp_path, "train.txt", train_content)
    write(tmp_path, "dev.txt", "乙\t离婚\n")
    write(tmp_path, "label.txt", label_content)
    result = run_main("train.py", "--device", "cpu", "--dataset_dir", tmp_path, "--model_name", tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.slow
def test_bad_data_ends_the_process_with_exit_code_2_and_one_message(tmp_path):
    """The process boundary itself: what a user's shell sees for bad input."""
    write(tmp_path, "train.txt", "甲\t离昏\n")
    write(tmp_path, "dev.txt", "乙\t离婚\n")
    write(tmp_path, "label.txt", "离婚\n子女\n")
    result = run_script("train.py", "--device", "cpu", "--dataset_dir", tmp_path, "--model_name", tmp_path)
    assert result.returncode == 2
    assert "train.txt:1: unknown label '离昏' (not in the label file); did you mean '离婚'?" in result.stderr
    assert "Traceback" not in result.stderr
