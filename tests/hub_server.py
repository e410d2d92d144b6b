"""A local stand-in for the Hugging Face Hub's file endpoint, for tests that exercise real downloads.

It answers `HEAD` and `GET` on `/{repo_id}/resolve/{revision}/{filename}` the way
`huggingface_hub.hf_hub_download` (0.23 to 2.x) needs: a quoted sha256 `ETag` (the Hub's ETag of an LFS file),
`X-Repo-Commit` (a 40-hex commit per revision), `Content-Length`, and the `X-Error-Code` header on 404s
(`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) that huggingface_hub turns into its typed errors.
It never sends Xet headers, so huggingface_hub takes its plain HTTP download path.

Usage (the `local_hub` fixture in conftest.py starts one and points huggingface_hub at it, see
`LocalHub` below):

    with HubServer() as hub:
        commit = hub.add_file("org/repo", "model.pth", Path("model.pth"))                 # revision "main"
        hub.add_file("org/repo", "model.pth", b"other bytes", revision="v2")             # another commit
        # HF_ENDPOINT=hub.url; files are then served at {hub.url}/org/repo/resolve/main/model.pth,
        # and also under the commit hash: {hub.url}/org/repo/resolve/{commit}/model.pth
        hub.count("GET", "model.pth")  # how many downloads were served

`serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)` registers a tiny zoo entry ("tiny-k400") and
serves its weights, for end-to-end tests of `load_model("tiny-k400")` or `uniformer predict --model`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote

import pytest
import torch
from huggingface_hub import constants, file_download
from huggingface_hub import utils as hf_utils
from torch import nn

from uniformer_cli.models import create_model
from uniformer_cli.models.config import FAMILIES, ModelConfig
from uniformer_cli.zoo import ZOO, ZooEntry


@dataclass
class _Revision:
    commit: str
    files: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)


def _commit_for(repo_id: str, revision: str) -> str:
    """A stable fake commit hash per (repo, revision), like the Hub's 40-hex git commits."""
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


