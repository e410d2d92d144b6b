"""Decoders: decord == PyAV, seeking reads, frame folders, metadata and every kind of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from synthetic_video import decode_all, numbered_frame, write_audio_only, write_frame_folder, write_jpeg, write_video

from uniformer_cli.data import transforms
from uniformer_cli.data import video as video_module
from uniformer_cli.data.video import FrameFolderVideo, PyAVVideo, decord_available, open_video, torchcodec_problem
from uniformer_cli.errors import UniformerError, VideoError

FIXTURES = Path(__file__).parent / "fixtures" / "preprocess"
FIXTURE_CLIPS = ["Tw2yXa6CzWE", "carphone_pristine"]
needs_decord = pytest.mark.skipif(not decord_available(), reason="decord has no wheel for this platform")
# CI installs torchcodec (the test extra) and the system FFmpeg libraries it loads (.ci/run).
needs_torchcodec = pytest.mark.skipif(torchcodec_problem() is not None, reason=str(torchcodec_problem()))
NATIVE = [pytest.param("decord", marks=needs_decord), pytest.param("torchcodec", marks=needs_torchcodec)]


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 frames, a keyframe every 12 and B-frames: reads must seek and reorder."""
    return write_video(tmp_path_factory.mktemp("gop") / "gop.mp4", 120)


@pytest.mark.parametrize("clip", FIXTURE_CLIPS)
@pytest.mark.parametrize("decoder", ["pyav", *NATIVE])
def test_fixture_metadata(clip: str, decoder: str) -> None:
    meta = json.loads((FIXTURES / f"{clip}_indices.json").read_text())["meta"]
    with open_video(FIXTURES / f"{clip}.mp4", decoder) as video:
        assert video.decoder == decoder
        assert video.num_frames == meta["frames_decord"]
        assert video.fps == pytest.approx(meta["fps"])
        assert (video.width, video.height) == (meta["width"], meta["height"])


@pytest.mark.parametrize("decoder", NATIVE)
@pytest.mark.parametrize("clip", FIXTURE_CLIPS)
def test_native_decoders_and_pyav_return_identical_frames(clip: str, decoder: str) -> None:
    path = FIXTURES / f"{clip}.mp4"
    reference = decode_all(path)
    with open_video(path, "pyav") as pyav_video, open_video(path, decoder) as native:
        assert native.decoder == decoder
        everything = list(range(pyav_video.num_frames))
        assert np.array_equal(pyav_video.read(everything), reference)
        assert np.array_equal(native.read(everything), reference)
        sparse = [110, 3, 60, 3, 77]  # unordered, repeated: read returns them as asked
        assert np.array_equal(pyav_video.read(sparse), reference[sparse])
        assert np.array_equal(native.read(sparse), reference[sparse])


def test_auto_prefers_decord_when_installed() -> None:
    with open_video(FIXTURES / "carphone_pristine.mp4") as video:
        assert video.decoder == ("decord" if decord_available() else "pyav")


def test_pyav_random_reads_match_sequential_decoding(gop_video: Path) -> None:
    reference = decode_all(gop_video)
    rng = np.random.default_rng(0)
    with open_video(gop_video, "pyav") as video:
        assert video.num_frames == len(reference) == 120
        for _ in range(25):  # forward, backward and repeated reads on one open reader
            indices = rng.integers(0, 120, size=int(rng.integers(1, 12)))
            assert np.array_equal(video.read(indices), reference[indices])


def test_decoded_frames_keep_their_source_order(gop_video: Path) -> None:
    with open_video(gop_video, "pyav") as video:
        frames = video.read([5, 50, 119]).astype(int)
    for frame, index in zip(frames, [5, 50, 119], strict=True):
        errors = [np.abs(frame - numbered_frame(candidate)).mean() for candidate in range(120)]
        assert int(np.argmin(errors)) == index


def test_pyav_seeks_instead_of_decoding_everything(gop_video: Path) -> None:
    with open_video(gop_video, "pyav") as video:
        assert isinstance(video, PyAVVideo)
        video.read([100, 101])
        # Decoding from the keyframe at 96 (plus B-frame reordering) is far less than 102 frames.
        assert video.frames_decoded < 20
    with open_video(gop_video, "pyav") as video:
        video.read(list(range(0, 120, 3)))  # dense indices: one sequential pass
        assert video.frames_decoded <= 120


