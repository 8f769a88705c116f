"""annotation_export.py: texts to (re)label become doccano and Label Studio import files with
pre-annotations, and what annotators send back converts with doccano.py --valid / --dirty."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

from annotation import decision_confidence, least_sure
from decision import Decision

from conftest import LABELS, run_main


def dataset(tmp_path: Path, files: dict[str, str]) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "label.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    for name, content in files.items():
        (data / name).write_text(content, encoding="utf-8")
    return data


def read_outputs(out: Path) -> tuple[list[dict], list[dict], ElementTree.Element]:
    doccano = [json.loads(line) for line in (out / "doccano_import.jsonl").read_text(encoding="utf-8").splitlines()]
    studio = json.loads((out / "label_studio_tasks.json").read_text(encoding="utf-8"))
    return doccano, studio, ElementTree.fromstring((out / "label_studio_config.xml").read_text(encoding="utf-8"))


def test_dirty_file_is_pre_annotated_with_its_own_labels(tmp_path):
    data = dataset(tmp_path, {"train_dirty.txt": "足球新闻\t财经\n股票新闻\t财经,科技\n没有标签的文本\n"})
    out = tmp_path / "tasks"
    result = run_main("annotation_export.py", "--dataset_dir", data, "--data_file", "train_dirty.txt",
                      "--output_dir", out)
    assert result.returncode == 0, result.stderr
    doccano, studio, config = read_outputs(out)
    assert [(t["text"], t["label"]) for t in doccano] == [("足球新闻", ["财经"]), ("股票新闻", ["财经", "科技"]),
                                                          ("没有标签的文本", [])]
    assert doccano[1]["meta"] == {"source": f"{data / 'train_dirty.txt'}:2", "file_labels": ["财经", "科技"]}
    assert studio[0]["data"] == {"text": "足球新闻", "source": f"{data / 'train_dirty.txt'}:1"}
    prediction = studio[1]["predictions"][0]
    assert prediction["model_version"] == "train_dirty.txt" and "score" not in prediction
    assert prediction["result"] == [{"from_name": "label", "to_name": "text", "type": "choices",
                                     "value": {"choices": ["财经", "科技"]}}]
    assert studio[2]["predictions"][0]["result"] == []
    choices = config.find("Choices")
    assert choices.get("name") == "label" and choices.get("choice") == "multiple" and choices.get("toName") == "text"
    assert [c.get("value") for c in choices] == LABELS and config.find("Text").get("value") == "$text"
    assert "Save 3 tasks to" in result.stderr and "Save 5 labels to" in result.stderr


def test_texts_without_labels_and_without_a_model_have_no_pre_annotation(tmp_path):
    data = dataset(tmp_path, {"support.txt": "第一条\n\n第二条\n"})
    out = tmp_path / "tasks"
    assert run_main("annotation_export.py", "--dataset_dir", data, "--data_file", "support.txt",
                    "--output_dir", out).returncode == 0
    doccano, studio, _ = read_outputs(out)
    assert [t["label"] for t in doccano] == [[], []] and [t["meta"]["source"][-2:] for t in doccano] == [":1", ":3"]
    assert all("predictions" not in task for task in studio)


def test_label_names_are_escaped_in_the_config(tmp_path):
    data = dataset(tmp_path, {"data.txt": "一\n"})
    (data / "label.txt").write_text('A&B\n"引号"\n<x>\n', encoding="utf-8")
    assert run_main("annotation_export.py", "--dataset_dir", data, "--output_dir", tmp_path / "o").returncode == 0
    _, _, config = read_outputs(tmp_path / "o")
    assert [c.get("value") for c in config.find("Choices")] == ["A&B", '"引号"', "<x>"]


@pytest.mark.parametrize("options, files, message", [
    (["--uncertain", "5"], {"data.txt": "一\n"}, "--uncertain needs a checkpoint"),
    (["--prelabels", "model"], {"data.txt": "一\n"}, "--prelabels model needs a checkpoint"),
    (["--prelabels", "file"], {"data.txt": "一\n"}, "has no label column"),
    (["--data_file", "train_dirty.txt"], {"train_dirty.txt": "一\t体肓\n"}, "train_dirty.txt:1: unknown label '体肓'"),
    ([], {"data.txt": "\n\n"}, "no texts to export"),
])
def test_bad_requests_are_one_line_and_write_nothing(tmp_path, options, files, message):
    data = dataset(tmp_path, files)
    result = run_main("annotation_export.py", "--dataset_dir", data, "--output_dir", tmp_path / "o", *options)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()


def test_existing_import_files_are_kept_without_overwrite(tmp_path):
    data = dataset(tmp_path, {"data.txt": "一\n"})
    out = tmp_path / "o"
    out.mkdir()
    (out / "label_studio_tasks.json").write_text("old", encoding="utf-8")
    result = run_main("annotation_export.py", "--dataset_dir", data, "--output_dir", out)
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (out / "label_studio_tasks.json").read_text(encoding="utf-8") == "old"
    assert run_main("annotation_export.py", "--dataset_dir", data, "--output_dir", out, "--overwrite").returncode == 0


def test_threshold_distance_is_on_the_logit_scale_and_ignores_switched_off_labels():
    distances = Decision(np.array([0.05, 0.5, 1.0], dtype="float32")).margins(np.array([[0.1, 0.68, 0.9]]))
    assert distances[0, 0] == pytest.approx(distances[0, 1], abs=0.01) and np.isinf(distances[0, 2])


def test_least_sure_in_order_and_spread_over_labels():
    # label 0 hesitates on texts 0-2; label 1 only on text 3
    distances = np.array([[0.1, 5.0], [0.2, 5.0], [0.3, 5.0], [4.0, 0.4], [6.0, 6.0]])
    assert least_sure(distances, 3) == [0, 1, 2]
    assert least_sure(distances, 3, spread=True) == [0, 3, 1]
    assert least_sure(distances, 10, spread=True) == [0, 3, 1, 2, 4]


def test_decision_confidence_is_the_least_certain_choice():
    probs = np.array([[0.9, 0.2, 0.6]])
    assert decision_confidence(probs, probs > 0.5)[0] == pytest.approx(0.6)


def label_studio_export_accepting_predictions(tasks: list[dict]) -> list[dict]:
    """What Label Studio exports after an annotator submitted every pre-annotation unchanged (the first task
    changed to 教育): the prediction's result copied into an annotation, as the 'accept' button does."""
    exported = []
    for number, task in enumerate(tasks, start=1):
        result = [dict(r, id=f"r{number}", origin="prediction") for r in task["predictions"][0]["result"]]
        if number == 1:
            result = [{"id": "r1", "from_name": "label", "to_name": "text", "type": "choices",
                       "value": {"choices": ["教育"]}, "origin": "manual"}]
        exported.append({"id": number, "data": task["data"], "predictions": task["predictions"], "annotations": [
            {"id": number, "result": result, "was_cancelled": False, "created_at": "2024-05-06T08:00:00Z",
             "updated_at": "2024-05-06T08:00:00Z", "lead_time": 2.0, "task": number}]})
    return exported


