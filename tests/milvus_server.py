"""A Milvus standalone server (the `milvus` package) on free ports, for tests and benchmarks.

The package's server binds fixed ports unless told otherwise, and two of them it cannot be told
about: the embedded etcd's client and peer ports (2379, 2380), so a second server on one machine
crashes on them and the package then waits 180 s for a server that is gone. Here every port is
chosen free and given explicitly, the etcd ones through an etcd configuration file that Milvus's
`etcd.config.path` names. Port checks set SO_REUSEADDR: a restart on the same ports otherwise fails
for a minute on the previous run's TIME_WAIT connections. `stop()` is the package's (SIGTERM, a
kill after 1 s: SIGTERM alone can hang); data, including unflushed upserts, survive it, so a
server started again on the same base directory serves the same collections.
"""
from __future__ import annotations

import socket
from pathlib import Path

import milvus
from milvus import MilvusServer, MilvusServerConfig

STARTUP_TIMEOUT_MS = 120000
ROOT_TOKEN = "root:Milvus"  # the administrator every new server has
ETCD_USE_LINE = "  use:\n"


class _ReusingConfig(MilvusServerConfig):
    """The package's configuration with port checks that accept ports in TIME_WAIT, as the server does."""

    def load_template(self):
        super().load_template()
        self.glog_conf_file = str(Path(milvus.__file__).parent / "data" / "glog.conf")  # set only for its own template

    def try_bind_port(self, port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            return sock
        except OSError:
            sock.close()
            return None


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now (bound together, so none is given twice)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _template_with_etcd_config(base_dir: Path) -> Path:
    """The package's milvus.yaml template plus `etcd.config.path`, which it does not expose."""
    template = Path(MilvusServerConfig().template_file).read_text(encoding="utf-8")
    etcd = template.index("\netcd:\n")
    use = template.index(ETCD_USE_LINE, etcd)
    text = template[:use] + "  config:\n    path: {{ etcd_config_path }}\n" + template[use:]
    path = base_dir / "milvus.yaml.template"
    path.write_text(text, encoding="utf-8")
    return path


class MilvusStandalone:
    """One standalone server with its own base directory and ports, kept across stop() and start();
    with `authorization`, clients must sign in (the built-in administrator is ROOT_TOKEN)."""

    def __init__(self, base_dir: Path, authorization: bool = False):
        self.base_dir = Path(base_dir)
        self.authorization = authorization
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.template = _template_with_etcd_config(self.base_dir)
        port_keys = [key for key in _ReusingConfig(template=str(self.template)).configurable_items if key.endswith("_port")]
        ports = free_ports(len(port_keys) + 2)
        self.ports = dict(zip(port_keys, ports))
        self.etcd_peer_port, self.web_port = ports[-2:]
        self.etcd_config = self.base_dir / "embed_etcd.yaml"
        client, peer = f"http://127.0.0.1:{self.ports['etcd_port']}", f"http://127.0.0.1:{self.etcd_peer_port}"
        self.etcd_config.write_text(f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
                                    f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
                                    f"initial-cluster: default={peer}\n", encoding="utf-8")
        self.server: MilvusServer | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy_port']}"

    @property
    def pid(self) -> int:
        return self.server.server_proc.pid

    def start(self) -> None:
        config = _ReusingConfig(template=str(self.template), data_dir=str(self.base_dir), **self.ports)
        config.set("etcd_config_path", str(self.etcd_config))
        config.set("authorization_enabled", self.authorization)
        self.server = MilvusServer(config, wait_for_started=False)
        self.server.webservice_port = self.web_port
        self.server.start()
        try:
            self.server.wait_started(timeout=STARTUP_TIMEOUT_MS)
        except (TimeoutError, RuntimeError):
            self.stop()
            log = self.base_dir / "logs" / "milvus-stdout.log"
            raise RuntimeError(f"the Milvus server in {self.base_dir} did not start; see {log}") from None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> MilvusStandalone:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
