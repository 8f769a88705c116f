"""What the servers (SimpleServing, Paddle Serving) share: checking the texts of a request, and the
answer's fields; for SimpleServing (the classifier's and the retrieval encoder's), building the app.

A request comes from anywhere, so its content is checked here and a bad one becomes a DataError
that each server turns into its own error answer (HTTP 422, an error status), never a crash. The
answer keeps the reference's fields and meanings, so clients written for the reference keep
working, and adds label names and, on request, every label's probability, the k most probable
labels, and a label-count policy of its own (decision.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

import numpy as np

from cli import NON_NEGATIVE_INT, PORT
from decision import Decision
from native_tokenizer import tokenize_on_calling_threads
from utils import DataError, logger

MAX_REQUEST_TEXTS = 256  # texts one serving request may carry
MAX_LABEL_COUNT = 1_000_000  # the largest label count a request may name (min_labels, max_labels, top_k)


def texts_of_request(data) -> list[str]:
    """The texts of a SimpleServing request's `data` (`{"text": ...}`), or a DataError saying why not."""
    if not isinstance(data, dict) or "text" not in data:
        raise DataError("the request's 'data' must be an object with a 'text' field")
    return request_texts(data["text"])


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


def request_parameter(parameters: dict, name: str, default, kind: type, low: float, high: float) -> int | float | None:
    """One request parameter, checked: JSON lets clients send any type, and a bad one must be a 422."""
    value = parameters.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
            or (kind is int and value != int(value)):
        raise DataError(f"parameter {name} must be {'an integer' if kind is int else 'a number'} in "
                        f"[{low:g}, {high:g}], got {value!r}")
    return kind(value)


def request_decision(parameters: dict, stored: Decision) -> Decision:
    """The export's decision with a request's `prob_limit`, `min_labels`, `max_labels` and `top_k` over it
    (each checked like any request parameter; a bad combination is a DataError too)."""
    overrides = {name: request_parameter(parameters, name, None, int, 0, MAX_LABEL_COUNT)
                 for name in ("min_labels", "max_labels", "top_k")}
    try:
        return stored.overridden(request_parameter(parameters, "prob_limit", None, float, 0.0, 1.0), **overrides)
    except ValueError as err:
        raise DataError(str(err)) from None


def label_response(logits: np.ndarray, labels: Sequence[str], decision: Decision, with_probs: bool = False) -> dict:
    """Per text: `label`, the ids of the labels the decision chooses, and `confidence`, their
    probabilities (the reference's fields), plus `label_names`; with `with_probs`, `probs`: every
    label's probability in label-id order; with the decision's `top_k`, `top_k`: the k most probable
    labels as {"label", "label_name", "score"}, most probable first."""
    probs = decision.probabilities(logits)
    ids = decision.label_ids(probs)
    response = {"label": ids, "confidence": [[round(float(row[j]), 6) for j in row_ids] for row, row_ids in zip(probs, ids)],
                "label_names": [[labels[j] for j in row_ids] for row_ids in ids]}
    if with_probs:
        response["probs"] = np.round(np.asarray(probs, dtype="float64"), 6).tolist()
    if decision.top_k:
        top_ids, top_probs = decision.top(probs)
        response["top_k"] = [[{"label": int(j), "label_name": labels[j], "score": round(float(p), 6)}
                              for j, p in zip(row_ids, row_probs)] for row_ids, row_probs in zip(top_ids, top_probs)]
    return response


def with_blank_texts(response: dict, blank: Sequence[bool]) -> dict:
    """`response` (an entry per non-blank text) with an entry per text: blank texts get empty lists
    (no label) and, in `probs`, null, as predict.py writes no probabilities for a blank line."""
    def spread(values: list, empty):
        answers = iter(values)
        return [empty if is_blank else next(answers) for is_blank in blank]

    return {key: spread(values, None if key == "probs" else []) for key, values in response.items()}


def add_simple_server_arguments(parser: argparse.ArgumentParser, export_dir: str, export_help: str, port: int) -> None:
    """The options of a SimpleServing script; the defaults read the environment, as `paddlenlp server`
    gives no command line. The model runs on GPU 0 by default, as the reference's server."""
    parser.add_argument("--export_dir", default=os.environ.get("EXPORT_DIR", export_dir), help=export_help)
    parser.add_argument("--device", choices=["gpu", "cpu"], default=os.environ.get("DEVICE", "gpu"),
                        help="Device that runs the model, defaults to gpu (as the reference's server).")
    parser.add_argument("--device_id", type=NON_NEGATIVE_INT, default=os.environ.get("DEVICE_ID", "0"),
                        help="Which gpu runs the model.")
    parser.add_argument("--host", default="0.0.0.0", help="Address to listen on.")
    parser.add_argument("--port", type=PORT, default=port, help="Port to listen on.")


def simple_server(route: str, settings: argparse.Namespace, model_handler: type, post_handler: type):
    """A SimpleServer answering `route` with the export in `settings.export_dir` on `settings.device`.

    The export is loaded by SimpleServer's model loader (patched in compat, which the server scripts
    import); tokenizing stays on the request's thread, as each request is one batch.
    """
    import paddle
    from paddlenlp import SimpleServer

    if settings.device == "gpu" and not paddle.is_compiled_with_cuda():
        raise DataError("this Paddle build has no GPU support: serve on the CPU with --device cpu "
                        "(or DEVICE=cpu paddlenlp server server:app ...)")
    tokenize_on_calling_threads()
    app = SimpleServer()
    app.register(route, model_path=settings.export_dir, tokenizer_name=settings.export_dir,
                 model_handler=model_handler, post_handler=post_handler,
                 device_id=settings.device_id if settings.device == "gpu" else -1)
    return app


def app_from_environment(parser: argparse.ArgumentParser, build_app: Callable):
    """The app `paddlenlp server server:app` imports: the settings are the parser's defaults, which
    read the environment (EXPORT_DIR, DEVICE, DEVICE_ID); a bad setting ends the process with its reason."""
    try:
        return build_app(parser.parse_args([]))
    except DataError as err:
        logger.error(str(err))
        sys.exit(2)