@pytest.mark.slow
def test_uncertainty_queue_from_a_checkpoint_round_trips_through_label_studio(trained, keyword_data, tmp_path):
    checkpoint, _ = trained
    out = tmp_path / "tasks"
    result = run_main("annotation_export.py", "--device", "cpu", "--dataset_dir", keyword_data,
                      "--params_path", checkpoint, "--uncertain", "6", "--spread_labels", "--output_dir", out)
    assert result.returncode == 0, result.stderr
    doccano, studio, _ = read_outputs(out)
    assert len(doccano) == len(studio) == 6 and "closest to a threshold, taken in turn" in result.stderr
    data_texts = (keyword_data / "data.txt").read_text(encoding="utf-8").splitlines()
    for task, ls_task in zip(doccano, studio):
        meta = task["meta"]
        line = int(meta["source"].rsplit(":", 1)[1])
        assert data_texts[line - 1] == task["text"] == ls_task["data"]["text"]
        assert list(meta["probs"]) == LABELS and task["label"] == meta["model_labels"]
        prediction = ls_task["predictions"][0]
        assert prediction["model_version"] == checkpoint.name and 0.5 <= prediction["score"] <= 1
        assert (prediction["result"][0]["value"]["choices"] if prediction["result"] else []) == task["label"]
    distances = [task["meta"]["threshold_distance"] for task in doccano]
    assert max(distances) < 3  # the least sure of 100 texts

    export = tmp_path / "project-1-at-2024-05-06.json"
    export.write_text(json.dumps(label_studio_export_accepting_predictions(studio), ensure_ascii=False),
                      encoding="utf-8")
    result = run_main("doccano.py", "--doccano_file", export, "--save_dir", keyword_data, "--valid",
                      "--is_shuffle", "False")
    assert result.returncode == 0, result.stderr
    valid = (keyword_data / "valid.txt").read_text(encoding="utf-8").splitlines()
    (keyword_data / "valid.txt").unlink()  # the session's data set is shared
    expected = [f"{t['text']}\t{','.join(t['label'])}" if t["label"] else t["text"] for t in doccano]
    expected[0] = f"{doccano[0]['text']}\t教育"
    assert valid == expected
