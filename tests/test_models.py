"""scratch_model.py presets and vocabularies, the model loader's errors, ERNIE-M end to end."""
from __future__ import annotations

import csv
import json

import numpy as np
import paddle
import pytest
from paddlenlp.transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, ErnieConfig
from paddlenlp.transformers.ernie.configuration import ERNIE_PRETRAINED_INIT_CONFIGURATION

from data_io import iter_examples
from mlm import masked_token_loss
from scratch_model import PRESETS, create_scratch_model, model_config
from utils import DataError

from conftest import run_main, run_script

SHAPE = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "tiny"])
def test_presets_have_the_released_shapes(preset):
    released = {**ErnieConfig().to_dict(), **ERNIE_PRETRAINED_INIT_CONFIGURATION[preset]}
    config = model_config(preset, {})
    assert {k: config[k] for k in SHAPE + ("max_position_embeddings",)} == {
        k: released[k] for k in SHAPE + ("max_position_embeddings",)}


def test_overrides_and_invalid_shape():
    assert model_config("tiny", {"hidden_size": 256, "num_hidden_layers": None})["hidden_size"] == 256
    with pytest.raises(DataError, match="hidden_size 130 .* num_attention_heads 4"):
        model_config("tiny", {"hidden_size": 130})


def test_scratch_vocabulary_covers_every_training_character(keyword_data, scratch_model):
    tokenizer = AutoTokenizer.from_pretrained(str(scratch_model))
    ids = [i for e in iter_examples(keyword_data / "train.txt") for i in tokenizer(e.text)["input_ids"]]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer("犇")["input_ids"][1] == tokenizer.unk_token_id  # a character never seen
    assert tokenizer.convert_ids_to_tokens(tokenizer("[SEP]足球")["input_ids"])[1] == "[SEP]"


def test_scratch_ernie_m_covers_more_characters_than_the_base_vocabulary_size(tmp_path):
    """Chinese data sets hold thousands of distinct characters; SentencePiece needs a piece for each."""
    characters = [chr(code_point) for code_point in range(0x4E00, 0x4E00 + 2500)]
    lines = ["".join(characters[i:i + 25]) + "\tA" for i in range(0, len(characters), 25)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    create_scratch_model(str(tmp_path), str(tmp_path / "m"), model_type="ernie-m")
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "m"))
    ids = tokenizer("".join(characters))["input_ids"]
    assert len(ids) == 2502 and tokenizer.unk_token_id not in ids


def test_scratch_cli_rejects_bad_shape(keyword_data, tmp_path):
    result = run_main("scratch_model.py", "--dataset_dir", keyword_data, "--output_dir", tmp_path / "m",
                      "--hidden_size", "130")
    assert result.returncode == 2
    assert "hidden_size 130" in result.stderr and "num_attention_heads 4" in result.stderr


@pytest.mark.slow
def test_named_model_offline_failure_explains_the_offline_way(keyword_data, tmp_path):
    unreachable = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
                   "PPNLP_HOME": str(tmp_path / "empty_cache")}
    result = run_script("train.py", "--device", "cpu", "--dataset_dir", keyword_data, "--model_name",
                        "ernie-3.0-medium-zh", "--save_dir", tmp_path / "ckpt", env=unreachable)
    assert result.returncode == 2
    assert "Could not download 'ernie-3.0-medium-zh'" in result.stderr
    assert "python scratch_model.py --dataset_dir data --output_dir ./scratch_model --preset ernie-3.0-medium-zh" \
        in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_unknown_model_name(keyword_data, tmp_path):
    result = run_main("train.py", "--device", "cpu", "--dataset_dir", keyword_data, "--model_name", "ernie-9",
                      "--save_dir", tmp_path / "ckpt")
    assert result.returncode == 2
    assert "--model_name 'ernie-9' is neither a local model directory nor one of: ernie-1.0-large-zh-cw" \
        in result.stderr
    result = run_main("train.py", "--device", "cpu", "--dataset_dir", keyword_data, "--model_name", keyword_data,
                      "--save_dir", tmp_path / "ckpt")
    assert result.returncode == 2
    assert f"{keyword_data} does not hold a paddlenlp model and tokenizer" in result.stderr


@pytest.mark.slow
def test_ernie_m_without_token_type_ids_trains_and_predicts(keyword_data, ernie_m_trained, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(str(ernie_m_trained))
    assert set(tokenizer("足球比赛")) == {"input_ids"}
    out = tmp_path / "out.txt"
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", keyword_data, "--params_path",
                      ernie_m_trained, "--output_file", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1 + 100  # header and one row per text


def test_masked_token_loss_averages_over_masked_tokens_only():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 5)).astype("float32")
    labels = np.array([4, -100, 1])  # a placeholder position is ignored
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(log_probs[0, 4] + log_probs[2, 1]) / 2
    loss = masked_token_loss(paddle.to_tensor(logits), paddle.to_tensor(labels))
    assert abs(float(loss) - expected) < 1e-5


@pytest.mark.slow
def test_mlm_pretraining_trains_encoder_and_head_for_both_trainers(keyword_data, scratch_model, tmp_path):
    out = tmp_path / "mlm"
    result = run_main("scratch_model.py", "--dataset_dir", keyword_data, "--output_dir", out, "--mlm_epochs", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    losses = [float(row["loss"]) for row in csv.DictReader(open(out / "metrics_history.csv", encoding="utf-8"))]
    assert losses and all(0 < loss < 10 for loss in losses)
    assert json.loads((out / "pretrain_results.json").read_text(encoding="utf-8"))["epochs_run"] == 2
    assert "masked-LM pretrained for 2 epochs" in result.stderr
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["architectures"] == ["ErnieForMaskedLM"]
    pretrained = paddle.load(str(out / "model_state.pdparams"))
    random = paddle.load(str(scratch_model / "model_state.pdparams"))  # same data and seed, no pretraining
    name = "encoder.layers.0.linear1.weight"
    assert not np.allclose(pretrained["ernie." + name].numpy(), random[name].numpy())
    classifier = AutoModelForSequenceClassification.from_pretrained(str(out), num_classes=5)
    np.testing.assert_array_equal(classifier.ernie.encoder.layers[0].linear1.weight.numpy(),
                                  pretrained["ernie." + name].numpy())
    masked_lm = AutoModelForMaskedLM.from_pretrained(str(out))
    np.testing.assert_array_equal(masked_lm.cls.predictions.transform.weight.numpy(),
                                  pretrained["cls.predictions.transform.weight"].numpy())


def test_mlm_pretraining_needs_ernie(keyword_data, tmp_path):
    result = run_main("scratch_model.py", "--dataset_dir", keyword_data, "--output_dir", tmp_path / "m",
                      "--model_type", "ernie-m", "--mlm_epochs", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--mlm_epochs needs --model_type ernie" in result.stderr
