"""Word-level attributions for one label of a multi-label model, and their HTML rendering.

Implemented directly on Paddle (TrustAI's interpreters explain the argmax class, a multi-class
notion): every attribution explains one label's logit, so a text gets one explanation per label
of interest (predicted or gold).

- `ig`: integrated gradients on the word embeddings, from a baseline that zeroes the embeddings of
  the text's tokens ([CLS]/[SEP] kept); the attributions sum to logit(text) - logit(baseline)
  (completeness, tested; it needs `grad_wrt_inputs` around a Paddle LayerNorm gradient defect).
- `grad`: gradient x input at the text (one step of the above).
- `lime`: a weighted ridge regression of the label's probability on which words are kept, over
  random word maskings ([UNK] for masked tokens).
Token scores are summed into jieba words through the tokenizer's character offsets.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Sequence

import jieba
import numpy as np
import paddle
from sklearn.linear_model import Ridge

INTERPRETERS = ("ig", "lime", "grad")
jieba.setLogLevel(60)


def grad_wrt_inputs(output: paddle.Tensor, inputs: Sequence[paddle.Tensor], model: paddle.nn.Layer
                    ) -> list[paddle.Tensor]:
    """paddle.grad(output, inputs), made correct for models with LayerNorm.

    Defect (paddlepaddle 3.3.1, layer_norm_grad on CPU): when paddle.grad is asked for the gradient
    of an input but not of the LayerNorm scale, the input gradient is wrong whenever the scale is
    not all ones (loss.backward(), which computes every gradient, is right, so training is not
    affected). Integrated gradients lost their completeness through it: on a trained tiny ERNIE the
    attributions summed to 5.74 for a logit difference of 6.67. Asking for the scales' gradients as
    well takes the kernel's correct path (tests/test_compat.py's canary fails once Paddle is fixed).
    """
    scales = [layer.weight for layer in model.sublayers()
              if isinstance(layer, paddle.nn.LayerNorm) and layer.weight is not None and not layer.weight.stop_gradient]
    return paddle.grad(output, [*inputs, *scales])[:len(inputs)]


@dataclass
class Encoded:
    """One text, tokenized, with each token's word index (-1 for special tokens)."""

    text: str
    words: list[str]
    input_ids: np.ndarray
    token_type_ids: np.ndarray | None
    token_words: np.ndarray


def encode(tokenizer, text: str, max_seq_length: int) -> Encoded:
    words = jieba.lcut(text)
    char_word = np.repeat(np.arange(len(words)), [len(w) for w in words])
    encoded = tokenizer(text, max_length=max_seq_length, truncation=True, return_offsets_mapping=True)
    token_words = np.array([char_word[start] if end > start else -1 for start, end in encoded["offset_mapping"]])
    token_types = np.array([encoded["token_type_ids"]]) if "token_type_ids" in encoded else None
    return Encoded(text, words, np.array([encoded["input_ids"]]), token_types, token_words)


def _forward(model, embeds: paddle.Tensor, item: Encoded) -> paddle.Tensor:
    """Logits for a batch of embedding sequences of one text (all rows the same length, no padding)."""
    batch = embeds.shape[0]
    kwargs = {"inputs_embeds": embeds,
              "attention_mask": paddle.zeros([batch, 1, 1, embeds.shape[1]], dtype="float32")}
    if item.token_type_ids is not None:
        kwargs["token_type_ids"] = paddle.to_tensor(np.repeat(item.token_type_ids, batch, axis=0))
    return model(**kwargs)


@paddle.no_grad()
def _word_embeddings(model, item: Encoded) -> paddle.Tensor:
    return getattr(model, model.base_model_prefix).embeddings.word_embeddings(paddle.to_tensor(item.input_ids))


def integrated_gradients(model, item: Encoded, label: int, steps: int = 50) -> tuple[np.ndarray, float, float]:
    """Token attributions, logit at the text and logit at the baseline."""
    embeds = _word_embeddings(model, item)
    keep = paddle.to_tensor((item.token_words < 0).astype("float32")[None, :, None])
    baseline = embeds * keep  # special tokens stay, the text's tokens become zero vectors
    alphas = paddle.to_tensor(((np.arange(steps) + 0.5) / steps).astype("float32")[:, None, None])
    path = baseline + alphas * (embeds - baseline)
    path.stop_gradient = False
    logits = _forward(model, path, item)[:, label]
    (grads,) = grad_wrt_inputs(logits.sum(), [path], model)
    attributions = ((embeds - baseline) * grads.mean(axis=0, keepdim=True)).sum(axis=-1)
    with paddle.no_grad():
        ends = _forward(model, paddle.concat([embeds, baseline]), item)[:, label].numpy()
    return attributions.numpy()[0], float(ends[0]), float(ends[1])


