"""train.py end to end on generated keyword data with a tiny scratch model."""
from __future__ import annotations

import functools
import json
import re
import shutil

import numpy as np
import paddle
import pytest
from paddlenlp.transformers import AutoModelForSequenceClassification

from data_io import load_examples, multi_hot, read_label_list
from metric import MetricReport
from modeling import model_inputs
from train import build_lr_scheduler, parser

from conftest import make_keyword_dataset, run_main

pytestmark = pytest.mark.slow


def logged(pattern: str, log: str) -> list[tuple[str, ...]]:
    return re.findall(pattern, log)


def test_known_answer_tiny_recipe_learns(trained, keyword_data, tmp_path):
    save_dir, _ = trained
    out = tmp_path / "pred.txt"
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", keyword_data, "--params_path", save_dir,
                      "--output_file", out)
    assert result.returncode == 0, result.stderr[-2000:]
    labels = read_label_list(keyword_data / "label.txt")
    gold = load_examples(keyword_data / "test.txt", labels)
    predicted = load_examples(out, labels)  # predict output is valid training input
    assert [e.text for e in predicted] == [e.text for e in gold]
    metric = MetricReport()
    metric.update(multi_hot(predicted, len(labels)), multi_hot(gold, len(labels)))
    micro_f1, _ = metric.accumulate()
    assert micro_f1 >= 0.95


def test_checkpoint_files_settings_and_log_lines(trained):
    save_dir, log = trained
    for name in ("model_state.pdparams", "config.json", "vocab.txt", "tokenizer_config.json", "setting.txt"):
        assert (save_dir / name).is_file(), name
    config = json.loads((save_dir / "config.json").read_text(encoding="utf-8"))
    assert config["multi_label_names"] == ["体育", "财经", "科技", "娱乐", "教育"]
    assert len(config["multi_label_thresholds"]) == 5 and config["id2label"]["0"] == "体育"
    settings = (save_dir / "setting.txt").read_text(encoding="utf-8").split("\n")
    assert settings[0] == "------------------ start ------------------"
    assert settings[-1] == "------------------- end -------------------"
    assert "learning_rate : 0.001" in settings and "epochs : 8" in settings
    assert len(logged(r"eval loss: [\d.]+, micro f1 score: [\d.]+, macro f1 score: [\d.]+", log)) == 8
    assert len(logged(r"Current best macro f1 score: [\d.]+", log)) == 8
    assert re.search(r"Final best macro f1 score: [\d.]+", log)
    assert f"Save best macro f1 text classification model in {save_dir}" in log
    assert "Per-label thresholds tuned on dev saved in" in log


def test_results_and_arguments_are_saved_as_data(trained):
    save_dir, log = trained
    results = json.loads((save_dir / "results.json").read_text(encoding="utf-8"))
    final = float(logged(r"Final best macro f1 score: ([\d.]+)", log)[0])
    assert results["best_dev"]["macro_f1"] == pytest.approx(final, abs=5e-6)
    evals = [(float(micro), float(macro)) for micro, macro in
             logged(r"eval loss: [\d.]+, micro f1 score: ([\d.]+), macro f1 score: ([\d.]+)", log)]
    best_epoch = results["best_epoch"]
    assert results["best_global_step"] == 50 * best_epoch  # 800 examples / batch 16 per epoch
    assert evals[best_epoch - 1] == pytest.approx((results["best_dev"]["micro_f1"], final), abs=5e-6)
    assert all(macro <= final + 5e-6 for _, macro in evals)
    assert results["epochs_run"] == 8 and results["global_steps"] == 400 and results["loss"] == "bce"
    config = json.loads((save_dir / "config.json").read_text(encoding="utf-8"))
    assert results["thresholds"] == pytest.approx(config["multi_label_thresholds"])  # the tuned ones, as saved
    tuned = logged(r"dev with tuned thresholds: micro f1 score: ([\d.]+), macro f1 score: ([\d.]+)", log)[0]
    assert results["tuned_dev"]["macro_f1"] == pytest.approx(float(tuned[1]), abs=5e-6)
    assert results["train_time_s"] > 0
    arguments = json.loads((save_dir / "args.json").read_text(encoding="utf-8"))
    assert arguments["epochs"] == 8 and arguments["learning_rate"] == 0.001 and arguments["tune_thresholds"] is True
    assert arguments["model_name"].endswith("model") and arguments["loss"] == "bce"


