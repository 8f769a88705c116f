"""Annotation tools' files: the exports of doccano and Label Studio read as (text, labels) records, and
the import files that send texts to annotators with the model's labels as pre-annotations.

One reader for every export shape users get, because the shapes differ by tool version and export
button (doccano 1.6 says `data` where 1.7+ says `text`; Label Studio nests choices in annotations,
JSON_MIN flattens them to a string or a `{"choices": [...]}`), and a converter that knows only one of
them fails on the others with a traceback. Each record keeps where it came from (`file:line`, or the
item of a JSON array) so every problem is reported as one line that names it.

An example nobody annotated has `labels` None, never [] (a submitted annotation with no choice): the
caller decides where such examples go instead of silently training on them as negatives.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from utils import DataError

DOCCANO_FORMATS = ("doccano_jsonl", "doccano_json", "doccano_csv", "fasttext")
LABEL_STUDIO_FORMATS = ("label_studio_json", "label_studio_json_min", "label_studio_csv", "label_studio_tsv")
TABLE_DELIMITERS = {"label_studio_csv": ",", "label_studio_tsv": "\t"}  # JSON_MIN's columns in a table
FORMATS = DOCCANO_FORMATS + LABEL_STUDIO_FORMATS
# Keys Label Studio's JSON_MIN, CSV and TSV exports add beside the task's data fields.
LABEL_STUDIO_MIN_KEYS = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time"}
SOURCE_KEY = "source"  # the task data field annotation_export.py adds: where the text came from
FROM_NAME = "label"  # the Choices name of the labelling config annotation_export.py writes
FASTTEXT_PREFIX = "__label__"
FASTTEXT_COMMENT = " __comment__"  # what starts the comments doccano's fastText export ends a line with
DOCCANO_CSV_SEPARATOR = "#"  # doccano's CSV export joins an example's labels with it
LABEL_FORBIDDEN = {",": "a comma", "\t": "a TAB", "\n": "a line break", "\r": "a line break"}


@dataclass
class Record:
    """One annotated (or not yet annotated) example of an export."""

    text: str
    labels: list[str] | None  # None: nobody annotated it; []: annotated, no label chosen
    where: str


@dataclass
class ExportFile:
    """An export's text content and the name its problems are reported under (`x.zip/admin.jsonl`)."""

    name: str
    content: str
    suffix: str


def read_export(path: str | os.PathLike, fmt: str = "auto", from_name: str | None = None, text_key: str = "text",
                zip_member: str | None = None) -> tuple[str, list[Record]]:
    """(format, records) of an export file: doccano JSONL/CSV/fastText (also inside doccano's zip) or Label
    Studio JSON/JSON_MIN/CSV, told apart by content when `fmt` is "auto"."""
    export = open_export(path, zip_member)
    fmt = detect_format(export) if fmt == "auto" else fmt
    readers = {"doccano_jsonl": read_doccano_jsonl, "doccano_json": read_doccano_json, "doccano_csv": read_doccano_csv,
               "fasttext": read_fasttext,
               "label_studio_json": read_label_studio_json, "label_studio_json_min": read_label_studio_min,
               "label_studio_csv": read_label_studio_min, "label_studio_tsv": read_label_studio_min}
    if fmt in DOCCANO_FORMATS:
        records = readers[fmt](export, text_key)
    else:
        records = readers[fmt](export, from_name, text_key, TABLE_DELIMITERS.get(fmt))
    if not records:
        raise DataError(f"{export.name}: the export holds no examples")
    return fmt, records


