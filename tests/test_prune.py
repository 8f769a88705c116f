"""prune.py, pruning.py and dynabert.py: the width-pruning algebra (in process) and one real pruning run to 1/2 (end to end)."""
from __future__ import annotations

import copy
import json
import re
from fractions import Fraction

import numpy as np
import onnx
import paddle
import pytest
from paddlenlp.transformers import AutoModelForSequenceClassification

import dynabert
import prune
import pruning
from backends import create_backend
from exporting import load_export
from losses import distillation_loss, get_loss
from modeling import dygraph_pipeline, load_model, load_tokenizer, model_inputs, text_probs
from pipeline import TextPipeline, length_grouped_batches
from pruning import encoder_layers, narrow_encoder
from training import LabelledRows, labelled_batch, text_logits
from utils import DataError

from conftest import LABELS, run_main

PRUNE_ARGS = ["--device", "cpu", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32",
              "--learning_rate", "1e-4", "--logging_steps", "2"]


@pytest.fixture()
def model_and_batch(scratch_model):
    """The tiny scratch ERNIE (2 layers, 4 heads, FFN 512) with a 5-label head, and a padded batch."""
    paddle.seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(scratch_model), num_classes=len(LABELS))
    model.eval()
    ids = paddle.randint(5, model.config.vocab_size, [4, 16])
    ids[1, 9:] = 0
    batch = {"input_ids": ids, "token_type_ids": paddle.zeros_like(ids)}
    return model, model_inputs(batch, pad_token_id=0)


def max_diff(a: paddle.Tensor, b: paddle.Tensor) -> float:
    return float((a - b).abs().max())


def test_parse_width_accepts_fractions_and_decimals():
    assert prune.parse_width("3/4") == Fraction(3, 4)
    assert prune.parse_width("0.5") == Fraction(1, 2)
    for bad, message in (("abc", "'abc' is not a number"), ("3/2", "3/2 must lie in (0, 1]"), ("0", "0 must lie")):
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            prune.parse_width(bad)


def test_width_must_keep_a_whole_number_of_heads():
    pruning.check_widths([Fraction(3, 4), Fraction(1, 2)], num_heads=12)
    pruning.check_widths([Fraction(2, 3)], num_heads=12)
    with pytest.raises(DataError, match=r"width 2/3 x 4 heads = 2.66667 heads.* 1/4 1/2 3/4 1$"):
        pruning.check_widths([Fraction(2, 3)], num_heads=4)


def test_width_directory_names_follow_the_reference():
    assert [dynabert.width_name(Fraction(t)) for t in ("3/4", "2/3", "1/2")] == [
        "width_mult_0.75", "width_mult_0.67", "width_mult_0.5"]


def test_elastic_forward_at_full_width_is_the_layer_forward(model_and_batch):
    model, inputs = model_and_batch
    reference = model(**inputs)
    pruning.make_elastic(model)
    assert max_diff(model(**inputs), reference) < 1e-5


def test_reordering_by_importance_leaves_outputs_unchanged(model_and_batch):
    model, inputs = model_and_batch
    reference = model(**inputs)
    rng = np.random.default_rng(0)
    layers = encoder_layers(model)
    heads, neurons = rng.random([len(layers), 4]), rng.random([len(layers), 512])
    before = layers[0].linear1.weight.numpy().copy()
    pruning.reorder_by_importance(model, heads, neurons)
    most_important = int(np.argmax(neurons[0]))
    np.testing.assert_array_equal(layers[0].linear1.weight.numpy()[:, 0], before[:, most_important])
    assert max_diff(model(**inputs), reference) < 1e-5


def test_elastic_width_equals_the_cut_out_dense_model(model_and_batch):
    model, inputs = model_and_batch
    dense = copy.deepcopy(model)
    narrow_encoder(dense, num_heads=2, intermediate_size=256)
    assert encoder_layers(dense)[0].self_attn.q_proj.weight.shape == [128, 64]
    assert encoder_layers(dense)[0].linear2.weight.shape == [256, 128]
    pruning.make_elastic(model)
    pruning.set_width(model, Fraction(1, 2))
    narrow = model(**inputs)
    assert max_diff(narrow, dense(**inputs)) < 1e-5
    pruning.set_width(model, Fraction(1))
    assert max_diff(narrow, model(**inputs)) > 1e-3  # half the width really is a different network


