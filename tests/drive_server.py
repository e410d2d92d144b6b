"""A local stand-in for Google Drive's download endpoints (and any plain file server, such as MMAction2's),
for tests that exercise real downloads through `weights.remote` and gdown.

It answers the way Drive does, as gdown's code and issues describe it (wkentaro/gdown, `download.py`;
issues #325, #406 for the quota page):

- `GET /uc?export=download&id=ID` redirects (303) to `/download?id=ID&export=download`, as
  drive.google.com redirects to drive.usercontent.google.com;
- `/download?...` serves the file (`Content-Disposition: attachment`) directly for a small file, and for
  a large one ("confirm" mode) an HTML "virus scan warning" page whose `<form id="download-form">`
  carries the hidden inputs `id`, `export`, `confirm` and a one-time `uuid`; the form's URL serves the
  file, with `Range` support (206) as Drive's does;
- "quota" mode: the HTML page whose subcaption says too many users downloaded the file recently;
  "infected": the page saying the file is infected; "loop": the warning page, even when confirmed;
- an unknown id: a 404 HTML page.

`add_plain(path, content)` serves bytes at any other path (MMAction2's server in tests).

    with DriveServer() as drive:
        drive.add("FILEID", Path("model.pth"), mode="confirm")
        # UNIFORMER_DRIVE_ENDPOINT=drive.url
        drive.count("/download")  # requests served on that path
"""

from __future__ import annotations

import html
import re
import secrets
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

MODES = ("direct", "confirm", "quota", "infected", "loop")


@dataclass
class _DriveFile:
    content: bytes
    name: str
    mode: str


def _page(title: str, body: str) -> bytes:
    return (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title>"
        '<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head>'
        f"<body>{body}</body></html>"
    ).encode()


class DriveServer:
    """Threaded HTTP server on 127.0.0.1 (random port)."""

    def __init__(self) -> None:
        self.files: dict[str, _DriveFile] = {}
        self.plain: dict[str, bytes] = {}
        self._uuids: set[str] = set()
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # path -> count
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> DriveServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, file_id: str, content: bytes | Path, *, name: str = "model.pth", mode: str = "confirm") -> None:
        """Serve `content` as Drive file `file_id`; `mode` is one of `MODES`."""
        assert mode in MODES
        data = content.read_bytes() if isinstance(content, Path) else content
        with self._lock:
            self.files[file_id] = _DriveFile(data, name, mode)

    def add_plain(self, path: str, content: bytes | Path) -> str:
        """Serve `content` at `path` (e.g. "/mmaction/x.pth"); returns its URL."""
        with self._lock:
            self.plain[path] = content.read_bytes() if isinstance(content, Path) else content
        return self.url + path

    def count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(n for p, n in self.requests.items() if path is None or p == path)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        drive = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(parts.query).items()}
                with drive._lock:
                    drive.requests[parts.path] += 1
                    file = drive.files.get(query.get("id", ""))
                    plain = drive.plain.get(parts.path)
                if plain is not None:
                    self._file(plain, parts.path.rsplit("/", 1)[-1], attachment=False)
                elif parts.path == "/uc":
                    self.send_response(303)
                    self.send_header("Location", f"{drive.url}/download?id={query.get('id', '')}&export=download")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts.path != "/download" or file is None:
                    self._html(404, _page("Google Drive - Not Found", "<p>Sorry, the file does not exist.</p>"))
                elif file.mode == "quota":
                    self._html(
                        200,
                        _page(
                            "Google Drive - Quota exceeded",
                            self._error_body(
                                "Sorry, you can't view or download this file at this time.",
                                "Too many users have viewed or downloaded this file recently. Please try accessing the "
                                "file again later.",
                            ),
                        ),
                    )
                elif file.mode == "infected":
                    self._html(
                        200,
                        _page(
                            "Google Drive - Virus detected",
                            self._error_body(
                                "Sorry, this file is infected with a virus.",
                                "Only the owner is allowed to download infected files.",
                            ),
                        ),
                    )
                elif file.mode in ("confirm", "loop") and (file.mode == "loop" or not self._confirmed(query)):
                    self._html(200, self._warning_page(query.get("id", ""), file))
                else:
                    self._file(file.content, file.name, attachment=True)

            def _confirmed(self, query: dict[str, str]) -> bool:
                with drive._lock:
                    return query.get("confirm") == "t" and query.get("uuid", "") in drive._uuids

            def _warning_page(self, file_id: str, file: _DriveFile) -> bytes:
                token = secrets.token_hex(8)
                with drive._lock:
                    drive._uuids.add(token)
                inputs = "".join(
                    f'<input type="hidden" name="{name}" value="{value}">'
                    for name, value in (("id", file_id), ("export", "download"), ("confirm", "t"), ("uuid", token))
                )
                return _page(
                    "Google Drive - Virus scan warning",
                    f'<p class="uc-warning-caption">Google Drive can\'t scan this file for viruses.</p>'
                    f'<p class="uc-warning-subcaption">{html.escape(file.name)} ({len(file.content)} bytes) is too '
                    "large for Google to scan for viruses.</p>"
                    f'<form id="download-form" action="{drive.url}/download" method="get">'
                    f'<input type="submit" value="Download anyway">{inputs}</form>',
                )

            @staticmethod
            def _error_body(caption: str, subcaption: str) -> str:
                return (
                    f'<div class="uc-main"><p class="uc-error-caption">{html.escape(caption)}</p>'
                    f'<p class="uc-error-subcaption">{html.escape(subcaption)}</p></div>'
                )

            def _html(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, data: bytes, name: str, *, attachment: bool) -> None:
                start = 0
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if ranged and int(ranged[1]) < len(data):
                    start = int(ranged[1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if attachment:
                    self.send_header("Content-Disposition", f'attachment; filename="{name}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests read `drive.requests` instead."""

        return Handler
