"""Label Studio 1.23.2, live: annotation_export.py's tasks (with predictions) and labelling config make a
project through the REST API, annotated there, exported in each format a Choices project offers and
converted by doccano.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_main
from live import round_trip as trip
from live.tools import LabelStudio

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def project(studio: LabelStudio, work: Path) -> int:
    """The relabelling tasks imported with their predictions and annotated as round_trip.py describes."""
    tasks_dir = trip.relabel_tasks(work)
    project = studio.create_project("relabel", (tasks_dir / "label_studio_config.xml").read_text(encoding="utf-8"))
    studio.import_tasks(project, json.loads((tasks_dir / "label_studio_tasks.json").read_text(encoding="utf-8")))
    tasks = {task["data"]["text"]: task["id"] for task in studio.tasks(project)}
    studio.annotate(tasks[trip.FOOTBALL], ["体育"])
    studio.annotate(tasks[trip.STOCKS], ["财经", "科技"])
    studio.change(studio.annotate(tasks[trip.PHONE], ["科技"]), ["娱乐"])
    studio.annotate(tasks[trip.STAR], ["娱乐"])
    studio.annotate(tasks[trip.STAR], ["娱乐", "体育"])
    studio.annotate(tasks[trip.SCHOOL], None, cancelled=True)
    studio.annotate(tasks[trip.BANK], None)
    return project


def download(studio: LabelStudio, project: int, export_type: str, work: Path) -> Path:
    return trip.store_export(studio.export(project, export_type), trip.LABEL_STUDIO_EXPORTS[export_type], work)


def test_import_keeps_texts_and_predictions(studio, project):
    tasks = studio.tasks(project)
    assert len(tasks) == 7 and tasks[0]["data"] == {"text": trip.FOOTBALL, "source": "relabel/train_dirty.txt:1"}
    assert all(task["total_predictions"] == 1 for task in tasks)


@pytest.mark.parametrize("export_type", trip.LABEL_STUDIO_EXPORTS)
def test_every_export_converts_to_the_expected_files(studio, project, work, export_type):
    export = download(studio, project, export_type, work)
    trip.check_conversion(export, work / f"converted_{export_type}")
    assert (trip.LABEL_STUDIO_DIR / export.name).is_file(), f"no committed fixture {export.name}"


def test_relabelled_texts_come_back_with_dirty(studio, project, work):
    export = download(studio, project, "JSON", work)
    result = run_main("doccano.py", "--doccano_file", export, "--save_dir", work / "relabel", "--dirty",
                      "--overwrite", "--is_shuffle", "False")
    assert result.returncode == 0, result.stderr
    assert (work / "relabel" / "train_dirty.txt").read_text(encoding="utf-8").splitlines() == trip.LABEL_STUDIO_TRAIN