@pytest.mark.parametrize("decoder", NATIVE)
def test_native_decoders_match_pyav_on_a_seeking_video(gop_video: Path, decoder: str) -> None:
    rng = np.random.default_rng(1)
    with open_video(gop_video, "pyav") as pyav_video, open_video(gop_video, decoder) as native:
        assert native.num_frames == pyav_video.num_frames
        for indices in [[0, 13, 14, 59, 60, 61, 119, 2], *(rng.integers(0, 120, size=9) for _ in range(10))]:
            assert np.array_equal(native.read(indices), pyav_video.read(indices))


@needs_decord
@pytest.mark.parametrize(("height", "width"), [(36, 48), (48, 48)])
def test_auto_falls_back_to_pyav_where_decord_fails(tmp_path: Path, height: int, width: int) -> None:
    # decord 0.6 opens H.264 files 48 pixels wide but cannot copy out their frames; PyAV reads them.
    path = write_video(tmp_path / "narrow.mp4", 10, frame=lambda i: numbered_frame(i, height, width))
    reference = decode_all(path)
    with open_video(path, "decord") as video, pytest.raises(VideoError, match=r"decord cannot decode .*narrow\.mp4"):
        video.read([0])
    with open_video(path) as video:
        assert np.array_equal(video.read([9, 1]), reference[[9, 1]])
        assert video.decoder == "pyav"


@pytest.mark.parametrize("decoder", ["pyav", pytest.param("torchcodec", marks=needs_torchcodec)])
def test_webm_without_a_frame_count_in_the_header(tmp_path: Path, decoder: str) -> None:
    path = write_video(tmp_path / "clip.webm", 20, codec="libvpx-vp9", gop=5)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # the frame count comes from counting packets
    reference = decode_all(path)
    with open_video(path, decoder) as video:
        assert video.num_frames == len(reference) == 20
        assert np.array_equal(video.read([19, 0, 7]), reference[[19, 0, 7]])


# ---------------------------------------------------------------------------------------------------
# Frame folders


@pytest.mark.parametrize("template", ["{:05d}.jpg", "img_{:05d}.jpg"])
def test_frame_folder_equals_the_video_within_jpeg_loss(tmp_path: Path, template: str) -> None:
    frames = decode_all(FIXTURES / "carphone_pristine.mp4")[:24]
    folder = write_frame_folder(tmp_path / "video_0001", frames, template)
    with open_video(folder) as video:
        assert isinstance(video, FrameFolderVideo)
        assert (video.num_frames, video.width, video.height) == (24, 176, 144)
        assert video.fps == 30.0
        decoded = video.read([0, 11, 23]).astype(int)
    error = np.abs(decoded - frames[[0, 11, 23]].astype(int))
    assert error.mean() < 2.0
    assert error.max() < 40


