"""Long documents: windows in training (pooled per document) and prediction, the settings stored with
the checkpoint, and clear errors for lengths the model cannot read."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import paddle
import pytest

from data_io import load_examples, multi_hot, read_label_list
from metric import MetricReport
from modeling import load_tokenizer, stored_config
from pipeline import LongText, TextPipeline, pool_rows
from training import pool_logits

from conftest import FILLER, KEYWORDS, LABELS, RECIPE, run_main

WINDOW = 24  # --max_seq_length of these tests: 22 text tokens per window
DOCUMENT = 60  # characters (= tokens) per document


def document_lines(count: int, seed: int, late: bool = False) -> list[str]:
    """`text<TAB>labels` documents of filler with one or two label keywords; with `late` a single
    keyword that starts after the first window's 22 tokens, so truncation never sees it."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        labels = sorted(rng.sample(LABELS, 1 if late else rng.choice([1, 2])), key=LABELS.index)
        text = list(rng.choices(FILLER, k=DOCUMENT))
        for label in labels:
            start = rng.randint(30, DOCUMENT - 2) if late else rng.randint(0, DOCUMENT - 2)
            text[start:start + 2] = rng.choice(KEYWORDS[label])
        lines.append(f"{''.join(text)}\t{','.join(labels)}")
    return lines


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("documents")
    (path / "label.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    for name, lines in (("train.txt", document_lines(400, 1)), ("dev.txt", document_lines(60, 2)),
                        ("test.txt", document_lines(60, 3, late=True))):
        (path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train_on_documents(documents: Path, scratch_model: Path, save_dir: Path, *long_text: str) -> str:
    result = run_main("train.py", "--device", "cpu", "--dataset_dir", documents, "--model_name", scratch_model,
                      "--save_dir", save_dir, "--epochs", "6", "--max_seq_length", WINDOW, "--logging_steps", "50",
                      *RECIPE, *long_text)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


@pytest.fixture(scope="module")
def window_checkpoint(documents, scratch_model, tmp_path_factory) -> tuple[Path, str]:
    save_dir = tmp_path_factory.mktemp("window") / "checkpoint"
    return save_dir, train_on_documents(documents, scratch_model, save_dir, "--long_text", "window", "--batch_size", "8")


@pytest.fixture(scope="module")
def truncate_checkpoint(documents, scratch_model, tmp_path_factory) -> Path:
    save_dir = tmp_path_factory.mktemp("truncate") / "checkpoint"
    train_on_documents(documents, scratch_model, save_dir)
    return save_dir


def predicted_micro_f1(documents: Path, checkpoint: Path, output: Path, *extra: str) -> tuple[float, str]:
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", documents, "--data_file", "test.txt",
                      "--params_path", checkpoint, "--output_file", output, "--max_seq_length", WINDOW, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    labels = read_label_list(documents / "label.txt")
    gold = multi_hot(load_examples(documents / "test.txt", labels), len(labels))
    metric = MetricReport()
    metric.update(multi_hot(load_examples(output, labels), len(labels)), gold)
    return metric.accumulate()[0], result.stderr


def test_a_keyword_past_the_first_window_is_found_by_window_and_missed_by_truncate(documents, window_checkpoint,
                                                                                  truncate_checkpoint, tmp_path):
    save_dir, train_log = window_checkpoint
    assert "train.txt: Long texts (--long_text window, --max_seq_length 24, --window_stride 12, --window_pooling max): " \
           "400 texts read as 2000 windows, 400 of them in more than one" in train_log  # 60 tokens: 5 windows each
    assert stored_config(save_dir)["long_text"] == {"mode": "window", "stride": None, "max_windows": 32,
                                                    "pooling": "max"}
    window_f1, predict_log = predicted_micro_f1(documents, save_dir, tmp_path / "window.txt")
    assert "60 texts read as 300 windows" in predict_log  # the stored setting, no option given
    truncate_f1, predict_log = predicted_micro_f1(documents, truncate_checkpoint, tmp_path / "truncate.txt")
    assert ("Long texts (--long_text truncate, --max_seq_length 24): 60 of 60 texts truncated, 2280 tokens cut in "
            "all, up to 38 from one text (--long_text window reads them whole)") in predict_log
    assert window_f1 > 0.8 and truncate_f1 < 0.4, (window_f1, truncate_f1)


def test_a_model_trained_on_truncated_texts_reads_documents_with_window_at_predict_time(documents, truncate_checkpoint,
                                                                                       tmp_path):
    truncated, _ = predicted_micro_f1(documents, truncate_checkpoint, tmp_path / "truncate.txt")
    windowed, log = predicted_micro_f1(documents, truncate_checkpoint, tmp_path / "window.txt", "--long_text", "window")
    assert "60 texts read as 300 windows" in log
    assert windowed > truncated + 0.3, (truncated, windowed)


def test_window_rows_are_the_tokenizers_own_ids(scratch_model, ernie_m_trained):
    texts = ["足球比赛的冠军", "电影" * 100, "x"]
    for model_dir in (scratch_model, ernie_m_trained):
        tokenizer = load_tokenizer(str(model_dir))
        names = [name for name in ("input_ids", "token_type_ids") if name in tokenizer("测试")]
        windows = TextPipeline(tokenizer, names, WINDOW, long_text=LongText("window", stride=4)).encode(texts)
        truncated = TextPipeline(tokenizer, names, WINDOW).encode(texts)
        for name in names:  # a text that fits: the same row as truncation makes
            assert windows.features[name][0] == truncated.features[name][0] == tokenizer(texts[0])[name]
        rows = [ids for ids, text in zip(windows.features["input_ids"], windows.source) if text == 1]
        assert len(rows) == 1 + -(-(200 - 22) // 18)
        full = tokenizer(texts[1])["input_ids"]
        assert all(row[0] == full[0] and row[-1] == full[-1] and len(row) <= WINDOW for row in rows)
        bodies = [row[1:-1] for row in rows]
        assert bodies[0] + [token for body in bodies[1:] for token in body[4:]] == full[1:-1]


def test_differentiable_pooling_equals_the_pipelines_and_sends_the_max_gradient_to_its_window():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 3)).astype("float32") * 4
    source = np.array([0, 0, 1, 2, 2, 2, 3])
    for pooling in ("max", "mean", "logsumexp"):
        tensor = paddle.to_tensor(logits, stop_gradient=False)
        pooled = pool_logits(tensor, paddle.to_tensor(source), pooling)
        assert np.allclose(pooled.numpy(), pool_rows(logits, source, 4, pooling), atol=1e-5)
        pooled.sum().backward()
        grad = tensor.grad.numpy()
        assert np.isfinite(grad).all()
        if pooling == "max":
            winners = np.zeros_like(logits)
            for text in range(4):
                rows = np.flatnonzero(source == text)
                winners[rows[logits[rows].argmax(0)], np.arange(3)] = 1
            assert np.array_equal(grad, winners)
        else:  # every window of a text gets a share; each text's shares sum to 1 per label
            assert (grad > 0).all() and np.allclose(np.add.reduceat(grad, [0, 2, 3, 6]), 1, atol=1e-5)


@pytest.mark.parametrize("script, model_option", [("train.py", "--model_name"), ("predict.py", "--params_path")])
def test_max_seq_length_beyond_the_position_embeddings_is_one_clear_line(script, model_option, keyword_data,
                                                                         scratch_model, trained):
    model = scratch_model if script == "train.py" else trained[0]
    result = run_main(script, "--device", "cpu", "--dataset_dir", keyword_data, model_option, model,
                      "--max_seq_length", "1024", "--save_dir" if script == "train.py" else "--output_file",
                      Path(trained[0]).parent / f"unused_{script}")
    assert result.returncode == 2
    assert (f"--max_seq_length 1024 is above the 512 positions of the model in {model} (max_position_embeddings): "
            f"use --max_seq_length 512 or less, and --long_text window to read longer texts whole") in result.stderr
