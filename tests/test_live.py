"""Live and piped input: `predict -` on a container piped to stdin gives the file's timeline, windows come
out while the stream runs, and the frames kept stay within 1.5 windows however long the stream is."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from cli_runner import run_cli
from hypothesis import given
from hypothesis import strategies as st
from synthetic_video import numbered_frame

from uniformer_cli.data.stream import Stream, is_stream
from uniformer_cli.data.windows import stream_windows, window_bounds
from uniformer_cli.engine.predict import load_predictor
from uniformer_cli.models import ModelConfig, create_model
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import save_weights

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def write_mpegts(path: Path, frames: int, fps: int = 30) -> Path:
    """An H.264 MPEG-TS clip: a container that can be read from a pipe (no index at the end)."""
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = 80, 64
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(numbered_frame(index), format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 64), head_dim=16, num_classes=4)
    torch.manual_seed(0)
    protocol = ViewProtocol(frames=4, stride=2, size=32)
    folder = tmp_path_factory.mktemp("live")
    return save_weights(
        folder / "tiny.safetensors", create_model(config).eval(), config, list("abcd"), protocol.as_dict()
    )


def uniformer(*args: object, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "uniformer_cli.cli.app", *map(str, args), "--device", "cpu"]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=120, env=ONE_THREAD)


@pytest.mark.parametrize(
    "frames", [100, 115]
)  # a tail shorter than half a window joins the last one; a longer one stands
def test_a_clip_piped_through_stdin_gives_the_files_windows(weights: Path, tmp_path: Path, frames: int) -> None:
    clip = write_mpegts(tmp_path / "clip.ts", frames)
    piped = uniformer("predict", "-", "-w", weights, "--timeline", "1", "--json", stdin=clip.read_bytes())
    assert piped.returncode == 0, piped.stderr.decode()
    lines = [json.loads(line) for line in piped.stdout.decode().splitlines()]
    # PyAV reads the file: decord misnumbers or refuses frames of MPEG-TS files (its seeking needs an index).
    from_file = uniformer("predict", clip, "-w", weights, "--timeline", "1", "--json", "--decoder", "pyav")
    assert from_file.returncode == 0, from_file.stderr.decode()
    [record] = json.loads(from_file.stdout)
    assert len(lines) == len(record["windows"]) == (3 if frames == 100 else 4)
    for line, window in zip(lines, record["windows"], strict=True):
        assert line["video"] == "stdin" and line["model"] == str(weights)
        assert (line["start"], line["end"], line["index"], line["label"]) == (
            window["start"], window["end"], window["index"], window["label"],
        )  # fmt: skip
        assert line["score"] == pytest.approx(window["score"], abs=1e-6)


class _LoggedStream(Stream):
    """A 30 fps stream of `count` frames that logs each frame as the reader takes it."""

    def __init__(self, count: int, log: list[tuple[str, int]]) -> None:
        super().__init__("logged", 30.0, 80, 64, None)  # type: ignore[arg-type]
        self.count, self.log = count, log

    def frames(self) -> Iterator[np.ndarray]:
        for index in range(self.count):
            self.log.append(("frame", index))
            yield np.full((64, 80, 3), index % 256, dtype=np.uint8)


def test_each_window_is_given_once_half_a_window_has_followed_it() -> None:
    """Windows come while the stream runs: 1 s window k (frames 30k..30k+29) is given right after frame
    30k+44 arrives, before any later frame is read; the last ones when the stream ends. They equal the
    windows of the same frames read as a file."""
    log: list[tuple[str, int]] = []
    stream = _LoggedStream(100, log)
    windows = []
    for first, stop, ring in stream_windows(stream, 1.0, 32):
        log.append(("window", first))
        windows.append((first, stop))
        assert set(ring.frames) >= set(range(first, stop))  # every frame the window needs is held
    assert windows == window_bounds(100, 30.0, 1.0) == [(0, 30), (30, 60), (60, 100)]
    assert log.index(("window", 0)) == log.index(("frame", 44)) + 1
    assert log.index(("window", 30)) == log.index(("frame", 74)) + 1
    assert log.index(("window", 60)) == log.index(("frame", 99)) + 1  # the tail of 10 frames joins it


def test_a_live_stream_holds_at_most_one_and_a_half_windows(weights: Path) -> None:
    """FFmpeg's `testsrc` through the `realtime` filter plays like a camera: 3 s of frames at 30 fps, in
    1 s windows; the ring never holds more than 1.5 windows of frames (45), for a short stream as for a
    long one."""
    predictor = load_predictor(weights, device="cpu")
    live = predictor.live_timeline("lavfi:testsrc=size=80x64:rate=30:duration=3,realtime", 1.0)
    assert len(live.windows) == 3
    bound = math.ceil(1.5 * 30)
    assert live.frames_held <= bound
    longer = predictor.live_timeline("lavfi:testsrc=size=80x64:rate=30:duration=20", 1.0)
    assert len(longer.windows) == 20 and live.frames_held == longer.frames_held <= bound
    print(f"frames held: {longer.frames_held} for a 20 s stream of 1 s windows at 30 fps (bound {bound})")


def test_stream_mistakes_are_one_line_errors(capsys: pytest.CaptureFixture[str], weights: Path, tmp_path: Path) -> None:
    assert is_stream("-") and is_stream("rtsp://cam/1") and is_stream("v4l2:/dev/video0")
    assert not is_stream("clip.mp4") and not is_stream("c:/videos/clip.mp4")
    code, _, err = run_cli(capsys, "predict", "-", "-w", weights)
    assert code == 2 and "--timeline" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "predict", "-", "clip.mp4", "-w", weights, "--timeline", "1")
    assert code == 1 and "the only PATH" in err
    code, _, err = run_cli(capsys, "predict", "http://127.0.0.1:9/none.ts", "-w", weights, "--timeline", "1")
    assert code == 1 and err.startswith("error: cannot open http://127.0.0.1:9/none.ts")
    assert len(err.strip().splitlines()) == 1
    empty = uniformer("predict", "-", "-w", weights, "--timeline", "1", stdin=b"")
    assert empty.returncode == 1 and empty.stderr.decode().startswith("error: cannot open stdin")


ROOT = Path(__file__).resolve().parent.parent


def top_level_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, size) of each box in data[start:end] (32-bit sizes and the 64-bit form)."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = int.from_bytes(data[start : start + 4], "big"), data[start + 4 : start + 8]
        if size == 1:
            size = int.from_bytes(data[start + 8 : start + 16], "big")
        elif size == 0:
            size = end - start
        yield kind, start, size
        start += size


def index_to_front(data: bytes) -> bytes:
    """The MP4 with its moov box moved before mdat, each chunk offset (stco, co64) shifted by the moov's
    size: what ffmpeg's `-movflags +faststart` and qt-faststart do."""
    boxes = {kind: (offset, size) for kind, offset, size in top_level_boxes(data)}
    moov_at, moov_size = boxes[b"moov"]
    mdat_at = boxes[b"mdat"][0]
    assert mdat_at < moov_at, "the index is already first"
    moov = bytearray(data[moov_at : moov_at + moov_size])

    def shift_offsets(start: int, end: int) -> None:
        for kind, offset, size in top_level_boxes(bytes(moov), start, end):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                shift_offsets(offset + 8, offset + size)
            elif kind in (b"stco", b"co64"):
                width = 4 if kind == b"stco" else 8
                count = int.from_bytes(moov[offset + 12 : offset + 16], "big")
                for entry in range(offset + 16, offset + 16 + count * width, width):
                    moved = int.from_bytes(moov[entry : entry + width], "big") + moov_size
                    moov[entry : entry + width] = moved.to_bytes(width, "big")

    shift_offsets(8, moov_size)
    return data[:mdat_at] + bytes(moov) + data[mdat_at:moov_at] + data[moov_at + moov_size :]


