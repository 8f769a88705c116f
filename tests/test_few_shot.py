"""few-shot/: prompt learning on the tiny scratch model, its export and ONNX inference."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest
from paddlenlp.prompt import (
    AutoTemplate,
    PromptModelForSequenceClassification,
    PromptTrainer,
    PromptTuningArguments,
    SoftVerbalizer,
)
from paddlenlp.transformers import AutoModelForMaskedLM, AutoTokenizer

from modeling import PAD_MASK_VALUE
from utils import DataError

from conftest import LABELS, PROMPT_TRAIN_ARGS, few_shot_data, run_main
from prompt_io import pad_features, read_label_words

SOFT_PROMPT = "{'soft': '这句话包含的要素有'}{'mask'}{'text': 'text_a'}"
@pytest.fixture(scope="module")
def prompt_run(keyword_data, scratch_model, tmp_path_factory):
    """The reference's recommended command (soft prompt, early stopping) on the keyword data."""
    root = tmp_path_factory.mktemp("few_shot")
    data = few_shot_data(keyword_data, root / "data")
    output = root / "checkpoints"
    result = run_main("few-shot/train.py", "--data_dir", data, "--model_name_or_path", scratch_model,
                      "--output_dir", output, "--prompt", SOFT_PROMPT, "--do_train", "--do_eval", "--do_predict",
                      "--do_export", "--num_train_epochs", "4", "--evaluation_strategy", "epoch",
                      "--save_strategy", "epoch", "--save_total_limit", "1", "--load_best_model_at_end",
                      "--metric_for_best_model", "macro_f1_score", *PROMPT_TRAIN_ARGS)
    assert result.returncode == 0, result.stderr[-3000:]
    return data, output, result.stderr


def test_label_words_file_syntax(tmp_path):
    label_file = tmp_path / "label.txt"
    label_file.write_text("婚后有子女==子女\n限制行为能力子女抚养\n家庭##婚姻##离婚\n\n", encoding="utf-8")
    assert read_label_words(label_file) == {"婚后有子女": "子女", "限制行为能力子女抚养": "限制行为能力子女抚养",
                                            "家庭##婚姻##离婚": "离婚"}
    for content, message in (("a==x\nb==\n", "label.txt:2: expected `label` or `label==word`, got 'b=='"),
                             ("a\n==x\n", "label.txt:2: no label name before '=='"),
                             ("a==x\na==y\n", "label.txt:2: duplicate label 'a' (first on line 1)"),
                             ("a==x==y\n", "label.txt:1: expected `label` or `label==word`"),
                             ("a\n\nb\n", "label.txt:2: blank label name")):
        label_file.write_text(content, encoding="utf-8")
        with pytest.raises(DataError) as err:
            read_label_words(label_file)
        assert str(err.value).startswith(f"{label_file}:") and message in str(err.value)


def test_padding_masks_the_padding_and_flattens_mask_positions():
    features = [{"input_ids": [1, 5, 6, 3, 2], "token_type_ids": [0] * 5, "position_ids": [0, 1, 2, 3, 4],
                 "soft_token_ids": [0, 1, 2, 0, 0], "masked_positions": [3]},
                {"input_ids": [1, 7, 3, 2], "token_type_ids": [0] * 4, "position_ids": [0, 1, 2, 3],
                 "soft_token_ids": [0, 1, 0, 0], "masked_positions": [2]}]
    names = ["input_ids", "token_type_ids", "position_ids", "attention_mask", "masked_positions"]
    batch = pad_features(features, pad_token_id=0, input_names=names)
    assert set(batch) == set(names)  # soft_token_ids only when the graph takes them
    assert batch["input_ids"].tolist() == [[1, 5, 6, 3, 2], [1, 7, 3, 2, 0]]
    assert batch["attention_mask"].shape == (2, 1, 1, 5) and batch["attention_mask"].dtype == np.float32
    assert batch["attention_mask"][:, 0, 0].tolist() == [[0] * 5, [0] * 4 + [PAD_MASK_VALUE]]
    assert batch["masked_positions"].tolist() == [3, 5 + 2]  # row * padded length + position
    with_soft = pad_features(features, 0, names + ["soft_token_ids"])
    assert with_soft["soft_token_ids"].tolist() == [[0, 1, 2, 0, 0], [0, 1, 0, 0, 0]]


