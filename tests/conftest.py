"""Shared fixtures. `local_hub`: a local Hugging Face Hub that huggingface_hub downloads from; one attention
kernel in every test process (`one_attention_kernel`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from drive_server import DriveServer
from hub_server import HubServer, LocalHub
from storage_servers import gcs_server, s3_server

from uniformer_cli.models.fast_attention import forced_kernel


@pytest.fixture(autouse=True)
def one_attention_kernel() -> Iterator[None]:
    """One fast-path attention kernel in the test process. Left alone, the fast path tries each kernel on a
    process's first calls of a shape (models/fast_attention.py), so two runs of one input in one process
    may differ in the last bits, and tests compare runs record for record (resume, shards, prefetch).
    tests/test_fast_attention.py tests the measured choice on its own `KernelChoice`; commands run as
    child processes measure as users' do."""
    with forced_kernel("fused"):
        yield


@pytest.fixture
def local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A `LocalHub` (tests/hub_server.py): serve files with `local_hub.add_file(repo, name, path_or_bytes,
    revision="main")`; zoo entries whose `hub_repo`/`hub_file` match then download from it into a
    temporary `HF_HOME` (`local_hub.home`). `local_hub.set_offline()` sets HF_HUB_OFFLINE."""
    with HubServer() as server:
        yield LocalHub(server, tmp_path / "hf_home", monkeypatch)


@pytest.fixture
def local_drive(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> Iterator[DriveServer]:
    """A `DriveServer` (tests/drive_server.py) that `weights.remote` downloads from through
    UNIFORMER_DRIVE_ENDPOINT, with the throw-away `HF_HOME` of `local_hub` as the cache."""
    with DriveServer() as server:
        monkeypatch.setenv("UNIFORMER_DRIVE_ENDPOINT", server.url)
        yield server


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with a bucket `data`, the AWS environment pointing at it (tests/
    storage_servers.py); yields its endpoint URL."""
    with s3_server(monkeypatch) as endpoint:
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="data")
        yield endpoint


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A GCS emulator on 127.0.0.1 with a bucket `data`, gcsfs pointed at it (tests/storage_servers.py);
    yields its endpoint URL."""
    with gcs_server(monkeypatch) as endpoint:
        yield endpoint