def test_importance_is_zero_for_a_head_and_a_neuron_that_contribute_nothing(model_and_batch, scratch_model):
    model, _ = model_and_batch
    layer = encoder_layers(model)[1]
    head_dim = layer.self_attn.head_dim
    out_rows = layer.self_attn.out_proj.weight.numpy()
    out_rows[2 * head_dim:3 * head_dim] = 0  # head 2 of layer 1 writes nothing
    layer.self_attn.out_proj.weight.set_value(out_rows)
    for param, index in ((layer.linear1.weight, (slice(None), 7)), (layer.linear1.bias, 7),
                         (layer.linear2.weight, 7)):  # neuron 7 of layer 1 neither reads nor writes
        values = param.numpy()
        values[index] = 0
        param.set_value(values)
    tokenizer = load_tokenizer(str(scratch_model))
    pipeline = dygraph_pipeline(tokenizer, 128, batch_size=2)
    texts = ["足球比赛", "股票基金上涨", "学校考试", "新电影明星"]
    targets = np.asarray([[float(i % 2), 1.0, 0.0, 0.0, 1.0] for i in range(len(texts))], dtype="float32")
    pruning.make_elastic(model)
    data = LabelledRows(pipeline.encode(texts), targets)

    def loss_of(batch_texts: list[int]) -> paddle.Tensor:
        batch = labelled_batch(pipeline, data, batch_texts)
        return get_loss("bce")(text_logits(model, batch, tokenizer.pad_token_id, "max"), batch["labels"])

    heads, neurons = pruning.compute_importance(model, length_grouped_batches(data.rows.text_lengths(), 2), loss_of)
    assert heads.shape == (2, 4) and neurons.shape == (2, 512)
    assert heads[1, 2] == 0 and neurons[1, 7] == 0
    assert (np.delete(heads[1], 2) > 0).all() and (neurons[0] > 0).mean() > 0.9


def test_distillation_targets_are_teacher_probabilities_per_label():
    student_logits = paddle.to_tensor([[2.0, -1.0, 0.5]])
    teacher_logits = paddle.to_tensor([[1.0, 1.0, -3.0]])
    hidden_s, hidden_t = [paddle.ones([1, 2, 4])], [paddle.zeros([1, 2, 4])]
    loss = float(distillation_loss((student_logits, hidden_s), (teacher_logits, hidden_t)))
    p, q = 1 / (1 + np.exp(-teacher_logits.numpy())), 1 / (1 + np.exp(-student_logits.numpy()))
    bce = float(np.mean(-(p * np.log(q) + (1 - p) * np.log(1 - q))))
    assert loss == pytest.approx(bce + 0.1 * 1.0, rel=1e-5)
    # two labels with the same teacher logit keep independent targets (a softmax would couple them)
    same = float(distillation_loss((teacher_logits, hidden_t), (teacher_logits, hidden_t)))
    entropy = float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
    assert same == pytest.approx(entropy, rel=1e-5)


@pytest.fixture(scope="module")
def pruned_half(trained, keyword_data, tmp_path_factory):
    save_dir, _ = trained
    output = tmp_path_factory.mktemp("prune") / "prune"
    result = run_main("prune.py", "--dataset_dir", keyword_data, "--params_dir", save_dir, "--output_dir", output,
                      "--width_mult_list", "1/2", "--max_steps", "6", "--save_steps", "3",
                      "--gradient_accumulation_steps", "2", *PRUNE_ARGS)
    assert result.returncode == 0, result.stderr[-3000:]
    return output / "width_mult_0.5", result.stderr


@pytest.mark.slow
def test_prune_to_half_logs_the_reference_lines(pruned_half):
    _, log = pruned_half
    assert "width 1/2: 2 of 4 heads, 256 of 512 FFN neurons per layer" in log
    assert "Teacher's evaluation starts." in log
    for step in (0, 3, 6):
        assert f"width_mult 0.5 (step {step}):" in log
    # --max_steps, --save_steps and --logging_steps count optimizer steps: 2 batches each
    assert re.findall(r"global step (\d+), epoch: 1, batch: (\d+)", log) == [("2", "4"), ("4", "8"), ("6", "12")]
    assert "Best result of width_mult 0.50: " in log
    assert log.splitlines()[-1].endswith("Pruning is finished using DynaBERT strategy.\x1b[0m")


@pytest.mark.slow
def test_pruned_model_has_half_the_heads_and_ffn(pruned_half):
    directory, _ = pruned_half
    assert {"pruned_model.json", "pruned_model.pdiparams", "model.onnx", "export_meta.json", "vocab.txt",
            "model_state.pdparams", "config.json"} <= {p.name for p in directory.iterdir()}
    meta = json.loads((directory / "export_meta.json").read_text(encoding="utf-8"))
    assert meta["model_prefix"] == "pruned_model" and meta["labels"] == LABELS
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    assert config["pruned_width"] == {"width_mult": "1/2", "num_attention_heads": 2, "intermediate_size": 256}
    model = load_model(str(directory))
    for layer in encoder_layers(model):
        assert layer.self_attn.num_heads == 2
        assert layer.self_attn.q_proj.weight.shape == [128, 64] and layer.self_attn.out_proj.weight.shape == [64, 128]
        assert layer.linear1.weight.shape == [128, 256] and layer.linear2.weight.shape == [256, 128]
    shapes = {tuple(t.dims) for t in onnx.load(str(directory / "model.onnx")).graph.initializer}
    assert (128, 256) in shapes and (128, 512) not in shapes and (128, 128) in shapes  # pooler stays full


