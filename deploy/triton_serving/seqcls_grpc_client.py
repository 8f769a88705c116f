"""Send texts to the Triton ensemble `seqcls` over gRPC and print the label names it returns.

    python deploy/triton_serving/seqcls_grpc_client.py --url localhost:8001 [--input_file texts.txt]
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from cli import NON_NEGATIVE_FLOAT, POSITIVE_INT, ArgumentParser

EXAMPLES = [
    "经审理查明，原告王某某与被告刘某某于1996年经人介绍相识，后二人自由恋爱，婚后育有一子。",
    "2015年3月，被告离家外出务工，双方分居至今，原告诉至本院，要求与被告离婚。",
    "被告未按照调解协议约定的期限支付抚养费。",
]


def build_parser(default_url: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=default_url, help="host:port of the server.")
    parser.add_argument("--model_name", default="seqcls", help="The ensemble to query.")
    parser.add_argument("--input_file", default=None, help="Texts to label, one per line (default: three examples).")
    parser.add_argument("--batch_size", type=POSITIVE_INT, default=32, help="Texts per request.")
    parser.add_argument("--wait", type=NON_NEGATIVE_FLOAT, default=0, help="Seconds to wait for a server that is still loading its models; 0: fail at once.")
    return parser


class SyncTritonRunner:
    """One client for the ensemble: checks the server and model are ready, then labels texts."""

    def __init__(self, url: str, model_name: str, client_module=grpcclient):
        self.module, self.model_name = client_module, model_name
        self.client = client_module.InferenceServerClient(url)
        if not (self.client.is_server_live() and self.client.is_server_ready()):
            raise RuntimeError(f"Triton at {url} is not live and ready")
        if not self.client.is_model_ready(model_name):
            raise RuntimeError(f"model {model_name} is not ready on {url}")

    def run(self, texts: list[str]) -> tuple[list[str], list[list[float]]]:
        """Comma-joined label names per text ("" when none) and the probabilities of those labels."""
        data = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
        infer_input = self.module.InferInput("INPUT", list(data.shape), "BYTES")
        infer_input.set_data_from_numpy(data)
        outputs = [self.module.InferRequestedOutput(name) for name in ("label", "confidence", "label_names")]
        result = self.client.infer(self.model_name, [infer_input], outputs=outputs)
        confidences = [[float(p) for i, p in zip(ids, row) if i >= 0]  # -1 pads rows to the batch's longest
                       for ids, row in zip(result.as_numpy("label"), result.as_numpy("confidence"))]
        return [row[0].decode("utf-8") for row in result.as_numpy("label_names")], confidences


def connect(url: str, model_name: str, client_module, wait: float) -> SyncTritonRunner:
    """A runner for a live and ready model, asking again every second for up to `wait` seconds
    (a readiness check instead of a fixed sleep after starting the server)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return SyncTritonRunner(url, model_name, client_module)
        except (RuntimeError, InferenceServerException, ConnectionError, OSError) as err:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{err}; waited {wait:g} s" if wait else str(err)) from None
            time.sleep(1)


def main(argv: list[str] | None = None, default_url: str = "localhost:8001", client_module=grpcclient) -> None:
    args = build_parser(default_url).parse_args(argv)
    if args.input_file:
        with open(args.input_file, encoding="utf-8-sig") as handle:
            texts = [line.rstrip("\r\n") for line in handle if line.strip()]
    else:
        texts = EXAMPLES
    try:
        runner = connect(args.url, args.model_name, client_module, args.wait)
        for start in range(0, len(texts), args.batch_size):
            batch = texts[start:start + args.batch_size]
            labels, probs = runner.run(batch)
            for text, names, row in zip(batch, labels, probs):
                print(f"text: {text}")
                print(f"label: {names}")
                print(f"confidence: {','.join(f'{p:.3f}' for p in row)}")
                print("-" * 20)
    except (RuntimeError, InferenceServerException, ConnectionError, OSError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
