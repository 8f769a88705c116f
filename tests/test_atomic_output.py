"""utils.atomic_output: a writer interrupted at any point leaves the previous complete file."""
import os
import stat

import pytest

from utils import DataError, atomic_output, write_json, write_text_atomic


def test_complete_write_replaces_the_file_with_normal_permissions(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old\n", encoding="utf-8")
    write_text_atomic(target, "新的\n")
    assert target.read_text(encoding="utf-8") == "新的\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_an_exception_inside_the_block_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old complete\n", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as handle:
            handle.write("half of the new")
            raise KeyboardInterrupt
    assert target.read_text(encoding="utf-8") == "old complete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_binary_mode(tmp_path):
    with atomic_output(tmp_path / "b.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_missing_directory_is_one_line_naming_it(tmp_path):
    with pytest.raises(DataError, match="cannot write .*missing.*out.json"):
        write_json(tmp_path / "missing" / "out.json", {"a": 1})


def test_a_file_where_the_directory_should_be_is_one_line(tmp_path):
    (tmp_path / "plain").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="cannot write .*plain"):
        write_text_atomic(tmp_path / "plain" / "out.txt", "x")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
