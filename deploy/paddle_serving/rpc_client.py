"""Send texts to the Paddle Serving pipeline over RPC and print the label names."""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse

from paddle_serving_server.pipeline import PipelineClient

from pipeline_io import client_texts, encode_request, print_labels

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--server", default="127.0.0.1:18090", help="host:rpc_port of service.py.")
parser.add_argument("--input_file", default=None, help="Texts, one per line (default: two examples).")

if __name__ == "__main__":
    args = parser.parse_args()
    texts = client_texts(args.input_file)
    client = PipelineClient()
    client.connect([args.server])
    feed = encode_request(texts)
    answer = client.predict(feed_dict=feed, fetch=["label", "confidence"])
    print_labels(texts, dict(zip(answer.key, answer.value)), "data")
