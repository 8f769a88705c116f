"""doccano 1.8.4, live: annotation_export.py's JSONL imported with its labels, annotated through the REST
API, exported in each of doccano's formats for text classification and converted by doccano.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_main
from live import round_trip as trip
from live.tools import Doccano

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def project(doccano: Doccano, work: Path) -> int:
    """The relabelling tasks imported and annotated as round_trip.py describes."""
    project = doccano.create_project("relabel", trip.LABELS)
    doccano.import_jsonl(project, trip.relabel_tasks(work) / "doccano_import.jsonl")
    examples = {example["text"]: example["id"] for example in doccano.examples(project)}
    labels = doccano.label_ids(project)
    doccano.comment(project, examples[trip.FOOTBALL], trip.COMMENT)
    doccano.add_category(project, examples[trip.STOCKS], labels["科技"])
    for text, new in ((trip.PHONE, "娱乐"), (trip.SCHOOL, None)):
        for category in doccano.categories(project, examples[text]):
            doccano.remove_category(project, examples[text], category["id"])
        if new:
            doccano.add_category(project, examples[text], labels[new])
    return project


def download(doccano: Doccano, project: int, file_format: str, name: str, work: Path, keep: bool = True) -> Path:
    return trip.store_export(doccano.export(project, file_format), name, work, keep)


def test_import_keeps_the_texts_and_their_labels(doccano, project, work):
    examples = doccano.examples(project)
    assert len(examples) == 7 and examples[0]["text"] == trip.FOOTBALL
    assert examples[0]["meta"]["meta"]["source"] == "relabel/train_dirty.txt:1"


@pytest.mark.parametrize("file_format", trip.DOCCANO_EXPORTS)
def test_every_export_converts_to_the_expected_files(doccano, project, work, file_format):
    export = download(doccano, project, file_format, trip.DOCCANO_EXPORTS[file_format], work)
    trip.check_conversion(export, work / f"converted_{file_format}")
    assert (trip.DOCCANO_DIR / export.name).is_file(), f"no committed fixture {export.name}"


def test_collaborative_project_exports_all_jsonl(doccano, project, work):
    doccano.call("PATCH", f"projects/{project}", json={"collaborative_annotation": True,
                                                       "resourcetype": "TextClassificationProject"})
    export = download(doccano, project, "JSONL", trip.DOCCANO_COLLABORATIVE, work)
    trip.check_conversion(export, work / "converted_collaborative")


def test_relabelled_texts_come_back_with_dirty(doccano, project, work):
    export = download(doccano, project, "JSONL", "relabelled.zip", work, keep=False)
    result = run_main("doccano.py", "--doccano_file", export, "--save_dir", work / "relabel", "--dirty",
                      "--overwrite", "--is_shuffle", "False")
    assert result.returncode == 0, result.stderr
    assert (work / "relabel" / "train_dirty.txt").read_text(encoding="utf-8").splitlines() == trip.DOCCANO_TRAIN