def open_export(path: str | os.PathLike, zip_member: str | None = None) -> ExportFile:
    """The export's text; for doccano's downloaded zip, its one data file (`all.jsonl` of a collaborative
    project first)."""
    path = Path(path)
    if path.is_dir() or not path.exists():
        raise DataError(f"{path}: no such export file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = choose_zip_member(path, archive.namelist(), zip_member)
            raw = archive.read(member)
        name, suffix = f"{path}/{member}", Path(member).suffix.lower()
    else:
        raw, name, suffix = path.read_bytes(), str(path), path.suffix.lower()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    if not content.strip():
        raise DataError(f"{name}: the export is empty")
    return ExportFile(name, content, suffix)


def choose_zip_member(path: Path, names: list[str], wanted: str | None) -> str:
    data = [name for name in names if Path(name).suffix.lower() in (".jsonl", ".json", ".csv", ".txt")
            and not name.endswith("/")]
    if wanted is not None:
        if wanted not in names:
            raise DataError(f"{path}: no member {wanted!r} (it holds {', '.join(names) or 'nothing'})")
        return wanted
    if not data:
        raise DataError(f"{path}: the zip holds no JSONL or CSV export (it holds {', '.join(names) or 'nothing'})")
    collaborative = [name for name in data if Path(name).name == "all.jsonl"]
    if collaborative or len(data) == 1:
        return (collaborative or data)[0]
    raise DataError(f"{path}: the zip holds one export per annotator ({', '.join(data)}); "
                    f"choose one with --zip_member")


def detect_format(export: ExportFile) -> str:
    """The export's format from its first characters, header or keys."""
    head = export.content.lstrip()
    if head.startswith("["):
        items = parse_json_array(export)
        first = next((item for item in items if isinstance(item, dict)), {})
        if "annotations" in first or isinstance(first.get("data"), dict):
            return "label_studio_json"
        # doccano's JSON: a list of labels (JSON_MIN has a string or {"choices": [...]}) and its Comments
        return "doccano_json" if isinstance(first.get("label"), list) or "Comments" in first else "label_studio_json_min"
    if head.startswith("{"):
        return "doccano_jsonl"
    delimiter = "\t" if "\t" in head.partition("\n")[0] else ","
    header = next(csv.reader(csv_text(head), delimiter=delimiter), [])
    if "annotation_id" in header or "annotator" in header:
        return "label_studio_tsv" if delimiter == "\t" else "label_studio_csv"
    if "label" in header:
        return "doccano_csv"
    # doccano's fastText starts an unannotated line with a space and quotes a line with a comma or quote
    if any(line.startswith(FASTTEXT_PREFIX) for _, line in fasttext_lines(export)):
        return "fasttext"
    raise DataError(f"{export.name}: cannot tell the export's format (not JSON, JSONL, fastText or a CSV with "
                    f"a label column); name it with --format")


def label_names(value, where: str) -> list[str]:
    """An example's labels as clean names in first-seen order; anything the data format cannot hold
    (a comma or TAB inside a name, a name that is not a string) is one line naming the example."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise DataError(f"{where}: labels must be a list of label names, got {json.dumps(value, ensure_ascii=False)}"
                        + (" (a sequence-labelling export?)" if isinstance(value, list) else ""))
    names: list[str] = []
    for raw in value:
        name = raw.strip()
        if not name:
            raise DataError(f"{where}: empty label name")
        bad = next((what for char, what in LABEL_FORBIDDEN.items() if char in name), None)
        if bad:
            raise DataError(f"{where}: label {name!r} contains {bad}, which the data format uses between labels "
                            f"and columns; rename it in the annotation tool")
        if name not in names:
            names.append(name)
    return names


def example_text(value, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: no text (the {key!r} field is missing or empty)")
    return value


def parse_json(line: str, where: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None


def parse_json_array(export: ExportFile) -> list:
    try:
        items = json.loads(export.content)
    except json.JSONDecodeError as err:
        raise DataError(f"{export.name}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(items, list):
        raise DataError(f"{export.name}: a JSON array of tasks was expected, not {type(items).__name__}")
    return items


def doccano_record(item, where: str, text_key: str) -> Record:
    """One example of doccano's JSONL or JSON: 1.6 (`data`, `label`) and 1.7+ (`text`, `label`, extra keys
    such as `id`, `Comments` and the flattened meta, ignored). An empty or missing `label` is an example
    nobody annotated."""
    if not isinstance(item, dict):
        raise DataError(f"{where}: a JSON object was expected, not {type(item).__name__}")
    key = text_key if text_key in item else "data" if "data" in item else text_key
    labels = item.get("label", item.get("labels"))
    labels = label_names(labels, where) if labels is not None else None
    return Record(example_text(item.get(key), where, key), labels or None, where)


def read_doccano_jsonl(export: ExportFile, text_key: str) -> list[Record]:
    return [doccano_record(parse_json(line, f"{export.name}:{line_no}"), f"{export.name}:{line_no}", text_key)
            for line_no, line in enumerate(export.content.splitlines(), start=1) if line.strip()]


def read_doccano_json(export: ExportFile, text_key: str) -> list[Record]:
    """doccano's JSON export: one array of the objects its JSONL export has one per line."""
    return [doccano_record(item, f"{export.name}: item {number}", text_key)
            for number, item in enumerate(parse_json_array(export), start=1)]