@pytest.mark.slow
def test_pruned_model_answers_the_same_through_onnx_and_dygraph(pruned_half, keyword_data, tmp_path):
    directory, _ = pruned_half
    texts = [line.split("\t")[0] for line in (keyword_data / "dev.txt").read_text(encoding="utf-8").splitlines()]
    model = load_model(str(directory))
    tokenizer = load_tokenizer(str(directory))
    dygraph = text_probs(model, tokenizer, texts, 128)
    export = load_export(directory / "pruned_model")
    onnx_probs = TextPipeline(tokenizer, export.input_names).probs(create_backend(export, "onnxruntime", "fp32"), texts)
    assert np.abs(onnx_probs - dygraph).max() < 1e-5
    # and deploy/predictor labels texts exactly as predict.py does with the pruned checkpoint
    result = run_main("deploy/predictor/infer.py", "--device", "cpu", "--model_path_prefix",
                      directory / "pruned_model", "--dataset_dir", keyword_data, "--output_file", tmp_path / "a.txt")
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", keyword_data, "--params_path", directory,
                      "--output_file", tmp_path / "b.txt")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == (tmp_path / "b.txt").read_text(encoding="utf-8")
    assert len((tmp_path / "a.txt").read_text(encoding="utf-8").splitlines()) == 1 + 100  # header, one row per text


@pytest.mark.slow
def test_width_that_does_not_divide_the_heads_is_refused_before_training(trained, keyword_data, tmp_path):
    save_dir, _ = trained
    result = run_main("prune.py", "--dataset_dir", keyword_data, "--params_dir", save_dir, "--output_dir",
                      tmp_path / "out", "--width_mult_list", "1/2", "2/3", *PRUNE_ARGS)
    assert result.returncode == 2
    assert "width 2/3" in result.stderr and "1/4 1/2 3/4 1" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_pruned_checkpoint_is_not_pruned_again(pruned_half, keyword_data, tmp_path):
    directory, _ = pruned_half
    result = run_main("prune.py", "--dataset_dir", keyword_data, "--params_dir", directory, "--output_dir",
                      tmp_path / "out", *PRUNE_ARGS)
    assert result.returncode == 2
    assert f"--params_dir {directory} is already pruned" in result.stderr



@pytest.mark.slow
def test_output_of_an_earlier_run_is_replaced_but_other_files_are_never_deleted(trained, keyword_data, tmp_path):
    save_dir, _ = trained
    args = ["--dataset_dir", keyword_data, "--params_dir", save_dir, "--output_dir", tmp_path / "out",
            "--width_mult_list", "1/2", "--max_steps", "1", "--save_steps", "1", *PRUNE_ARGS]
    width_dir = tmp_path / "out" / "width_mult_0.5"
    width_dir.mkdir(parents=True)
    (width_dir / "notes.txt").write_text("keep me", encoding="utf-8")
    result = run_main("prune.py", *args)
    assert result.returncode == 2
    assert f"{width_dir} exists and does not hold a pruned model of an earlier run" in result.stderr
    assert (width_dir / "notes.txt").read_text(encoding="utf-8") == "keep me"
    (width_dir / "notes.txt").unlink()
    assert run_main("prune.py", *args).returncode == 0
    (width_dir / "stale.txt").write_text("from the first run", encoding="utf-8")
    assert run_main("prune.py", *args).returncode == 0  # its own earlier output is replaced
    assert not (width_dir / "stale.txt").exists() and (width_dir / "pruned_model.json").is_file()


def test_reference_compression_options_it_cannot_honour_are_named(trained, keyword_data, tmp_path):
    save_dir, _ = trained
    base = ["--dataset_dir", keyword_data, "--params_dir", save_dir, "--output_dir", tmp_path / "out"]
    result = run_main("prune.py", *base, "--fp16", "--max_grad_norm", "5")
    assert result.returncode == 2
    assert "--max_grad_norm, --fp16" in result.stderr
    honoured = re.findall(r"--\w+", result.stderr.split("the options it honours: ")[1].splitlines()[0])
    assert {"--width_mult_list", "--amp", "--gradient_accumulation_steps"} <= set(honoured)
    assert not (tmp_path / "out").exists()
    result = run_main("prune.py", *base, "--no_such_option", "1")
    assert result.returncode == 2 and "unrecognized arguments: --no_such_option 1" in result.stderr