def test_frame_folder_index_k_reads_file_k_plus_one(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for number in (1, 2, 3):
        write_jpeg(folder / f"img_{number:05d}.jpg", np.full((16, 16, 3), number * 60, np.uint8))
    (folder / "notes.txt").write_text("not a frame")
    with open_video(folder) as video:
        assert video.num_frames == 3
        levels = video.read([0, 1, 2]).reshape(3, -1).mean(axis=1)
    assert np.allclose(levels, [60, 120, 180], atol=3)


def test_frame_folder_with_a_gap_fails(tmp_path: Path) -> None:
    folder = tmp_path / "gappy"
    folder.mkdir()
    for number in (1, 2, 4):
        write_jpeg(folder / f"{number:05d}.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(VideoError, match="number 3 is missing"):
        open_video(folder)


def test_folder_without_frames_fails(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(VideoError, match="without numbered image frames"):
        open_video(tmp_path)


def test_frame_folder_with_mixed_sizes_fails_on_read(tmp_path: Path) -> None:
    folder = write_frame_folder(tmp_path / "frames", np.zeros((2, 16, 16, 3), np.uint8))
    write_jpeg(folder / "img_00003.jpg", np.zeros((16, 24, 3), np.uint8))
    with open_video(folder) as video, pytest.raises(VideoError, match="mixes image sizes"):
        video.read([0, 2])


def test_corrupt_frame_file_fails_on_read(tmp_path: Path) -> None:
    folder = write_frame_folder(tmp_path / "frames", np.zeros((3, 16, 16, 3), np.uint8))
    (folder / "img_00002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with open_video(folder) as video, pytest.raises(VideoError, match=r"img_00002\.jpg"):
        video.read([1])


# ---------------------------------------------------------------------------------------------------
# Bad input: one clear line, never a traceback from a foreign library


def _truncated_faststart(tmp_path: Path) -> Path:
    """The fixture remuxed with its index at the front, then cut in half: the header promises more
    frames than the file holds."""
    whole = tmp_path / "faststart.mp4"
    with (
        av.open(str(FIXTURES / "Tw2yXa6CzWE.mp4")) as source,
        av.open(str(whole), "w", options={"movflags": "faststart"}) as target,
    ):
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    data = whole.read_bytes()
    cut = tmp_path / "faststart_cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    data = (FIXTURES / "Tw2yXa6CzWE.mp4").read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(40_000))
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # index at the end: gone
    return {
        "missing": (tmp_path / "missing.mp4", "no such file"),
        "empty": (tmp_path / "empty.mp4", "empty"),
        "noise": (tmp_path / "noise.mp4", "cannot open"),
        "audio only": (write_audio_only(tmp_path / "audio.m4a"), "no video stream"),
        "truncated": (tmp_path / "cut.mp4", "truncated or corrupt"),
        "truncated, index first": (_truncated_faststart(tmp_path), r"header lists 300 frames but only \d+"),
    }


@pytest.mark.parametrize("decoder", ["auto", "pyav", *NATIVE])
def test_bad_inputs_raise_one_clear_line(tmp_path: Path, decoder: str) -> None:
    for name, (path, message) in _bad_inputs(tmp_path).items():
        with pytest.raises(VideoError, match=message) as caught:
            open_video(path, decoder)
        assert "\n" not in str(caught.value), name
        assert str(path) in str(caught.value), name


def test_out_of_range_read_fails() -> None:
    with open_video(FIXTURES / "carphone_pristine.mp4", "pyav") as video, pytest.raises(VideoError, match="range"):
        video.read([0, 120])


def test_unknown_decoder_fails() -> None:
    with pytest.raises(UniformerError, match="unknown decoder"):
        open_video(FIXTURES / "carphone_pristine.mp4", "opencv")


@pytest.mark.parametrize("decoder", ["pyav", *NATIVE])
def test_damaged_frame_data_fails_on_read(tmp_path: Path, decoder: str) -> None:
    # Keep the header and the index (at the end of this file) but zero the second half of the frames.
    data = bytearray((FIXTURES / "carphone_pristine.mp4").read_bytes())
    start, index = data.find(b"mdat") + 4, data.find(b"moov")
    middle = (start + index) // 2
    data[middle : index - 8] = bytes(index - 8 - middle)
    path = tmp_path / "zeroed.mp4"
    path.write_bytes(bytes(data))
    with open_video(path, decoder) as video:
        video.read([0])  # the intact first half still decodes
        with pytest.raises(VideoError, match=r"zeroed\.mp4") as caught:
            video.read(list(range(video.num_frames)))
    assert "\n" not in str(caught.value)


# --- memory: frames are decoded as they are consumed --------------------------------------------------


@pytest.mark.parametrize("decoder", ["pyav", *NATIVE])
def test_frames_stream_one_batch_at_a_time_and_equal_read(
    gop_video: Path, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(video_module, "DECODE_BATCH_BYTES", 2 * 64 * 80 * 3)  # two frames per decord batch
    indices = [0, 5, 6, 7, 50, 119]
    with open_video(gop_video, decoder) as video:
        expected = video.read(indices)
    with open_video(gop_video, decoder) as video:
        stream = video.iter_frames(indices)
        first = next(stream)
        decoded_after_one = getattr(video, "frames_decoded", None)
        rest = list(stream)
    assert np.array_equal(np.stack([first, *rest]), expected)
    if decoded_after_one is not None:  # PyAV counts its work: the first frame did not decode the others
        assert decoded_after_one == 1
    with open_video(gop_video, decoder) as video, pytest.raises(ValueError, match="sorted"):
        list(video.iter_frames([5, 0]))


def test_resizing_streamed_frames_a_channel_at_a_time_matches_one_resize_of_the_clip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (9, 96, 128, 3), dtype=np.uint8)
    whole = transforms.short_side_resize(transforms.normalise(frames), 64)
    monkeypatch.setattr(transforms, "RESIZE_BATCH_BYTES", 2 * 96 * 128 * 4)  # groups of two frames
    streamed = transforms.resized_clip(iter(frames), 64)
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-6)  # the last bit may differ


@needs_decord
def test_auto_decodes_large_frames_with_pyav(gop_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_video(gop_video, "auto") as video:
        assert video.decoder == "decord"
    monkeypatch.setattr(video_module, "DECORD_MAX_PIXELS", 64 * 80 - 1)
    with open_video(gop_video, "auto") as video:
        assert video.decoder == "pyav"
    with open_video(gop_video, "decord") as video:  # asked for by name: kept
        assert video.decoder == "decord"


# --- choosing a decoder -----------------------------------------------------------------------------


@pytest.mark.parametrize("workload", ["views", "timeline", "train"])
def test_auto_takes_the_first_suitable_decoder_of_its_workload(tmp_path: Path, workload: str) -> None:
    """64 px wide (a multiple of 32, torchcodec's fast width) and 80 px wide (not one)."""
    installed = {"pyav": True, "decord": decord_available(), "torchcodec": torchcodec_problem() is None}
    for width in (64, 80):
        path = write_video(tmp_path / f"w{width}.mp4", 12, frame=lambda i, w=width: numbered_frame(i, 48, w))
        suits = {**installed, "torchcodec": installed["torchcodec"] and width % 32 == 0}
        expected = next(name for name in video_module.AUTO_DECODERS[workload] if suits[name])
        with open_video(path, "auto", workload) as video:
            assert video.decoder == expected
            assert np.array_equal(video.read([11, 0]), decode_all(path)[[11, 0]])


def test_every_workload_ends_with_pyav() -> None:
    assert all(order[-1] == "pyav" for order in video_module.AUTO_DECODERS.values())
    assert "decord" not in video_module.AUTO_DECODERS["timeline"]  # its memory grows with the video


@needs_decord
def test_decord_reopens_its_reader_on_long_reads(gop_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_module, "DECORD_REOPEN_FRAMES", 10)
    reference = decode_all(gop_video)
    with open_video(gop_video, "decord", "timeline") as video:
        assert isinstance(video, video_module.DecordVideo)
        for first in range(0, 120, 12):  # windows in order, as the timeline reads them
            indices = list(range(first, first + 12, 3))
            assert np.array_equal(video.read(indices), reference[indices])
        assert video.readers_opened == 4  # 40 frames served: a new reader after each 10
    with open_video(gop_video, "decord", "views") as video:
        video.read(list(range(0, 120, 3)))
        assert video.readers_opened == 1


# torchcodec where FFmpeg's libraries cannot be loaded: an empty file in front of each library name makes
# the dynamic loader fail on it as it fails on a missing one.
MISSING_FFMPEG = """
import logging, sys
logging.basicConfig(format="%(levelname)s %(message)s")
from uniformer_cli.data.video import open_video
for decoder in sys.argv[2:]:
    for _ in range(2):
        with open_video(sys.argv[1], decoder, "timeline") as video:
            print("decoded with", video.decoder, video.read([0]).shape)
"""


@pytest.mark.skipif(not video_module.importlib.util.find_spec("torchcodec"), reason="torchcodec not installed")
def test_torchcodec_without_ffmpeg_libraries_gives_way_to_pyav_with_one_note(tmp_path: Path) -> None:
    hidden = tmp_path / "no_ffmpeg"
    hidden.mkdir()
    for library in ("avutil", "avcodec", "avformat", "avdevice", "avfilter", "swscale", "swresample"):
        for major in range(4, 64):
            (hidden / f"lib{library}.so.{major}").write_bytes(b"")
    video = write_video(tmp_path / "clip64.mp4", 6, frame=lambda i: numbered_frame(i, 48, 64))
    result = subprocess.run(
        [sys.executable, "-c", MISSING_FFMPEG, str(video), "torchcodec", "auto"],
        capture_output=True,
        text=True,
        env={**os.environ, "LD_LIBRARY_PATH": str(hidden)},
        check=True,
    )
    assert result.stdout.splitlines() == ["decoded with pyav (1, 48, 64, 3)"] * 4
    notes = result.stderr.splitlines()
    assert len(notes) == 1, notes
    assert notes[0].startswith("WARNING torchcodec cannot load its FFmpeg libraries")
    assert "apt install ffmpeg" in notes[0] and notes[0].endswith("decoding with PyAV instead")


def test_explicit_torchcodec_needs_it_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_module, "torchcodec_installed", lambda: False)
    with pytest.raises(UniformerError, match=r"torchcodec is not installed \(pip install 'uniformer\[torchcodec\]'\)"):
        open_video(FIXTURES / "carphone_pristine.mp4", "torchcodec")