def csv_text(content: str) -> io.StringIO:
    """An export's content as the csv module's input, its field size limit (128 KiB) raised to the content's
    size: a long document is a field like any other."""
    csv.field_size_limit(max(csv.field_size_limit(), len(content)))
    return io.StringIO(content)


def csv_rows(export: ExportFile, delimiter: str = ",") -> Iterable[tuple[str, dict[str, str]]]:
    """(where, row) of a CSV (or TSV) export with a header line."""
    reader = csv.DictReader(csv_text(export.content), delimiter=delimiter)
    for row in reader:
        if any((value or "").strip() for value in row.values()):
            yield f"{export.name}:{reader.line_num}", row


def read_doccano_csv(export: ExportFile, text_key: str) -> list[Record]:
    """doccano's CSV export: a text column and a label column whose labels are joined by `#`."""
    records = []
    for where, row in csv_rows(export):
        key = text_key if text_key in row else "data" if "data" in row else text_key
        cell = (row.get("label") or "").strip()
        labels = [name for name in cell.split(DOCCANO_CSV_SEPARATOR) if name.strip()] if cell else []
        records.append(Record(example_text(row.get(key), where, key), label_names(labels, where) or None, where))
    return records


def fasttext_lines(export: ExportFile) -> Iterable[tuple[int, str]]:
    """(line number, line) of a fastText export. doccano writes each line as a one-column CSV (pandas'
    to_csv): a line holding a comma or a quote is quoted and its quotes doubled, and is read back here; in
    an unquoted line the commas the CSV reader splits at are put back."""
    reader = csv.reader(csv_text(export.content))
    line_no = 1
    for row in reader:
        yield line_no, ",".join(row)
        line_no = reader.line_num + 1


def read_fasttext(export: ExportFile, text_key: str) -> list[Record]:
    """doccano's fastText export: `__label__a __label__b text`, then the example's comments (each
    ` __comment__...`, not part of the text); a line without labels was not annotated."""
    records = []
    for line_no, line in fasttext_lines(export):
        if not line.strip():
            continue
        where, words = f"{export.name}:{line_no}", line.split(" ")
        count = next((i for i, word in enumerate(words) if not word.startswith(FASTTEXT_PREFIX)), len(words))
        labels = [word[len(FASTTEXT_PREFIX):] for word in words[:count]]
        text = " ".join(words[count:]).partition(FASTTEXT_COMMENT)[0]
        records.append(Record(example_text(text, where, "text"), label_names(labels, where) or None, where))
    return records


def latest(items: list[dict]) -> dict:
    """The stated rule for several annotations of one task: the last one updated (then created, then the
    highest id), i.e. the annotators' final word."""
    return max(items, key=lambda item: (str(item.get("updated_at") or item.get("created_at") or ""),
                                        str(item.get("created_at") or ""), _number(item.get("annotation_id",
                                                                                            item.get("id")))))


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return -1.0


