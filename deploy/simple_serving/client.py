"""Send texts to the SimpleServer (server.py) and print the labels it returns."""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import sys

from cli import (
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    PROBABILITY,
    SEQ_LENGTH,
    ArgumentParser,
)
from http_json import client_texts, server_result

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--max_seq_len", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization.")
parser.add_argument("--batch_size", default=1, type=POSITIVE_INT, help="Batch size the server uses for these texts.")
parser.add_argument("--prob_limit", default=None, type=PROBABILITY, help="One threshold for every label; by default the server uses the exported per-label thresholds.")
parser.add_argument("--min_labels", default=None, type=NON_NEGATIVE_INT, help="At least this many labels per text (default: the export's setting).")
parser.add_argument("--max_labels", default=None, type=NON_NEGATIVE_INT, help="At most this many labels per text, 0 for no cap (default: the export's setting).")
parser.add_argument("--top_k", default=None, type=NON_NEGATIVE_INT, help="Also print the k most probable labels with their probabilities (default: the export's setting).")
parser.add_argument("--url", default="http://127.0.0.1:8189/models/cls_multi_label", help="The server's model route.")
parser.add_argument("--input_file", default=None, help="Texts to label, one per line (default: three example sentences).")
parser.add_argument("--timeout", default=60, type=POSITIVE_FLOAT, help="Seconds to wait for the answer.")
parser.add_argument("--wait", default=0, type=NON_NEGATIVE_FLOAT, help="Seconds to wait for a server that is still starting (it loads its model first); 0: fail at once.")
# yapf: enable

EXAMPLES = [
    "经审理查明，原告王某某与被告刘某某于1996年经人介绍相识，后二人自由恋爱，婚后育有一子。",
    "2015年3月，被告离家外出务工，双方分居至今，原告诉至本院，要求与被告离婚。",
    "被告未按照调解协议约定的期限支付抚养费。",
]


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    texts = client_texts(args.input_file, EXAMPLES)
    parameters = {"max_seq_len": args.max_seq_len, "batch_size": args.batch_size}
    for name in ("prob_limit", "min_labels", "max_labels", "top_k"):
        if getattr(args, name) is not None:
            parameters[name] = getattr(args, name)
    try:
        result = server_result(args.url, {"text": texts}, parameters, args.timeout, args.wait)
    except RuntimeError as err:
        sys.exit(f"error: {err}")
    tops = result.get("top_k", [None] * len(texts))
    for text, names, probs, top in zip(texts, result["label_names"], result["confidence"], tops):
        print(f"text: {text}")
        print(f"label: {','.join(names)}")
        print(f"confidence: {','.join(f'{p:.3f}' for p in probs)}")
        if top is not None:
            print("top_k: " + ",".join(f"{item['label_name']}:{item['score']:.3f}" for item in top))
        print("-" * 20)


if __name__ == "__main__":
    main()
