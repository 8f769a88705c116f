"""Start Triton Inference Server from the nvidia-pytriton wheel (no Docker needed).

    python deploy/triton_serving/run_server.py --model_repository deploy/triton_serving/models

The wheel ships `tritonserver` with the python backend. As pytriton itself does, the server is
copied to a work directory with the backend stub of this Python version, and started with the
wheel's shared libraries and this interpreter's libpython and packages on its paths.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from cli import PORT, ArgumentParser

# yapf: disable
parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model_repository", default="./models", help="Repository written by build_repo.py.")
parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 for every interface).")
parser.add_argument("--http_port", type=PORT, default=8000, help="HTTP port.")
parser.add_argument("--grpc_port", type=PORT, default=8001, help="gRPC port.")
parser.add_argument("--work_dir", default=str(Path.home() / ".cache/triton_serving"), help="Where the server copy lives.")
# yapf: enable


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def prepare_server(work_dir: Path) -> Path:
    """A copy of the wheel's server with this Python's backend stub in place; returns its root."""
    source = site_packages() / "pytriton" / "tritonserver"
    if not source.is_dir():
        sys.exit("error: nvidia-pytriton is not installed (pip install -r requirements.txt)")
    server = work_dir / "tritonserver"
    stub = server / "backends" / "python" / "triton_python_backend_stub"
    if not stub.is_file():
        shutil.rmtree(server, ignore_errors=True)
        shutil.copytree(source, server, ignore=shutil.ignore_patterns("python_backend_stubs"))
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        shutil.copy(source / "python_backend_stubs" / version / "triton_python_backend_stub", stub)
    return server


def server_environment() -> dict[str, str]:
    """The wheel's libraries and this interpreter's libpython, packages and scripts on the paths."""
    env = dict(os.environ)
    libraries = [str(site_packages() / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libraries + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
    env["PYTHONPATH"] = os.pathsep.join([str(site_packages())] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def server_command(server: Path, repository: Path, host: str, http_port: int, grpc_port: int) -> list[str]:
    return [str(server / "bin" / "tritonserver"), "--model-repository", str(repository.resolve()),
            "--backend-directory", str(server / "backends"), "--cache-directory", str(server / "caches"),
            "--http-address", host, "--http-port", str(http_port), "--grpc-address", host,
            "--grpc-port", str(grpc_port), "--allow-metrics", "false", "--allow-gpu-metrics", "false",
            "--exit-on-error", "true", "--strict-readiness", "true"]


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    repository = Path(args.model_repository)
    if not (repository / "seqcls" / "config.pbtxt").is_file():
        sys.exit(f"error: {repository} is not a model repository (run build_repo.py first)")
    server = prepare_server(Path(args.work_dir))
    command = server_command(server, repository, args.host, args.http_port, args.grpc_port)
    os.execve(command[0], command, server_environment())


if __name__ == "__main__":
    main()