def choices_from_names(items: list, where: str) -> set[str]:
    """The from_names of the `choices` results in the annotations of Label Studio tasks."""
    names = set()
    for item in items:
        for annotation in item.get("annotations") or [] if isinstance(item, dict) else []:
            for result in annotation.get("result") or [] if isinstance(annotation, dict) else []:
                if isinstance(result, dict) and result.get("type") == "choices":
                    names.add(str(result.get("from_name")))
    return names


def pick_from_name(found: set[str], where: str) -> str | None:
    if len(found) > 1:
        raise DataError(f"{where}: choices of several controls ({', '.join(sorted(found))}); name the one that "
                        f"holds the labels with --from_name")
    return next(iter(found), None)


def read_label_studio_json(export: ExportFile, from_name: str | None, text_key: str, _table: str | None) -> list[Record]:
    """Label Studio's JSON export: per task `data.<text_key>` and `annotations`, whose `choices` results
    (of the control `from_name`) are the labels. Cancelled (skipped) annotations are ignored; of several
    others the latest counts (`latest`); a task without any is not annotated. Predictions are not labels."""
    items = parse_json_array(export)
    from_name = from_name or pick_from_name(choices_from_names(items, export.name), export.name)
    records = []
    for number, task in enumerate(items, start=1):
        where = f"{export.name}: task {number}" + (f" (id {task.get('id')})" if isinstance(task, dict) else "")
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise DataError(f"{where}: a task object with a 'data' object was expected")
        text = example_text(task["data"].get(text_key), where, f"data.{text_key}")
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        labels = None
        if annotations:
            labels = []
            for result in latest(annotations).get("result") or []:
                if isinstance(result, dict) and result.get("type") == "choices" and result.get("from_name") == from_name:
                    labels += label_names((result.get("value") or {}).get("choices"), where)
            labels = label_names(labels, where)
        records.append(Record(text, labels, where))
    return records


def min_rows(export: ExportFile, delimiter: str | None) -> list[tuple[str, dict]]:
    """The rows of JSON_MIN (`delimiter` None) or of its table form, CSV or TSV."""
    if delimiter is not None:
        return list(csv_rows(export, delimiter))
    items = parse_json_array(export)
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise DataError(f"{export.name}: item {number}: a JSON object was expected, not {type(item).__name__}")
    return [(f"{export.name}: item {number}" + (f" (id {item.get('id')})" if "id" in item else ""), item)
            for number, item in enumerate(items, start=1)]


def min_from_name(rows: list[tuple[str, dict]], text_key: str, where: str) -> str | None:
    """The column of JSON_MIN / CSV that holds the choices: `label` (this suite's config), else the only
    column that is neither the text, a data field the suite adds, nor an annotation's metadata, else the
    only one holding a `{"choices": [...]}`."""
    keys = {key for _, row in rows for key, value in row.items() if value not in (None, "")}
    candidates = keys - LABEL_STUDIO_MIN_KEYS - {text_key, SOURCE_KEY}
    if FROM_NAME in candidates or len(candidates) <= 1:
        return FROM_NAME if FROM_NAME in candidates else next(iter(candidates), None)
    multiple = {key for _, row in rows for key, value in row.items() if key in candidates
                and (isinstance(value, dict) or str(value).lstrip().startswith("{"))}
    return pick_from_name(multiple if len(multiple) == 1 else candidates, where)


