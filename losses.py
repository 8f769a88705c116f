"""The registry of training losses: a name -> a function of (logits, targets) -> scalar loss.

Training, the evaluation loss logged on dev, pruning's importance scores and distillation all take
their loss from here, so a new loss changes every one of them at once. Targets are multi-hot
[batch, labels] floats; soft targets (a teacher's probabilities) are allowed except for `zlpr`.
The distillation losses (a teacher's probabilities per label, its hidden states; `soft_label_loss`,
`hidden_state_loss`, `distillation_loss`) are here too, written once for prune.py and distill.py.

Rare labels are why there is more than `bce`: with a few positives among thousands of negatives,
plain BCE learns to say "no" to a rare label and macro F1 suffers. The alternatives reweight the
positives (`bce_pos_weight`), down-weight the easy examples (`focal`), or do both asymmetrically
(`asl`); `db` reweights each text's labels by how rare they are among that text's labels and tolerates
negatives; `zlpr` compares each text's positive logits with its negative ones instead of each with a
fixed 0.5. Every one keeps the decision rule of the suite: a label is predicted when its logit is
above 0 (sigmoid above the 0.5 default threshold), so thresholds, tuning and serving are unchanged.
All are computed in log space (softplus, logsumexp): logits of +-100 give finite values and gradients.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import paddle
import paddle.nn.functional as F

from utils import DataError

LossFunction = Callable[[paddle.Tensor, paddle.Tensor], paddle.Tensor]
TINY = 1e-12  # keeps pow() differentiable at a base of exactly 0


@dataclass
class LossSettings:
    """The parameters a loss may need; each loss reads only its own."""

    pos_weight: np.ndarray | None = None  # per label, for bce_pos_weight (see positive_weights)
    focal_gamma: float = 2.0
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    label_counts: np.ndarray | None = None  # training texts carrying each label, for db
    num_texts: int = 0  # training texts, for db
    db_neg_scale: float = 2.0  # lambda of db's negative-tolerant regularisation
    db_bias_scale: float = 0.05  # kappa: how far db shifts each logit by its label's prior log-odds
    db_map_alpha: float = 0.1  # db's weight mapping alpha + sigmoid(beta * (r - mu)) of the rebalancing ratio r
    db_map_beta: float = 10.0
    db_map_mu: float = 0.05


def label_log_odds(label_prior: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of each label's share of the training texts, with p clipped to [1e-4, 1 - 1e-4] so
    that a label absent from the training file (or in every text) gets a finite value."""
    prior = np.clip(np.asarray(label_prior, dtype="float64"), 1e-4, 1 - 1e-4)
    return np.log(prior / (1 - prior)).astype("float32")


def positive_weights(label_counts: np.ndarray, num_texts: int, max_weight: float = 10.0) -> np.ndarray:
    """clip(sqrt(negatives / positives), 1, max_weight) per label: the square root damps the weight of
    very rare labels (a full neg/pos ratio of 500 makes training unstable), the clip keeps frequent
    labels at 1 and a label absent from the training file at `max_weight` (never inf)."""
    positives = np.asarray(label_counts, dtype="float64")
    ratio = np.sqrt((num_texts - positives) / np.maximum(positives, 1e-12))
    return np.clip(ratio, 1.0, max_weight).astype("float32")