class HubServer:
    """Threaded HTTP server on 127.0.0.1 (random port) serving files by repo and revision."""

    def __init__(self) -> None:
        self._repos: dict[str, dict[str, _Revision]] = {}
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, filename) -> count
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="hub-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def add_file(
        self,
        repo_id: str,
        filename: str,
        content: bytes | Path,
        *,
        revision: str = "main",
        etag: str | None = None,
    ) -> str:
        """Serve `content` as `filename` of `repo_id` at `revision`; returns the revision's commit hash.

        `etag` overrides the advertised ETag (default: the content's sha256), e.g. to simulate a
        corrupted download.
        """
        data = content.read_bytes() if isinstance(content, Path) else content
        with self._lock:
            revisions = self._repos.setdefault(repo_id, {})
            entry = revisions.setdefault(revision, _Revision(_commit_for(repo_id, revision)))
            entry.files[filename] = data
            entry.etags[filename] = etag or hashlib.sha256(data).hexdigest()
            return entry.commit

    def count(self, method: str | None = None, filename: str | None = None) -> int:
        """Requests served so far, optionally only one method (HEAD/GET) and/or one file name."""
        with self._lock:
            return sum(
                n
                for (m, name), n in self.requests.items()
                if (method is None or m == method) and (filename is None or name == filename)
            )

    def _lookup(self, repo_id: str, revision: str) -> _Revision | None:
        revisions = self._repos.get(repo_id, {})
        if revision in revisions:
            return revisions[revision]
        return next((r for r in revisions.values() if r.commit == revision), None)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self._answer(send_body=False)

            def do_GET(self) -> None:
                self._answer(send_body=True)

            def _answer(self, *, send_body: bool) -> None:
                path = unquote(self.path.split("?", 1)[0])
                repo_id, sep, rest = path.lstrip("/").partition("/resolve/")
                revision, _, filename = rest.partition("/")
                with hub._lock:
                    hub.requests[(self.command, filename)] += 1
                    known_repo = repo_id in hub._repos
                    entry = hub._lookup(repo_id, revision) if sep else None
                    data = entry.files.get(filename) if entry else None
                    etag = entry.etags.get(filename) if entry else None
                if not sep or not known_repo:
                    self._error("RepoNotFound", f"Repository {repo_id} not found")
                elif entry is None:
                    self._error("RevisionNotFound", f"Invalid rev id: {revision}")
                elif data is None:
                    self._error("EntryNotFound", f"{filename} does not exist on {revision}", entry.commit)
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("ETag", f'"{etag}"')
                    self.send_header("X-Repo-Commit", entry.commit)
                    self.end_headers()
                    if send_body:
                        self.wfile.write(data)

            def _error(self, code: str, message: str, commit: str | None = None) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests read `hub.requests` instead of the log."""

        return Handler


def _reset_http_sessions() -> None:
    """huggingface_hub before 1.0 fixes offline mode into its cached HTTP session when it creates it."""
    if hasattr(hf_utils, "reset_sessions"):
        hf_utils.reset_sessions()


class LocalHub:
    """A running `HubServer` that huggingface_hub uses, with a throw-away `HF_HOME`.

    huggingface_hub reads its settings into `huggingface_hub.constants` at import time, so setting the
    environment is not enough inside this process: both are patched (the environment for subprocesses
    such as `uniformer predict` run as a command, the constants for in-process calls).
    """

    def __init__(self, server: HubServer, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.home = home
        self._monkeypatch = monkeypatch
        environment = {
            "HF_ENDPOINT": server.url,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGINGFACE_HUB_CACHE"):
            monkeypatch.delenv(name, raising=False)
        patches = {
            "ENDPOINT": server.url,
            "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_XET": True,
        }
        for name, value in patches.items():
            self._patch_constant(name, value)
        _reset_http_sessions()

    def add_file(self, repo_id: str, filename: str, content: bytes | Path, **options: str) -> str:
        """Serve a file (see `HubServer.add_file`); returns the revision's commit hash."""
        return self.server.add_file(repo_id, filename, content, **options)

    def count(self, method: str | None = None, filename: str | None = None) -> int:
        return self.server.count(method, filename)

    def set_endpoint(self, url: str) -> None:
        """Point huggingface_hub at another server (e.g. one that never answers)."""
        self._monkeypatch.setenv("HF_ENDPOINT", url)
        self._patch_constant("ENDPOINT", url)
        self._patch_constant("HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
        _reset_http_sessions()

    def set_offline(self, offline: bool = True) -> None:
        """Switch `HF_HUB_OFFLINE` on or off, as a user would."""
        self._monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        self._patch_constant("HF_HUB_OFFLINE", offline)
        _reset_http_sessions()

    def _patch_constant(self, name: str, value: object) -> None:
        self._monkeypatch.setattr(constants, name, value, raising=False)
        # huggingface_hub before 1.0 also copies some constants into `file_download` at import.
        if hasattr(file_download, name):
            self._monkeypatch.setattr(file_download, name, value)


@dataclass(frozen=True)
class ServedZooModel:
    entry: ZooEntry  # registered in the zoo under `entry.name` for the test's duration
    source: Path  # the official-layout .pth that the local Hub serves
    model: nn.Module  # the network those weights came from, in eval mode


TINY_CONFIG = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16, num_classes=400)


def serve_tiny_zoo_model(
    hub: LocalHub,
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    *,
    name: str = "tiny-k400",
    revision: str = "main",
    seed: int = 0,
    **entry_changes: object,
) -> ServedZooModel:
    """Register a zoo entry for a tiny random UniFormer (Kinetics-400 labels, an 8x2 / 64 px / one-view
    protocol) and serve its official-layout `.pth` on the local Hub, so `load_model(name)` and
    `uniformer predict --model name` take the real download -> convert -> load path in seconds.
    `entry_changes` override entry fields (e.g. `hub_file=...`); serving the same `name` again under
    another `revision` gives that revision other weights."""
    monkeypatch.setitem(FAMILIES, "tiny", TINY_CONFIG)
    torch.manual_seed(seed)
    model = create_model(TINY_CONFIG).eval()
    source = folder / f"{name}-{revision}.pth"
    torch.save(model.state_dict(), source)
    fields: dict[str, object] = {
        "name": name,
        "official_name": f"uniformer_{name.replace('-', '_')}",
        "family": "tiny",
        "protocol": replace(ZOO["s16x8-k400"].protocol, frames=8, stride=2, clips=1, size=64),
        "hub_repo": "test-org/uniformer-tiny",
        "hub_file": f"uniformer_{name.replace('-', '_')}.pth",
        "hub_bytes": None,
    }
    fields.update(entry_changes)
    entry = replace(ZOO["s16x8-k400"], **fields)
    monkeypatch.setitem(ZOO, entry.name, entry)
    if entry.hub_repo and entry.hub_file:
        hub.add_file(entry.hub_repo, entry.hub_file, source, revision=revision)
    return ServedZooModel(entry, source, model)
