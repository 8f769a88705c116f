"""What the SimpleServing clients share: JSON over HTTP and reading their texts (standard library only,
so a client machine needs no Paddle).

Both servers (deploy/simple_serving for the classifier, retrieval_based/deploy/simple_serving for the
encoder) take `{"data": ..., "parameters": ...}` and answer `{"result": ...}`, or an HTTP error whose
body says why; a client sends right after starting a server, so it may wait for the server to listen.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


def post(url: str, body: dict | bytes, timeout: float = 60) -> tuple[int, dict]:
    """POST JSON; returns (HTTP status, decoded answer); raises RuntimeError when there is no server."""
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        text = err.read().decode("utf-8", "replace")
        try:
            return err.code, json.loads(text)
        except json.JSONDecodeError:
            return err.code, {"detail": text}
    except urllib.error.URLError as err:
        raise RuntimeError(f"cannot reach {url}: {err.reason} (is the server running?)") from None


def server_result(url: str, data: dict, parameters: dict, timeout: float, wait: float = 0) -> dict:
    """The server's `result` for this request, or RuntimeError with the server's reason.

    With `wait`, a server that does not accept connections yet is asked again until `wait` seconds
    have passed: a readiness check instead of a fixed sleep after starting it.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            status, answer = post(url, {"data": data, "parameters": parameters}, timeout)
            break
        except RuntimeError as err:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{err}; waited {wait:g} s" if wait else str(err)) from None
            time.sleep(1)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {json.dumps(answer, ensure_ascii=False)}")
    return answer["result"]


def client_texts(input_file: str | None, default: list[str]) -> list[str]:
    """The non-blank lines of `input_file`, or `default` when no file is given."""
    if not input_file:
        return default
    with open(input_file, encoding="utf-8-sig") as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]
