"""Width-pruning surgery on ERNIE encoders (DynaBERT): the elastic forward that runs the first heads
and FFN neurons of shared weights, head and neuron importance, re-ordering by importance, and cutting
a model down to a width as an ordinary smaller model.

Below modeling.py, which rebuilds a pruned checkpoint from the width stored in its config.json
(`pruned_width`); the DynaBERT loop that uses the rest is dynabert.py, driven by prune.py.
"""
from __future__ import annotations

import functools
from fractions import Fraction
from typing import Callable, Sequence, TypeVar

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.nn.layer.transformer import _convert_attention_mask
from tqdm import tqdm

from utils import DataError

Batch = TypeVar("Batch")


def pruned_width(config: dict) -> dict | None:
    """The `pruned_width` entry prune.py stores in config.json ({width_mult, heads, FFN size}), if any."""
    return config.get("pruned_width")


def encoder_layers(model) -> list[paddle.nn.TransformerEncoderLayer]:
    """The transformer layers of an ERNIE-family classifier (post-norm paddle.nn layers)."""
    base = getattr(model, model.base_model_prefix, None)
    layers = list(getattr(getattr(base, "encoder", None), "layers", []))
    if not layers or not all(isinstance(layer, paddle.nn.TransformerEncoderLayer) and not layer.normalize_before
                             for layer in layers):
        raise DataError(f"{type(model).__name__}: width pruning needs an ERNIE-style encoder of "
                        f"paddle.nn.TransformerEncoderLayer (post-norm)")
    return layers


def kept_units(width: Fraction, num_heads: int, intermediate_size: int) -> tuple[int, int]:
    """Heads and FFN neurons a layer keeps at this width."""
    return int(width * num_heads), int(width * intermediate_size)


def check_widths(widths: list[Fraction], num_heads: int) -> None:
    """Every width must keep a whole number of heads, else the head reshape cannot work."""
    for width in widths:
        heads = width * num_heads
        if heads.denominator != 1:
            valid = [f"{Fraction(k, num_heads)}" for k in range(1, num_heads + 1)]
            raise DataError(f"width {width} x {num_heads} heads = {float(heads):g} heads is not an integer; "
                            f"widths this model accepts: {' '.join(valid)}")


# ------------------------------------------------------------------------- dense narrowing


def _narrow_linear(linear: paddle.nn.Linear, rows: int | None = None, cols: int | None = None) -> paddle.nn.Linear:
    """A smaller Linear holding the first `rows` inputs and/or `cols` outputs of `linear`."""
    weight = linear.weight[:rows, :cols]
    narrow = paddle.nn.Linear(weight.shape[0], weight.shape[1])
    narrow.weight.set_value(weight)
    narrow.bias.set_value(linear.bias[:cols])
    return narrow