def min_labels(value, where: str) -> list[str]:
    """A JSON_MIN / CSV choice cell: a string for one choice, `{"choices": [...]}` for several (in CSV the
    JSON of it)."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        value = parse_json(value, where)
    if isinstance(value, dict):
        return label_names(value.get("choices"), where)
    return label_names([value] if isinstance(value, str) else value, where)


def read_label_studio_min(export: ExportFile, from_name: str | None, text_key: str,
                          delimiter: str | None) -> list[Record]:
    """Label Studio's JSON_MIN, CSV and TSV exports: one row per annotation with the task's data fields, the
    choices under the control's name (absent when the task was not annotated) and the annotation's id
    and times. Rows of one task id are reduced to the latest annotation, as for the JSON export."""
    rows = min_rows(export, delimiter)
    from_name = from_name or min_from_name(rows, text_key, export.name)
    by_task: dict[str, list[tuple[str, dict]]] = {}
    for number, (where, row) in enumerate(rows):
        by_task.setdefault(str(row.get("id")) if row.get("id") not in (None, "") else f"row {number}", []).append(
            (where, row))
    records = []
    for group in by_task.values():
        chosen = latest([row for _, row in group])
        where = next(w for w, row in group if row is chosen)
        text = example_text(chosen.get(text_key), where, text_key)
        value = chosen.get(from_name) if from_name else None
        if value not in (None, ""):
            labels = min_labels(value, where)
        else:
            labels = [] if chosen.get("annotation_id") not in (None, "") else None
        records.append(Record(text, labels, where))
    return records


def one_line_text(text: str, dirty: bool = False) -> tuple[str, bool, bool]:
    """(text, joined, dropped): the text as one field of the data format, each TAB or line break inside it
    a space, as the reference joins TAB-separated parts (`joined`). With `dirty`, a text holding a TAB
    is a whole `text<TAB>labels` line of train_dirty.txt imported as it was: its last column, the old
    labels, is dropped first (`dropped`)."""
    stripped = text.strip()
    dropped = dirty and "\t" in stripped
    if dropped:
        stripped = stripped.rsplit("\t", 1)[0].strip()
    one_line = re.sub(r"\r\n|[\t\r\n]", " ", stripped)
    return one_line, one_line != stripped, dropped


def doccano_task(text: str, labels: Sequence[str], meta: dict) -> dict:
    """One line of doccano's JSONL import: the text, its pre-annotated labels and meta (kept by doccano and
    exported again, flattened, beside the text)."""
    return {"text": text, "label": list(labels), "meta": meta}


def label_studio_task(text: str, source: str, labels: Sequence[str] | None, score: float | None,
                      model_version: str) -> dict:
    """One Label Studio task; `labels` (None: no pre-annotation) become a prediction of the config's Choices,
    shown to the annotator as a starting point and never read back as an annotation."""
    task: dict = {"data": {"text": text, SOURCE_KEY: source}}
    if labels is not None:
        result = [{"from_name": FROM_NAME, "to_name": "text", "type": "choices", "value": {"choices": list(labels)}}]
        prediction: dict = {"model_version": model_version, "result": result if labels else []}
        if score is not None:
            prediction["score"] = round(float(score), 4)
        task["predictions"] = [prediction]
    return task


def label_studio_config(labels: Sequence[str], multiple: bool = True) -> str:
    """The labelling config (XML) whose Choices are the label file's labels, named as the reader expects."""
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return ("<View>\n  <Text name=\"text\" value=\"$text\"/>\n"
            f"  <Choices name=\"{FROM_NAME}\" toName=\"text\" choice=\"{'multiple' if multiple else 'single'}\" "
            f"showInline=\"false\">\n{choices}\n  </Choices>\n</View>\n")


def least_sure(distances: np.ndarray, count: int, spread: bool = False) -> list[int]:
    """The `count` texts closest to a threshold on any label, closest first; with `spread`, taken in turn
    from each label's own queue (the texts closest to that label's threshold) so a few labels the model
    hesitates on everywhere do not fill the whole queue."""
    if not spread:
        return np.argsort(distances.min(axis=1), kind="stable")[:count].tolist()
    queues = [np.argsort(column, kind="stable").tolist() for column in distances.T if np.isfinite(column).any()]
    chosen: dict[int, None] = {}
    while len(chosen) < min(count, len(distances)) and any(queues):
        for queue in queues:
            while queue and queue[0] in chosen:
                queue.pop(0)
            if queue and len(chosen) < count:
                chosen[queue.pop(0)] = None
    return list(chosen)


def decision_confidence(probs: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Per text, the probability of its least certain decision (p for a chosen label, 1 - p for another):
    Label Studio's prediction score, by which annotators can sort the tasks."""
    return np.where(chosen, probs, 1 - np.asarray(probs)).min(axis=1)
