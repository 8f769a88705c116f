"""Send texts to the embedding server (server.py) and print their embeddings, as the reference's rpc_client.py does."""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import sys
import time

import numpy as np

from cli import NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, POSITIVE_INT, SEQ_LENGTH, ArgumentParser
from http_json import client_texts, server_result

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--max_seq_len", default=128, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Batch size the server uses for these texts.")
parser.add_argument("--url", default="http://127.0.0.1:8190/models/semantic_index", help="The server's model route.")
parser.add_argument("--input_file", default=None, help="Texts to embed, one per line (default: the reference's sample sentence).")
parser.add_argument("--timeout", default=60, type=POSITIVE_FLOAT, help="Seconds to wait for the answer.")
parser.add_argument("--wait", default=0, type=NON_NEGATIVE_FLOAT, help="Seconds to wait for a server that is still starting (it loads its model first); 0: fail at once.")
# yapf: enable

EXAMPLE = "中国农业大学怎么样？可以吗？"


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    texts = client_texts(args.input_file, [EXAMPLE])
    start = time.time()
    try:
        result = server_result(args.url, {"text": texts}, {"max_seq_len": args.max_seq_len, "batch_size": args.batch_size},
                               args.timeout, args.wait)
    except RuntimeError as err:
        sys.exit(f"error: {err}")
    print("time to cost :{} seconds".format(time.time() - start))
    embeddings = np.asarray(result["embedding"], dtype="float32")
    print(f"encoder: {result['encoder']}")
    print(embeddings.shape)
    print(embeddings)


if __name__ == "__main__":
    main()
