"""What the servers (SimpleServing, Paddle Serving) share: checking the texts of a request, and the
answer's fields; for SimpleServing (the classifier's and the retrieval encoder's), building the app:
its size caps and its sharing of the model between concurrent requests.

A request comes from anywhere, so its content is checked here and a bad one becomes a DataError
that each server turns into its own error answer (HTTP 422, or 413 beyond a size cap; an error
status), never a crash. The answer keeps the reference's fields and meanings, so clients written for
the reference keep working, and adds label names and, on request, every label's probability, the k
most probable labels, and a label-count policy of its own (decision.py).
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from cli import NON_NEGATIVE_INT, PORT, POSITIVE_INT
from decision import Decision
from native_tokenizer import tokenize_on_calling_threads
from utils import DataError, logger

if TYPE_CHECKING:
    from paddlenlp import SimpleServer

MAX_REQUEST_TEXTS = 256  # texts one serving request may carry
MAX_LABEL_COUNT = 1_000_000  # the largest label count a request may name (min_labels, max_labels, top_k)
# SimpleServing's default size caps (--max_text_chars, --max_request_bytes): twice a long legal judgment
# (50,000 characters) per text, and 10 MiB per request body (about 3.5 million Chinese characters as
# UTF-8, 1.7 million as JSON \u escapes).
MAX_TEXT_CHARS = 100_000
MAX_REQUEST_BYTES = 10 * 2**20


class TooLarge(DataError):
    """A text or a request beyond a size cap: answered with HTTP 413 rather than 422, since the request
    is well formed and a higher cap would serve it."""


def texts_of_request(data, max_text_chars: int | None = None) -> list[str]:
    """The texts of a SimpleServing request's `data` (`{"text": ...}`), or a DataError saying why not
    (a TooLarge one for a text longer than `max_text_chars`)."""
    if not isinstance(data, dict) or "text" not in data:
        raise DataError("the request's 'data' must be an object with a 'text' field")
    return request_texts(data["text"], max_text_chars=max_text_chars)


def request_texts(value, max_texts: int = MAX_REQUEST_TEXTS, max_text_chars: int | None = None) -> list[str]:
    """The texts of a serving request (a string or a list of strings), or a DataError saying why not."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise DataError("'text' must be a string or a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"text[{i}] is {type(text).__name__}, not a string")
    if len(texts) > max_texts:
        raise DataError(f"{len(texts)} texts in one request; at most {max_texts}")
    if max_text_chars is not None:
        check_text_sizes(texts, max_text_chars)
    return texts


def check_text_sizes(texts: Sequence[str], max_text_chars: int) -> None:
    """TooLarge for the first text over the cap: tokenizing one huge text would hold the server's
    attention for seconds, and reading it in windows keeps only its first windows anyway."""
    for i, text in enumerate(texts):
        if len(text) > max_text_chars:
            raise TooLarge(f"text[{i}] has {len(text)} characters; at most {max_text_chars} "
                           f"(--max_text_chars / MAX_TEXT_CHARS raises the cap)")


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
    parser.add_argument("--max_text_chars", type=POSITIVE_INT, default=os.environ.get("MAX_TEXT_CHARS", MAX_TEXT_CHARS),
                        help=f"Longest text a request may carry, in characters (default {MAX_TEXT_CHARS:,}); "
                             f"a longer one is refused with HTTP 413.")
    parser.add_argument("--max_request_bytes", type=POSITIVE_INT,
                        default=os.environ.get("MAX_REQUEST_BYTES", MAX_REQUEST_BYTES),
                        help=f"Largest request body, in bytes (default {MAX_REQUEST_BYTES:,}, 10 MiB); a larger "
                             f"one is refused with HTTP 413 before it is parsed.")
    parser.add_argument("--host", default="0.0.0.0", help="Address to listen on.")
    parser.add_argument("--port", type=PORT, default=port, help="Port to listen on.")


def refusal(err: DataError) -> Exception:
    """The HTTP error a SimpleServing handler raises for a refused request: 413 for a size cap, else 422."""
    from fastapi import HTTPException

    return HTTPException(status_code=413 if isinstance(err, TooLarge) else 422, detail=str(err))


class TakingTurns:
    """The model runner the concurrent requests of a server share: one batch runs at a time (an engine
    is not safe to call from two threads at once), and waiting batches run in their order of arrival.

    A request asks for its next batch only after its last one ran, so first-come-first-served over
    batches is a round robin over requests: a one-text request waits for at most one batch of a long
    request in progress, not for all of it. The turn is handed to the next waiting batch directly (a
    plain lock would not do: the thread that releases it usually takes it again before a waiting
    thread wakes), and only that batch's thread is woken.
    """

    def __init__(self, runner):
        self.runner = runner
        self._guard = threading.Lock()
        self._busy = False
        self._waiting: collections.deque[threading.Event] = collections.deque()

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        turn = None
        with self._guard:
            if self._busy:
                turn = threading.Event()
                self._waiting.append(turn)
            self._busy = True
        if turn is not None:
            turn.wait()
        try:
            return self.runner.run(feed)
        finally:
            with self._guard:
                if self._waiting:
                    self._waiting.popleft().set()
                else:
                    self._busy = False


