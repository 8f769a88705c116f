"""serving.py's size caps and model sharing, without a model: the text cap, the body cap in front of a
FastAPI app, the options that set them, and the order in which concurrent requests' batches run."""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving import (
    MAX_REQUEST_BYTES,
    MAX_TEXT_CHARS,
    BodySizeCap,
    TakingTurns,
    TooLarge,
    add_simple_server_arguments,
    refusal,
    request_texts,
    texts_of_request,
)
from utils import DataError


def test_a_text_over_the_cap_is_refused_with_413_naming_the_option():
    assert texts_of_request({"text": ["a" * 10, "b"]}, max_text_chars=10) == ["a" * 10, "b"]
    with pytest.raises(TooLarge) as caught:
        texts_of_request({"text": ["b", "a" * 11]}, max_text_chars=10)
    assert "text[1] has 11 characters; at most 10" in str(caught.value) and "--max_text_chars" in str(caught.value)
    assert refusal(caught.value).status_code == 413
    assert refusal(DataError("'text' must be a string")).status_code == 422
    assert request_texts("a" * 10**6) == ["a" * 10**6]  # Paddle Serving's check: no cap


def capped_app(max_bytes: int) -> TestClient:
    app = FastAPI()

    @app.post("/echo")
    def echo(body: dict) -> dict:
        return {"size": len(body["text"])}

    app.add_middleware(BodySizeCap, max_bytes=max_bytes)
    return TestClient(app)


def test_a_body_over_the_cap_is_refused_with_413_and_the_app_keeps_serving():
    client = capped_app(100)
    assert client.post("/echo", json={"text": "a" * 50}).json() == {"size": 50}
    body = b'{"text": "' + b"a" * 200 + b'"}'
    answer = client.post("/echo", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert f"{len(body)} bytes" in answer.json()["detail"] and "at most 100" in answer.json()["detail"]
    assert "--max_request_bytes" in answer.json()["detail"]
    assert client.post("/echo", json={"text": "a"}).json() == {"size": 1}


def test_a_chunked_body_over_the_cap_is_refused_as_it_arrives():
    """Without Content-Length the bytes are counted as they come."""
    client = capped_app(100)

    def chunks(count: int):
        yield b'{"text": "'
        yield from [b"a" * 10] * count
        yield b'"}'

    assert client.post("/echo", content=chunks(5), headers={"Content-Type": "application/json"}).json() == {"size": 50}
    answer = client.post("/echo", content=chunks(20), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "more than 100 bytes; at most 100" in answer.json()["detail"]


def test_the_caps_have_documented_defaults_and_read_the_environment(monkeypatch):
    parser = argparse.ArgumentParser()
    add_simple_server_arguments(parser, "export", "help", 8189)
    settings = parser.parse_args([])
    assert (settings.max_text_chars, settings.max_request_bytes) == (MAX_TEXT_CHARS, MAX_REQUEST_BYTES) \
        == (100_000, 10 * 2**20)
    assert "100,000" in parser.format_help() and "10,485,760" in parser.format_help()
    monkeypatch.setenv("MAX_TEXT_CHARS", "500")
    monkeypatch.setenv("MAX_REQUEST_BYTES", "2000")
    parser = argparse.ArgumentParser()
    add_simple_server_arguments(parser, "export", "help", 8189)
    settings = parser.parse_args([])
    assert (settings.max_text_chars, settings.max_request_bytes) == (500, 2000)


class RecordingRunner:
    """Records the batches it runs; the first one waits until the test lets it finish."""

    def __init__(self):
        self.ran: list[str] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def run(self, feed: dict) -> np.ndarray:
        if not self.ran and not self.entered.is_set():
            self.entered.set()
            self.release.wait()
        if feed["id"] == "fail":
            raise RuntimeError("engine failure")
        self.ran.append(feed["id"])
        return np.zeros((1, 2))


def wait_for(condition) -> None:
    """Poll until `condition()` holds (the threads are the test's own, so it does)."""
    while not condition():
        time.sleep(0.01)


def test_batches_of_concurrent_requests_take_turns_in_arrival_order():
    """A long request's next batch waits behind a batch that arrived while its last one ran."""
    runner = RecordingRunner()
    turns = TakingTurns(runner)
    long = threading.Thread(target=lambda: [turns.run({"id": name}) for name in ("long 1", "long 2", "long 3")])
    long.start()
    runner.entered.wait()
    short = threading.Thread(target=turns.run, args=({"id": "short"},))
    short.start()
    wait_for(lambda: len(turns._waiting) == 1)  # the short batch is waiting for its turn
    runner.release.set()
    long.join()
    short.join()
    assert runner.ran == ["long 1", "short", "long 2", "long 3"]


def test_a_failing_batch_passes_the_turn_on():
    runner = RecordingRunner()
    runner.entered.set()  # no waiting
    turns = TakingTurns(runner)
    with pytest.raises(RuntimeError, match="engine failure"):
        turns.run({"id": "fail"})
    turns.run({"id": "next"})
    assert runner.ran == ["next"]


class CountingRunner:
    """Counts the batches it runs and how many ran at the same time."""

    def __init__(self):
        self.running = self.most_at_once = self.ran = 0
        self.guard = threading.Lock()

    def run(self, feed: dict) -> np.ndarray:
        with self.guard:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.001)  # let other threads try to enter
        with self.guard:
            self.running -= 1
            self.ran += 1
        return np.full((1, 1), feed["id"])


def test_many_requests_at_once_run_one_batch_at_a_time_and_each_gets_its_own_outputs():
    runner = CountingRunner()
    turns = TakingTurns(runner)
    outputs: dict[int, list[float]] = {}

    def request(number: int) -> None:
        outputs[number] = [float(turns.run({"id": number * 100 + batch})[0, 0]) for batch in range(20)]

    threads = [threading.Thread(target=request, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert runner.most_at_once == 1 and runner.ran == 160
    assert outputs == {number: [number * 100.0 + batch for batch in range(20)] for number in range(8)}
