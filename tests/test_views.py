"""Spatial transforms and test views against the official input tensors (PROTOCOLS.md 1, 4, 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic_video import decode_all, write_frame_folder, write_video

from uniformer_cli.data import load_views, open_video, transforms, views_from_video
from uniformer_cli.data.sampling import clip_indices
from uniformer_cli.data.transforms import crop_indices, crop_offset, short_side_resize, short_side_size
from uniformer_cli.errors import UniformerError
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.zoo import FRAME_FOLDER_SETS, ZOO, get_entry

FIXTURES = Path(__file__).parent / "fixtures" / "preprocess"
CLIP = FIXTURES / "Tw2yXa6CzWE.mp4"
TOLERANCE = 2e-3  # float16 storage (9.8e-4) plus arithmetic-order noise (PROTOCOLS.md 8)


@pytest.fixture(scope="module")
def official() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "Tw2yXa6CzWE_inputs.npz") as stored:
        return {key: stored[key].astype(np.float32) for key in stored.files}


@pytest.fixture(scope="module")
def geometry() -> dict:
    return json.loads((FIXTURES / "Tw2yXa6CzWE_indices.json").read_text())


def _max_error(ours: torch.Tensor, reference: np.ndarray) -> float:
    assert tuple(ours.shape) == reference.shape
    return float(np.abs(ours.numpy() - reference).max())


@pytest.mark.parametrize("decoder", ["pyav", "auto"])
def test_k400_view0_matches_the_official_tensor(official: dict, decoder: str) -> None:
    views = load_views(CLIP, frames=16, stride=4, clips=4, decoder=decoder)
    assert views.shape == (4, 3, 16, 224, 224)
    assert views.dtype == torch.float32
    assert _max_error(views[0], official["k400_16x4_view0"]) < TOLERANCE


def test_sth_three_crops_match_the_official_tensors(official: dict) -> None:
    views = load_views(CLIP, frames=16, sampling="segment", crops=3)
    assert views.shape == (3, 3, 16, 224, 224)
    for crop in range(3):
        assert _max_error(views[crop], official[f"sth16_crop{crop}"]) < TOLERANCE


def test_light_xxs16_view_matches_the_official_tensor(official: dict) -> None:
    protocol = get_entry("xxs16-160-k400").protocol
    with open_video(CLIP) as video:
        views = views_from_video(video, protocol)
    assert views.shape == (1, 3, 16, 160, 160)
    assert _max_error(views[0], official["light_xxs16_160_view0"]) < TOLERANCE


def test_every_stored_tensor_is_tested(official: dict) -> None:
    assert set(official) == {"k400_16x4_view0", "sth16_crop0", "sth16_crop1", "sth16_crop2", "light_xxs16_160_view0"}


def test_normalise_every_level_with_the_official_arithmetic() -> None:
    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    expected = (torch.from_numpy(levels).float() / 255.0 - torch.tensor(0.45)) / torch.tensor(0.225)
    ours = transforms.normalise(levels)
    assert ours.shape == (3, 1, 16, 16)
    assert torch.equal(ours, expected.permute(3, 0, 1, 2))
    assert torch.equal(transforms.normalise(torch.from_numpy(levels)), ours)  # torch frames too
    with pytest.raises(TypeError, match="uint8"):
        transforms.normalise(levels.astype(np.float32))


def test_value_range_is_the_normalised_one() -> None:
    views = load_views(CLIP, frames=8, sampling="sparse", size=128)
    assert views.min() >= (0 - 0.45) / 0.225 - 1e-6
    assert views.max() <= (1 - 0.45) / 0.225 + 1e-6


# ---------------------------------------------------------------------------------------------------
# Geometry: PROTOCOLS.md 4.1 and 4.2 worked examples and the fixtures' crop corners


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (320, 426, (224, 298)),  # the fixture clip
        (256, 340, (224, 297)),  # floor, not round
        (272, 640, (224, 527)),
        (144, 176, (224, 273)),  # upsampling
        (400, 300, (298, 224)),  # portrait
        (500, 500, (224, 224)),
        (224, 500, (224, 500)),  # short side already right: untouched
    ],
)
def test_short_side_size(height: int, width: int, expected: tuple[int, int]) -> None:
    assert short_side_size(height, width, 224) == expected


def test_no_resize_when_the_short_side_already_matches() -> None:
    clip = torch.rand(3, 2, 224, 300)
    assert short_side_resize(clip, 224) is clip


def test_resize_is_plain_bilinear_without_antialiasing() -> None:
    clip = torch.rand(3, 2, 64, 96)
    expected = F.interpolate(clip, size=(32, 48), mode="bilinear", align_corners=False, antialias=False)
    assert torch.equal(short_side_resize(clip, 32), expected)


@pytest.mark.parametrize("key", ["k400_16x4_geometry", "sth16_geometry", "light_xxs16_160_geometry"])
def test_crop_corners_match_the_fixture_geometry(geometry: dict, key: str) -> None:
    info = geometry[key]
    height, width = info["source_hw"]
    size = info["crop"]
    resized = short_side_size(height, width, size)
    assert list(resized) == info["resized_hw"]
    positions = [0, 1, 2] if len(info["crop_yx"]) == 3 else [1]
    assert [list(crop_offset(*resized, size, p)) for p in positions] == info["crop_yx"]


def test_crop_offsets_of_the_spec() -> None:
    assert [crop_offset(224, 527, 224, i)[1] for i in range(3)] == [0, 152, 303]
    assert crop_offset(224, 526, 224, 1) == (0, 151)  # ceil: (526 - 224) / 2 = 151
    assert crop_offset(224, 525, 224, 1) == (0, 151)  # ceil of 150.5
    # Portrait frames crop top / centre / bottom.
    assert [crop_offset(300, 224, 224, i) for i in range(3)] == [(0, 0), (38, 0), (76, 0)]


def test_single_crop_position() -> None:
    assert crop_indices(1, "centre") == [1]
    assert crop_indices(1, "first") == [0]
    assert crop_indices(3, "first") == [0, 1, 2]


# ---------------------------------------------------------------------------------------------------
# Protocols and view order


def test_protocols_from_zoo_entries() -> None:
    k400 = get_entry("b16x4-k400").protocol
    assert (k400.frames, k400.stride, k400.sampling, k400.clips, k400.crops) == (16, 4, "dense", 4, 1)
    assert (k400.channel_order, k400.single_crop) == ("rgb", "centre")
    sth = get_entry("s-sthv2").protocol
    assert (sth.sampling, sth.clips, sth.crops, sth.channel_order, sth.single_crop) == ("segment", 1, 3, "bgr", "first")
    hmdb = get_entry("s16x4-hmdb51-k400").protocol.with_views(clips=2, crops=1)
    assert (hmdb.sampling, hmdb.clips, hmdb.crops, hmdb.single_crop) == ("dense", 2, 1, "first")
    light = get_entry("xxs-k400").protocol
    assert (light.sampling, light.size, light.views) == ("sparse", 160, 1)
    for entry in ZOO.values():
        assert entry.protocol.channel_order == ("bgr" if entry.dataset in FRAME_FOLDER_SETS else "rgb")


def test_protocol_round_trips_through_json() -> None:
    protocol = get_entry("s-sthv1").protocol
    assert ViewProtocol.from_dict(json.dumps(protocol.as_dict())) == protocol
    assert ViewProtocol(frames=16, sampling="segment").single_crop == "first"
    assert ViewProtocol(frames=16, stride=4).single_crop == "centre"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"frames": 16}, "stride"),
        ({"frames": 16, "sampling": "random"}, "unknown sampling"),
        ({"frames": 16, "stride": 4, "crops": 5}, "crops 5 is out of range: 1 to 3"),
        ({"frames": 100000, "stride": 4}, "frames 100000 is out of range"),
        ({"frames": 16, "stride": 4, "size": 100000}, "size 100000 is out of range"),
        ({"frames": "16", "stride": 4}, "frames must be a whole number"),
        ({"frames": 16, "stride": 4.5}, "stride must be a whole number"),
        ({"frames": 1024, "stride": 1, "clips": 100, "size": 2048}, r"GiB per video .*lower --frames"),
        ({"frames": 16, "stride": 4, "colour": "rgb"}, "unknown view protocol fields"),
    ],
)
def test_bad_protocols_fail_clearly(values: dict, message: str) -> None:
    with pytest.raises(UniformerError, match=message):
        ViewProtocol.from_dict(values)


def _reference_views(frames: np.ndarray, clips: list[list[int]], size: int) -> list[list[torch.Tensor]]:
    """Views built step by step with plain torch (normalise, resize, crop at left/centre/right)."""
    views = []
    for indices in clips:
        clip = (torch.from_numpy(frames[indices]).float() / 255 - 0.45) / 0.225
        clip = clip.permute(3, 0, 1, 2)
        height, width = clip.shape[-2:]
        new_width = int(width / height * size)
        clip = F.interpolate(clip, size=(size, new_width), mode="bilinear", align_corners=False)
        left = (new_width - size + 1) // 2
        views.append([clip[..., :, x : x + size] for x in (0, left, new_width - size)])
    return views


def test_view_order_is_clip_major_and_bgr_reverses_channels(tmp_path: Path) -> None:
    path = write_video(tmp_path / "wide.mp4", 40, frame=lambda i: np.full((48, 96, 3), (i * 6, 90, 200), np.uint8))
    frames = decode_all(path)
    protocol = ViewProtocol(frames=4, stride=2, clips=2, crops=3, size=32)
    with open_video(path, "pyav") as video:
        views = views_from_video(video, protocol)
        bgr = views_from_video(video, ViewProtocol(**{**protocol.as_dict(), "channel_order": "bgr"}))
    clips = [c.tolist() for c in clip_indices(protocol, 40)]
    expected = _reference_views(frames, clips, 32)
    assert views.shape == (6, 3, 4, 32, 32)
    for clip in range(2):
        for crop in range(3):
            assert torch.allclose(views[clip * 3 + crop], expected[clip][crop], atol=1e-5)
    assert torch.equal(bgr, views.flip(1))


def test_single_crop_sth_takes_the_left_crop(tmp_path: Path) -> None:
    with open_video(CLIP) as video:
        one = views_from_video(video, ViewProtocol(frames=8, sampling="segment", crops=1))
        three = views_from_video(video, ViewProtocol(frames=8, sampling="segment", crops=3))
        centre = views_from_video(video, ViewProtocol(frames=8, sampling="segment", crops=1, single_crop="centre"))
    assert torch.equal(one[0], three[0])
    assert torch.equal(centre[0], three[1])


def test_window_samples_inside_the_window() -> None:
    protocol = ViewProtocol(frames=4, sampling="segment", size=64, crops=1, single_crop="centre")
    inside = clip_indices(protocol, 60)[0] + 100
    with open_video(CLIP) as video:
        windowed = views_from_video(video, protocol, window=(100, 160))
        expected = transforms.crop(transforms.resized_clip(video.read(inside), 64), 64, 1)
    assert torch.equal(windowed[0], expected)


def test_frame_folder_views_match_video_views_within_jpeg_loss(tmp_path: Path) -> None:
    frames = decode_all(FIXTURES / "carphone_pristine.mp4")
    folder = write_frame_folder(tmp_path / "carphone", frames)
    from_video = load_views(FIXTURES / "carphone_pristine.mp4", frames=16, sampling="segment", crops=3)
    from_folder = load_views(folder, frames=16, sampling="segment", crops=3)
    difference = (from_video - from_folder).abs()
    assert difference.mean() < 0.03
    assert difference.max() < 0.5


def test_load_views_is_exported_at_the_top_level() -> None:
    import uniformer_cli

    assert uniformer_cli.load_views is load_views
