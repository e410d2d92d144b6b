"""Zoo checkpoints from Google Drive (through gdown) and MMAction2's server, against local servers that
answer as they do: the confirm page, the redirect, the quota and infected pages, sha256 pinning, the
acceptance check, offline mode, and the fallback from one source to the next."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from drive_server import DriveServer
from hub_server import TINY_CONFIG, LocalHub, serve_tiny_zoo_model

from uniformer_cli import resolve_model
from uniformer_cli.errors import CheckpointError
from uniformer_cli.models import create_model
from uniformer_cli.weights import load_weights, remote
from uniformer_cli.weights.loader import fetch_zoo_weights
from uniformer_cli.weights.mmaction import head_order
from uniformer_cli.zoo import ZOO, get_entry

FILE_ID = "1TinyDriveFileIdForTests_0123456"


def logits(model: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return model(torch.randn(1, 3, 4, 32, 32, generator=generator))


def serve_on_drive(
    local_hub: LocalHub,
    drive: DriveServer,
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    *,
    mode: str = "confirm",
    seed: int = 0,
    **changes: object,
) -> torch.nn.Module:
    """A tiny zoo entry that only Google Drive has, served in `mode`; returns the model it holds."""
    fields: dict[str, object] = {"hub_repo": None, "hub_file": None, "drive_id": FILE_ID}
    fields.update(changes)
    served = serve_tiny_zoo_model(local_hub, monkeypatch, folder, seed=seed, **fields)
    drive.add(FILE_ID, served.source, name="uniformer_tiny_k400.pth", mode=mode)
    return served.model


def downloads(local_hub: LocalHub) -> list[Path]:
    return sorted(path for path in (local_hub.home / "uniformer" / "downloads").rglob("*") if path.is_file())


@pytest.mark.parametrize("mode", ["confirm", "direct"])
def test_a_drive_entry_downloads_through_the_redirect_and_the_confirm_page(
    local_hub: LocalHub,
    local_drive: DriveServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    source = serve_on_drive(local_hub, local_drive, monkeypatch, tmp_path, mode=mode)

    with caplog.at_level(logging.INFO, logger="uniformer_cli"):
        loaded = resolve_model("tiny-k400", device="cpu")

    torch.testing.assert_close(logits(loaded.model), logits(source), rtol=0, atol=1e-6)
    assert local_drive.count("/uc") == 1
    # The resolver's request(s), then gdown's transfer of the file itself.
    assert local_drive.count("/download") == (3 if mode == "confirm" else 2)
    digest = hashlib.sha256((tmp_path / "tiny-k400-main.pth").read_bytes()).hexdigest()
    assert digest in caplog.text  # printed at the first download
    pins = json.loads((local_hub.home / "uniformer" / "downloads" / remote.PINS_FILE).read_text())
    assert pins == {f"drive:{FILE_ID}": digest}
    assert load_weights(loaded.path).config == get_entry("tiny-k400").config

    again = resolve_model("tiny-k400")  # cached: no request at all
    assert again.path == loaded.path
    assert local_drive.count() == (4 if mode == "confirm" else 3)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("quota", r"refuses tiny-k400 from Google Drive for now: too many people downloaded .* download quota"),
        ("infected", r"flags tiny-k400 from Google Drive as infected"),
        ("loop", r"kept answering with its virus-scan warning page"),
    ],
)
def test_drive_pages_that_refuse_the_file_are_one_line_errors(
    local_hub: LocalHub,
    local_drive: DriveServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mode: str,
    message: str,
) -> None:
    serve_on_drive(local_hub, local_drive, monkeypatch, tmp_path, mode=mode)

    with pytest.raises(CheckpointError, match=message) as error:
        resolve_model("tiny-k400")

    assert "\n" not in str(error.value)
    assert f"https://drive.google.com/file/d/{FILE_ID}/view" in str(error.value)
    assert "--model tiny-k400 --weights FILE" in str(error.value)
    assert downloads(local_hub) == []


def test_a_file_drive_does_not_have_is_a_one_line_error(
    local_hub: LocalHub, local_drive: DriveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_on_drive(local_hub, local_drive, monkeypatch, tmp_path, drive_id="1SomeOtherIdThatDriveDoesNotHave")

    with pytest.raises(CheckpointError, match=r"Google Drive answered with a web page instead of tiny-k400"):
        resolve_model("tiny-k400")


def test_offline_a_cold_cache_fails_and_a_warm_one_needs_no_request(
    local_hub: LocalHub, local_drive: DriveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_on_drive(local_hub, local_drive, monkeypatch, tmp_path)
    local_hub.set_offline()
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set and tiny-k400 from Google Drive is not in"):
        resolve_model("tiny-k400")
    assert local_drive.count() == 0

    local_hub.set_offline(False)
    resolve_model("tiny-k400")
    served = local_drive.count()
    local_hub.set_offline()
    resolve_model("tiny-k400")
    assert local_drive.count() == served


def test_an_unreachable_drive_fails_clearly(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with DriveServer() as drive:
        serve_on_drive(local_hub, drive, monkeypatch, tmp_path)
        closed = drive.url
    monkeypatch.setenv(remote.DRIVE_ENDPOINT_VARIABLE, closed)

    with pytest.raises(CheckpointError, match=r"could not reach the server .* \(connection refused\)"):
        resolve_model("tiny-k400")


def test_a_changed_file_is_refused_unless_forced(
    local_hub: LocalHub, local_drive: DriveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    serve_on_drive(local_hub, local_drive, monkeypatch, tmp_path / "first")
    first = resolve_model("tiny-k400").path
    pins_file = local_hub.home / "uniformer" / "downloads" / remote.PINS_FILE
    pinned = json.loads(pins_file.read_text())
    # The cache is lost and Drive now serves other weights of the same architecture.
    for path in downloads(local_hub):
        if path.name != remote.PINS_FILE:
            path.unlink()
    changed = serve_on_drive(local_hub, local_drive, monkeypatch, tmp_path / "second", seed=1)

    with pytest.raises(CheckpointError, match=r"is not the one first downloaded here .* --force`") as error:
        resolve_model("tiny-k400")
    assert pinned[f"drive:{FILE_ID}"] in str(error.value)
    assert [path.name for path in downloads(local_hub)] == [remote.PINS_FILE]

    converted = fetch_zoo_weights(get_entry("tiny-k400"), force=True)

    assert converted == first
    torch.testing.assert_close(
        logits(resolve_model("tiny-k400", device="cpu").model), logits(changed), rtol=0, atol=1e-6
    )
    assert json.loads(pins_file.read_text()) != pinned


def test_a_download_of_another_architecture_is_removed_and_not_pinned(
    local_hub: LocalHub, local_drive: DriveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_on_drive(local_hub, local_drive, monkeypatch, tmp_path)
    other = create_model(TINY_CONFIG.replace(num_classes=174))
    torch.save(other.state_dict(), tmp_path / "other.pth")
    local_drive.add(FILE_ID, tmp_path / "other.pth")

    with pytest.raises(CheckpointError, match=r"for tiny-k400 is not that checkpoint, so it was removed: .*174"):
        resolve_model("tiny-k400")

    assert downloads(local_hub) == []


def test_a_failing_source_falls_back_to_the_next_one(
    local_hub: LocalHub,
    local_drive: DriveServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The Hub repository exists but lacks the file: the Drive copy is used, with a warning.
    local_hub.add_file("test-org/uniformer-tiny", "README.md", b"no weights here")
    source = serve_on_drive(local_hub, local_drive, monkeypatch, tmp_path)
    entry = replace(get_entry("tiny-k400"), hub_repo="test-org/uniformer-tiny", hub_file="missing.pth")
    monkeypatch.setitem(ZOO, entry.name, entry)

    with caplog.at_level(logging.WARNING, logger="uniformer_cli"):
        loaded = resolve_model("tiny-k400", device="cpu")

    torch.testing.assert_close(logits(loaded.model), logits(source), rtol=0, atol=1e-6)
    assert "the Hub has no missing.pth" in caplog.text and "trying the next source" in caplog.text


def mmaction_checkpoint(model: torch.nn.Module) -> dict[str, object]:
    """`model`'s weights as MMAction2 saves a UniFormer recognizer: `backbone.*`, `cls_head.fc_cls.*` with
    the rows in MMAction2's Kinetics-400 order, inside `{"meta", "state_dict"}`."""
    order = torch.tensor(head_order("k400"))  # official index -> MMAction2 row
    rows = torch.empty_like(order)
    rows[order] = torch.arange(len(order))  # MMAction2 row -> official index
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            state["cls_head.fc_cls." + key.removeprefix("head.")] = value[rows].clone()
        else:
            state["backbone." + key] = value
    return {"meta": {"mmaction_version": "1.0.0", "epoch": 1}, "state_dict": state}


