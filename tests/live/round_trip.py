"""The annotation round trip both live tests run, and what converting its exports must give.

Seven texts of a train_dirty.txt (with labels to check) go to each tool through annotation_export.py;
the annotator then keeps some labels, adds and changes others, skips or clears some and leaves one
alone. The exports of that project, converted by doccano.py, must give exactly the lines below. The
exports downloaded once are committed in tests/fixtures/annotation/real/ and converted by
tests/test_real_exports.py in every `make test`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import ROOT, run_main

REAL = ROOT / "tests" / "fixtures" / "annotation" / "real"
DOCCANO_DIR = REAL / "doccano-1.8.4"
LABEL_STUDIO_DIR = REAL / "label-studio-1.23.2"
LABELS = ["体育", "财经", "科技", "娱乐", "教育"]
FOOTBALL, STOCKS, PHONE, STAR = "足球比赛今天开始", "股票和基金都涨了", "新手机的芯片很快", '明星参加足球比赛, 说"冠军"'
WEATHER, SCHOOL, BANK = "今天天气很好 😀", "学校明天考试", "银行利率下调"
DIRTY = [f"{FOOTBALL}\t体育", f"{STOCKS}\t财经", f"{PHONE}\t科技", f"{STAR}\t体育,娱乐", WEATHER, f"{SCHOOL}\t教育",
         f"{BANK}\t财经"]
COMMENT = "checked twice, same labels"  # a doccano comment, which its fastText export appends to the text

# doccano: the imported labels are annotations; the annotator adds 科技 to STOCKS, changes PHONE to 娱乐
# and removes SCHOOL's label (doccano cannot skip); each export lists an example's labels sorted.
DOCCANO_TRAIN = [f"{FOOTBALL}\t体育", f"{STOCKS}\t科技,财经", f"{PHONE}\t娱乐", f"{STAR}\t体育,娱乐", f"{BANK}\t财经"]
DOCCANO_UNLABELLED = [WEATHER, SCHOOL]
# Label Studio: imported labels are predictions, not annotations. Annotations: FOOTBALL accepted, STOCKS
# with two labels, PHONE submitted as 科技 then changed to 娱乐, STAR annotated twice (the later counts),
# SCHOOL skipped, BANK submitted with nothing chosen (an example without labels), WEATHER left alone.
LABEL_STUDIO_TRAIN = [f"{FOOTBALL}\t体育", f"{STOCKS}\t财经,科技", f"{PHONE}\t娱乐", f"{STAR}\t娱乐,体育", BANK]
LABEL_STUDIO_UNLABELLED = [WEATHER, SCHOOL]
LABEL_FILE = ["体育", "娱乐", "科技", "财经"]  # the labels annotated, sorted as the reference writes them

DOCCANO_EXPORTS = {"JSONL": "jsonl.zip", "JSON": "json.zip", "CSV": "csv.zip", "fastText": "fasttext.zip"}
DOCCANO_COLLABORATIVE = "jsonl_collaborative.zip"  # all.jsonl instead of admin.jsonl
LABEL_STUDIO_EXPORTS = {"JSON": "export.json", "JSON_MIN": "export_min.json", "CSV": "export.csv",
                        "TSV": "export.tsv"}
FORMAT_OF = {"jsonl.zip": "doccano_jsonl", "json.zip": "doccano_json", "csv.zip": "doccano_csv",
             "fasttext.zip": "fasttext", DOCCANO_COLLABORATIVE: "doccano_jsonl", "export.json": "label_studio_json",
             "export_min.json": "label_studio_json_min", "export.csv": "label_studio_csv",
             "export.tsv": "label_studio_tsv"}  # doccano.py's name of each export's format
# JSON_MIN, CSV and TSV leave out a task whose only annotation was skipped
SKIPPED_TASK_DROPPED = {"export_min.json", "export.csv", "export.tsv"}


def relabel_tasks(work: Path) -> Path:
    """annotation_export.py's import files for DIRTY, pre-annotated with its labels; the sources it records
    are relative (`relabel/train_dirty.txt:N`), so that committed exports hold no temporary path."""
    data = work / "relabel"
    data.mkdir(parents=True)
    (data / "label.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    (data / "train_dirty.txt").write_text("\n".join(DIRTY) + "\n", encoding="utf-8")
    result = run_main("annotation_export.py", "--dataset_dir", "relabel", "--data_file", "train_dirty.txt",
                      "--output_dir", "tasks", cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "tasks"


def store_export(content: bytes, name: str, work: Path, keep: bool = True) -> Path:
    """A downloaded export written to work/exports/; with LIVE_KEEP_EXPORTS=<directory>, also copied there
    (how the committed real exports were made)."""
    path = work / "exports" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    if keep and os.environ.get("LIVE_KEEP_EXPORTS"):
        shutil.copy(path, Path(os.environ["LIVE_KEEP_EXPORTS"]) / name)
    return path


def expected(name: str) -> tuple[list[str], list[str]]:
    """(train.txt lines, unlabelled.txt lines) that converting the export file `name` gives."""
    if name in DOCCANO_EXPORTS.values() or name == DOCCANO_COLLABORATIVE:
        return DOCCANO_TRAIN, DOCCANO_UNLABELLED
    dropped = [SCHOOL] if name in SKIPPED_TASK_DROPPED else []
    return LABEL_STUDIO_TRAIN, [text for text in LABEL_STUDIO_UNLABELLED if text not in dropped]


def check_conversion(export: Path, save_dir: Path) -> None:
    """doccano.py on the export (in file order) gives exactly the expected files, as one split and as
    train and dev, and its log counts the examples nobody annotated."""
    result = run_main("doccano.py", "--doccano_file", export, "--save_dir", save_dir, "--splits", "1",
                      "--is_shuffle", "False")
    assert result.returncode == 0, result.stderr
    train, unlabelled = expected(export.name)
    assert (save_dir / "train.txt").read_text(encoding="utf-8").splitlines() == train
    assert (save_dir / "label.txt").read_text(encoding="utf-8").splitlines() == LABEL_FILE
    assert (save_dir / "data.txt").read_text(encoding="utf-8").splitlines() == [line.split("\t")[0] for line in train]
    assert (save_dir / "unlabelled.txt").read_text(encoding="utf-8").splitlines() == unlabelled
    records = len(train) + len(unlabelled)
    split = run_main("doccano.py", "--doccano_file", export, "--save_dir", save_dir / "split", "--splits", "0.6",
                     "0.4", "--is_shuffle", "False")
    assert split.returncode == 0, split.stderr
    cut = int(len(train) * 0.6)
    assert (save_dir / "split" / "train.txt").read_text(encoding="utf-8").splitlines() == train[:cut]
    assert (save_dir / "split" / "dev.txt").read_text(encoding="utf-8").splitlines() == train[cut:]
    assert (f"({FORMAT_OF[export.name]}): {records} examples, {len(train)} annotated, {len(unlabelled)} not annotated by anyone"
            in result.stderr), result.stderr