def test_loss_falls_and_lr_follows_warmup_then_decay(trained):
    _, log = trained
    steps = logged(r"global step (\d+), epoch: (\d+), batch: (\d+), loss: ([\d.]+), speed: [\d.]+ step/s, "
                   r"lr: ([\d.e+-]+)", log)
    total = 800 // 16 * 8  # 800 examples / batch 16 = 50 steps x 8 epochs, logged every 5
    assert len(steps) == total // 5
    losses = [float(s[3]) for s in steps]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
    lrs = {int(s[0]): float(s[4]) for s in steps}
    approx = functools.partial(pytest.approx, rel=2e-3)  # the log prints 4 significant digits
    assert lrs[5] == approx(1e-3 * 5 / 20)  # warmup over 20 steps
    assert lrs[20] == approx(1e-3)
    assert lrs[110] == approx(1e-3 * (total - 110) / (total - 20))  # linear decay to 0 at the end
    assert lrs[total] == pytest.approx(0.0, abs=1e-12)


def test_lr_schedule_never_freezes():
    args = parser.parse_args(["--dataset_dir", ".", "--learning_rate", "0.1"])
    assert build_lr_scheduler(args, 100) == 0.1  # reference default: constant
    args = parser.parse_args(["--dataset_dir", ".", "--learning_rate", "0.1", "--warmup_steps", "10"])
    scheduler = build_lr_scheduler(args, 100)  # --warmup_steps alone now warms up instead of freezing at 0
    values = []
    for _ in range(100):
        scheduler.step()
        values.append(scheduler.get_lr())
    assert values[4] == pytest.approx(0.05) and values[9] == pytest.approx(0.1)
    assert values[54] == pytest.approx(0.05) and values[99] == pytest.approx(0.0)


def test_early_stop_and_best_model_always_saved(keyword_data, scratch_model, tmp_path):
    small = make_keyword_dataset(tmp_path / "small", n_train=48, n_dev=16, seed=3)
    save_dir = tmp_path / "ckpt"
    result = run_main("train.py", "--device", "cpu", "--dataset_dir", small, "--model_name", scratch_model,
                      "--save_dir", save_dir, "--epochs", "6", "--learning_rate", "0", "--early_stop",
                      "--early_stop_nums", "2", "--batch_size", "16")
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stderr
    # nothing improves after epoch 1, so epochs 2 and 3 use up the patience and epoch 4 never starts
    assert len(logged(r"eval loss:", log)) == 3
    assert "Early stop!" in log
    assert (save_dir / "model_state.pdparams").is_file()  # saved even though F1 never rose


def test_resume_from_checkpoint_reproduces_its_dev_score(trained, keyword_data, tmp_path):
    save_dir, log = trained
    best = float(logged(r"Final best macro f1 score: ([\d.]+)", log)[0])
    result = run_main("train.py", "--device", "cpu", "--dataset_dir", keyword_data, "--model_name", save_dir,
                      "--init_from_ckpt", save_dir / "model_state.pdparams", "--save_dir", tmp_path / "resumed",
                      "--epochs", "1", "--learning_rate", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(logged(r"macro f1 score: ([\d.]+)", result.stderr)[0]) == pytest.approx(best)


def test_init_from_missing_checkpoint_is_an_error(keyword_data, scratch_model, tmp_path):
    result = run_main("train.py", "--device", "cpu", "--dataset_dir", keyword_data, "--model_name", scratch_model,
                      "--init_from_ckpt", tmp_path / "missing.pdparams", "--save_dir", tmp_path / "x")
    assert result.returncode == 2
    assert f"--init_from_ckpt {tmp_path / 'missing.pdparams'}: no such checkpoint file" in result.stderr


def test_init_from_checkpoint_with_other_label_order_is_refused(trained, keyword_data, scratch_model, tmp_path):
    save_dir, _ = trained
    data = tmp_path / "data"
    shutil.copytree(keyword_data, data)
    (data / "label.txt").write_text("财经\n体育\n科技\n娱乐\n教育\n", encoding="utf-8")
    result = run_main("train.py", "--device", "cpu", "--dataset_dir", data, "--model_name", scratch_model,
                      "--init_from_ckpt", save_dir, "--save_dir", tmp_path / "x")
    assert result.returncode == 2
    assert (f"{data / 'label.txt'} disagrees with the checkpoint (line 1 is '财经' but the checkpoint's "
            f"label 0 is '体育')") in result.stderr


def test_fast_pad_mask_leaves_outputs_unchanged(scratch_model):
    paddle.seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(scratch_model), num_classes=5)
    model.eval()
    ids = paddle.randint(5, model.config.vocab_size, [4, 24])
    ids[0, 10:] = 0
    ids[2, 3:] = 0
    batch = {"input_ids": ids, "token_type_ids": paddle.zeros_like(ids)}
    reference = model(**batch)  # paddlenlp's own -1e4 mask
    ours = model(**model_inputs(batch, pad_token_id=0))
    assert float((reference - ours).abs().max()) < 1e-6
    unmasked = model(**batch, attention_mask=paddle.zeros([4, 1, 1, 24]))
    assert float((reference - unmasked).abs().max()) > 1e-4  # the padded rows do depend on the mask
