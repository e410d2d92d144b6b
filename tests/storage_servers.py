"""Real storage servers on 127.0.0.1 for the remote-data tests: an S3-compatible server (moto in server
mode, in a thread), a Google Cloud Storage emulator (gcp-storage-emulator, in memory, in a thread) and a
static HTTP server that answers byte ranges and counts the bytes it sent."""

from __future__ import annotations

import io
import os
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")

# gcsfs picks its file system class when it is imported: the experimental one (the default of recent
# releases) asks each bucket's type over gRPC, which the emulator does not speak (60 s until it gives up).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server; the environment points the AWS clients at it (credentials are any, as moto
    takes them). Yields its endpoint URL."""
    import s3fs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with _fresh_clients(s3fs.S3FileSystem, server):
        yield endpoint


@contextmanager
def gcs_server(monkeypatch: pytest.MonkeyPatch, bucket: str = "data") -> Iterator[str]:
    """A GCS emulator holding an empty `bucket`; `STORAGE_EMULATOR_HOST` points gcsfs at it (anonymous
    access, as gcsfs falls back to without Google credentials). Yields its endpoint URL."""
    import fsspec.config
    import gcsfs
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    # Anonymous access, as fsspec's configuration gives it (the environment for child processes): gcsfs
    # would otherwise look for Google credentials first, asking a cloud VM's metadata server (here
    # unreachable, 15 s for each new client, in each DataLoader worker).
    monkeypatch.setitem(fsspec.config.conf, "gs", {"token": "anon"})
    monkeypatch.setenv("FSSPEC_GS_TOKEN", "anon")
    with _fresh_clients(gcsfs.GCSFileSystem, server):
        yield endpoint


@contextmanager
def _fresh_clients(filesystem: Any, server: Any) -> Iterator[None]:
    """No cached client of `filesystem` while `server` serves (one would keep another endpoint); the
    server is stopped at the end."""
    filesystem.clear_instance_cache()
    try:
        yield
    finally:
        filesystem.clear_instance_cache()
        server.stop()


class _RangeHandler(SimpleHTTPRequestHandler):
    """Files of one folder, with `Range: bytes=A-B` answered by 206 and the part asked for."""

    sent: list[int]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        size = path.stat().st_size
        match = _RANGE.match(self.headers.get("Range", ""))
        start, end = 0, size - 1
        if match:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else size - 1, size - 1)
            if start >= size:
                self.send_error(416)
                return None
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if self.command != "GET":  # HEAD: the headers only (no file read into memory)
            return io.BytesIO()
        with path.open("rb") as file:
            file.seek(start)
            data = file.read(end - start + 1)
        self.sent.append(len(data))
        return io.BytesIO(data)


@contextmanager
def http_server(folder: Path) -> Iterator[tuple[str, list[int]]]:
    """Serve `folder` on 127.0.0.1; yields its URL and the list of body sizes sent for GETs."""
    sent: list[int] = []
    handler = type("Handler", (_RangeHandler,), {"sent": sent})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sent
    finally:
        server.shutdown()
        server.server_close()