def test_an_mmaction2_entry_downloads_pinned_by_the_prefix_of_its_name(
    local_hub: LocalHub, local_drive: DriveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    torch.manual_seed(3)
    source = create_model(TINY_CONFIG.replace(norm_eps=1e-5)).eval()
    torch.save(mmaction_checkpoint(source), tmp_path / "mm.pth")
    data = (tmp_path / "mm.pth").read_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    url = local_drive.add_plain(f"/mmaction/uniformer-tiny_20221219-{prefix}.pth", data)
    serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, hub_repo=None, hub_file=None, mmaction2_url=url)

    loaded = resolve_model("tiny-k400", device="cpu")

    torch.testing.assert_close(logits(loaded.model), logits(source), rtol=0, atol=1e-6)
    assert loaded.config.norm_eps == 1e-5
    assert load_weights(loaded.path).config.norm_eps == 1e-5  # recorded in the converted file


def test_an_mmaction2_download_that_does_not_match_its_name_is_refused(
    local_hub: LocalHub, local_drive: DriveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    torch.save(mmaction_checkpoint(create_model(TINY_CONFIG)), tmp_path / "mm.pth")
    url = local_drive.add_plain("/mmaction/uniformer-tiny_20221219-00000000.pth", tmp_path / "mm.pth")
    serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, hub_repo=None, hub_file=None, mmaction2_url=url)

    with pytest.raises(CheckpointError, match=r"is corrupt \(sha256 .* does not begin with 00000000"):
        resolve_model("tiny-k400")
    assert downloads(local_hub) == []


def test_revisions_are_for_hub_entries_only(
    local_hub: LocalHub, local_drive: DriveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_on_drive(local_hub, local_drive, monkeypatch, tmp_path)
    with pytest.raises(CheckpointError, match="--revision selects a Hub version, but tiny-k400 downloads from Google"):
        resolve_model("tiny-k400", revision="v2")


def test_the_download_command_reports_the_source_and_sha256_and_forces(
    local_hub: LocalHub,
    local_drive: DriveServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve_on_drive(local_hub, local_drive, monkeypatch, tmp_path)

    code, out, _ = run_cli(capsys, "download", "tiny-k400", "nonexistent-model", "--json")

    assert code == 3  # one of two failed
    first, unknown = json.loads(out)
    assert first["source"] == "drive" and first["error"] is None
    assert first["sha256"] == hashlib.sha256((tmp_path / "tiny-k400-main.pth").read_bytes()).hexdigest()
    assert Path(first["weights"]).is_file() and Path(first["download"]).is_file()
    assert "unknown model" in unknown["error"]

    local_drive.add(FILE_ID, b"not a checkpoint")
    code, _, err = run_cli(capsys, "download", "tiny-k400", "--force")
    assert code == 1 and err.count("error:") == 1 and "not that checkpoint" in err