def test_a_piped_mp4_with_its_index_at_the_end_says_what_to_do(weights: Path) -> None:
    """`cat examples/yoga.mp4 | uniformer predict - --timeline 2`: the index comes after the frames, which a
    pipe cannot go back to. One line says so and how to fix it, with no raw FFmpeg error number; the same
    clip with its index moved first reads from the pipe."""
    late = (ROOT / "examples" / "yoga.mp4").read_bytes()
    assert [kind for kind, _, _ in top_level_boxes(late)][-1] == b"moov"  # as the camera wrote it
    piped = uniformer("predict", "-", "-w", weights, "--timeline", "2", stdin=late)
    err = piped.stderr.decode()
    assert piped.returncode == 1 and len(err.strip().splitlines()) == 1, err
    assert "index" in err and "give the file's path" in err and "-movflags +faststart" in err
    assert "Errno" not in err and "1094995529" not in err
    piped = uniformer("predict", "-", "-w", weights, "--timeline", "2", "--json", stdin=index_to_front(late))
    assert piped.returncode == 0, piped.stderr.decode()
    assert len(piped.stdout.decode().splitlines()) >= 2  # one JSON line per window


def box(kind: bytes, payload: int) -> bytes:
    return (8 + payload).to_bytes(4, "big") + kind + b"\0" * payload


@given(
    st.lists(st.sampled_from([b"free", b"wide", b"uuid", b"skip"]), max_size=4),
    st.sampled_from([b"moov", b"mdat"]),
    st.integers(0, 64),
)
def test_the_index_position_is_read_from_the_top_level_boxes(middle: list[bytes], first: bytes, size: int) -> None:
    from uniformer_cli.data.stream import mp4_index_first

    head = box(b"ftyp", 16) + b"".join(box(kind, size) for kind in middle) + box(first, 4)
    assert mp4_index_first(head) is (first == b"moov")
    assert mp4_index_first(head[: len(head) - 12]) is None  # cut before the box that tells
    assert mp4_index_first(b"\x47" * 188) is None  # MPEG-TS: not an MP4
