"""Long documents: windows in training (pooled per document) and prediction, the settings stored with
the checkpoint, and clear errors for lengths the model cannot read."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from backends import create_backend
from data_io import load_examples, multi_hot, read_label_list
from exporting import load_export, load_export_tokenizer
from metric import MetricReport
from modeling import load_tokenizer, stored_config
from parity import with_long_document
from pipeline import LongText, TextPipeline, pool_rows
from training import pool_logits

from conftest import ROOT, WINDOW, chosen_names, load_script, run_main, train_on_documents


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


def test_window_rows_are_the_tokenizers_own_ids(scratch_model, ernie_m_scratch):
    texts = ["足球比赛的冠军", "电影" * 100, "x"]
    for model_dir in (scratch_model, ernie_m_scratch):
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


@pytest.mark.parametrize("script", ["train.py", "predict.py", "analysis/evaluate.py", "export_model.py", "prune.py",
                                    "deploy/predictor/infer.py", "deploy/triton_serving/build_repo.py"])
def test_max_seq_length_beyond_the_position_embeddings_is_one_clear_line(script, keyword_data, scratch_model, trained,
                                                                         exported, tmp_path):
    checkpoint, export = trained[0], exported[0]
    model, options = {
        "train.py": (scratch_model, ["--model_name", scratch_model, "--save_dir", tmp_path / "out"]),
        "predict.py": (checkpoint, ["--params_path", checkpoint, "--output_file", tmp_path / "out.txt"]),
        "analysis/evaluate.py": (checkpoint, ["--params_path", checkpoint]),
        "export_model.py": (checkpoint, ["--params_path", checkpoint, "--output_path", tmp_path / "export"]),
        "prune.py": (checkpoint, ["--params_dir", checkpoint, "--output_dir", tmp_path / "prune"]),
        "deploy/predictor/infer.py": (export, ["--model_path_prefix", export / "float32"]),
        "deploy/triton_serving/build_repo.py": (export, ["--export_dir", export, "--output_dir", tmp_path / "models"]),
    }[script]
    dataset = [] if script in ("export_model.py", "deploy/triton_serving/build_repo.py") else ["--dataset_dir",
                                                                                               keyword_data]
    device = [] if script in ("export_model.py", "deploy/triton_serving/build_repo.py") else ["--device", "cpu"]
    result = run_main(script, *device, *dataset, *options, "--max_seq_length", "1024")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--max_seq_length 1024 is above the 512 positions of the model in {model}" in result.stderr
    assert "--long_text window" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "prune").exists()


def test_evaluate_and_the_export_read_documents_as_the_checkpoint_does(documents, window_checkpoint, window_exported,
                                                                        tmp_path):
    save_dir, _ = window_checkpoint
    predicted = tmp_path / "predict.txt"
    predicted_micro_f1(documents, save_dir, predicted)
    evaluated = tmp_path / "evaluated"
    evaluated.mkdir()
    for name in ("label.txt", "test.txt"):
        (evaluated / name).write_text((documents / name).read_text(encoding="utf-8"), encoding="utf-8")
    result = run_main("analysis/evaluate.py", "--device", "cpu", "--dataset_dir", evaluated, "--params_path", save_dir,
                      "--dev_file", "test.txt", "--max_seq_length", WINDOW)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "60 texts read as 300 windows" in result.stderr
    bad_cases = (evaluated / "bad_case.txt").read_text(encoding="utf-8").splitlines()[1:]
    predictions = dict(line.split("\t") for line in predicted.read_text(encoding="utf-8").splitlines()[1:])
    gold = dict(line.split("\t") for line in (documents / "test.txt").read_text(encoding="utf-8").splitlines())
    wrong = {text for text in gold if sorted(predictions[text].split(", ")) != sorted(gold[text].split(","))}
    assert {line.split("\t")[0] for line in bad_cases} == wrong  # one bad case per document, as predict.py sees it

    meta = json.loads((window_exported / "export_meta.json").read_text(encoding="utf-8"))
    assert meta["long_text"]["mode"] == "window" and meta["max_position_embeddings"] == 512
    parity = json.loads((window_exported / "parity.json").read_text(encoding="utf-8"))
    assert [row["variant"] for row in parity] == ["dygraph", "onnxruntime fp32", "paddle fp32"]
    assert all(row["max_abs_diff"] <= 1e-4 for row in parity)
    for backend in ("onnxruntime", "paddle"):
        inferred = tmp_path / f"infer_{backend}.txt"
        result = run_main("deploy/predictor/infer.py", "--device", "cpu", "--backend", backend, "--model_path_prefix",
                          window_exported / "float32", "--dataset_dir", documents, "--data_file", "test.txt",
                          "--output_file", inferred, "--max_seq_length", WINDOW)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "60 texts read as 300 windows" in result.stderr
        assert inferred.read_text(encoding="utf-8") == predicted.read_text(encoding="utf-8")


def test_the_export_parity_check_includes_a_document_of_several_windows():
    texts = ["甲" * 30, "乙" * 40, "丙" * 50, "丁" * 10]
    labels = np.array([[1, 0], [0, 1], [0, 0], [1, 1]], dtype="float32")
    with_document, with_labels = with_long_document(texts, labels, 24)
    assert with_document[:4] == texts and with_document[4] == "甲" * 30 + "乙" * 40 + "丙" * 50  # >= 4 x 24
    assert with_labels[4].tolist() == [1, 1] and with_long_document(texts, None, 24)[1] is None


def test_paddle_serving_pools_the_windows_of_a_request(documents, window_exported):
    pipeline_io = load_script("deploy/paddle_serving/pipeline_io.py")
    export = load_export(window_exported / "float32")
    tokenizer = load_export_tokenizer(export)
    texts = [line.split("\t")[0] for line in (documents / "test.txt").read_text(encoding="utf-8").splitlines()[:5]]
    feeds, rows = pipeline_io.preprocess(texts, export, tokenizer, WINDOW)
    assert rows.source.tolist() == [index for index in range(5) for _ in range(5)]
    answer = pipeline_io.postprocess({"logits": create_backend(export, "onnxruntime", "fp32").run(feeds)}, export,
                                     rows)
    probs = TextPipeline(tokenizer, export.input_names, WINDOW, long_text=export.long_text).probs(
        create_backend(export, "onnxruntime", "fp32"), texts)
    assert pipeline_io.decode_response(answer)[0] == chosen_names(export, probs)


def test_word_interpret_refuses_documents_it_would_explain_in_part(documents, window_checkpoint, tmp_path):
    (tmp_path / "label.txt").write_text((documents / "label.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "bad_case.txt").write_text("Text\tLabel\tPrediction\n足球比赛\t体育\t体育\n" + "的" * 40 + "\t\t\n",
                                           encoding="utf-8")
    common = ["--device", "cpu", "--dataset_dir", tmp_path, "--params_path", window_checkpoint[0], "--max_seq_length",
              WINDOW, "--ig_steps", "2"]
    result = run_main("analysis/word_interpret.py", *common)
    assert result.returncode == 2
    assert (f"{tmp_path / 'bad_case.txt'}: 1 texts need more than one window of --max_seq_length 24 tokens (the "
            f"first: '{'的' * 30}'), and word attributions explain one window: split such documents into passages, or "
            f"pass --long_text truncate to explain their first 24 tokens only") in result.stderr
    result = run_main("analysis/word_interpret.py", *common, "--long_text", "truncate")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 of 2 texts truncated" in result.stderr


@pytest.mark.parametrize("options, message", [
    (["--long_text", "window", "--window_stride", "22"], "--window_stride 22: the tokens shared by two windows must be "
                                                          "at least 0 and fewer than the 22 text tokens of a window"),
    (["--long_text", "window", "--max_windows", "0"], "argument --max_windows: must be at least 1, got 0"),
    (["--long_text", "pages"], "argument --long_text: invalid choice: 'pages'"),
])
def test_impossible_window_settings_are_one_clear_line(options, message, documents, window_checkpoint, tmp_path):
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", documents, "--data_file", "test.txt",
                      "--params_path", window_checkpoint[0], "--output_file", tmp_path / "out.txt", "--max_seq_length",
                      WINDOW, *options)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


# predict.py as a user runs it, reporting its own peak resident memory when it exits
PEAK_RSS = ("import atexit, resource, runpy, sys; atexit.register(lambda: print('peak RSS MB', "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)); "
            "sys.argv[0] = 'predict.py'; runpy.run_path('predict.py', run_name='__main__')")


def test_a_text_without_tokens_and_a_megabyte_line_are_counted_in_bounded_memory(window_checkpoint, tmp_path):
    line = "足球的比赛" * 70_000  # 350,000 characters, 1.05 MB of UTF-8
    (tmp_path / "data.txt").write_text(f"\u0001\u0002\n{line}\n学校考试\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, "--device", "cpu", "--dataset_dir", str(tmp_path),
                             "--params_path", str(window_checkpoint[0]), "--output_file", str(tmp_path / "out.txt"),
                             "--max_seq_length", str(WINDOW)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # 32 windows of 22 tokens, 10 apart, read its first 332 tokens
    assert ("3 texts read as 34 windows, 1 of them in more than one; 1 texts longer than --max_windows 32: their last "
            "349668 tokens in all (up to 349668 from one text) not read; 1 texts have no token after tokenization "
            "(read as [CLS] [SEP] alone)") in result.stderr
    rows = (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 4 and rows[1].startswith("\u0001\u0002\t") and rows[2].startswith(line + "\t")
    peak_mb = int(result.stderr.rsplit("peak RSS MB", 1)[1].split()[0])
    print(f"peak RSS of predict.py on a 1 MB line: {peak_mb} MB")
    assert peak_mb < 2048
