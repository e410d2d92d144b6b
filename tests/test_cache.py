"""`uniformer cache ls|rm|verify|prune` and `uniformer download --all`, on real downloads from the local
Hub and the local Google Drive into a throw-away HF_HOME."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from cli_runner import run_cli
from drive_server import DriveServer
from hub_server import LocalHub, serve_tiny_zoo_model
from synthetic_video import write_video

from uniformer_cli.weights import remote
from uniformer_cli.weights.cache import integrity_file, record_integrity
from uniformer_cli.zoo import ZOO
from uniformer_cli.zoo.v2 import V2_ZOO

DRIVE_ID = "1TinyCacheTestDriveFileId_012345"


@pytest.fixture
def two_models(
    local_hub: LocalHub, local_drive: DriveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, Path]:
    """A zoo of two tiny entries, one on the Hub and one on Google Drive only, both downloaded."""
    hub = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, name="tiny-k400")
    drive = serve_tiny_zoo_model(
        local_hub, monkeypatch, tmp_path, name="drive-k400", seed=1, hub_repo=None, hub_file=None, drive_id=DRIVE_ID
    )
    local_drive.add(DRIVE_ID, drive.source, name="uniformer_drive_k400.pth")
    for name in set(ZOO) - {"tiny-k400", "drive-k400"}:
        monkeypatch.delitem(ZOO, name)  # `download --all` and `cache ls` see these two alone
    for name in set(V2_ZOO):
        monkeypatch.delitem(V2_ZOO, name)
    return {"tiny-k400": hub.source, "drive-k400": drive.source}


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    return run_cli(capsys, *args)


def listing(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    code, out, err = cli(capsys, "cache", "ls", "--json")
    assert code == 0, err
    return {record["model"]: record for record in json.loads(out)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_all_then_ls_shows_each_download_with_its_source_sha256_and_size(
    capsys: pytest.CaptureFixture[str], two_models: dict[str, Path]
) -> None:
    assert listing(capsys) == {}
    code, out, err = cli(capsys, "download", "--all", "--json")
    assert code == 0, err
    assert {record["model"] for record in json.loads(out)} == set(two_models)
    records = listing(capsys)
    assert set(records) == set(two_models)
    hub, drive = records["tiny-k400"], records["drive-k400"]
    assert (hub["source"], drive["source"]) == ("hub", "drive")
    assert len(str(hub["revision"])) == 40 and drive["revision"] is None
    for name, record in records.items():
        assert record["sha256"] == sha256(two_models[name])  # the download's own sha256
        download, weights = Path(str(record["download"])), Path(str(record["weights"]))
        assert weights.suffix == ".safetensors" and weights.is_file()
        on_disk = os.path.getsize(os.path.realpath(download)) + weights.stat().st_size
        assert on_disk < int(record["size_bytes"]) < on_disk + 8192  # plus the sha256 records
        assert record["last_used"] is not None and record["openvino"] == []
    code, _, err = cli(capsys, "download")
    assert code == 2 and "--all" in err


def test_ls_notes_each_use_of_a_model(
    capsys: pytest.CaptureFixture[str], two_models: dict[str, Path], tmp_path: Path
) -> None:
    assert cli(capsys, "download", "tiny-k400")[0] == 0
    weights = Path(str(listing(capsys)["tiny-k400"]["weights"]))
    long_ago = time.time() - 30 * 24 * 3600
    os.utime(integrity_file(weights), (long_ago, long_ago))
    before = listing(capsys)["tiny-k400"]["last_used"]
    video = write_video(tmp_path / "clip.mp4", 12)
    code, _, err = cli(capsys, "predict", video, "--model", "tiny-k400", "--device", "cpu")
    assert code == 0, err
    after = listing(capsys)["tiny-k400"]["last_used"]
    assert str(after) > str(before)  # ISO times sort as text


def test_openvino_builds_belong_to_the_copy_they_were_built_from(
    capsys: pytest.CaptureFixture[str], two_models: dict[str, Path], local_hub: LocalHub
) -> None:
    assert cli(capsys, "download", "tiny-k400")[0] == 0
    record = listing(capsys)["tiny-k400"]
    digest = sha256(Path(str(record["weights"])))
    build = local_hub.home / "uniformer" / "openvino" / f"{digest}-8x64x64"
    for name, content in (("model.xml", b"<xml/>"), ("model.bin", b"\0" * 100)):
        (build / name).parent.mkdir(parents=True, exist_ok=True)
        (build / name).write_bytes(content)
        record_integrity(build / name)
    (build / "compiled-fp32").mkdir()
    record = listing(capsys)["tiny-k400"]
    assert record["openvino"] == ["8x64x64 fp32"]
    code, out, err = cli(capsys, "cache", "verify", "tiny-k400", "--json")
    assert code == 0, err
    assert sorted(check["kind"] for check in json.loads(out)) == ["download", "openvino", "openvino", "weights"]
    code, _, err = cli(capsys, "cache", "rm", "tiny-k400", "--yes")
    assert code == 0, err
    assert not build.exists()


def test_verify_hashes_every_file_and_names_the_damaged_one(
    capsys: pytest.CaptureFixture[str], two_models: dict[str, Path]
) -> None:
    assert cli(capsys, "download", "--all")[0] == 0
    code, out, err = cli(capsys, "cache", "verify", "--json")
    assert code == 0, err
    checks = json.loads(out)
    assert {(check["model"], check["kind"]) for check in checks} == {
        (name, kind) for name in two_models for kind in ("download", "weights")
    }
    assert all(check["error"] is None and check["sha256"] == check["expected"] for check in checks)
    # One flipped byte, the size and the times kept: the check before each use would not see it (its stat
    # stamp is unchanged); verify reads every file.
    weights = Path(str(listing(capsys)["drive-k400"]["weights"]))
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    code, out, err = cli(capsys, "cache", "verify", "--json")
    assert code == 3, err
    damaged = [check for check in json.loads(out) if check["error"]]
    assert [(check["model"], check["kind"]) for check in damaged] == [("drive-k400", "weights")]
    assert "damaged" in damaged[0]["error"] and "uniformer cache rm drive-k400" in damaged[0]["error"]
    assert err.count("error:") == 1 and weights.name in err


def test_rm_removes_one_model_or_all_and_keeps_the_pins(
    capsys: pytest.CaptureFixture[str], two_models: dict[str, Path], local_hub: LocalHub
) -> None:
    assert cli(capsys, "download", "--all")[0] == 0
    records = listing(capsys)
    hub_download = Path(str(records["tiny-k400"]["download"]))
    blob = Path(os.path.realpath(hub_download))
    code, out, err = cli(capsys, "cache", "rm", "tiny-k400", "--dry-run", "--json")
    assert code == 0, err
    planned = {Path(record["path"]) for record in json.loads(out)}
    assert {hub_download, blob, Path(str(records["tiny-k400"]["weights"]))} <= planned
    assert hub_download.exists() and blob.exists()  # a dry run removes nothing
    code, _, err = cli(capsys, "cache", "rm", "tiny-k400")
    assert code == 2 and "--yes" in err  # stdin is not a terminal: nothing is asked, nothing removed
    assert hub_download.exists()
    code, out, err = cli(capsys, "cache", "rm", "tiny-k400", "-y", "--json")
    assert code == 0, err
    assert all(record["removed"] for record in json.loads(out))
    assert not os.path.lexists(hub_download) and not blob.exists()
    assert set(listing(capsys)) == {"drive-k400"}
    code, _, err = cli(capsys, "cache", "rm", "tiny-k400", "-y")
    assert code == 1 and "nothing in the cache" in err
    code, _, err = cli(capsys, "cache", "rm", "--all", "-y")
    assert code == 0, err
    assert listing(capsys) == {}
    pins = local_hub.home / "uniformer" / "downloads" / remote.PINS_FILE
    assert f"drive:{DRIVE_ID}" in json.loads(pins.read_text())  # the sha256 first accepted stays pinned
    # The next use downloads and converts again.
    assert cli(capsys, "download", "tiny-k400")[0] == 0
    assert set(listing(capsys)) == {"tiny-k400"}


def test_prune_removes_what_nothing_points_at_and_keeps_the_rest(
    capsys: pytest.CaptureFixture[str], two_models: dict[str, Path], local_hub: LocalHub, tmp_path: Path
) -> None:
    assert cli(capsys, "download", "--all")[0] == 0
    before = listing(capsys)
    home = local_hub.home / "uniformer"
    # Orphans: an OpenVINO build of weights nobody has, a sha256 record of a file since deleted, a
    # converted copy whose Hub download was removed with `hf cache rm`, and a stale temporary file.
    orphan_build = home / "openvino" / f"{'0' * 64}-8x64x64"
    orphan_build.mkdir(parents=True)
    (orphan_build / "model.xml").write_text("<xml/>")
    gone = tmp_path / "gone.safetensors"
    gone.write_bytes(b"weights")
    from uniformer_cli.weights.cache import weights_sha256

    weights_sha256(gone)
    gone.unlink()
    (stale_record,) = (home / "digests").iterdir()
    temporary = home / "downloads" / "drive" / DRIVE_ID / ".x.pth.999999999.0123abcd.tmp"
    temporary.write_bytes(b"half")
    os.utime(temporary, (time.time() - 3 * 24 * 3600,) * 2)
    tiny_copy = Path(str(before["tiny-k400"]["weights"]))
    other_revision = tiny_copy.parent.parent / ("f" * 40) / tiny_copy.name
    other_revision.parent.mkdir()
    other_revision.write_bytes(tiny_copy.read_bytes())
    code, out, err = cli(capsys, "cache", "prune", "--dry-run", "--json")
    assert code == 0, err
    planned = {Path(record["path"]) for record in json.loads(out)}
    assert planned == {orphan_build, stale_record, temporary, other_revision}
    code, out, err = cli(capsys, "cache", "prune", "--yes", "--json")
    assert code == 0, err
    assert not any(path.exists() for path in planned)
    assert listing(capsys) == before  # the live models are untouched
    assert cli(capsys, "cache", "verify")[0] == 0
    code, out, _ = cli(capsys, "cache", "prune", "--dry-run", "--json")
    assert json.loads(out) == []
