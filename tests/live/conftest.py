"""The running tools of the live tests, one per test module, each with its own temporary directory."""
from __future__ import annotations

from pathlib import Path

import pytest

from live.tools import doccano_server, label_studio_server


@pytest.fixture(scope="module")
def work(request, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])


@pytest.fixture(scope="module")
def doccano(work):
    with doccano_server(work) as client:
        yield client


@pytest.fixture(scope="module")
def studio(work):
    with label_studio_server(work) as client:
        yield client
