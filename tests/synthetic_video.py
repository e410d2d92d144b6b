"""Small generated videos and frame folders for the data and predict tests (written with PyAV)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import av
import numpy as np


def numbered_frame(index: int, height: int = 64, width: int = 80) -> np.ndarray:
    """A frame whose content identifies its index: a textured pattern shifted by the index, so
    decoded frames can be matched to their source even after lossy coding."""
    y, x = np.mgrid[0:height, 0:width]
    red = (x * 3 + index * 7) % 256
    green = (y * 3 + index * 13) % 256
    blue = np.full_like(x, (index * 37) % 256)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def write_video(
    path: Path,
    num_frames: int,
    *,
    fps: int = 30,
    frame: Callable[[int], np.ndarray] = numbered_frame,
    codec: str = "libx264",
    gop: int = 12,
    b_frames: int = 2,
) -> Path:
    """Encode `frame(i)` for i < num_frames; H.264 with a keyframe every `gop` frames and B-frames,
    so readers must seek and reorder."""
    first = frame(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.codec_context.max_b_frames = b_frames
            stream.options = {"crf": "12", "preset": "ultrafast" if b_frames == 0 else "fast"}
        for index in range(num_frames):
            image = first if index == 0 else frame(index)
            video_frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    return path


def decode_all(path: Path) -> np.ndarray:
    """Every frame, decoded in order with plain PyAV: the reference numbering (PROTOCOLS.md 2.1)."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def write_jpeg(path: Path, image: np.ndarray, quality: int = 2) -> None:
    """A JPEG file written with PyAV's mjpeg encoder (`quality` is its qscale: 2 is near-lossless)."""
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width, stream.height = image.shape[1], image.shape[0]
        stream.pix_fmt = "yuvj444p"
        stream.codec_context.qmin = stream.codec_context.qmax = quality
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def write_frame_folder(folder: Path, frames: Sequence[np.ndarray], template: str = "img_{:05d}.jpg") -> Path:
    """Sth/HMDB-style folder: frame k (0-based) in file number k + 1."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(frames):
        write_jpeg(folder / template.format(index + 1), image)
    return folder


def write_audio_only(path: Path) -> Path:
    """An AAC file with one second of silence and no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for block in range(16):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 16000, block * 1024
            container.mux(stream.encode(samples))
        container.mux(stream.encode(None))
    return path


def shifted_mkv(
    path: Path, offset: float, gap: float = 0.0, frames: int = 12, size: tuple[int, int] = (48, 40)
) -> Path:
    """A Matroska clip whose timestamps start at `offset` seconds and jump by `gap` seconds halfway."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        packets = []
        for _ in range(frames):
            image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            packets += stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24"))
        packets += stream.encode(None)
        for number, packet in enumerate(packets):
            shift = int((offset + (gap if number >= len(packets) // 2 else 0.0)) / packet.time_base)
            packet.pts += shift
            packet.dts += shift
            container.mux(packet)
    return path
