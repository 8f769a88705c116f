"""The workarounds of upstream defects (compat.py, serving.py's SimpleServing loader, interpret.py's
LayerNorm gradient): each still works, and a canary per workaround fails once the upstream defect is
gone (then delete the workaround)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from paddlenlp.server import predictor as server_predictor
from paddlenlp.trainer import Trainer, TrainingArguments
from pymilvus.client.prepare import Prepare

import compat
import serving
import vector_index
from backends import create_backend
from exporting import load_export, load_export_tokenizer
from pipeline import TextPipeline
from vector_index import IndexInfo, MilvusIndex, send_index_params_as_json

from conftest import ROOT
from interpret import grad_wrt_inputs


def layer_norm_model(weight: np.ndarray) -> paddle.nn.Layer:
    model = paddle.nn.Sequential(paddle.nn.LayerNorm(weight.shape[0]))
    model.to(dtype="float64")
    model[0].weight.set_value(weight)
    return model


def objective(model, x, upstream):
    return (model(x) * paddle.to_tensor(upstream)).sum()


def finite_difference(model, x0, upstream, eps=1e-6) -> np.ndarray:
    grad = np.zeros_like(x0)
    with paddle.no_grad():
        for index in np.ndindex(x0.shape):
            step = np.zeros_like(x0)
            step[index] = eps
            grad[index] = (float(objective(model, paddle.to_tensor(x0 + step), upstream))
                           - float(objective(model, paddle.to_tensor(x0 - step), upstream))) / (2 * eps)
    return grad


def leaf(x0):
    x = paddle.to_tensor(x0)
    x.stop_gradient = False
    return x


def test_canary_paddle_grad_of_layer_norm_input_alone_is_still_wrong():
    rng = np.random.default_rng(0)
    x0, upstream = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 3, 8))
    model = layer_norm_model(1 + 0.5 * rng.standard_normal(8))
    truth = finite_difference(model, x0, upstream)
    x = leaf(x0)
    (alone,) = paddle.grad(objective(model, x, upstream), x)
    assert np.abs(alone.numpy() - truth).max() > 0.1  # if this fails, Paddle fixed layer_norm_grad: drop the workaround
    x = leaf(x0)
    objective(model, x, upstream).backward()  # training's path is right
    np.testing.assert_allclose(x.grad.numpy(), truth, atol=1e-6)
    unit = layer_norm_model(np.ones(8))  # and so is a unit scale
    x = leaf(x0)
    np.testing.assert_allclose(paddle.grad(objective(unit, x, upstream), x)[0].numpy(),
                               finite_difference(unit, x0, upstream), atol=1e-6)


def test_grad_wrt_inputs_is_right():
    rng = np.random.default_rng(1)
    x0, upstream = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 3, 8))
    model = layer_norm_model(1 + 0.5 * rng.standard_normal(8))
    x = leaf(x0)
    (grad,) = grad_wrt_inputs(objective(model, x, upstream), [x], model)
    np.testing.assert_allclose(grad.numpy(), finite_difference(model, x0, upstream), atol=1e-6)


def bare_server_predictor(model_path: str):
    """paddlenlp's SimpleServer Predictor with its attributes set but no model loaded yet."""
    predictor = server_predictor.Predictor.__new__(server_predictor.Predictor)
    predictor._model_path, predictor._default_static_model_path = model_path, "auto_static"
    predictor._precision, predictor._device, predictor._num_threads = "fp32", "cpu", 1
    return predictor


@pytest.mark.slow
def test_canary_simple_server_predictor_still_cannot_find_a_paddle3_export(exported):
    export_dir, _ = exported
    serving.load_exports_in_simple_server()
    with pytest.raises(RuntimeError, match="The model path do not include the inference model"):
        serving.UPSTREAM["create_predictor"](bare_server_predictor(str(export_dir)))


@pytest.mark.slow
def test_patched_simple_server_predictor_runs_the_export(exported):
    export_dir, _ = exported
    serving.load_exports_in_simple_server()
    predictor = server_predictor.Predictor(str(export_dir), "fp32", "cpu")
    assert server_predictor.Predictor._create_predictor is serving._predictor_from_export
    export = load_export(export_dir / "float32")
    pipeline = TextPipeline(load_export_tokenizer(export), export.input_names)
    feed = pipeline.feeds(pipeline.encode(["足球比赛", "学校考试老师"]))[0]
    expected = create_backend(export, "onnxruntime", "fp32").run(feed)
    assert predictor.backend.label == "paddle fp32"
    assert np.abs(predictor.backend.run(feed) - expected).max() < 1e-4


def tiny_trainer(output_dir) -> Trainer:
    args = TrainingArguments(output_dir=str(output_dir), device="cpu", save_total_limit=1, report_to=["none"])
    trainer = Trainer(model=paddle.nn.Linear(2, 2), args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=3)
    return trainer


def checkpoints_after_three_saves(trainer: Trainer, save) -> list[str]:
    for step in (1, 2, 3):
        trainer.state.global_step = step
        save(trainer, trainer.model)
    return sorted(path.name for path in Path(trainer.args.output_dir).glob("checkpoint-*"))


def test_canary_single_process_trainer_still_ignores_save_total_limit(tmp_path):
    kept = checkpoints_after_three_saves(tiny_trainer(tmp_path), compat.UPSTREAM_SAVE_CHECKPOINT)
    assert kept == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]  # if this fails, drop the patch


def test_patched_trainer_keeps_save_total_limit_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "_save_checkpoint", compat.UPSTREAM_SAVE_CHECKPOINT)
    compat.keep_save_total_limit()
    assert Trainer._save_checkpoint is compat._save_checkpoint_then_rotate
    assert checkpoints_after_three_saves(tiny_trainer(tmp_path), Trainer._save_checkpoint) == ["checkpoint-3"]


def described_milvus_index(path: str) -> dict:
    """describe_index of the vector field of a new Milvus Lite collection made by MilvusIndex with M 48, ef 64."""
    index = MilvusIndex(path, IndexInfo(8, "test"), m=48, ef=64)
    try:
        return index.client.describe_index(index.collection, "vector")
    finally:
        index.close()


def test_canary_milvus_lite_still_drops_the_index_parameters_pymilvus_sends(tmp_path, monkeypatch):
    """Canary of vector_index.send_index_params_as_json: when this fails, Milvus Lite reads pymilvus's
    own form of the build parameters and the patch should be deleted."""
    send_index_params_as_json()
    monkeypatch.setattr(Prepare, "create_index_request", classmethod(vector_index._UPSTREAM["create_index_request"]))
    described = described_milvus_index(str(tmp_path / "upstream.db"))
    assert described["index_type"] == "HNSW" and "params" not in described and "M" not in described


def test_a_milvus_index_gives_milvus_lite_the_index_parameters(tmp_path):
    assert described_milvus_index(str(tmp_path / "patched.db"))["params"] == {"M": 48, "efConstruction": 64}
    assert Prepare.create_index_request.__func__.__name__ == "create_index_request_with_params_json"


def test_importing_compat_patches_no_trainer_and_no_server():
    """Only the code that needs a patch applies it: a fresh process importing compat and serving has
    paddlenlp's own Trainer checkpointing and SimpleServer loader."""
    code = ("import compat, serving\n"
            "from paddlenlp.trainer import Trainer\n"
            "from paddlenlp.server import predictor\n"
            "print(Trainer._save_checkpoint is compat.UPSTREAM_SAVE_CHECKPOINT,\n"
            "      predictor.Predictor._create_predictor.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert result.stdout.split() == ["True", "paddlenlp.server.predictor"], result.stderr[-2000:]
