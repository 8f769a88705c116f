"""The one decision step: a model's logits -> (calibrated) probabilities -> the labels of each text.

Every consumer (training and few-shot evaluation, predict.py and its backends, deploy/predictor,
the three servers, Triton's postprocess, the analysis scripts) turns outputs into labels through a
`Decision`, so they cannot disagree. A decision is stored with the checkpoint (config keys
`multi_label_thresholds` and `multi_label_decision`) and with the export (`export_meta.json`), and
every command and server request may override its policy.

The policy, for one text:
1. the labels whose probability is above their threshold pass (the reference's rule); a label whose
   threshold is 1 or more is switched off and never chosen;
2. `max_labels` k keeps the k most probable of those that pass;
3. `min_labels` k adds the most probable of the others until k labels are chosen.
Ties in probability go to the lower label id. Chosen labels are listed in label-id order, as the
reference lists them. `top_k` is output, not decision: the k most probable labels with their
probabilities, whatever passes.

Calibration maps each label's logit z to sigmoid(scale * z + bias) (Platt scaling; temperature
scaling is bias 0 and scale 1/T), fitted on dev data. A fine-tuned model's sigmoid outputs are not
probabilities one can route on ("send texts under 0.7 to review"); calibrated ones are. Thresholds
are stored on the calibrated scale and moved with it, so calibrating never changes a label.

Only NumPy and SciPy: Triton's python model loads a copy of this file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.special import expit, logit

CONFIG_KEY = "multi_label_decision"  # the checkpoint config's and export meta's key of the settings below
CALIBRATION_METHODS = ("platt", "temperature")
NO_CALIBRATION = "none"  # calibrate.py: remove a stored calibration
NEWTON_STEPS = 100
HALVINGS = 30  # step halvings per Newton step before a label keeps its parameters
MIN_SCALE = 1e-2  # a fitted scale at or below this leaves the label uncalibrated


@dataclass(frozen=True)
class Calibration:
    """Per label, calibrated probability = sigmoid(scale * logit + bias); scale > 0 keeps each label's
    ranking of texts, so a threshold can move with it."""

    method: str
    scale: np.ndarray
    bias: np.ndarray

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return expit(self.scale * np.asarray(logits, dtype="float64") + self.bias)

    def move_thresholds(self, raw_thresholds: np.ndarray) -> np.ndarray:
        """Thresholds on the calibrated scale that choose what `raw_thresholds` chose on sigmoid(logit)."""
        raw = np.asarray(raw_thresholds, dtype="float64")
        inside = (raw > 0) & (raw < 1)
        moved = expit(self.scale * logit(np.clip(raw, 1e-12, 1 - 1e-12)) + self.bias)
        return np.where(inside, moved, raw)

    def raw_thresholds(self, thresholds: np.ndarray) -> np.ndarray:
        """The inverse of `move_thresholds`: the same cuts on the uncalibrated sigmoid scale."""
        moved = np.asarray(thresholds, dtype="float64")
        inside = (moved > 0) & (moved < 1)
        raw = expit((logit(np.clip(moved, 1e-12, 1 - 1e-12)) - self.bias) / self.scale)
        return np.where(inside, raw, moved)

    def as_dict(self) -> dict:
        return {"method": self.method, "scale": [float(s) for s in self.scale],
                "bias": [float(b) for b in self.bias]}

    @classmethod
    def from_dict(cls, stored: dict, num_labels: int) -> "Calibration":
        scale, bias = np.asarray(stored["scale"], dtype="float64"), np.asarray(stored["bias"], dtype="float64")
        if scale.shape != (num_labels,) or bias.shape != (num_labels,) or not (scale > 0).all():
            raise ValueError(f"the stored calibration needs {num_labels} positive scales and {num_labels} biases")
        return cls(stored.get("method", "platt"), scale, bias)


@dataclass(frozen=True)
class Decision:
    """How probabilities become labels; see the module docstring. `max_labels` None: no cap."""

    thresholds: np.ndarray
    min_labels: int = 0
    max_labels: int | None = None
    top_k: int = 0
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        for name in ("min_labels", "top_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.max_labels is not None and self.max_labels < 1:
            raise ValueError(f"max_labels must be 1 or more, got {self.max_labels}")
        if self.max_labels is not None and self.min_labels > self.max_labels:
            raise ValueError(f"min_labels {self.min_labels} is more than max_labels {self.max_labels}")

    @property
    def num_labels(self) -> int:
        return len(self.thresholds)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """[texts, labels] probabilities: calibrated when the decision has a calibration."""
        if self.calibration is None:
            return expit(np.asarray(logits))
        return self.calibration.probabilities(logits).astype(np.asarray(logits).dtype)

    def chosen(self, probs: np.ndarray) -> np.ndarray:
        """[texts, labels] booleans: the labels the policy gives each text."""
        probs = np.asarray(probs).reshape(-1, self.num_labels)
        thresholds = np.asarray(self.thresholds, dtype=probs.dtype)
        passed = probs > thresholds
        if self.min_labels == 0 and self.max_labels is None:
            return passed
        enabled = thresholds < 1
        keep = np.clip(passed.sum(1), self.min_labels, self.max_labels)
        # passed labels first, then the other enabled ones, each group by probability, ties by label id
        key = np.where(passed, 2 + probs, np.where(enabled, probs, -1))
        rank = np.empty_like(passed, dtype="int64")
        np.put_along_axis(rank, np.argsort(-key, axis=1, kind="stable"), np.arange(self.num_labels)[None], axis=1)
        return (rank < keep[:, None]) & enabled

    def label_ids(self, probs: np.ndarray) -> list[list[int]]:
        """Per text, the chosen label ids in label-id order (maybe none)."""
        return [np.flatnonzero(row).tolist() for row in self.chosen(probs)]

    def margins(self, probs: np.ndarray) -> np.ndarray:
        """[texts, labels] distance of each probability from its label's threshold on the logit scale, where
        0.10 against a threshold of 0.05 is as far as 0.68 against 0.5: how unsure the decision is (the
        annotation queue's order). A switched-off label is infinitely far: no text is unsure about it."""
        clipped = np.clip(np.asarray(probs, dtype="float64").reshape(-1, self.num_labels), 1e-7, 1 - 1e-7)
        cut = np.clip(np.asarray(self.thresholds, dtype="float64"), 1e-7, 1 - 1e-7)
        return np.where(np.asarray(self.thresholds) < 1, np.abs(logit(clipped) - logit(cut)), np.inf)

    def top(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([texts, k] label ids, [texts, k] probabilities) of the `top_k` most probable labels, most
        probable first, ties by label id (k capped at the label count)."""
        probs = np.asarray(probs).reshape(-1, self.num_labels)
        ids = np.argsort(-probs, axis=1, kind="stable")[:, :self.top_k]
        return ids, np.take_along_axis(probs, ids, axis=1)

    def overridden(self, threshold: float | None = None, min_labels: int | None = None,
                   max_labels: int | None = None, top_k: int | None = None) -> "Decision":
        """This decision with the given settings replaced (None keeps the stored one; `max_labels` 0
        removes a stored cap); ValueError names a bad combination."""
        changes: dict = {}
        if threshold is not None:
            changes["thresholds"] = np.full(self.num_labels, threshold, dtype="float32")
        if min_labels is not None:
            changes["min_labels"] = min_labels
        if max_labels is not None:
            changes["max_labels"] = max_labels or None
        if top_k is not None:
            changes["top_k"] = top_k
        return dataclasses.replace(self, **changes)

    def settings(self) -> dict:
        """What is stored beside the thresholds (checkpoint config and export meta)."""
        return {"min_labels": self.min_labels, "max_labels": self.max_labels, "top_k": self.top_k,
                "calibration": None if self.calibration is None else self.calibration.as_dict()}

    @classmethod
    def stored(cls, thresholds: Sequence[float] | None, settings: dict | None, num_labels: int) -> "Decision":
        """The decision of a checkpoint or export; one written before these settings existed decides
        as it always did (its thresholds, or 0.5 for every label)."""
        settings = settings or {}
        calibration = settings.get("calibration")
        return cls(np.asarray(thresholds if thresholds else [0.5] * num_labels, dtype="float32"),
                   int(settings.get("min_labels", 0)), settings.get("max_labels"), int(settings.get("top_k", 0)),
                   None if calibration is None else Calibration.from_dict(calibration, num_labels))

    def calibrated(self, calibration: Calibration | None) -> "Decision":
        """This decision with another calibration; thresholds move so the chosen labels stay the same."""
        raw = self.thresholds if self.calibration is None else self.calibration.raw_thresholds(self.thresholds)
        moved = raw if calibration is None else calibration.move_thresholds(raw)
        return dataclasses.replace(self, thresholds=np.asarray(moved, dtype="float32"), calibration=calibration)


def fit_calibration(logits: np.ndarray, targets: np.ndarray, method: str = "platt"
                    ) -> tuple[Calibration, list[int]]:
    """Per-label Platt (scale and bias) or temperature (scale only) scaling that minimises the log loss
    on (dev) data, with Platt's smoothed targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2) so a label with
    few positives is not pushed to 0 or 1. Returns the calibration and the ids of labels left
    uncalibrated (scale 1, bias 0): the data has no positive or no negative for them, or their best
    scale is not positive (the logit does not rank the dev texts of that label; calibrating would
    flatten its probabilities and change its labels).

    Damped Newton's method on all labels at once: each label is a two-parameter logistic regression, so
    thousands of labels fit in one vectorised loop; a step that does not lower a label's loss is halved.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration {method!r}: choose from {', '.join(CALIBRATION_METHODS)}")
    z = np.asarray(logits, dtype="float64")
    y = np.asarray(targets, dtype="float64") > 0.5
    positives, negatives = y.sum(0), (~y).sum(0)
    target = np.where(y, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    scale, bias = np.ones(z.shape[1]), np.zeros(z.shape[1])
    loss = _log_loss(z, target, scale, bias)
    for _ in range(NEWTON_STEPS):
        step_scale, step_bias = _newton_step(z, target, scale, bias, method)
        new_scale, new_bias, new_loss = scale - step_scale, bias - step_bias, loss
        for _ in range(HALVINGS):
            new_scale, new_bias = scale - step_scale, bias - step_bias
            new_loss = _log_loss(z, target, new_scale, new_bias)
            worse = ~(new_loss <= loss)
            if not worse.any():
                break
            step_scale, step_bias = np.where(worse, step_scale / 2, step_scale), np.where(worse, step_bias / 2, step_bias)
        better = new_loss <= loss
        converged = np.abs(np.where(better, new_scale - scale, 0)).max() < 1e-9 and \
            np.abs(np.where(better, new_bias - bias, 0)).max() < 1e-9
        scale, bias, loss = np.where(better, new_scale, scale), np.where(better, new_bias, bias), np.minimum(new_loss, loss)
        if converged:
            break
    fitted = (positives > 0) & (negatives > 0) & (scale > MIN_SCALE)
    scale, bias = np.where(fitted, scale, 1.0), np.where(fitted, bias, 0.0)
    return Calibration(method, scale, bias), np.flatnonzero(~fitted).tolist()


def _log_loss(z: np.ndarray, target: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Per label: the cross-entropy of sigmoid(scale * z + bias) against the (smoothed) targets."""
    a = scale * z + bias
    return (target * np.logaddexp(0, -a) + (1 - target) * np.logaddexp(0, a)).sum(0)


def _newton_step(z: np.ndarray, target: np.ndarray, scale: np.ndarray, bias: np.ndarray, method: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per label, Newton's step for (scale, bias) of the log loss (bias fixed at 0 for temperature)."""
    p = expit(scale * z + bias)
    residual, weight = p - target, np.maximum(p * (1 - p), 1e-12)
    g_scale, g_bias = (residual * z).sum(0), residual.sum(0)
    h_ss, h_sb, h_bb = (weight * z * z).sum(0), (weight * z).sum(0), weight.sum(0)
    if method == "temperature":
        return g_scale / np.maximum(h_ss, 1e-12), np.zeros_like(bias)
    det = np.maximum(h_ss * h_bb - h_sb * h_sb, 1e-12)
    return (h_bb * g_scale - h_sb * g_bias) / det, (h_ss * g_bias - h_sb * g_scale) / det


def calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> dict:
    """Expected calibration error over all (text, label) pairs in `bins` equal-width bins, the Brier
    score, and the reliability curve (per non-empty bin: mean probability, observed rate, count)."""
    p = np.asarray(probs, dtype="float64").ravel()
    y = (np.asarray(targets) > 0.5).ravel().astype("float64")
    which = np.minimum((p * bins).astype("int64"), bins - 1)
    count = np.bincount(which, minlength=bins)
    mean_p = np.bincount(which, weights=p, minlength=bins) / np.maximum(count, 1)
    rate = np.bincount(which, weights=y, minlength=bins) / np.maximum(count, 1)
    used = count > 0
    return {"ece": float((count * np.abs(mean_p - rate)).sum() / max(len(p), 1)),
            "brier": float(((p - y) ** 2).mean()) if len(p) else 0.0,
            "reliability": [{"mean_probability": float(m), "observed_rate": float(r), "count": int(c)}
                            for m, r, c in zip(mean_p[used], rate[used], count[used])]}
