"""A local stand-in for the Hugging Face Hub, for tests that exercise real downloads and uploads.

Downloads: it answers `HEAD` and `GET` on `/{repo_id}/resolve/{revision}/{filename}` the way
`huggingface_hub.hf_hub_download` (0.23 to 2.x) needs: a quoted sha256 `ETag` (the Hub's ETag of an LFS file),
`X-Repo-Commit` (a 40-hex commit per revision), `Content-Length`, and the `X-Error-Code` header on 404s
(`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) that huggingface_hub turns into its typed errors.
It never sends Xet headers, so huggingface_hub takes its plain HTTP download path. `GET
/api/models/{repo_id}/tree/{revision}` lists a revision's files (`HfApi.list_repo_files`) and
`/api/models/{repo_id}/revision/{revision}` describes it (`HfApi.repo_info`).

Reads through `HfFileSystem` (`hf://{repo_id}/...`, `hf://datasets/{repo_id}/...`; files served with
`add_file(..., repo_type="dataset")` live in a dataset repository): `GET /api/{models,datasets}/{repo_id}`
(the repository exists), the tree listing with the Hub's semantics (a folder's direct children, files and
folders, or everything below it with `recursive=true`; 404 `EntryNotFound` for a folder that is not there;
pages of `tree_page_size` entries chained by a `Link: <...>; rel="next"` header), `POST
.../paths-info/{revision}` (form fields `paths`, answered with the entries that exist), and `Range:
bytes=A-B` on resolve, answered 206 with `Content-Range` (416 past the end). `sent` records the body size
of every download served.

Uploads, as `HfApi.create_repo`, `create_branch` and `create_commit` (0.23 to 2.x, Xet disabled) call them:
`POST /api/repos/create`, `POST /api/models/{repo_id}/branch/{branch}`, `POST /api/validate-yaml` (a README's
metadata header must be a YAML mapping whose `model-index` huggingface_hub's own reader accepts), `POST
/api/models/{repo_id}/preupload/{revision}` (`.safetensors`, `.bin`, `.pth` files go through LFS, others
inline), the LFS batch API `POST /{repo_id}.git/info/lfs/objects/batch` with its upload (`PUT`) and verify
actions (the upload must hash to its oid), and `POST /api/models/{repo_id}/commit/{revision}` (the NDJSON
commit: each commit gives the revision a new commit hash). Writes need `Authorization: Bearer TOKEN` of a
token given to `add_token` for the repository's namespace (else 401, or 403 for another namespace); a
private repository answers readers without such a token as the Hub does, 401 with `RepoNotFound`.

Usage (the `local_hub` fixture in conftest.py starts one and points huggingface_hub at it, see
`LocalHub` below):

    with HubServer() as hub:
        commit = hub.add_file("org/repo", "model.pth", Path("model.pth"))                 # revision "main"
        hub.add_file("org/repo", "model.pth", b"other bytes", revision="v2")             # another commit
        # HF_ENDPOINT=hub.url; files are then served at {hub.url}/org/repo/resolve/main/model.pth,
        # and also under the commit hash: {hub.url}/org/repo/resolve/{commit}/model.pth
        hub.count("GET", "model.pth")  # how many downloads were served
        hub.add_token("hf_secret", "user")  # may create and write repositories user/*

`serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)` registers a tiny zoo entry ("tiny-k400") and
serves its weights, for end-to-end tests of `load_model("tiny-k400")` or `uniformer predict --model`;
`tiny_v2_entry` registers a tiny UniFormerV2 entry ("v2-tiny-k400") whose `tiny_v2_checkpoint` a test serves.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.util
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
import torch
import yaml
from huggingface_hub import constants
from huggingface_hub import utils as hf_utils
from huggingface_hub.repocard_data import model_index_to_eval_results
from parity import V2_FIXTURES
from torch import nn

from uniformer_cli.models import create_model
from uniformer_cli.models.config import FAMILIES, ModelConfig
from uniformer_cli.models.config_v2 import V2_FAMILIES
from uniformer_cli.zoo import ZOO, ZooEntry
from uniformer_cli.zoo.v2 import V2_ZOO


@dataclass
class _Revision:
    commit: str
    files: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Repo:
    revisions: dict[str, _Revision] = field(default_factory=dict)
    private: bool = False


def _commit_for(repo_id: str, revision: str) -> str:
    """A stable fake commit hash per (repo, revision), like the Hub's 40-hex git commits."""
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


