"""analysis/: evaluate -> bad_case -> word/sent interpret, sparse and dirty selections, augmentation."""
from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
from dirty import rank_dirty
from sparse import select_support

from data_io import iter_examples, load_examples, read_label_list
from modeling import load_model, load_tokenizer, plain_vocabulary
from utils import DataError

from augment import build_augmenter
from common import read_interpret_rows
from conftest import LABELS, run_main, run_script
from interpret import encode, integrated_gradients, word_scores

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analysed(trained, keyword_data, tmp_path_factory):
    """A copy of the keyword data after evaluate.py (defaults plus --train_file) has run on it."""
    data = tmp_path_factory.mktemp("analysis") / "data"
    shutil.copytree(keyword_data, data)
    with open(data / "dev.txt", "a", encoding="utf-8") as dev:  # mislabelled rows: certain bad cases
        dev.write("今天足球比赛冠军\t财经\n股票基金利率\t体育,教育\n学校考试老师\n")
    result = run_main("analysis/evaluate.py", "--device", "cpu", "--dataset_dir", data, "--params_path", trained[0],
                      "--train_file", "train.txt")
    assert result.returncode == 0, result.stderr[-3000:]
    return data, result.stderr


def test_evaluate_logs_report_and_writes_its_files(analysed, trained):
    data, log = analysed
    for line in ("-----Evaluate model-------", "Dev dataset size: 103", "Train dataset size: 800",
                 "Class name: 体育", "----------------------------", "Bad case in dev dataset saved in"):
        assert line in log
    assert re.search(r"Micro avg in dev dataset: precision: \d+\.\d\d \| recall: \d+\.\d\d \| F1 score \d+\.\d\d", log)
    for name in ("bad_case.txt", "metrics.json", "per_label.csv", "per_label_f1.png", "reliability.png"):
        assert f"saved in {data / name}" in log  # every file written is logged with its path
    assert re.search(r"Evaluation examples in dev dataset: \d+\(\d+\.\d%\) \| precision: ", log)
    metrics = json.loads((data / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["labels"] == LABELS and len(metrics["thresholds"]) == 5
    dev = metrics["dev"]
    assert dev["cail_score"] == pytest.approx((dev["micro_f1"] + dev["macro_f1"]) / 2)
    assert dev["num_examples"] == 103 and metrics["train"]["num_examples"] == 800
    assert f"F1 score {dev['micro_f1'] * 100:.2f}" in log
    rows = list(csv.DictReader(open(data / "per_label.csv", encoding="utf-8")))
    assert [(r["split"], r["label"]) for r in rows] == [(s, n) for s in ("train", "dev") for n in LABELS]
    assert (data / "per_label_f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # bad cases: exactly the dev rows whose predicted set differs from the gold set, as predict.py predicts them
    lines = (data / "bad_case.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Text\tLabel\tPrediction"
    out = data / "predict.txt"
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", data, "--params_path", trained[0],
                      "--data_file", "dev.txt", "--output_file", out)
    assert result.returncode == 0, result.stderr[-2000:]
    gold = {e.text: e.labels for e in load_examples(data / "dev.txt", LABELS)}
    predicted = {e.text: e.labels for e in load_examples(out, LABELS)}
    expected = {text for text in gold if sorted(gold[text]) != sorted(predicted[text])}
    assert {line.split("\t")[0] for line in lines[1:]} == expected
    assert {"今天足球比赛冠军", "股票基金利率", "学校考试老师"} <= expected
    for line in lines[1:]:
        text, label, prediction = line.split("\t")
        assert prediction == ",".join(LABELS[i] for i in sorted(predicted[text]))


def test_word_interpret_reads_bad_cases_and_writes_reports(analysed, trained):
    data, _ = analysed
    result = run_main("analysis/word_interpret.py", "--device", "cpu", "--dataset_dir", data, "--params_path",
                      trained[0])
    assert result.returncode == 0, result.stderr[-3000:]
    bad_cases = read_interpret_rows(data / "bad_case.txt")
    lines = (data / "word_interpret.txt").read_text(encoding="utf-8").splitlines()
    expected = sum(len(set(filter(None, (r.label + "," + r.prediction).split(",")))) or 1 for r in bad_cases)
    assert len(lines) == 1 + expected
    page = (data / "word_interpret.html").read_text(encoding="utf-8")
    assert page.count("<tr><td>") == expected and "<mark style=" in page
    assert f"{expected} explanations (ig) of {len(bad_cases)} texts" in result.stderr
    for name in ("word_interpret.html", "word_interpret.txt"):
        assert f"saved in {data / name}" in result.stderr


def test_sent_interpret_lists_top_k_training_examples(analysed, trained):
    data, _ = analysed
    result = run_main("analysis/sent_interpret.py", "--device", "cpu", "--dataset_dir", data, "--params_path",
                      trained[0], "--top_k", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    blocks = (data / "sent_interpret.txt").read_text(encoding="utf-8").strip().split("\n\n")
    assert len(blocks) == len(read_interpret_rows(data / "bad_case.txt"))
    train = {e.text: e for e in iter_examples(data / "train.txt")}
    for block in blocks:
        lines = block.splitlines()
        assert [line.split(":")[0] for line in lines[:3]] == ["text", "predict label", "label"]
        assert lines[3] == "examples with positive influence" and len(lines) == 6
        scores = []
        for rank, line in enumerate(lines[4:], start=1):
            match = re.fullmatch(rf"support{rank} text: (.*)\tlabel: (.*)\tscore: (-?\d\.\d{{5}})", line)
            assert match and match.group(1) in train
            scores.append(float(match.group(3)))
        assert scores == sorted(scores, reverse=True)


def test_sparse_selection_is_deterministic_and_respects_counts(analysed, trained):
    data, _ = analysed
    args = ["--device", "cpu", "--dataset_dir", data, "--params_path", trained[0], "--sparse_num", "10",
            "--support_num", "15", "--support_threshold", "0.5"]
    outputs = []
    for _ in range(2):
        result = run_main("analysis/sparse.py", *args)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append([(data / name).read_text(encoding="utf-8") for name in ("sparse.txt", "support.txt")])
    assert outputs[0] == outputs[1]
    sparse = load_examples(data / "sparse.txt", LABELS)
    dev_texts = {e.text for e in iter_examples(data / "dev.txt")}
    assert len(sparse) == 10 and all(e.text in dev_texts for e in sparse)
    support = load_examples(data / "support.txt", LABELS)  # augmented rows keep valid labels
    assert 0 < len(support) <= 15
    assert re.search(r"Average score in sparse data: \d\.\d{4}", result.stderr)
    result = run_main("analysis/sparse.py", *args[:-2], "--annotate", "--support_threshold", "0.9999")
    assert result.returncode == 0, result.stderr[-3000:]
    annotate = (data / "support.txt").read_text(encoding="utf-8").splitlines()
    unlabeled = {e.text for e in iter_examples(data / "data.txt")}
    assert all(line in unlabeled for line in annotate) and len(annotate) < 15
    assert f"Only {len(annotate)} support data" in result.stderr and "--support_threshold 0.9999" in result.stderr


def test_dirty_finds_injected_wrong_labels(trained, keyword_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(keyword_data, data)
    lines = (data / "train.txt").read_text(encoding="utf-8").splitlines()
    rng = np.random.default_rng(0)
    injected = set(rng.choice([i for i, line in enumerate(lines) if "\t" in line], size=10, replace=False).tolist())
    for i in injected:  # replace the labels by labels the text does not have
        text, labels = lines[i].split("\t")
        wrong = [name for name in LABELS if name not in labels.split(",")][:2]
        lines[i] = f"{text}\t{','.join(wrong)}"
    (data / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_main("analysis/dirty.py", "--device", "cpu", "--dataset_dir", data, "--params_path", trained[0],
                      "--dirty_num", "20")
    assert result.returncode == 0, result.stderr[-3000:]
    dirty = (data / "train_dirty.txt").read_text(encoding="utf-8").splitlines()
    rest = (data / "train_dirty_rest.txt").read_text(encoding="utf-8").splitlines()
    assert len(dirty) == 20 and len(rest) == len(lines) - 20
    for name in ("train_dirty.txt", "train_dirty_rest.txt"):
        assert f"saved in {data / name}" in result.stderr
    assert sorted(dirty + rest) == sorted(lines)  # nothing lost; rows keep their file order in each file
    assert dirty == [line for line in lines if line in set(dirty)]
    found = sum(lines[i] in dirty for i in injected)
    assert found >= 8, f"only {found} of 10 injected rows in the top 20"


def test_integrated_gradients_complete_and_other_interpreters_score_every_word(trained):
    model, tokenizer = load_model(str(trained[0])), load_tokenizer(str(trained[0]))
    model.eval()
    item = encode(tokenizer, "今天的足球比赛冠军是谁，股票基金怎么样", 128)
    for label in (0, 1, 3):
        attributions, logit, baseline_logit = integrated_gradients(model, item, label, steps=300)
        difference = logit - baseline_logit
        assert attributions.sum() == pytest.approx(difference, abs=0.02 + 0.01 * abs(difference))
        assert np.all(attributions[item.token_words < 0] == 0)  # [CLS]/[SEP] are part of the baseline
    for interpreter in ("grad", "lime"):
        scores = word_scores(model, tokenizer, item, 0, interpreter)
        assert scores.shape == (len(item.words),) and np.abs(scores).sum() > 0
    football = word_scores(model, tokenizer, item, 0, "ig")  # label 0 is 体育: its keywords carry it
    assert item.words[int(np.argmax(football))] in {"足球", "比赛", "冠军", "足球比赛"}


def test_read_interpret_rows_accepts_one_to_three_columns(tmp_path):
    path = tmp_path / "bad_case.txt"
    path.write_text("Text\tLabel\tPrediction\n甲\t体育\t财经\n乙\t体育\n丙\n\n", encoding="utf-8")
    rows = read_interpret_rows(path)
    assert [(r.text, r.label, r.prediction) for r in rows] == [
        ("甲", "体育", "财经"), ("乙", "体育", ""), ("丙", "", "")]
    path.write_text("甲\t体育\t财经\t多余\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad_case.txt:1: 4 TAB-separated columns"):
        read_interpret_rows(path)
    path.write_text("Text\tLabel\tPrediction\n", encoding="utf-8")
    with pytest.raises(DataError, match="no texts to interpret"):
        read_interpret_rows(path)


def test_support_selection_and_dirty_ranking_rules():
    index = np.array([[0, 1, 2], [0, 3, 4]])
    scores = np.array([[0.9, 0.8, 0.2], [0.95, 0.85, 0.75]])
    assert select_support(index, scores, 0.7, 10) == {0: 0.9, 1: 0.8, 3: 0.85, 4: 0.75}  # round-robin, no repeats
    assert list(select_support(index, scores, 0.7, 2)) == [0, 1]
    assert select_support(index, scores, 0.99, 5) == {}
    labels = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], dtype="float32")
    probs = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.1], [0.9, 0.1]], dtype="float32")
    order, total = rank_dirty(labels, probs, 0.5)
    assert order.tolist() == [3, 1, 2, 0] and total == pytest.approx([0.2, 1.5, 0.7, 1.8])


def test_offline_augmentation_keeps_labels_and_never_returns_empty_text(keyword_data, trained, tmp_path):
    texts = [e.text for e in iter_examples(keyword_data / "train.txt")][:100] + ["足球", "。"]
    vocabulary = plain_vocabulary(load_tokenizer(str(trained[0])))
    custom = {"足球": ["蹴鞠"], "股票": ["证券", "股份"]}
    for strategy in ("mix", "substitute", "insert", "delete", "swap"):
        for aug_type in ("random", "custom"):
            augmenter = build_augmenter(strategy, aug_type, 2, 0.2, vocabulary, custom, seed=1)
            for text in texts:
                new = augmenter.augment(text)
                assert len(new) <= 2 and len(set(new)) == len(new)
                assert all(t.strip() and t != text for t in new)
    out = tmp_path / "aug.txt"
    result = run_main("analysis/aug.py", "--train_path", keyword_data / "train.txt", "--aug_path", out,
                      "--aug_strategy", "substitute", "--aug_type", "custom", "--custom_file",
                      _write(tmp_path / "c.json", json.dumps(custom, ensure_ascii=False)), "--create_n", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    source = {e.text: e.labels for e in load_examples(keyword_data / "train.txt", LABELS)}
    augmented = load_examples(out, read_label_list(keyword_data / "label.txt"))
    assert augmented and all("蹴鞠" in e.text or "证券" in e.text or "股份" in e.text for e in augmented)
    for example in augmented:  # the source row is the one the replacement came from
        originals = [t for t, labels in source.items() if labels == example.labels]
        assert any(_undo(example.text, custom) == t for t in originals)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _undo(text: str, custom: dict) -> str:
    for word, replacements in custom.items():
        for replacement in replacements:
            text = text.replace(replacement, word)
    return text


def test_download_only_types_fail_with_the_offline_alternatives(keyword_data, tmp_path):
    unreachable = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
                   "PPNLP_HOME": str(tmp_path / "empty")}
    result = run_script("analysis/aug.py", "--train_path", keyword_data / "train.txt", "--aug_path",
                        tmp_path / "aug.txt", env=unreachable)  # the reference defaults: substitute, synonym
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--aug_type synonym" in result.stderr and "--aug_type random" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_main("analysis/aug.py", "--train_path", keyword_data / "train.txt", "--aug_path",
                      tmp_path / "aug.txt", "--aug_type", "custom", "--custom_file", _write(tmp_path / "b.json", "{"))
    assert result.returncode == 2 and "not valid JSON" in result.stderr
    result = run_main("analysis/aug.py", "--train_path", keyword_data / "train.txt", "--aug_path",
                      tmp_path / "aug.txt", "--aug_type", "custom")
    assert result.returncode == 2 and "--aug_type custom" in result.stderr and "--custom_file" in result.stderr


def test_device_is_used_by_the_mlm_type_only(keyword_data, tmp_path):
    """--device selects where the mlm type's language model runs; a GPU on this CPU build is a clear
    error before any download, while the model-free types ignore it."""
    result = run_main("analysis/aug.py", "--train_path", keyword_data / "train.txt", "--aug_path",
                      tmp_path / "aug.txt", "--aug_type", "mlm", "--device", "gpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--device gpu:" in result.stderr and "use --device cpu on a machine without GPU" in result.stderr
    result = run_main("analysis/aug.py", "--train_path", keyword_data / "train.txt", "--aug_path",
                      tmp_path / "aug.txt", "--aug_strategy", "swap", "--device", "gpu")
    assert result.returncode == 0, result.stderr[-2000:]