async def drain(receive) -> None:
    """Read and drop the rest of a request body, so that the refusal reaches the client: a client that
    sends its whole body before reading the answer (urllib, requests) sees only a reset connection when
    the server answers and closes first."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


class BodySizeCap:
    """ASGI middleware refusing (HTTP 413) a request body over `max_bytes` before it is parsed or kept:
    when Content-Length says so, before any of it is kept (a client that waits for `100 Continue`, as
    curl does, is answered without sending it); for a chunked body, as soon as the bytes received pass
    the cap. A body is parsed whole on the server's event loop, so a huge one would stall every
    connection, not just its own."""

    def __init__(self, app: Callable, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def reason(self, size: int | str) -> str:
        return (f"the request body is {size} bytes; at most {self.max_bytes} "
                f"(--max_request_bytes / MAX_REQUEST_BYTES raises the cap)")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from fastapi import HTTPException
        from fastapi.responses import JSONResponse
        from starlette.datastructures import Headers

        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            if headers.get("expect", "").lower() != "100-continue":
                await drain(receive)
            return await JSONResponse({"detail": self.reason(declared)}, status_code=413)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # FastAPI answers an HTTPException raised while it reads the body
                if message.get("more_body", False):
                    await drain(receive)
                raise HTTPException(status_code=413, detail=self.reason(f"more than {self.max_bytes}"))
            return message

        await self.app(scope, counted_receive, send)


def answer_concurrently(app: "SimpleServer", max_text_chars: int) -> None:
    """Let SimpleServer run requests side by side: its ModelManager.predict holds the model's lock for
    a whole request, so a one-text request would wait for all of a long one in progress. Here a
    request holds nothing while its texts are checked and tokenized (on the request's own thread from
    FastAPI's pool) or its answer is built; only the model's batches take turns (`TakingTurns`). Each
    predictor also carries the text-size cap its handler checks."""
    manager = app._model_manager
    for predictor in manager._predictor_list:
        predictor.backend = TakingTurns(predictor.backend)
        predictor.max_text_chars = max_text_chars

    def predict(data, parameters):
        predictor = manager._predictor_list[manager._get_predict_id()]
        return manager._post_handler(manager._model_handler(predictor, manager._tokenizer, data, parameters),
                                     parameters)

    manager.predict = predict


# the upstream functions the patches below replace, kept for tests/test_compat.py's canaries
UPSTREAM: dict[str, Callable] = {}


def _predictor_from_export(self) -> None:
    """Replaces paddlenlp.server.predictor.Predictor._create_predictor (SimpleServer's model loader;
    `load_exports_in_simple_server` applies it).

    Defect (paddlenlp 2.8.1 on Paddle 3): it only looks for pre-PIR `<name>.pdmodel` programs, so
    SimpleServer.register on a Paddle 3 export (`<name>.json`) fails with "The model path do not
    include the inference model, please check!"; past that, `_is_int8_model` walks legacy program
    blocks and the CPU config enables memory_optimize_pass, which fails under PIR. The same engine
    (Paddle Inference) is built by backends.create_backend from the export's metadata instead: the
    classifier's (export_model.py) or the retrieval encoder's (retrieval_based/export_model.py).
    """
    from backends import create_backend
    from exporting import export_prefix_in, load_export
    from semantic_index import is_encoder_export, load_encoder_export

    device, _, index = self._device.partition(":")
    if is_encoder_export(self._model_path):
        self.export = load_encoder_export(self._model_path, device, self._precision, self._num_threads,
                                          device_id=int(index or 0))
        self.backend = self.export.engine
    else:
        self.export = load_export(export_prefix_in(self._model_path))
        self.backend = create_backend(self.export, "paddle", self._precision, device, int(index or 0),
                                      self._num_threads)
    self._predictor_type, self._output_num = "paddle_inference", 1


def load_exports_in_simple_server() -> None:
    """Patch SimpleServer's model loader to load the suite's Paddle 3 exports (`_predictor_from_export`);
    `simple_server` applies it before registering a model, so no import has to come first."""
    from paddlenlp.server import predictor

    if predictor.Predictor._create_predictor is not _predictor_from_export:
        UPSTREAM.setdefault("create_predictor", predictor.Predictor._create_predictor)
        predictor.Predictor._create_predictor = _predictor_from_export


def simple_server(route: str, settings: argparse.Namespace, model_handler: type, post_handler: type):
    """A SimpleServer answering `route` with the export in `settings.export_dir` on `settings.device`,
    with the size caps of `settings` and requests answered concurrently (`answer_concurrently`).

    The export is loaded by SimpleServer's model loader, patched here for Paddle 3 exports
    (`load_exports_in_simple_server`); tokenizing stays on the request's thread.
    """
    import paddle
    from paddlenlp import SimpleServer

    if settings.device == "gpu" and not paddle.is_compiled_with_cuda():
        raise DataError("this Paddle build has no GPU support: serve on the CPU with --device cpu "
                        "(or DEVICE=cpu paddlenlp server server:app ...)")
    tokenize_on_calling_threads()
    load_exports_in_simple_server()
    app = SimpleServer()
    app.register(route, model_path=settings.export_dir, tokenizer_name=settings.export_dir,
                 model_handler=model_handler, post_handler=post_handler,
                 device_id=settings.device_id if settings.device == "gpu" else -1)
    answer_concurrently(app, settings.max_text_chars)
    app.add_middleware(BodySizeCap, max_bytes=settings.max_request_bytes)
    return app


def app_from_environment(parser: argparse.ArgumentParser, build_app: Callable):
    """The app `paddlenlp server server:app` imports: the settings are the parser's defaults, which
    read the environment (EXPORT_DIR, DEVICE, DEVICE_ID); a bad setting ends the process with its reason."""
    try:
        return build_app(parser.parse_args([]))
    except DataError as err:
        logger.error(str(err))
        sys.exit(2)