def _git_oid(data: bytes) -> str:
    """git's blob id of `data`: what the Hub gives as the `oid` of a file stored in git, not in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


LFS_SUFFIXES = (".safetensors", ".bin", ".pth")  # stored through LFS (the Hub's .gitattributes has these)
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_KIND = r"(?P<kind>models|datasets)"  # the API's plural of a repository type
_RESOLVE = rf"/(?:(?P<kind>datasets)/)?{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)"  # models: no prefix
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
_ROUTES: dict[str, list[tuple[re.Pattern[str], str]]] = {
    method: [(re.compile(pattern), name) for pattern, name in routes]
    for method, routes in {
        "GET": [
            (rf"/api/{_KIND}/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", "tree"),
            (rf"/api/{_KIND}/{_REPO}(?:/revision/(?P<revision>[^/]+))?", "repo_info"),
            (_RESOLVE, "resolve"),
        ],
        "HEAD": [(_RESOLVE, "resolve")],
        "POST": [
            (r"/api/repos/create", "create_repo"),
            (r"/api/validate-yaml", "validate_yaml"),
            (rf"/api/{_KIND}/{_REPO}/paths-info/(?P<revision>[^/]+)", "paths_info"),
            (rf"/api/models/{_REPO}/branch/(?P<branch>[^/]+)", "create_branch"),
            (rf"/api/models/{_REPO}/preupload/(?P<revision>[^/]+)", "preupload"),
            (rf"/api/models/{_REPO}/commit/(?P<revision>[^/]+)", "commit"),
            (rf"/{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
            (r"/lfs/verify", "lfs_verify"),
        ],
        "PUT": [(r"/lfs/objects/(?P<oid>[0-9a-f]{64})", "lfs_upload")],
    }.items()
}


def _key(repo_id: str, repo_type: str = "model") -> str:
    """Where a repository is kept: models by their id, other types under their URL prefix (`datasets/`)."""
    return repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"


def _namespace(key: str) -> str:
    return key.removeprefix("datasets/").split("/")[0]


def _folders(names: list[str]) -> set[str]:
    """Every folder that holds one of the files `names`."""
    return {name[:index] for name in names for index, char in enumerate(name) if char == "/"}


class HubServer:
    """Threaded HTTP server on 127.0.0.1 (random port) serving and storing files by repo and revision."""

    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._lfs: dict[str, bytes] = {}  # uploaded LFS objects by sha256
        self._tokens: dict[str, set[str]] = {}  # token -> namespaces it may write
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, filename or API route) -> count
        self.commits: list[dict[str, object]] = []  # every commit received: repo, revision, header, paths
        self.sent: list[int] = []  # the body size of each file download (GET on resolve) served
        self.tree_page_size = 1000  # entries per page of a tree listing, as the Hub pages them
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
        repo_type: str = "model",
    ) -> str:
        """Serve `content` as `filename` of `repo_id` at `revision`; returns the revision's commit hash.

        `etag` overrides the advertised ETag (default: the content's sha256), e.g. to simulate a
        corrupted download. `repo_type="dataset"` serves it from a dataset repository
        (`hf://datasets/{repo_id}/{filename}`).
        """
        data = content.read_bytes() if isinstance(content, Path) else content
        key = _key(repo_id, repo_type)
        with self._lock:
            revisions = self._repos.setdefault(key, _Repo()).revisions
            entry = revisions.setdefault(revision, _Revision(_commit_for(key, revision)))
            entry.files[filename] = data
            entry.etags[filename] = etag or hashlib.sha256(data).hexdigest()
            return entry.commit

    def add_token(self, token: str, *namespaces: str) -> None:
        """Accept `token` for writes to repositories of `namespaces` (and reads of their private ones)."""
        with self._lock:
            self._tokens.setdefault(token, set()).update(namespaces)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """What `repo_id` holds at `revision` now."""
        with self._lock:
            entry = self._lookup(_key(repo_id, repo_type), revision)
            return dict(entry.files) if entry else {}

    def is_private(self, repo_id: str) -> bool:
        with self._lock:
            return self._repos[repo_id].private

    def count(self, method: str | None = None, filename: str | None = None) -> int:
        """Requests served so far, optionally only one method (HEAD/GET) and/or one file name."""
        with self._lock:
            return sum(
                n
                for (m, name), n in self.requests.items()
                if (method is None or m == method) and (filename is None or name == filename)
            )

    def _lookup(self, repo_id: str, revision: str) -> _Revision | None:
        revisions = self._repos[repo_id].revisions if repo_id in self._repos else {}
        if revision in revisions:
            return revisions[revision]
        return next((r for r in revisions.values() if r.commit == revision), None)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self._route()

            def do_GET(self) -> None:
                self._route()

            def do_POST(self) -> None:
                self._route()

            def do_PUT(self) -> None:
                self._route()

            def _route(self) -> None:
                path = unquote(self.path.split("?", 1)[0])
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                for pattern, name in _ROUTES.get(self.command, []):
                    match = pattern.fullmatch(path)
                    if match:
                        groups = match.groupdict()
                        kind = groups.pop("kind", None) or "models"
                        if "repo" in groups:  # repositories of other types are kept under their prefix
                            groups["repo"] = _key(groups["repo"], kind.removesuffix("s"))
                        getattr(self, f"_{name}")(body=body, **groups)
                        return
                with hub._lock:
                    hub.requests[(self.command, path)] += 1
                self._error(404, "RepoNotFound", f"no route for {self.command} {path}")

            # --- access ---------------------------------------------------------------------------------

            def _namespaces(self) -> set[str] | None:
                """The namespaces the request's token may write, None without a known token."""
                scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
                return hub._tokens.get(token) if scheme.lower() == "bearer" else None

            def _may_write(self, repo_id: str) -> bool:
                """True, or an error was answered: 401 without a known token, 403 outside its namespaces."""
                namespaces = self._namespaces()
                if namespaces is None:
                    self._error(401, None, "Invalid credentials in Authorization header")
                    return False
                if _namespace(repo_id) not in namespaces:
                    self._error(403, None, f"You don't have the rights to create or write to {repo_id}")
                    return False
                return True

            def _readable(self, repo_id: str) -> bool:
                """A known repository this request may read, or the error the Hub gives was answered."""
                repo = hub._repos.get(repo_id)
                namespaces = self._namespaces() or set()
                if repo is None or (repo.private and _namespace(repo_id) not in namespaces):
                    self._error(401 if repo else 404, "RepoNotFound", f"Repository {repo_id} not found")
                    return False
                return True

            # --- downloads --------------------------------------------------------------------------------

            def _resolve(self, body: bytes, repo: str, revision: str, path: str) -> None:
                with hub._lock:
                    hub.requests[(self.command, path)] += 1
                    if not self._readable(repo):
                        return
                    entry = hub._lookup(repo, revision)
                    data = entry.files.get(path) if entry else None
                    etag = entry.etags.get(path) if entry else None
                if entry is None:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                elif data is None or etag is None:
                    self._error(404, "EntryNotFound", f"{path} does not exist on {revision}", entry.commit)
                else:
                    headers = {"ETag": f'"{etag}"', "X-Repo-Commit": entry.commit, "Accept-Ranges": "bytes"}
                    status, part = 200, data
                    asked = _RANGE.match(self.headers.get("Range", "").strip())
                    if asked:  # a byte range, answered as the Hub's file servers answer it
                        start = int(asked[1])
                        end = min(int(asked[2]) if asked[2] else len(data) - 1, len(data) - 1)
                        if start >= len(data):
                            headers["Content-Range"] = f"bytes */{len(data)}"
                            self._send(416, b"", "text/plain", headers)
                            return
                        status, part = 206, data[start : end + 1]
                        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    if self.command == "GET":
                        with hub._lock:
                            hub.sent.append(len(part))
                    self._send(status, part, "application/octet-stream", headers, body=self.command == "GET")

            def _revision(self, route: str, repo: str, revision: str) -> _Revision | None:
                """A copy of the revision a read of the API asks for, or None when an error was answered."""
                with hub._lock:
                    hub.requests[(self.command, route)] += 1
                    if not self._readable(repo):
                        return None
                    entry = hub._lookup(repo, revision)
                    if entry is not None:
                        return _Revision(entry.commit, dict(entry.files), dict(entry.etags))
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None

            def _tree(self, body: bytes, repo: str, revision: str, path: str | None) -> None:
                entry = self._revision("api/tree", repo, revision)
                if entry is None:
                    return
                files = entry.files
                folder = (path or "").strip("/")
                folders = _folders(list(files))
                if folder and folder not in folders:
                    self._error(404, "EntryNotFound", f"{folder} does not exist on {revision}", entry.commit)
                    return
                query = parse_qs(urlsplit(self.path).query)
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                prefix = f"{folder}/" if folder else ""
                names = sorted(
                    name
                    for name in [*files, *folders]
                    if name.startswith(prefix) and (recursive or "/" not in name[len(prefix) :])
                )
                # The Hub pages listings with a cursor in a `Link: <...>; rel="next"` header.
                start = int(query.get("cursor", ["0"])[0])
                page = names[start : start + hub.tree_page_size]
                headers = {}
                if start + len(page) < len(names):
                    following = urlencode({**{k: v[0] for k, v in query.items()}, "cursor": start + len(page)})
                    headers["Link"] = f'<{hub.url}{urlsplit(self.path).path}?{following}>; rel="next"'
                infos = [
                    self._file_info(name, files[name]) if name in files else self._folder_info(name) for name in page
                ]
                self._send(200, json.dumps(infos).encode(), "application/json", headers)

            def _paths_info(self, body: bytes, repo: str, revision: str) -> None:
                """`POST .../paths-info/{revision}` with form fields `paths` (repeated) and `expand`: the
                entries that exist, files and folders, in the order asked; unknown paths are left out."""
                entry = self._revision("api/paths-info", repo, revision)
                if entry is None:
                    return
                files = entry.files
                folders = _folders(list(files))
                asked = [path.strip("/") for path in parse_qs(body.decode()).get("paths", [])]
                self._json(
                    200,
                    [
                        self._file_info(name, files[name]) if name in files else self._folder_info(name)
                        for name in asked
                        if name in files or name in folders
                    ],
                )

            def _repo_info(self, body: bytes, repo: str, revision: str | None) -> None:
                revision = revision or "main"
                with hub._lock:
                    hub.requests[(self.command, "api/repo_info")] += 1
                    if not self._readable(repo):
                        return
                    entry = hub._lookup(repo, revision)
                    private = hub._repos[repo].private
                if entry is None:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                    return
                siblings = [{"rfilename": name} for name in entry.files]
                repo_id = repo.removeprefix("datasets/")
                info = {"id": repo_id, "sha": entry.commit, "private": private, "siblings": siblings}
                # The Hub gives these for every repository (huggingface_hub 0.23's DatasetInfo requires them).
                info.update({"author": repo_id.split("/")[0], "downloads": 0, "likes": 0, "tags": []})
                if not repo.startswith("datasets/"):
                    info["modelId"] = repo_id
                self._json(200, info)

            @staticmethod
            def _folder_info(name: str) -> dict[str, object]:
                oid = hashlib.sha1(f"tree {name}".encode()).hexdigest()  # stands in for git's tree id
                return {"type": "directory", "path": name, "oid": oid, "size": 0}

            @staticmethod
            def _file_info(name: str, data: bytes) -> dict[str, object]:
                info: dict[str, object] = {"type": "file", "path": name, "size": len(data), "oid": _git_oid(data)}
                if name.endswith(LFS_SUFFIXES):
                    sha256 = hashlib.sha256(data).hexdigest()
                    info["lfs"] = {"oid": sha256, "size": len(data), "pointerSize": 134}
                return info

            # --- uploads ----------------------------------------------------------------------------------

            def _create_repo(self, body: bytes) -> None:
                request = json.loads(body)
                if request.get("type") not in (None, "model"):
                    self._error(400, None, "only model repositories are served here")
                    return
                repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else ""
                with hub._lock:
                    hub.requests[("POST", "api/repos/create")] += 1
                    if not repo_id or not self._may_write(repo_id):
                        if not repo_id:
                            self._error(400, None, "a repository needs a namespace")
                        return
                    if repo_id in hub._repos:
                        self._json(409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"})
                        return
                    private = bool(request.get("private")) or request.get("visibility") == "private"
                    initial = _Revision(_commit_for(repo_id, "main"))
                    initial.files[".gitattributes"] = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                    initial.etags[".gitattributes"] = hashlib.sha256(initial.files[".gitattributes"]).hexdigest()
                    hub._repos[repo_id] = _Repo({"main": initial}, private)
                self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

            def _create_branch(self, body: bytes, repo: str, branch: str) -> None:
                with hub._lock:
                    hub.requests[("POST", "api/branch")] += 1
                    if not self._readable(repo) or not self._may_write(repo):
                        return
                    revisions = hub._repos[repo].revisions
                    if branch in revisions:
                        self._json(409, {"error": f"Reference already exists: refs/heads/{branch}"})
                        return
                    start = revisions["main"]
                    revisions[branch] = _Revision(start.commit, dict(start.files), dict(start.etags))
                self._json(200, {})

            def _validate_yaml(self, body: bytes) -> None:
                content = json.loads(body)["content"]
                errors = _metadata_errors(content)
                self._json(400 if errors else 200, {"errors": [{"message": error} for error in errors], "warnings": []})

            def _preupload(self, body: bytes, repo: str, revision: str) -> None:
                files = json.loads(body)["files"]
                with hub._lock:
                    hub.requests[("POST", "api/preupload")] += 1
                    if not self._readable(repo) or not self._may_write(repo):
                        return
                    entry = hub._lookup(repo, revision)
                    stored = dict(entry.files) if entry else {}
                answers = []
                for file in files:
                    lfs = file["path"].endswith(LFS_SUFFIXES)
                    old = stored.get(file["path"])
                    oid = None if old is None else hashlib.sha256(old).hexdigest() if lfs else _git_oid(old)
                    mode = "lfs" if lfs else "regular"
                    answers.append({"path": file["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
                self._json(200, {"files": answers, "commitOid": entry.commit if entry else None})

            def _lfs_batch(self, body: bytes, repo: str) -> None:
                request = json.loads(body)
                with hub._lock:
                    hub.requests[("POST", "lfs/batch")] += 1
                    if not self._readable(repo) or not self._may_write(repo):
                        return
                    known = set(hub._lfs)
                objects = []
                for item in request["objects"]:
                    answer: dict[str, object] = {"oid": item["oid"], "size": item["size"], "authenticated": True}
                    if item["oid"] not in known:  # already stored: no actions, nothing to upload
                        answer["actions"] = {
                            "upload": {"href": f"{hub.url}/lfs/objects/{item['oid']}", "header": {}},
                            "verify": {"href": f"{hub.url}/lfs/verify", "header": {}},
                        }
                    objects.append(answer)
                self._json(200, {"transfer": "basic", "objects": objects}, "application/vnd.git-lfs+json")

            def _lfs_upload(self, body: bytes, oid: str) -> None:
                with hub._lock:
                    hub.requests[("PUT", "lfs/object")] += 1
                if hashlib.sha256(body).hexdigest() != oid:
                    self._error(400, None, "the uploaded content does not hash to its oid")
                    return
                with hub._lock:
                    hub._lfs[oid] = body
                self._send(200, b"", "text/plain", {})

            def _lfs_verify(self, body: bytes) -> None:
                request = json.loads(body)
                with hub._lock:
                    stored = hub._lfs.get(request["oid"])
                if stored is None or len(stored) != request["size"]:
                    self._error(404, None, "object not uploaded")
                else:
                    self._json(200, {})

            def _commit(self, body: bytes, repo: str, revision: str) -> None:
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                with hub._lock:
                    hub.requests[("POST", "api/commit")] += 1
                    if not self._readable(repo) or not self._may_write(repo):
                        return
                    entry = hub._lookup(repo, revision)
                    if entry is None:
                        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                        return
                    changes: dict[str, bytes | None] = {}
                    for line in lines:
                        key, value = line["key"], line["value"]
                        if key == "file":
                            changes[value["path"]] = base64.b64decode(value["content"])
                        elif key == "lfsFile":
                            stored = hub._lfs.get(value["oid"])
                            if stored is None:
                                self._error(400, None, f"LFS object {value['oid']} of {value['path']} was not uploaded")
                                return
                            changes[value["path"]] = stored
                        elif key == "deletedFile":
                            changes[value["path"]] = None
                    for name, data in changes.items():
                        if data is None:
                            entry.files.pop(name, None)
                            entry.etags.pop(name, None)
                        else:
                            entry.files[name] = data
                            entry.etags[name] = hashlib.sha256(data).hexdigest()
                    entry.commit = hashlib.sha1(entry.commit.encode() + body).hexdigest()
                    header = next((line["value"] for line in lines if line["key"] == "header"), {})
                    hub.commits.append({"repo": repo, "revision": revision, "header": header, "paths": list(changes)})
                    commit = entry.commit
                self._json(
                    200, {"commitUrl": f"{hub.url}/{repo}/commit/{commit}", "commitOid": commit, "success": True}
                )

            # --- answers ----------------------------------------------------------------------------------

            def _json(self, status: int, document: object, content_type: str = "application/json") -> None:
                self._send(status, json.dumps(document).encode(), content_type, {})

            def _send(
                self, status: int, data: bytes, content_type: str, headers: dict[str, str], *, body: bool = True
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
                data = b"" if self.command == "HEAD" else json.dumps({"error": message}).encode()
                self.send_response(status)
                if code:
                    self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests read `hub.requests` instead of the log."""

        return Handler


def _metadata_errors(readme: str) -> list[str]:
    """What the Hub's metadata check would refuse in a README: a header that is not a YAML mapping, or a
    `model-index` that huggingface_hub's own reader cannot turn into evaluation results."""
    if not readme.startswith("---\n"):
        return []
    header, separator, _ = readme[4:].partition("\n---\n")
    if not separator:
        return ["the metadata header is not closed by a --- line"]
    try:
        metadata = yaml.safe_load(header)
    except yaml.YAMLError as error:
        return [f"the metadata header is not YAML: {error}"]
    if not isinstance(metadata, dict):
        return ["the metadata header is not a mapping"]
    if "model-index" in metadata:
        try:
            model_index_to_eval_results(metadata["model-index"])
        except (KeyError, TypeError, ValueError) as error:
            return [f"model-index is malformed: {error!r}"]
    return []


def _reset_http_sessions() -> None:
    """huggingface_hub before 1.0 fixes offline mode into its cached HTTP session when it creates it."""
    if hasattr(hf_utils, "reset_sessions"):
        hf_utils.reset_sessions()


# huggingface_hub's modules that hold copies of its constants in some releases (0.23: the endpoint, the cache).
_CONSTANT_COPIES = [
    importlib.import_module(f"huggingface_hub.{name}")
    for name in ("file_download", "hf_api", "_commit_api", "_snapshot_download", "lfs")
    if importlib.util.find_spec(f"huggingface_hub.{name}") is not None
]


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
        # huggingface_hub before 1.0 also copies some constants into its modules at import.
        for module in _CONSTANT_COPIES:
            if hasattr(module, name):
                self._monkeypatch.setattr(module, name, value)


@dataclass(frozen=True)
class ServedZooModel:
    entry: ZooEntry  # registered in the zoo under `entry.name` for the test's duration
    source: Path  # the official-layout .pth that the local Hub serves
    model: nn.Module  # the network those weights came from, in eval mode


TINY_CONFIG = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16, num_classes=400)


def serve_tiny_zoo_model(
    hub: LocalHub, monkeypatch: pytest.MonkeyPatch, folder: Path, *, revision: str = "main", **options: Any
) -> ServedZooModel:
    """Register a zoo entry for a tiny random UniFormer (Kinetics-400 labels, an 8x2 / 64 px / one-view
    protocol) and serve its official-layout `.pth` on the local Hub, so `load_model(name)` and
    `uniformer predict --model name` take the real download -> convert -> load path in seconds.
    `options`: `name`, `seed`, and entry fields to override (e.g. `hub_file=...`), as
    `register_tiny_zoo_entry` takes them; serving the same `name` again under another `revision` gives
    that revision other weights."""
    served = register_tiny_zoo_entry(monkeypatch, folder, revision=revision, **options)
    entry = served.entry
    if entry.hub_repo and entry.hub_file:
        hub.add_file(entry.hub_repo, entry.hub_file, served.source, revision=revision)
    return served


def register_tiny_zoo_entry(
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    *,
    name: str = "tiny-k400",
    revision: str = "main",
    seed: int = 0,
    **entry_changes: object,
) -> ServedZooModel:
    """The zoo entry of `serve_tiny_zoo_model`, registered without serving it: what a child process
    that downloads from the parent's `HubServer` (through `HF_ENDPOINT`) registers to know the name."""
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
    return ServedZooModel(entry, source, model)


def tiny_v2_entry(
    monkeypatch: pytest.MonkeyPatch, *, hub_file: str | None = None, mmaction2_url: str | None = None
) -> str:
    """A zoo entry for the `v2_b16` fixture network (its family patched in) with one copy: a Hub file or
    an MMAction2 URL."""
    monkeypatch.setitem(V2_FAMILIES, "v2-tiny", replace(V2_FIXTURES["v2_b16"], num_classes=400))
    label_set = "k400" if hub_file else "k400-mmaction"  # the official file's order, or MMAction2's
    base = V2_ZOO["v2-b16x8-k400-k710"]
    entry = replace(
        base,
        name="v2-tiny-k400",
        family="v2-tiny",
        protocol=replace(base.protocol, size=V2_FIXTURES["v2_b16"].resolution),
        hub_file=hub_file,
        mmaction2_url=mmaction2_url,
        label_set=label_set,
    )
    monkeypatch.setitem(V2_ZOO, entry.name, entry)
    return entry.name


def tiny_v2_checkpoint(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """The official PySlowFast layout (`model_state`, `backbone.` keys) of a random `tiny_v2_entry` network."""
    torch.manual_seed(1)
    model = create_model(V2_FIXTURES["v2_b16"].replace(num_classes=400)).eval()
    path = tmp_path / "tiny.pyth"
    torch.save({"epoch": 1, "model_state": {f"backbone.{k}": v for k, v in model.state_dict().items()}}, path)
    return path, model
