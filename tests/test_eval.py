"""`uniformer eval` end to end: small datasets on disk in every layout (PyAV videos, JPEG frame folders),
a tiny UniFormer whose ranking is forced by the mean of its input channel 0 (tests/eval_data.py), and
top-1 / top-5 / mean class accuracy checked against a count made here from the videos' colours."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from eval_data import CENTRES, colour, colour_model, flat_frames, flat_video, ranking

from uniformer_cli.cli.app import main
from uniformer_cli.data.datasets import get_dataset
from uniformer_cli.engine import evaluate as evaluate_engine
from uniformer_cli.engine.evaluate import open_for_dataset
from uniformer_cli.engine.request import InferenceRequest
from uniformer_cli.engine.scoring import VideoResult, compute_metrics
from uniformer_cli.errors import UniformerError
from uniformer_cli.protocol import ProtocolOverrides, ViewProtocol, resolve_protocol
from uniformer_cli.weights import save_weights
from uniformer_cli.zoo import get_entry, load_labels

TINY_NAMES = [f"class{k}" for k in range(len(CENTRES))]
DENSE_RGB = {"frames": 4, "stride": 2, "sampling": "dense", "clips": 2, "crops": 1, "size": 32, "channel_order": "rgb"}
SEGMENT_BGR = {"frames": 4, "sampling": "segment", "clips": 1, "crops": 3, "size": 32, "channel_order": "bgr"}


@dataclass
class Video:
    """A video of the test data: its label, what channel 0 reads (R, or B for BGR models), and its state."""

    label: int
    first: float  # normalised red
    third: float = 0.0  # normalised blue
    state: str = "ok"  # ok | broken (random bytes) | missing | short (fewer frames than listed)

    def rgb(self) -> tuple[int, int, int]:
        return colour(self.first, self.third)

    def seen(self, bgr: bool) -> float:
        return self.third if bgr else self.first


def write_model(path: Path, labels: list[str], protocol: dict[str, object]) -> Path:
    """The forced model with one head row per label: the first rows rank by the centres, the others sit
    so far away that they never reach the top 5."""
    centres = CENTRES + [50.0 + k for k in range(len(labels) - len(CENTRES))]
    model = colour_model(centres)
    return save_weights(path, model, model.config, labels=labels, protocol=protocol)


def expected(videos: list[Video], bgr: bool = False, skip_broken: bool = False) -> dict[str, float]:
    """Top-1, top-5, mean class accuracy (%) counted directly from the colours."""
    rows = []
    for video in videos:
        if video.state != "ok":
            if not skip_broken:
                rows.append((video.label, False, False))
            continue
        order = ranking(video.seen(bgr))
        rows.append((video.label, order[0] == video.label, video.label in order[:5]))
    classes = {label for label, *_ in rows}
    per_class = [
        sum(hit for label, hit, _ in rows if label == c) / sum(label == c for label, *_ in rows) for c in classes
    ]
    return {
        "top1": 100 * sum(hit for _, hit, _ in rows) / len(rows),
        "top5": 100 * sum(hit5 for *_, hit5 in rows) / len(rows),
        "mean_class": 100 * sum(per_class) / len(per_class),
    }


def make_media(path: Path, video: Video, frames: int = 12, template: str | None = None) -> None:
    if video.state == "missing":
        return
    if video.state == "broken":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00\x01 this is not a video " * 20)
    elif template is not None:
        flat_frames(path, video.rgb(), frames, template, size=(64, 48))
    else:
        flat_video(path, video.rgb(), frames, size=(64, 48))


def run_eval(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    try:
        main(["eval", "--workers", "0", "--device", "cpu", *map(str, args)])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def eval_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str | Path) -> dict:
    report = tmp_path / "report.json"
    code, _, err = run_eval(capsys, *args, "-o", report)
    data = json.loads(report.read_text())
    assert code == (3 if data["summary"]["failures"] else 0), err  # 3: some videos failed, the rest was written
    return data


def assert_metrics(summary: dict, wanted: dict[str, float]) -> None:
    for key, value in wanted.items():
        assert summary[key] == pytest.approx(value), key


# Labels chosen so each dataset has hits, top-5-only hits and misses (ranking() decides which).
MIXED = [Video(3, 0.0, 1.5), Video(2, 0.0, -1.0), Video(7, -1.5, 2.0), Video(5, 1.0, -0.5), Video(6, 0.5, 1.0)]


def test_metrics_count_failures_as_wrong_unless_skipped() -> None:
    results = [
        VideoResult("a", 0, [0, 1]),
        VideoResult("b", 0, [1, 0]),
        VideoResult("c", 1, [1, 0]),
        VideoResult("d", 1, error="cannot decode"),
    ]
    counted = compute_metrics(results)
    assert (counted.top1, counted.top5, counted.counted) == (50.0, 75.0, 4)
    assert counted.mean_class == pytest.approx((50.0 + 50.0) / 2)
    skipped = compute_metrics(results, skip_broken=True)
    assert (skipped.top1, skipped.top5, skipped.mean_class, skipped.counted) == (
        pytest.approx(200 / 3),
        100.0,
        pytest.approx(75.0),
        3,
    )


def test_protocol_is_the_models_unless_overridden(tmp_path: Path) -> None:
    spec = get_dataset("sthv1")
    released = get_entry("b-sthv1").protocol

    def build(model_protocol: ViewProtocol | None, **overrides: object) -> ViewProtocol:
        return resolve_protocol(model_protocol, ProtocolOverrides(**overrides), "tiny.pth")  # type: ignore[arg-type]

    assert build(released) == released
    changed = build(released, clips=2, frames=8)
    assert (changed.clips, changed.crops, changed.frames, changed.channel_order) == (2, 3, 8, "bgr")
    dense = build(released, sampling="dense", stride=4)
    assert (dense.sampling, dense.stride, dense.single_crop) == ("dense", 4, "centre")
    resized = build(released, size=160, channel_order="rgb")
    assert (resized.size, resized.channel_order, resized.sampling) == (160, "rgb", released.sampling)
    with pytest.raises(UniformerError, match="stride"):
        build(released, sampling="dense")
    own = build(None, frames=8, sampling="sparse", stride=4)
    assert own == ViewProtocol(frames=8, sampling="sparse")
    # A model without a protocol runs the dataset's zoo model's; without either, the user must say.
    weights = write_model(tmp_path / "tiny.pth.safetensors", load_labels("sthv1"), None)  # type: ignore[arg-type]
    cpu = torch.device("cpu")
    assert open_for_dataset(InferenceRequest(weights=weights), spec, cpu).protocol == spec.default_model.protocol
    with pytest.raises(UniformerError, match=r"tiny\.pth\.safetensors carries no test protocol: give --frames"):
        open_for_dataset(InferenceRequest(weights=weights), get_dataset("folder"), cpu)


def test_kinetics_official_list_with_broken_and_missing_videos(tmp_path: Path, capsys) -> None:
    videos = [*MIXED, Video(1, -1.0, state="broken"), Video(0, -1.5, state="missing")]
    lines = []
    for number, video in enumerate(videos):
        # Clips stored per class with their time range, listed under their YouTube id as officially.
        make_media(tmp_path / "val" / f"c{video.label}" / f"vid{number:08d}_000010_000020.mp4", video)
        lines.append(f"vid{number:08d}.mp4,{video.label}")
    (tmp_path / "val.csv").write_text("\r\n".join(lines) + "\r\n")
    weights = write_model(tmp_path / "k400.safetensors", load_labels("k400"), DENSE_RGB)

    report = tmp_path / "report.json"
    code, out, err = run_eval(capsys, "--dataset", "k400", "--root", tmp_path, "--weights", weights, "-o", report)
    assert code == 3, err
    data = json.loads(report.read_text())
    summary = data["summary"]
    assert_metrics(summary, expected(videos))
    assert (summary["videos"], summary["counted"], summary["failures"]) == (7, 7, 2)
    assert summary["protocol"]["clips"] == 2 and summary["paper_top1"] is None
    per_video = data["videos"]
    assert [item["video"] for item in per_video[:2]] == [
        f"val/c{MIXED[0].label}/vid00000000_000010_000020.mp4",
        f"val/c{MIXED[1].label}/vid00000001_000010_000020.mp4",
    ]
    for item, video in zip(per_video, videos, strict=True):
        if video.state == "ok":
            top5 = [ranked["index"] for ranked in item["top5"]]
            assert top5 == ranking(video.first)[:5] or set(top5) == set(ranking(video.first)[:5])
            assert item["predicted_index"] == top5[0] == ranking(video.first)[0] and item["error"] is None
            assert item["predicted_label"] == item["top5"][0]["label"] == load_labels("k400")[top5[0]]
            assert (item["true_index"], item["true_label"]) == (video.label, load_labels("k400")[video.label])
            assert item["correct"] == (top5[0] == video.label)
        else:
            assert item["error"] and item["top5"] == [] and item["correct"] is None
        assert item["weights"] == str(weights) and item["protocol"] == summary["protocol"]
    # The table names the metrics and lists both failures.
    assert "top-1" in out and "mean class" in out and "2 unreadable video(s)" in out
    assert "vid00000006.mp4" in out and "vid00000005_000010_000020.mp4" in out

    skipped = eval_json(
        capsys, tmp_path, "--dataset", "k400", "--root", tmp_path, "--weights", weights, "--skip-broken"
    )
    assert_metrics(skipped["summary"], expected(videos, skip_broken=True))
    assert (skipped["summary"]["counted"], skipped["summary"]["failures"]) == (5, 2)


def kinetics_release(folder: Path, videos: list[Video] = MIXED) -> Path:
    """Kinetics-600 as its annotation CSV lays it out, with `videos` under `folder`; returns the weights
    of the forced model for it."""
    labels = load_labels("k600")
    rows = ["label,youtube_id,time_start,time_end,split"]
    for number, video in enumerate(videos):
        make_media(folder / "videos" / f"id{number}_000000_000010.mp4", video)
        rows.append(f"{labels[video.label]},id{number},0,10,val")
    (folder / "validate.csv").write_text("\n".join(rows) + "\n")
    return write_model(folder / "k600.safetensors", labels, DENSE_RGB)


def test_kinetics_annotation_csv_and_limit(tmp_path: Path, capsys) -> None:
    weights = kinetics_release(tmp_path)
    data = eval_json(capsys, tmp_path, "--dataset", "k600", "--root", tmp_path, "--weights", weights)
    assert_metrics(data["summary"], expected(MIXED))
    # --json prints the JSON instead of the table.
    code, out, err = run_eval(capsys, "-D", "k600", "-r", tmp_path, "-w", weights, "--limit", "2", "--json")
    assert code == 0, err
    limited = json.loads(out)
    assert limited["summary"]["videos"] == 2 and len(limited["videos"]) == 2
    assert_metrics(limited["summary"], expected(MIXED[:2]))


@pytest.mark.parametrize("dataset", ["sthv1", "sthv2"])
def test_something_frame_folders_are_fed_bgr(tmp_path: Path, capsys, dataset: str) -> None:
    template = "{:05d}.jpg" if dataset == "sthv1" else "img_{:05d}.jpg"
    # Folders hold more frames than the list says: the list's count is the one sampled (PROTOCOLS.md 2.2); a
    # folder with fewer frames than listed cannot be read as the official loader would.
    videos = [*MIXED, Video(1, 0.0, -1.0, state="short")]
    lines = []
    for number, video in enumerate(videos):
        make_media(tmp_path / f"{number}", video, frames=4 if video.state == "short" else 10, template=template)
        lines.append(f"{number} 8 {video.label}")
    (tmp_path / f"somesome{dataset[-2:]}_rgb_validation_split.txt").write_text("\n".join(lines))
    weights = write_model(tmp_path / "sth.safetensors", load_labels(dataset), SEGMENT_BGR)
    data = eval_json(capsys, tmp_path, "--dataset", dataset, "--root", tmp_path, "--weights", weights)
    summary = data["summary"]
    assert_metrics(summary, expected(videos, bgr=True))
    assert summary["failures"] == 1 and "out of range" in data["videos"][-1]["error"]
    assert expected(MIXED, bgr=True)["top1"] != expected(MIXED, bgr=False)["top1"]  # the data tells them apart
    assert summary["protocol"]["crops"] == 3 and summary["layout"].startswith("frame folders")


@pytest.mark.parametrize("labels", ["labels/", "something-something-v2-"])
def test_sthv2_webm_release(tmp_path: Path, capsys, labels: str) -> None:
    # As downloaded today (labels/labels.json, labels/validation.json) and under the older names.
    names = load_labels("sthv2")
    items = []
    for number, video in enumerate(MIXED):
        make_media(tmp_path / "20bn-something-something-v2" / f"{number + 100}.webm", video)
        items.append({"id": str(number + 100), "template": names[video.label], "placeholders": []})
    (tmp_path / f"{labels}validation.json").parent.mkdir(exist_ok=True)
    (tmp_path / f"{labels}validation.json").write_text(json.dumps(items))
    label_map = {name.replace("[", "").replace("]", ""): str(index) for index, name in enumerate(names)}
    (tmp_path / f"{labels}labels.json").write_text(json.dumps(label_map))
    weights = write_model(tmp_path / "sth.safetensors", names, SEGMENT_BGR)
    summary = eval_json(capsys, tmp_path, "--dataset", "sthv2", "--root", tmp_path, "--weights", weights)["summary"]
    assert_metrics(summary, expected(MIXED, bgr=True))
    assert summary["failures"] == 0


def test_ucf101_and_hmdb51_split_lists(tmp_path: Path, capsys) -> None:
    ucf_names = load_labels("ucf101")
    (tmp_path / "ucf" / "split1").mkdir(parents=True)
    lines = []
    for number, video in enumerate(MIXED):
        relative = f"{ucf_names[video.label]}/v_{ucf_names[video.label]}_g01_c0{number}.avi"
        make_media(tmp_path / "ucf" / "UCF-101" / relative, video)
        lines.append(f"{relative} {video.label}")
    (tmp_path / "ucf" / "split1" / "val.csv").write_text("\n".join(lines) + "\n")
    weights = write_model(tmp_path / "ucf.safetensors", ucf_names, DENSE_RGB | {"crops": 3})
    summary = eval_json(capsys, tmp_path, "--dataset", "ucf101", "--root", tmp_path / "ucf", "--weights", weights)
    assert_metrics(summary["summary"], expected(MIXED))

    hmdb_names = load_labels("hmdb51")
    (tmp_path / "hmdb" / "split2").mkdir(parents=True)
    lines = []
    for number, video in enumerate(MIXED):
        make_media(tmp_path / "hmdb" / f"{hmdb_names[video.label]}_{number}", video, template="img_{:05d}.jpg")
        lines.append(f"{hmdb_names[video.label]}_{number} 12 {video.label}")
    (tmp_path / "hmdb" / "split2" / "val.txt").write_text("\n".join(lines) + "\n")
    weights = write_model(tmp_path / "hmdb.safetensors", hmdb_names, DENSE_RGB | {"channel_order": "bgr"})
    args = ("--dataset", "hmdb51", "--root", tmp_path / "hmdb", "--split", "val2", "--weights", weights)
    assert_metrics(eval_json(capsys, tmp_path, *args)["summary"], expected(MIXED, bgr=True))


def test_folder_and_csv_layouts_with_workers(tmp_path: Path, capsys) -> None:
    lines = ["path,label"]
    for number, video in enumerate(MIXED):
        make_media(tmp_path / "val" / TINY_NAMES[video.label] / f"{number}.mp4", video)
        lines.append(f"val/{TINY_NAMES[video.label]}/{number}.mp4,{TINY_NAMES[video.label]}")
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    weights = write_model(tmp_path / "tiny.safetensors", TINY_NAMES, DENSE_RGB)
    folder = eval_json(capsys, tmp_path, "--dataset", "folder", "--root", tmp_path, "--weights", weights)
    # The folder reader sorts, the CSV keeps its order: the same videos, the same numbers.
    assert_metrics(folder["summary"], expected(MIXED))
    listed = eval_json(capsys, tmp_path, "-D", "csv", "--list", tmp_path / "list.csv", "-w", weights, "--workers", "2")
    assert_metrics(listed["summary"], expected(MIXED))
    assert sorted(item["video"] for item in listed["videos"]) == sorted(item["video"] for item in folder["videos"])


def mixed_csv_run(tmp_path: Path) -> tuple[str | Path, ...]:
    """Write `MIXED` as videos with a CSV list and the forced model; return the eval flags that read them."""
    lines = ["path,label"]
    for number, video in enumerate(MIXED):
        make_media(tmp_path / f"{number}.mp4", video)
        lines.append(f"{number}.mp4,{video.label}")
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    weights = write_model(tmp_path / "tiny.safetensors", TINY_NAMES, DENSE_RGB)
    return ("--dataset", "csv", "--list", tmp_path / "list.csv", "--weights", weights)


def test_protocol_overrides_and_resume(tmp_path: Path, capsys) -> None:
    base = mixed_csv_run(tmp_path)
    override = ("--frames", "8", "--sampling", "segment", "--clips", "1", "--crops", "3", "--size", "64")
    summary = eval_json(capsys, tmp_path, *base, *override)["summary"]
    assert summary["protocol"] | {"single_crop": None} == DENSE_RGB | {
        "frames": 8,
        "stride": None,
        "sampling": "segment",
        "clips": 1,
        "crops": 3,
        "size": 64,
        "single_crop": None,
    }
    assert_metrics(summary, expected(MIXED))

    report = tmp_path / "resume.json"
    run_eval(capsys, *base, "--limit", "2", "-o", report)
    first = json.loads(report.read_text())
    assert first["summary"]["videos"] == 2
    code, _, err = run_eval(capsys, *base, "-o", report, "--resume")
    assert code == 0, err
    resumed = json.loads(report.read_text())
    assert (resumed["summary"]["videos"], resumed["summary"]["evaluated"]) == (5, 3)
    assert resumed["videos"][:2] == first["videos"]
    assert_metrics(resumed["summary"], expected(MIXED))
    # A different protocol cannot continue that file.
    code, _, err = run_eval(capsys, *base, "--clips", "3", "-o", report, "--resume")
    assert code == 1 and "cannot resume" in err and "protocol" in err


def test_sigterm_saves_the_scored_videos_for_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = mixed_csv_run(tmp_path)
    scoring = evaluate_engine.score_videos

    def terminated_after_two(*args: object, **kwargs: object) -> Iterator[tuple[int, VideoResult]]:
        for count, scored in enumerate(scoring(*args, **kwargs), start=1):  # type: ignore[arg-type]
            yield scored
            if count == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler pre-empting the job

    monkeypatch.setattr(evaluate_engine, "score_videos", terminated_after_two)
    report = tmp_path / "report.json"
    code, _, err = run_eval(capsys, *base, "-o", report)
    assert code == 143 and "terminated (SIGTERM)" in err
    assert f"2 videos saved in {report}: continue with the same command and --resume" in " ".join(err.split())
    saved = json.loads(report.read_text())
    assert (saved["summary"]["videos"], saved["summary"]["complete"]) == (2, False)
    monkeypatch.setattr(evaluate_engine, "score_videos", scoring)
    code, _, err = run_eval(capsys, *base, "-o", report, "--resume")
    assert code == 0, err
    resumed = json.loads(report.read_text())
    assert (resumed["summary"]["videos"], resumed["summary"]["evaluated"]) == (5, 3)
    assert_metrics(resumed["summary"], expected(MIXED))


@pytest.mark.parametrize(
    ("layout", "args", "message"),
    [
        ("none", ("--dataset", "k400", "--root", "{tmp}/nowhere"), "dataset root .*nowhere does not exist"),
        ("none", ("--dataset", "sthv1", "--root", "{tmp}"), "no sthv1 val list under"),
        ("none", ("--dataset", "csv", "--list", "{tmp}/missing.csv"), "list file .*missing.csv does not exist"),
        ("tiny", ("--dataset", "k400", "--root", "{tmp}"), "the model's classes are not the k400 classes"),
        ("unknown", ("--dataset", "folder", "--root", "{tmp}"), r"not classes of the model .*'zebra'"),
        ("range", ("--dataset", "csv", "--list", "{tmp}/list.csv"), r"list.csv:1: label 8 is out of range"),
        ("tiny", ("--dataset", "csv", "--list", "{tmp}/list.csv", "--resume"), "--resume needs -o FILE.json"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, capsys, layout: str, args: tuple[str, ...], message: str) -> None:
    weights = write_model(tmp_path / "tiny.safetensors", TINY_NAMES, DENSE_RGB)
    if layout == "unknown":
        (tmp_path / "val" / "zebra").mkdir(parents=True)
        (tmp_path / "val" / "zebra" / "a.mp4").touch()
    for name in ("list.csv", "val.csv"):
        (tmp_path / name).write_text("a.mp4,8\n" if layout == "range" else "a.mp4,1\n")
    code, _, err = run_eval(capsys, *(arg.format(tmp=tmp_path) for arg in args), "--weights", weights)
    assert code == 1
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert re.search(message, err), err
