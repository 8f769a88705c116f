"""Send texts to the Paddle Serving pipeline over RPC and print the label names."""
from __future__ import annotations

import argparse

from paddle_serving_server.pipeline import PipelineClient
from pipeline_io import decode_response, encode_request

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--server", default="127.0.0.1:18090", help="host:rpc_port of service.py.")
parser.add_argument("--input_file", default=None, help="Texts, one per line (default: two examples).")
EXAMPLES = ["原告与被告婚后育有一子", "双方分居至今，原告要求离婚"]

if __name__ == "__main__":
    args = parser.parse_args()
    texts = EXAMPLES
    if args.input_file:
        with open(args.input_file, encoding="utf-8-sig") as handle:
            texts = [line.rstrip("\r\n") for line in handle if line.strip()]
    client = PipelineClient()
    client.connect([args.server])
    feed = encode_request(texts)
    answer = client.predict(feed_dict=feed, fetch=["label", "confidence"])
    labels, _ = decode_response(dict(zip(answer.key, answer.value)))
    for text, names in zip(texts, labels):
        print("data: ", text)
        print("label: ", ",".join(names))
        print("-" * 20)
