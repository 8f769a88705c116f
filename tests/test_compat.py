"""compat.py: each workaround still works, and each upstream defect still exists (else delete it)."""
from __future__ import annotations

import numpy as np
import paddle

import compat


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


def test_paddle_grad_of_layer_norm_input_alone_is_still_wrong():
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
    (grad,) = compat.grad_wrt_inputs(objective(model, x, upstream), [x], model)
    np.testing.assert_allclose(grad.numpy(), finite_difference(model, x0, upstream), atol=1e-6)
