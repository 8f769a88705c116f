"""Send texts to the Paddle Serving pipeline over HTTP and print the label names."""
from __future__ import annotations

import argparse
import json
import urllib.request

from pipeline_io import decode_response, encode_request

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--url", default="http://127.0.0.1:9878/seq_cls/prediction", help="service.py's HTTP route.")
parser.add_argument("--input_file", default=None, help="Texts, one per line (default: two examples).")
EXAMPLES = ["原告与被告婚后育有一子", "双方分居至今，原告要求离婚"]

if __name__ == "__main__":
    args = parser.parse_args()
    texts = EXAMPLES
    if args.input_file:
        with open(args.input_file, encoding="utf-8-sig") as handle:
            texts = [line.rstrip("\r\n") for line in handle if line.strip()]
    feed = encode_request(texts)
    body = json.dumps({"key": list(feed), "value": list(feed.values())}, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(args.url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    labels, _ = decode_response(dict(zip(answer["key"], answer["value"])))
    for text, names in zip(texts, labels):
        print("text: ", text)
        print("label: ", ",".join(names))
        print("-" * 20)