@pytest.mark.slow
def test_prompt_training_learns_and_reports_test_metrics(prompt_run):
    data, output, log = prompt_run
    assert "Using template: [{'soft': '这句话包含的要素有'}, {'mask': None}, {'text': 'text_a'}]" in log
    results = json.loads((output / "all_results.json").read_text(encoding="utf-8"))
    assert results["train_loss"] < 0.5
    dev_f1 = [float(line.split("eval_macro_f1_score: ")[1].split(",")[0])
              for line in log.splitlines() if "eval_macro_f1_score: " in line]
    assert max(dev_f1) > 0.7, dev_f1  # keyword data: a model that learns at all gets far above chance
    assert "test_macro_f1_score" in log and "classification report" in log
    assert 1 <= len(list(output.glob("checkpoint-*"))) <= 2  # --save_total_limit 1: the best and the last
    assert json.loads((output / "verbalizer_config.json").read_text(encoding="utf-8")) == {
        "体育": ["运动"], "娱乐": ["明星"], "教育": ["教育"], "科技": ["科技"], "财经": ["金融"]}
    header, *predictions = (output / "test_predictions.txt").read_text(encoding="utf-8").splitlines()
    assert header == "text\tlabel"
    test_lines = (data / "test.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[0] for line in predictions] == [line.split("\t")[0] for line in test_lines]
    assert all(set(filter(None, line.split("\t")[1].split(", "))) <= set(LABELS) for line in predictions)


@pytest.mark.slow
def test_export_stores_label_order_and_answers_like_dygraph(prompt_run):
    _, output, log = prompt_run
    export_dir = output / "export"
    meta = json.loads((export_dir / "export_meta.json").read_text(encoding="utf-8"))
    assert meta["labels"] == sorted(LABELS)  # the verbalizer's order, not label.txt's
    assert meta["input_names"] == ["input_ids", "token_type_ids", "position_ids", "attention_mask",
                                   "masked_positions", "soft_token_ids"]
    for name in ("model.json", "model.pdiparams", "model.onnx", "template_config.json", "vocab.txt"):
        assert (export_dir / name).is_file(), name
    rows = json.loads((export_dir / "parity.json").read_text(encoding="utf-8"))
    assert [row["variant"] for row in rows] == ["dygraph", "onnxruntime fp32", "paddle fp32"]
    assert all(row["max_abs_diff"] < 1e-5 for row in rows)


@pytest.mark.slow
def test_onnx_inference_labels_equal_the_dygraph_predictions(prompt_run, tmp_path):
    data, output, _ = prompt_run
    header, *dygraph = (output / "test_predictions.txt").read_text(encoding="utf-8").splitlines()
    assert sum(bool(line.split("\t")[1]) for line in dygraph) > len(dygraph) / 2  # a real comparison
    infer_data = tmp_path / "infer"
    infer_data.mkdir()
    texts = [line.split("\t")[0] for line in dygraph]
    (infer_data / "data.txt").write_text("\n".join(texts[:3] + [""] + texts[3:]) + "\n", encoding="utf-8")
    out_file = tmp_path / "labels.txt"
    result = run_main("few-shot/infer.py", "--model_path_prefix", output / "export" / "model", "--data_dir",
                      infer_data, "--device", "cpu", "--batch_size", "7", "--max_length", "64",
                      "--output_file", out_file)
    assert result.returncode == 0, result.stderr[-3000:]
    # predict.py's format: the header, then one row per input line (the blank line gives an empty row)
    assert out_file.read_text(encoding="utf-8").splitlines() == [header] + dygraph[:3] + [""] + dygraph[3:]


def reference_export(output: Path, scratch_model: Path, target: Path) -> Path:
    """The trained prompt model exported as the reference's train.py --do_export does it: paddlenlp's
    default input spec, template and verbalizer configs, no export_meta.json; the tokenizer stays
    in the training output directory above `export/`."""
    tokenizer = AutoTokenizer.from_pretrained(str(output))
    model = AutoModelForMaskedLM.from_pretrained(str(scratch_model))
    template = AutoTemplate.load_from(str(output), tokenizer, 64, model=model)
    label_words = json.loads((output / "verbalizer_config.json").read_text(encoding="utf-8"))
    prompt_model = PromptModelForSequenceClassification(model, template, SoftVerbalizer(label_words, tokenizer, model))
    prompt_model.set_state_dict(paddle.load(str(output / "model_state.pdparams")))
    trainer = PromptTrainer(model=prompt_model, tokenizer=tokenizer, criterion=paddle.nn.BCEWithLogitsLoss(),
                            args=PromptTuningArguments(output_dir=str(target / "unused")))
    trainer.export_model(str(target / "export"), export_type="paddle")
    tokenizer.save_pretrained(str(target))
    return target / "export" / "model"


@pytest.mark.slow
def test_onnx_inference_runs_an_export_made_by_the_reference(prompt_run, scratch_model, tmp_path):
    data, output, _ = prompt_run
    prefix = reference_export(output, scratch_model, tmp_path / "reference")
    assert not (prefix.parent / "export_meta.json").exists() and (prefix.parent / "verbalizer_config.json").is_file()
    ours, theirs = tmp_path / "ours.txt", tmp_path / "theirs.txt"
    for model_prefix, out_file in ((output / "export" / "model", ours), (prefix, theirs)):
        result = run_main("few-shot/infer.py", "--model_path_prefix", model_prefix, "--data_dir", data,
                          "--device", "cpu", "--batch_size", "5", "--max_length", "64", "--output_file", out_file)
        assert result.returncode == 0, result.stderr[-3000:]
    # label order from the verbalizer config (sorted), the [batch, heads, length, length] mask of
    # paddlenlp's default spec, and the tokenizer from the training output directory
    assert "without export_meta.json" in result.stderr
    assert theirs.read_text(encoding="utf-8") == ours.read_text(encoding="utf-8")
    assert sum(bool(line.split("\t")[1]) for line in ours.read_text(encoding="utf-8").splitlines()[1:]) > 0
    (tmp_path / "reference" / "tokenizer_config.json").unlink()
    result = run_main("few-shot/infer.py", "--model_path_prefix", prefix, "--data_dir", data, "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--model_name" in result.stderr


@pytest.mark.slow
def test_onnx_inference_logs_label_names(prompt_run, tmp_path):
    data, output, _ = prompt_run
    result = run_main("few-shot/infer.py", "--model_path_prefix", output / "export" / "model",
                      "--data_dir", data, "--device", "cpu", "--max_length", "32")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--max_length 32" in result.stderr and "64 tokens" in result.stderr
    texts = (data / "data.txt").read_text(encoding="utf-8").splitlines()
    assert result.stderr.count("input data: ") == len(texts)
    label_lines = [line.split(" - labels: ")[1].replace("\x1b[0m", "") for line in result.stderr.splitlines()
                   if " - labels: " in line]
    assert len(label_lines) == len(texts)
    assert any(label_lines) and all(set(filter(None, line.split(", "))) <= set(LABELS) for line in label_lines)


@pytest.mark.slow
def test_inference_refuses_bad_input(prompt_run, tmp_path):
    data, output, _ = prompt_run
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(data / "data.txt", other / "data.txt")
    (other / "label.txt").write_text("体育\n财经\n科技\n娱乐\n军事\n", encoding="utf-8")
    result = run_main("few-shot/infer.py", "--model_path_prefix", output / "export" / "model",
                      "--data_dir", other, "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not match the exported model's labels: only in the file: ['军事'], only in the model: ['教育']" \
        in result.stderr
    result = run_main("few-shot/infer.py", "--model_path_prefix", output / "export" / "model",
                      "--data_dir", data, "--device", "cpu", "--use_fp16")
    assert result.returncode == 2 and "--use_fp16 needs --device gpu" in result.stderr
    result = run_main("few-shot/infer.py", "--model_path_prefix", output / "export" / "model",
                      "--data_dir", data, "--device", "cpu", "--max_length", "1024")
    assert result.returncode == 2 and "--max_length 1024 is above the 512 positions" in result.stderr
    assert f"{output / 'export'} (max_position_embeddings)" in result.stderr
    assert "--long_text" not in result.stderr  # few-shot reads no windows


@pytest.mark.slow
def test_hard_prompt_without_test_file_trains_and_exports(keyword_data, scratch_model, tmp_path):
    data = few_shot_data(keyword_data, tmp_path / "data", files=("train.txt", "dev.txt"))
    output = tmp_path / "checkpoints"
    result = run_main("few-shot/train.py", "--data_dir", data, "--model_name_or_path", scratch_model,
                      "--output_dir", output, "--prompt", "这句话包含的要素有", "--do_train", "--do_predict",
                      "--do_export", "--max_steps", "5", *PROMPT_TRAIN_ARGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--do_predict: no test.txt in" in result.stderr
    assert "Early stopping is off" in result.stderr
    meta = json.loads((output / "export" / "export_meta.json").read_text(encoding="utf-8"))
    assert meta["input_names"] == ["input_ids", "token_type_ids", "position_ids", "attention_mask",
                                   "masked_positions"]  # a hard prompt has no soft tokens


@pytest.mark.slow
def test_unknown_label_is_an_error_with_its_line(keyword_data, scratch_model, tmp_path):
    data = few_shot_data(keyword_data, tmp_path / "data", files=("dev.txt",))
    (data / "train.txt").write_text("足球比赛\t体育\n股票基金\t财经,军事\n", encoding="utf-8")
    result = run_main("few-shot/train.py", "--data_dir", data, "--model_name_or_path", scratch_model,
                      "--output_dir", tmp_path / "out", "--do_train", *PROMPT_TRAIN_ARGS)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{data / 'train.txt'}:2: unknown label '军事' (not in the label file)" in result.stderr


@pytest.mark.slow
def test_prompt_needs_exactly_one_mask(keyword_data, scratch_model, tmp_path):
    data = few_shot_data(keyword_data, tmp_path / "data", files=("train.txt", "dev.txt"))
    result = run_main("few-shot/train.py", "--data_dir", data, "--model_name_or_path", scratch_model,
                      "--output_dir", tmp_path / "out", "--do_train", "--prompt",
                      "{'text': 'text_a'}{'mask'}{'mask'}", *PROMPT_TRAIN_ARGS)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the prompt must hold exactly one {'mask'}, found 2" in result.stderr


@pytest.mark.slow
def test_inference_refuses_a_sequence_classifier_export(exported, keyword_data):
    export_dir, _ = exported
    result = run_main("few-shot/infer.py", "--model_path_prefix", export_dir / "float32",
                      "--data_dir", keyword_data, "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(export_dir) in result.stderr and "no template in export_meta.json" in result.stderr
    bare = export_dir.parent / "bare_export"
    bare.mkdir()
    for graph_file in export_dir.glob("float32.*"):
        shutil.copy(graph_file, bare / graph_file.name)
    result = run_main("few-shot/infer.py", "--model_path_prefix", bare / "float32", "--data_dir", keyword_data,
                      "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(bare) in result.stderr and "template_config.json" in result.stderr


@pytest.mark.slow
def test_max_seq_length_beyond_the_position_embeddings_is_one_clear_line(keyword_data, scratch_model, tmp_path):
    data = few_shot_data(keyword_data, tmp_path / "data")
    result = run_main("few-shot/train.py", "--data_dir", data, "--model_name_or_path", scratch_model, "--output_dir",
                      tmp_path / "out", "--do_train", *PROMPT_TRAIN_ARGS, "--max_seq_length", "1024")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--max_seq_length 1024 is above the 512 positions" in result.stderr and str(scratch_model) in result.stderr
    assert "--long_text" not in result.stderr  # few-shot reads no windows


def test_bad_arguments_are_clear_errors(keyword_data, tmp_path):
    data = few_shot_data(keyword_data, tmp_path / "data", files=("train.txt",))
    cases = {("--do_train",): f"--data_dir {data}: missing dev.txt",
             ("--do_export", "--resume_from_checkpoint", tmp_path): f"--resume_from_checkpoint {tmp_path}: no "
                                                                      "template_config.json there",
             ("--do_train", "--early_stopping_patience", "0"): "argument --early_stopping_patience: must be at least "
                                                                 "1, got 0 (see --help)",
             ("--do_export", "--export_type", "tflite"): "--export_type must be paddle or onnx, got 'tflite'"}
    for extra, message in cases.items():
        result = run_main("few-shot/train.py", "--device", "cpu", "--data_dir", data, "--output_dir",
                          tmp_path / "out", *extra)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert message in result.stderr
