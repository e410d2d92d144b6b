"""Zoo downloads through huggingface_hub against the local Hub server: convert once, reuse, offline
mode, revisions, integrity checks and the failures a user can hit."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hub_server import LocalHub, serve_tiny_zoo_model

from uniformer_cli import load_model, resolve_model
from uniformer_cli.errors import CheckpointError, UniformerError
from uniformer_cli.weights import cache, hub, load_weights, loader
from uniformer_cli.zoo import IMAGENET_WEIGHTS, ZOO, get_entry, load_labels


def logits(model: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return model(torch.randn(1, 3, 4, 32, 32, generator=generator))


def converted_files(local_hub: LocalHub) -> list[Path]:
    return sorted((local_hub.home / cache.CONVERTED_FOLDER).rglob("*.safetensors"))


def test_zoo_download_converts_once_and_gives_the_source_logits(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    entry = get_entry("tiny-k400")
    assert entry.hub_file is not None

    loaded = resolve_model("tiny-k400")

    assert not loaded.model.training
    torch.testing.assert_close(logits(loaded.model), logits(served.model), rtol=0, atol=1e-6)
    assert loaded.labels == load_labels("k400")
    assert loaded.entry == entry
    assert loaded.protocol == entry.protocol
    assert local_hub.count("GET", entry.hub_file) == 1
    (converted,) = converted_files(local_hub)
    assert converted.parent.parent.name == "test-org--uniformer-tiny"
    assert converted.name == "uniformer_tiny_k400.safetensors"
    stored = load_weights(converted)
    assert stored.config == entry.config
    assert stored.labels == load_labels("k400")
    for key, tensor in served.model.state_dict().items():
        assert torch.equal(stored.state_dict[key], tensor), key

    # Second use: neither a download nor a conversion.
    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(loader, "convert_checkpoint", no_conversion)
    modified = converted.stat().st_mtime_ns
    again = load_model("tiny-k400")
    assert local_hub.count("GET", entry.hub_file) == 1
    assert converted.stat().st_mtime_ns == modified
    assert again.labels == load_labels("k400")
    assert again.zoo_entry == entry
    torch.testing.assert_close(logits(again), logits(served.model), rtol=0, atol=1e-6)


def test_offline_mode_uses_the_warm_cache_without_any_request(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    load_model("tiny-k400")
    requests = local_hub.count()
    local_hub.set_offline()
    model = load_model("tiny-k400")
    assert local_hub.count() == requests
    torch.testing.assert_close(logits(model), logits(served.model), rtol=0, atol=1e-6)


def test_offline_mode_with_a_cold_cache_fails_clearly(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    local_hub.set_offline()
    with pytest.raises(CheckpointError, match=r"HF_HUB_OFFLINE is set and uniformer_tiny_k400\.pth .* not in the"):
        load_model("tiny-k400")
    assert local_hub.count() == 0


def test_two_revisions_download_and_convert_separately(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    main = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, seed=0)
    v2 = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, revision="v2", seed=1)
    from_main = load_model("tiny-k400")
    from_v2 = load_model("tiny-k400", revision="v2")
    torch.testing.assert_close(logits(from_main), logits(main.model), rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(from_v2), logits(v2.model), rtol=0, atol=1e-6)
    assert not torch.allclose(logits(from_main), logits(from_v2))
    assert len(converted_files(local_hub)) == 2
    # Asking again for "main" after "v2" must not pick up v2's conversion.
    torch.testing.assert_close(logits(load_model("tiny-k400")), logits(main.model), rtol=0, atol=1e-6)


def test_a_file_missing_on_the_hub_fails_clearly(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    monkeypatch.setitem(ZOO, "gone-k400", replace(served.entry, name="gone-k400", hub_file="not_uploaded.pth"))
    with pytest.raises(CheckpointError, match=r"the Hub has no not_uploaded\.pth from test-org/uniformer-tiny"):
        load_model("gone-k400")


def test_an_unknown_revision_fails_clearly(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    with pytest.raises(CheckpointError, match="revision 'no-such-tag' does not exist"):
        load_model("tiny-k400", revision="no-such-tag")


def test_a_corrupt_download_is_refused_and_removed(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, hub_file="corrupt.pth")
    # The Hub advertises the sha256 of other bytes than it sends, as a damaged transfer would look.
    local_hub.add_file("test-org/uniformer-tiny", "corrupt.pth", served.source, etag=hashlib.sha256(b"x").hexdigest())
    with pytest.raises(CheckpointError, match=r"corrupt.*removed from the cache"):
        load_model("tiny-k400")
    assert not list((local_hub.home / "hub").rglob("blobs/*"))
    assert not converted_files(local_hub)


def test_a_file_of_another_size_than_the_zoo_records_is_refused(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, hub_bytes=123)
    with pytest.raises(CheckpointError, match="the zoo records 123"):
        load_model("tiny-k400")
    assert not converted_files(local_hub)


def test_an_entry_without_a_released_checkpoint_says_so(local_hub: LocalHub) -> None:
    entry = get_entry("s32x4-k400")
    assert entry.sources == ()
    with pytest.raises(CheckpointError, match=r"no checkpoint of s32x4-k400 was released .* --recipe s32x4-k400"):
        load_model("s32x4-k400")
    assert local_hub.count() == 0


def test_a_local_file_takes_no_revision_and_names_must_agree(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    with pytest.raises(UniformerError, match="--revision"):
        resolve_model(path, revision="main")
    with pytest.raises(UniformerError, match="two different models"):
        resolve_model("s16x8-k400", zoo_name="b32x4-k400")
    with pytest.raises(UniformerError, match="head_dim 64"):
        resolve_model("s16x8-k400", head_dim=32)


def test_the_hub_server_answers_like_the_hub(local_hub: LocalHub) -> None:
    """The properties huggingface_hub relies on, checked without it."""
    commit = local_hub.add_file("org/repo", "a.bin", b"abc")
    url = f"{local_hub.server.url}/org/repo/resolve/main/a.bin"
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as response:
        assert response.headers["ETag"] == f'"{hashlib.sha256(b"abc").hexdigest()}"'
        assert response.headers["X-Repo-Commit"] == commit
        assert response.headers["Content-Length"] == "3"
    with urllib.request.urlopen(f"{local_hub.server.url}/org/repo/resolve/{commit}/a.bin") as response:
        assert response.read() == b"abc"
    for path, code in (
        ("org/repo/resolve/main/b.bin", "EntryNotFound"),
        ("org/other/resolve/main/c.bin", "RepoNotFound"),
    ):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{local_hub.server.url}/{path}")
        assert error.value.code == 404
        assert error.value.headers["X-Error-Code"] == code
    assert local_hub.count("GET", "a.bin") == 1
    assert local_hub.count("HEAD") == 1
    assert os.environ["HF_ENDPOINT"] == local_hub.server.url


# --- the converted copy proves itself ----------------------------------------------------------------


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_empty(path: Path) -> None:
    path.write_bytes(b"")


def damage_tail(path: Path) -> None:
    """Random bytes over the last 4 KB: a file that still parses, with other weights (the worst case)."""
    data = bytearray(path.read_bytes())
    data[-4096:] = os.urandom(4096)
    path.write_bytes(bytes(data))


def damage_tail_keeping_mtime(path: Path) -> None:
    stat = path.stat()
    damage_tail(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ctime still moves: it cannot be set back


@pytest.mark.parametrize("damage", [damage_truncate, damage_empty, damage_tail, damage_tail_keeping_mtime])
def test_a_damaged_converted_copy_is_converted_again_from_the_download(
    local_hub: LocalHub,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: object,
) -> None:
    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    load_model("tiny-k400")
    (converted,) = converted_files(local_hub)
    sidecar = cache.integrity_file(converted)
    record = json.loads(sidecar.read_text())
    assert record["sha256"] == hashlib.sha256(converted.read_bytes()).hexdigest()
    assert record["source_sha256"] == hashlib.sha256(served.source.read_bytes()).hexdigest()
    assert load_weights(converted).state_dict

    damage(converted)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING):
        model = load_model("tiny-k400")
    assert "converting it again from the verified download" in caplog.text
    assert cache.integrity_problem(converted) is None
    for key, tensor in served.model.state_dict().items():
        assert torch.equal(load_weights(converted).state_dict[key], tensor), key
    torch.testing.assert_close(logits(model), logits(served.model), rtol=0, atol=1e-6)
    assert local_hub.count("GET", get_entry("tiny-k400").hub_file or "") == 1  # no second download


def test_an_untouched_copy_is_not_hashed_again(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    load_model("tiny-k400")
    hashed: list[Path] = []
    monkeypatch.setattr(cache, "sha256_of", lambda path: hashed.append(path) or "")
    load_model("tiny-k400")
    assert hashed == []


def test_a_copy_without_a_record_is_converted_again(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    load_model("tiny-k400")
    (converted,) = converted_files(local_hub)
    cache.integrity_file(converted).unlink()
    with caplog.at_level(logging.WARNING):
        load_model("tiny-k400")
    assert "has no record of its sha256" in caplog.text
    assert cache.integrity_problem(converted) is None


def test_leftovers_of_killed_downloads_and_writes_are_removed(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    load_model("tiny-k400")
    (converted,) = converted_files(local_hub)
    blobs = next((local_hub.home / "hub").rglob("blobs"))
    stale, fresh = blobs / ("a" * 64 + ".incomplete"), blobs / ("b" * 64 + ".incomplete")
    stale.write_bytes(b"half")
    fresh.write_bytes(b"in progress")
    old = time.time() - 2 * cache.STALE_DOWNLOAD_SECONDS
    os.utime(stale, (old, old))
    dead_pid = 2**22 + 17  # above any pid_max default: no such process
    killed = converted.with_name(f".{converted.name}.{dead_pid}.0badc0de.tmp")
    killed.write_bytes(b"partial")
    os.utime(killed, (time.time() - 60, time.time() - 60))
    cache.integrity_file(converted).unlink()  # forces a conversion, which cleans its folder first
    load_model("tiny-k400")
    assert not stale.exists() and fresh.exists()
    assert not killed.exists()


@contextlib.contextmanager
def silent_hub(local_hub: LocalHub) -> Iterator[list[socket.socket]]:
    """HF_ENDPOINT at a port that accepts connections and never answers (a network that drops packets);
    yields the connections made so far, each held open unanswered."""
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connections.append(listener.accept()[0])
            except OSError:  # the listener closed
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        local_hub.set_endpoint(f"http://127.0.0.1:{listener.getsockname()[1]}")
        yield connections
    finally:
        listener.close()
        for connection in connections:
            connection.close()


def _failure(download: Callable[[], object]) -> str:
    with pytest.raises(CheckpointError) as failure:
        download()
    return str(failure.value)


def test_a_cold_cache_without_the_hub_fails_at_its_first_try_for_every_download(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Zoo weights and ImageNet weights go through the one helper: with the Hub down, unreachable or
    switched off, each fails at once with our message and what to do instead: one request, bounded by
    `probe_timeout()`, where huggingface_hub alone retries with backoff for ~30 s; offline, none at all."""
    serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    local_hub.add_file("test-org/uniformer-image", "tiny_in1k.pth", b"image weights")
    monkeypatch.setitem(IMAGENET_WEIGHTS, "tiny", ("test-org/uniformer-image", "tiny_in1k.pth"))
    downloads = {"--weights": lambda: load_model("tiny-k400"), "--init FILE": lambda: hub.image_weights("tiny")}
    endpoint = local_hub.server.url
    local_hub.server.stop()
    for remedy, download in downloads.items():
        message = _failure(download)
        assert message.startswith(f"could not reach the Hub ({endpoint}) (") and remedy in message
    with silent_hub(local_hub) as connections:
        for count, (remedy, download) in enumerate(downloads.items(), start=1):
            message = _failure(download)
            assert message.startswith("could not reach the Hub") and remedy in message
            assert len(connections) == count  # one try, no retries
    local_hub.set_offline()
    with silent_hub(local_hub) as connections:
        for remedy, download in downloads.items():
            message = _failure(download)
            assert message.startswith("HF_HUB_OFFLINE is set") and remedy in message
        assert connections == []


def test_a_warm_cache_survives_an_unreachable_hub(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    expected = logits(load_model("tiny-k400"))
    local_hub.server.stop()
    torch.testing.assert_close(logits(load_model("tiny-k400")), expected)
    assert served.entry.name == "tiny-k400"
