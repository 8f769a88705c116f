"""The HTTP variant of seqcls_grpc_client.py (same arguments and output; default port 8000)."""
import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import tritonclient.http as httpclient

from seqcls_grpc_client import main

if __name__ == "__main__":
    main(default_url="localhost:8000", client_module=httpclient)