def read_pos_weights(path: str | os.PathLike, label_file: str | os.PathLike, num_labels: int) -> np.ndarray:
    """--pos_weight FILE: one positive number per line, in the order of the label file (blank lines are
    skipped). Any fault is one line naming the file and line, so a mistyped weight never trains silently."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"--pos_weight {path}: {err.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError(f"--pos_weight {path}:{line}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    entries = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if len(entries) != num_labels:
        raise DataError(f"--pos_weight {path}: {len(entries)} weights for the {num_labels} labels of {label_file}")
    return np.asarray([_positive_weight(path, number, entry) for number, entry in entries], dtype="float32")


def pos_weight_option(option: str, label_file: str | os.PathLike, targets: np.ndarray,
                      max_weight: float) -> np.ndarray:
    """The weights train.py's --pos_weight names: `auto` counts them on the training targets
    (`positive_weights`), anything else is a file of weights (`read_pos_weights`; read and checked even
    when the chosen loss does not use them, so a bad file is never trained past silently)."""
    if option == "auto":
        return positive_weights((targets > 0.5).sum(0), len(targets), max_weight)
    return read_pos_weights(option, label_file, targets.shape[1])


def _positive_weight(path: str | os.PathLike, line: int, entry: str) -> float:
    try:
        weight = float(entry)
    except ValueError:
        raise DataError(f"--pos_weight {path}:{line}: could not convert {entry!r} to a number") from None
    if not (np.isfinite(weight) and weight > 0):
        raise DataError(f"--pos_weight {path}:{line}: {entry}: weights must be positive numbers")
    return weight


def _log_probs(logits: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """log sigmoid(x) and log (1 - sigmoid(x)), exact for any logit."""
    return -F.softplus(-logits), -F.softplus(logits)


def binary_cross_entropy(settings: LossSettings) -> LossFunction:
    """Mean over texts and labels of the per-label sigmoid cross-entropy: each label is its own
    yes/no question, as in the reference (BCEWithLogitsLoss)."""

    def loss(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
        return F.binary_cross_entropy_with_logits(logits, paddle.cast(targets, logits.dtype))

    return loss


def weighted_binary_cross_entropy(settings: LossSettings) -> LossFunction:
    """BCE with each label's positive term multiplied by its weight (`positive_weights`)."""
    if settings.pos_weight is None:
        raise DataError("the loss bce_pos_weight needs per-label weights (--pos_weight auto or a file)")
    weight = paddle.to_tensor(np.asarray(settings.pos_weight, dtype="float32"))

    def loss(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
        targets = paddle.cast(targets, logits.dtype)
        log_p, log_not_p = _log_probs(logits)
        return -(weight * targets * log_p + (1 - targets) * log_not_p).mean()

    return loss


def focal(settings: LossSettings) -> LossFunction:
    """Focal loss (Lin et al. 2017) per label: BCE scaled by (1 - p_t)^gamma, so the many easy
    negatives of a rare label stop dominating the gradient."""
    gamma = settings.focal_gamma

    def loss(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
        targets = paddle.cast(targets, logits.dtype)
        log_p, log_not_p = _log_probs(logits)
        p, not_p = F.sigmoid(logits), F.sigmoid(-logits)
        return -(targets * (not_p + TINY) ** gamma * log_p + (1 - targets) * (p + TINY) ** gamma * log_not_p).mean()

    return loss


def asymmetric(settings: LossSettings) -> LossFunction:
    """Asymmetric loss (Ridnik et al. 2021): focusing gamma_pos on positives, a stronger gamma_neg on
    negatives, and negatives whose probability is below `clip` ignored (probability shifted by clip)."""
    gamma_pos, gamma_neg, clip = settings.asl_gamma_pos, settings.asl_gamma_neg, settings.asl_clip

    def loss(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
        targets = paddle.cast(targets, logits.dtype)
        log_p, log_not_p = _log_probs(logits)
        p, not_p = F.sigmoid(logits), F.sigmoid(-logits)
        shifted = paddle.clip(p - clip, min=0.0)  # the negative's probability after the margin
        log_not_shifted = paddle.log(paddle.clip(not_p + clip, max=1.0)) if clip > 0 else log_not_p
        positive = (not_p + TINY) ** gamma_pos * log_p
        negative = (shifted + TINY) ** gamma_neg * log_not_shifted
        return -(targets * positive + (1 - targets) * negative).mean()

    return loss


def zlpr(settings: LossSettings) -> LossFunction:
    """ZLPR, the multi-label softmax ("multilabel categorical cross-entropy", Su 2020; Huang et al.
    2022): log(1 + sum over negatives of e^s) + log(1 + sum over positives of e^-s), averaged over
    texts. It pushes every positive logit above 0 and every negative below 0, so its decision
    boundary is the logit 0 that the 0.5 threshold of sigmoid(logit) already means."""

    def loss(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
        targets = paddle.cast(targets, logits.dtype)
        zero = paddle.zeros_like(logits[:, :1])
        excluded = paddle.full_like(logits, -1e12)
        negatives = paddle.where(targets > 0.5, excluded, logits)
        positives = paddle.where(targets > 0.5, -logits, excluded)
        return (paddle.logsumexp(paddle.concat([zero, negatives], axis=1), axis=1)
                + paddle.logsumexp(paddle.concat([zero, positives], axis=1), axis=1)).mean()

    return loss


def distribution_balanced(settings: LossSettings) -> LossFunction:
    """Distribution-Balanced loss (Wu et al. 2020; for text, Huang et al. 2021), up to their constant 1/2.

    Rebalancing: a text with a frequent and a rare label teaches the frequent one far more often than
    the rare one is seen. Each (text, label) term is weighted by alpha + sigmoid(beta * (r - mu)), where
    r = (1 / n_label) / sum over the text's labels of 1 / n, n being training counts; a text without
    labels gets the largest weight, alpha + 1.
    Negative-tolerant regularisation: the logit is shifted by kappa / lambda times the label's prior
    log-odds, and negatives are scored at lambda times that logit with 1 / lambda of the loss, so the
    thousands of easy negatives of a rare label stop flattening its logit.
    Focal factor: (1 - p_t)^focal_gamma on the shifted logits. Prediction uses the unshifted logit and
    the usual logit-0 rule, so a rare label's probability comes out higher than the loss saw it; tuned
    thresholds absorb that shift like any other calibration offset.
    The defaults of LossSettings (alpha 0.1, beta 10, mu 0.05, lambda 2, kappa 0.05, gamma 2) are the
    ones Huang et al. used on text.
    """
    if settings.label_counts is None or settings.num_texts <= 0:
        raise DataError("the loss db needs the label counts of the training texts")
    counts = np.asarray(settings.label_counts, dtype="float64")
    inverse_count = paddle.to_tensor((1.0 / np.maximum(counts, 1.0)).astype("float32"))
    scale = settings.db_neg_scale
    shift = paddle.to_tensor(settings.db_bias_scale / scale * label_log_odds(counts / settings.num_texts))
    alpha, beta, mu, gamma = settings.db_map_alpha, settings.db_map_beta, settings.db_map_mu, settings.focal_gamma

    def loss(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
        targets = paddle.cast(targets, logits.dtype)
        text_inverse_sum = (paddle.cast(targets > 0.5, logits.dtype) * inverse_count).sum(axis=1, keepdim=True)
        ratio = inverse_count / paddle.clip(text_inverse_sum, min=TINY)  # about 1e12 for a text without labels
        weight = alpha + F.sigmoid(beta * (ratio - mu))
        shifted = logits + shift
        positive = (F.sigmoid(-shifted) + TINY) ** gamma * F.softplus(-shifted)
        negative = (F.sigmoid(scale * shifted) + TINY) ** gamma * F.softplus(scale * shifted) / scale
        return (weight * (targets * positive + (1 - targets) * negative)).mean()

    return loss


LOSSES: dict[str, Callable[[LossSettings], LossFunction]] = {
    "bce": binary_cross_entropy,
    "bce_pos_weight": weighted_binary_cross_entropy,
    "focal": focal,
    "asl": asymmetric,
    "db": distribution_balanced,
    "zlpr": zlpr,
}

# the command-line options of the losses: which losses read each (the others ignore it)
LOSS_OPTIONS = {"pos_weight": ("bce_pos_weight",), "pos_weight_max": ("bce_pos_weight",), "focal_gamma": ("focal", "db"),
                "asl_gamma_neg": ("asl",), "asl_gamma_pos": ("asl",), "asl_clip": ("asl",), "db_neg_scale": ("db",),
                "db_bias_scale": ("db",)}


def get_loss(name: str, settings: LossSettings | None = None) -> LossFunction:
    if name not in LOSSES:
        raise DataError(f"unknown loss {name!r}; registered losses: {', '.join(LOSSES)}")
    return LOSSES[name](settings or LossSettings())


# ------------------------------------------------------------------------------ distillation

HIDDEN_DISTILL_WEIGHT = 0.1  # the reference's lambda_distill on embedding and layer outputs (DynaBERT)


def soft_label_loss(student_logits: paddle.Tensor, teacher_logits: paddle.Tensor,
                    temperature: float = 1.0) -> paddle.Tensor:
    """T^2 x BCE of the student's logits / T against sigmoid(teacher logits / T), in fp32 (under --amp the
    logits may be half precision). Each label is its own yes/no question, so the teacher's target is one
    binary distribution per label; a softmax over labels would couple labels that are independent. The
    T^2 factor keeps the gradient's scale when T changes (Hinton et al. 2015)."""
    student = student_logits.astype("float32") / temperature
    targets = F.sigmoid(teacher_logits.astype("float32") / temperature)
    return temperature ** 2 * F.binary_cross_entropy_with_logits(student, targets)


def hidden_state_loss(student_hidden, teacher_hidden) -> paddle.Tensor:
    """Sum over the paired hidden states (same shapes) of their mean squared difference, in fp32."""
    return sum(F.mse_loss(s.astype("float32"), t.astype("float32")) for s, t in zip(student_hidden, teacher_hidden))


def distillation_loss(student_outputs, teacher_outputs, temperature: float = 1.0,
                      hidden_weight: float = HIDDEN_DISTILL_WEIGHT) -> paddle.Tensor:
    """`soft_label_loss` on the logits plus `hidden_weight` x `hidden_state_loss` on the hidden states;
    each outputs is (logits, hidden states) as a model returns them with output_hidden_states=True."""
    student_logits, student_hidden = student_outputs
    teacher_logits, teacher_hidden = teacher_outputs
    return (soft_label_loss(student_logits, teacher_logits, temperature)
            + hidden_weight * hidden_state_loss(student_hidden, teacher_hidden))