def gradient_times_input(model, item: Encoded, label: int) -> np.ndarray:
    embeds = _word_embeddings(model, item)
    embeds.stop_gradient = False
    (grads,) = grad_wrt_inputs(_forward(model, embeds, item)[:, label].sum(), [embeds], model)
    return (embeds * grads).sum(axis=-1).numpy()[0]


@paddle.no_grad()
def lime_word_scores(model, item: Encoded, label: int, unk_id: int, samples: int = 200, seed: int = 0
                     ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    num_words = len(item.words)
    masks = rng.random((samples, num_words)) < 0.5
    masks[0] = False  # the unmasked text itself
    ids = np.repeat(item.input_ids, samples, axis=0)
    text_tokens = item.token_words >= 0
    for row in range(samples):
        masked_tokens = text_tokens & masks[row][np.maximum(item.token_words, 0)]
        ids[row, masked_tokens] = unk_id
    inputs = {"input_ids": paddle.to_tensor(ids),
              "attention_mask": paddle.zeros([samples, 1, 1, ids.shape[1]], dtype="float32")}
    if item.token_type_ids is not None:
        inputs["token_type_ids"] = paddle.to_tensor(np.repeat(item.token_type_ids, samples, axis=0))
    probs = paddle.nn.functional.sigmoid(model(**inputs)[:, label]).numpy()
    kept = (~masks).astype("float32")
    distance = masks.mean(axis=1)
    regression = Ridge(alpha=1.0).fit(kept, probs, sample_weight=np.exp(-(distance ** 2) / 0.25 ** 2))
    return regression.coef_


def word_scores(model, tokenizer, item: Encoded, label: int, interpreter: str, steps: int = 50) -> np.ndarray:
    """One attribution per jieba word of the text (0 for words cut off by max_seq_length)."""
    model.eval()
    if interpreter == "lime":
        return lime_word_scores(model, item, label, tokenizer.unk_token_id)
    tokens = (integrated_gradients(model, item, label, steps)[0] if interpreter == "ig"
              else gradient_times_input(model, item, label))
    scores = np.zeros(len(item.words))
    text_tokens = item.token_words >= 0
    np.add.at(scores, item.token_words[text_tokens], tokens[text_tokens])
    return scores


def key_words(words: list[str], scores: np.ndarray, count: int) -> list[tuple[str, float]]:
    """The `count` words with the largest positive attribution (punctuation excluded)."""
    order = np.argsort(-scores, kind="stable")
    return [(words[i], float(scores[i])) for i in order if scores[i] > 0 and any(c.isalnum() for c in words[i])][:count]


def html_marks(words: list[str], scores: np.ndarray) -> str:
    """Words in <mark>s: green for support of the label, red against it, opacity by strength."""
    scale = max(float(np.abs(scores).max()), 1e-12)
    marks = []
    for word, score in zip(words, scores):
        strength = abs(score) / scale
        colour = f"rgba(0, 150, 0, {strength:.2f})" if score >= 0 else f"rgba(210, 0, 0, {strength:.2f})"
        marks.append(f'<mark style="background:{colour}" title="{score:+.4f}">{html.escape(word)}</mark>')
    return "".join(marks)


HTML_HEAD = """<!DOCTYPE html>
<html lang="zh"><head><meta charset="utf-8"><title>Word-level interpretation</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;
padding:6px;vertical-align:top}mark{padding:1px 0}</style></head><body>
<h1>Word-level interpretation ({interpreter})</h1>
<p>Each row explains one label's logit: <mark style="background:rgba(0,150,0,.6)">green</mark> words push
the label up, <mark style="background:rgba(210,0,0,.6)">red</mark> words push it down (hover for the value).</p>
<table><tr><th>#</th><th>Label</th><th>Probability</th><th>Gold / Predicted</th><th>Key words</th>
<th>Important visualization</th></tr>
"""
