"""What the servers (SimpleServing, Paddle Serving) share: checking the texts of a request, and the
answer's fields.

A request comes from anywhere, so its content is checked here and a bad one becomes a DataError
that each server turns into its own error answer (HTTP 422, an error status), never a crash. The
answer keeps the reference's fields and meanings, so clients written for the reference keep
working, and adds label names and, on request, every label's probability.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline import predicted_labels
from utils import DataError

MAX_REQUEST_TEXTS = 256  # texts one serving request may carry


def request_texts(value, max_texts: int = MAX_REQUEST_TEXTS) -> list[str]:
    """The texts of a serving request (a string or a list of strings), or a DataError saying why not."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise DataError("'text' must be a string or a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"text[{i}] is {type(text).__name__}, not a string")
    if len(texts) > max_texts:
        raise DataError(f"{len(texts)} texts in one request; at most {max_texts}")
    return texts


def label_response(probs: np.ndarray, labels: Sequence[str], thresholds, with_probs: bool = False) -> dict:
    """Per text: `label`, the ids of the labels above their threshold, and `confidence`, their
    probabilities (the reference's fields), plus `label_names` and, with `with_probs`, `probs`:
    every label's probability in label-id order."""
    ids, names, confidences = predicted_labels(probs, labels, thresholds)
    response = {"label": ids, "confidence": confidences, "label_names": names}
    if with_probs:
        response["probs"] = np.round(np.asarray(probs, dtype="float64"), 6).tolist()
    return response
