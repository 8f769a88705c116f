"""MilvusIndex on a Milvus standalone server: restarts, sign-in, and one-line errors for a server that
is not there or refuses. The tests every engine runs are in test_retrieval.py (index_store)."""
from __future__ import annotations

import argparse
import os

import numpy as np
import pytest

from utils import DataError
from vector_index import (
    Entry,
    IndexInfo,
    MilvusCredentials,
    MilvusIndex,
    add_milvus_credential_options,
    milvus_credentials,
)

from conftest import run_main
from milvus_server import ROOT_TOKEN, free_ports

INFO = IndexInfo(8, "encoder-a")
ROOT = MilvusCredentials(token=ROOT_TOKEN)


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, INFO.dim)).astype("float32")
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fresh_collection() -> str:
    return f"test_{os.urandom(8).hex()}"


@pytest.mark.slow
def test_an_index_reopens_after_the_server_restarts(milvus_server):
    """Entries (saved or only upserted), HNSW parameters and the encoder fingerprint survive a stop and
    a start on the same base directory; another encoder is still refused."""
    collection, vectors = fresh_collection(), unit_vectors(100, 0)
    index = MilvusIndex(milvus_server.uri, INFO, collection, m=48, ef=64, credentials=ROOT)
    index.upsert(list(range(90)), vectors[:90], [Entry(f"text {i}", ["体育"]) for i in range(90)])
    index.save()
    index.upsert(list(range(90, 100)), vectors[90:], [Entry(f"text {i}", ["财经"]) for i in range(90, 100)])
    index.client.alter_collection_properties(collection, {"altered": "later"})
    index.close()
    milvus_server.stop()
    milvus_server.start()
    reopened = MilvusIndex(milvus_server.uri, INFO, collection, credentials=ROOT)
    properties = reopened.client.describe_collection(collection).get("properties", {})
    assert properties.get("encoder") == INFO.encoder
    assert "altered" not in properties  # why the fingerprint is set at creation: a restart drops later properties
    assert reopened.count() == 100 and reopened.entries([95]) == {95: Entry("text 95", ["财经"])}
    assert reopened.search(vectors[:5], 1)[0][:, 0].tolist() == [0, 1, 2, 3, 4]
    described = reopened.client.describe_index(collection, "vector")
    assert (described["index_type"], int(described["M"]), int(described["efConstruction"])) == ("HNSW", 48, 64)
    reopened.close()
    with pytest.raises(DataError, match="was built with another model"):
        MilvusIndex(milvus_server.uri, IndexInfo(8, "encoder-b"), collection, credentials=ROOT)


@pytest.mark.slow
def test_the_server_reads_the_index_parameters_pymilvus_sends(milvus_server):
    """vector_index.send_index_params_as_json is for Milvus Lite: the server reads pymilvus's own form."""
    from pymilvus import DataType, MilvusClient

    from vector_index import _UPSTREAM

    client, collection = MilvusClient(milvus_server.uri, token=ROOT_TOKEN), fresh_collection()
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
    params = client.prepare_index_params()
    params.add_index(field_name="vector", index_type="HNSW", metric_type="IP", params={"M": 48, "efConstruction": 64})
    from pymilvus.client.prepare import Prepare

    patched = Prepare.create_index_request
    Prepare.create_index_request = classmethod(_UPSTREAM.get("create_index_request", patched.__func__))
    try:
        client.create_collection(collection, schema=schema, index_params=params)
    finally:
        Prepare.create_index_request = patched
    described = client.describe_index(collection, "vector")
    assert "params" not in described and (int(described["M"]), int(described["efConstruction"])) == (48, 64)
    client.drop_collection(collection)
    client.close()


@pytest.mark.slow
@pytest.mark.parametrize("credentials, reason", [(MilvusCredentials(), "no credentials"),
                                                 (MilvusCredentials(token="root:wrong-secret"), "wrong password"),
                                                 (MilvusCredentials(user="root", password="wrong-secret"), "user")])
def test_a_server_refusing_the_sign_in_is_one_line_without_the_secret(milvus_server, credentials, reason):
    with pytest.raises(DataError) as raised:
        MilvusIndex(milvus_server.uri, INFO, fresh_collection(), credentials=credentials)
    message = str(raised.value)
    assert f"Milvus server at {milvus_server.uri}" in message and "\n" not in message
    assert "--milvus_token" in message and "MILVUS_TOKEN" in message
    assert "wrong-secret" not in message


@pytest.mark.slow
def test_scripts_sign_in_with_the_environment_and_never_show_the_token(milvus_server, tmp_path, monkeypatch):
    from retrieval import write_corpus_vectors

    vectors = tmp_path / "label_embedding.npy"
    entries = [Entry(f"label {i}", [f"label {i}"]) for i in range(3)]
    write_corpus_vectors(vectors, unit_vectors(3, 1), entries, INFO.encoder, tmp_path / "label.txt")
    insert = ["retrieval_based/utils/vector_insert.py", "--vector_path", vectors, "--milvus_uri", milvus_server.uri,
              "--collection_name", fresh_collection()]
    refused = run_main(*insert)
    assert refused.returncode == 2 and "MILVUS_TOKEN" in refused.stderr
    monkeypatch.setenv("MILVUS_TOKEN", ROOT_TOKEN)
    result = run_main(*insert)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "there are 3 entities after insert data" in result.stderr
    assert ROOT_TOKEN.split(":")[1] not in result.stderr + result.stdout
    monkeypatch.setenv("MILVUS_TOKEN", "root:wrong-secret")
    given = run_main(*insert, "--milvus_token", ROOT_TOKEN)  # the option wins over the environment
    assert given.returncode == 0, given.stderr[-2000:]


@pytest.mark.slow
def test_a_collection_of_another_width_on_the_server_is_refused(milvus_server):
    collection = fresh_collection()
    MilvusIndex(milvus_server.uri, INFO, collection, credentials=ROOT).close()
    with pytest.raises(DataError, match="holds 8-dimensional vectors, but the encoder makes 16"):
        MilvusIndex(milvus_server.uri, IndexInfo(16, INFO.encoder), collection, credentials=ROOT)


def test_nothing_listening_at_the_uri_is_one_line():
    uri = f"http://root:a-secret@127.0.0.1:{free_ports(1)[0]}"
    with pytest.raises(DataError) as raised:
        MilvusIndex(uri, INFO)
    message = str(raised.value)
    assert message.startswith(f"cannot use the Milvus server at http://127.0.0.1:{uri.rsplit(':', 1)[1]}: ")
    assert "Fail connecting" in message and "a-secret" not in message and "\n" not in message


@pytest.mark.parametrize("uri", ["ftp://127.0.0.1:19530", "localhost:19530"])
def test_an_address_milvus_does_not_take_is_one_line(uri):
    with pytest.raises(DataError, match=f"{uri} is illegal, needs start with"):
        MilvusIndex(uri, INFO)


def test_credentials_come_from_the_options_else_the_environment(monkeypatch):
    parser = argparse.ArgumentParser()
    add_milvus_credential_options(parser)
    monkeypatch.setenv("MILVUS_USER", "alice")
    monkeypatch.setenv("MILVUS_PASSWORD", "env-secret")
    credentials = milvus_credentials(parser.parse_args(["--milvus_password", "option-secret"]))
    assert (credentials.user, credentials.password, credentials.token) == ("alice", "option-secret", "")
    assert "secret" not in repr(credentials)
    monkeypatch.delenv("MILVUS_PASSWORD")
    with pytest.raises(DataError, match="needs both a user and a password"):
        milvus_credentials(parser.parse_args([]))