def narrow_encoder(model, num_heads: int, intermediate_size: int) -> None:
    """Keep the first `num_heads` attention heads and `intermediate_size` FFN neurons of every layer.

    prune.py orders heads and neurons by importance first, so the first ones are the ones to keep.
    The hidden size is unchanged, so embeddings, pooler and classifier stay as they are.
    """
    for layer in encoder_layers(model):
        attn = layer.self_attn
        width = num_heads * attn.head_dim
        attn.q_proj, attn.k_proj, attn.v_proj = (_narrow_linear(p, cols=width)
                                                 for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        attn.out_proj = _narrow_linear(attn.out_proj, rows=width)
        attn.num_heads = num_heads
        layer.linear1 = _narrow_linear(layer.linear1, cols=intermediate_size)
        layer.linear2 = _narrow_linear(layer.linear2, rows=intermediate_size)


def narrow_to_width(model, width: Fraction) -> None:
    """Cut the model down to its first heads and neurons at this width, and record the width in its
    config so that `modeling.load_model` rebuilds the narrow model from a saved checkpoint."""
    layer = encoder_layers(model)[0]
    heads, neurons = kept_units(width, layer.self_attn.num_heads, layer.linear1.weight.shape[1])
    narrow_encoder(model, heads, neurons)
    model.config.pruned_width = {"width_mult": str(width), "num_attention_heads": heads,
                                 "intermediate_size": neurons}


# ------------------------------------------------------------------------- elastic encoder


def elastic_layer_forward(layer, src, src_mask=None, cache=None, output_attentions=False):
    """paddle.nn.TransformerEncoderLayer.forward (post-norm) on the first `layer.kept_heads` heads
    and `layer.kept_neurons` FFN neurons, with an optional per-head gate for importance scores.

    Slicing the shared weights keeps one set of parameters for all widths, as DynaBERT trains them.
    """
    attn = layer.self_attn
    heads, width, neurons = layer.kept_heads, layer.kept_heads * attn.head_dim, layer.kept_neurons
    src_mask = _convert_attention_mask(src_mask, src.dtype)

    def project(linear):
        out = F.linear(src, linear.weight[:, :width], linear.bias[:width])
        return out.reshape([0, 0, heads, attn.head_dim]).transpose([0, 2, 1, 3])

    query, key, value = project(attn.q_proj), project(attn.k_proj), project(attn.v_proj)
    scores = paddle.matmul(query * attn.head_dim ** -0.5, key, transpose_y=True)
    if src_mask is not None:
        scores = scores + src_mask
    weights = F.dropout(F.softmax(scores), attn.dropout, training=layer.training, mode="upscale_in_train")
    context = paddle.matmul(weights, value)
    if layer.head_gate is not None:
        context = context * layer.head_gate[:heads].reshape([1, heads, 1, 1])
    context = context.transpose([0, 2, 1, 3]).reshape([0, 0, width])
    attended = F.linear(context, attn.out_proj.weight[:width], attn.out_proj.bias)
    src = layer.norm1(src + layer.dropout1(attended))
    hidden = layer.activation(F.linear(src, layer.linear1.weight[:, :neurons], layer.linear1.bias[:neurons]))
    ffn = F.linear(layer.dropout(hidden), layer.linear2.weight[:neurons], layer.linear2.bias)
    return layer.norm2(src + layer.dropout2(ffn))


def make_elastic(model) -> None:
    """Run every encoder layer through `elastic_layer_forward`, at full width until `set_width`."""
    for layer in encoder_layers(model):
        layer.forward = functools.partial(elastic_layer_forward, layer)
        layer.head_gate = None
    set_width(model, Fraction(1))


def set_width(model, width: Fraction) -> None:
    """The width the elastic layers run at from now on (their first heads and neurons)."""
    for layer in encoder_layers(model):
        layer.kept_heads, layer.kept_neurons = kept_units(width, layer.self_attn.num_heads,
                                                          layer.linear1.weight.shape[1])


# ------------------------------------------------------------------------------ importance


def compute_importance(model, batches: Sequence[Batch], loss_of: Callable[[Batch], paddle.Tensor]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Head and FFN-neuron importance over `batches`, as DynaBERT scores them: `loss_of(batch)` is the
    (training) loss of the model on one batch (prune.py: its dev texts, labelled).

    Head: sum over batches of |d loss / d gate| for a gate of ones on each head's output.
    Neuron j: |sum_i w1[i,j] g1[i,j] + b1[j] gb1[j]| + |sum_k w2[j,k] g2[j,k]| per batch, summed.
    Returns arrays [layers, heads] and [layers, neurons].
    """
    layers = encoder_layers(model)
    gates = [paddle.ones([layer.self_attn.num_heads], dtype="float32") for layer in layers]
    for layer, gate in zip(layers, gates):
        gate.stop_gradient = False
        layer.head_gate = gate
    head_scores = np.zeros([len(layers), layers[0].self_attn.num_heads], dtype="float64")
    neuron_scores = np.zeros([len(layers), layers[0].linear1.weight.shape[1]], dtype="float64")
    model.eval()  # no dropout: the scores describe the model as it predicts
    for batch in tqdm(batches, desc="Importance", leave=False, disable=None):
        loss_of(batch).backward()
        for i, (layer, gate) in enumerate(zip(layers, gates)):
            head_scores[i] += np.abs(gate.grad.numpy())
            w1, b1, w2 = layer.linear1.weight, layer.linear1.bias, layer.linear2.weight
            neuron_scores[i] += np.abs((w1 * w1.grad).sum(0).numpy() + (b1 * b1.grad).numpy())
            neuron_scores[i] += np.abs((w2 * w2.grad).sum(1).numpy())
            gate.clear_gradient()
        model.clear_gradients()
    for layer in layers:
        layer.head_gate = None
    return head_scores, neuron_scores


def _permute(param, index: np.ndarray, axis: int) -> None:
    param.set_value(paddle.index_select(param, paddle.to_tensor(index), axis=axis))


def reorder_by_importance(model, head_scores: np.ndarray, neuron_scores: np.ndarray) -> None:
    """Permute heads and neurons so that the most important come first; outputs stay the same."""
    for layer, heads, neurons in zip(encoder_layers(model), head_scores, neuron_scores):
        attn = layer.self_attn
        head_order = np.argsort(-heads, kind="stable")
        columns = (head_order[:, None] * attn.head_dim + np.arange(attn.head_dim)).reshape(-1)
        for linear in (attn.q_proj, attn.k_proj, attn.v_proj):
            _permute(linear.weight, columns, axis=1)
            _permute(linear.bias, columns, axis=0)
        _permute(attn.out_proj.weight, columns, axis=0)
        neuron_order = np.argsort(-neurons, kind="stable")
        _permute(layer.linear1.weight, neuron_order, axis=1)
        _permute(layer.linear1.bias, neuron_order, axis=0)
        _permute(layer.linear2.weight, neuron_order, axis=0)
