"""Send texts to the Paddle Serving pipeline over HTTP and print the label names."""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import json
import urllib.request

from pipeline_io import client_texts, encode_request, print_labels

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--url", default="http://127.0.0.1:9878/seq_cls/prediction", help="service.py's HTTP route.")
parser.add_argument("--input_file", default=None, help="Texts, one per line (default: two examples).")

if __name__ == "__main__":
    args = parser.parse_args()
    texts = client_texts(args.input_file)
    feed = encode_request(texts)
    body = json.dumps({"key": list(feed), "value": list(feed.values())}, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(args.url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    print_labels(texts, dict(zip(answer["key"], answer["value"])), "text")
