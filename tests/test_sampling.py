"""Temporal sampling against the official indices (fixtures) and the worked examples of PROTOCOLS.md 3."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from uniformer_cli.data.sampling import (
    dense_indices,
    random_dense_indices,
    random_segment_indices,
    random_sparse_indices,
    segment_indices,
    sparse_indices,
)
from uniformer_cli.errors import UniformerError

FIXTURES = Path(__file__).parent / "fixtures" / "preprocess"
CLIPS = ["Tw2yXa6CzWE", "carphone_pristine"]


def _official(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}_indices.json").read_text())


def _ours(key: str, length: int) -> list:
    """Our indices for each protocol key of the fixture JSON, in the JSON's layout."""
    protocols = {
        "k400_16x4_views": lambda: [dense_indices(length, 16, 4, v, 4).tolist() for v in range(4)],
        "k400_8x8_views": lambda: [dense_indices(length, 8, 8, v, 4).tolist() for v in range(4)],
        "k400_16x4_single_view": lambda: dense_indices(length, 16, 4).tolist(),
        "ucf101_16x4_5views": lambda: [dense_indices(length, 16, 4, v, 5).tolist() for v in range(5)],
        "sth16_views": lambda: [segment_indices(length, 16).tolist()],
        "sth_16_view0_of_1": lambda: segment_indices(length, 16).tolist(),
        "sth16_file_numbers": lambda: (segment_indices(length, 16) + 1).tolist(),
        "sth32_views": lambda: [segment_indices(length, 32).tolist()],
        "sth8_view1_of_2": lambda: segment_indices(length, 8, 1, 2).tolist(),
        "sth_8_view1_of_2": lambda: segment_indices(length, 8, 1, 2).tolist(),
        "light_xxs4_128_view": lambda: sparse_indices(length, 4).tolist(),
        "light_xxs8_160_view": lambda: sparse_indices(length, 8).tolist(),
        "light_xxs16_160_view": lambda: sparse_indices(length, 16).tolist(),
        "light_xs32_192_view": lambda: sparse_indices(length, 32).tolist(),
    }
    return protocols[key]()


INDEX_KEYS = [
    "k400_16x4_views",
    "k400_8x8_views",
    "k400_16x4_single_view",
    "ucf101_16x4_5views",
    "sth16_views",
    "sth_16_view0_of_1",
    "sth16_file_numbers",
    "sth32_views",
    "sth8_view1_of_2",
    "sth_8_view1_of_2",
    "light_xxs4_128_view",
    "light_xxs8_160_view",
    "light_xxs16_160_view",
    "light_xs32_192_view",
]


@pytest.mark.parametrize("clip", CLIPS)
def test_every_index_key_of_the_fixtures_is_covered(clip: str) -> None:
    official = _official(clip)
    index_keys = {key for key, value in official.items() if isinstance(value, list)}
    assert index_keys == set(INDEX_KEYS)


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("key", INDEX_KEYS)
def test_indices_equal_the_official_ones(clip: str, key: str) -> None:
    official = _official(clip)
    assert _ours(key, official["frames"]) == official[key]


def test_indices_are_int64_arrays() -> None:
    for indices in (dense_indices(300, 16, 4), segment_indices(300, 16), sparse_indices(300, 16)):
        assert indices.dtype == np.int64


def _exact_dense(length: int, frames: int, stride: int, view: int, views: int) -> list[int]:
    """PROTOCOLS.md 3.1 in exact rational arithmetic (an independent formulation of the rule)."""
    clip = frames * stride
    delta = max(length - clip, 0)
    start = delta // 2 if views == 1 else view * (delta // (views - 1))
    step = Fraction(clip - 1, frames - 1) if frames > 1 else Fraction(0)
    return [min(int(start + i * step), length - 1) for i in range(frames)]


@pytest.mark.parametrize(("frames", "stride"), [(8, 8), (16, 4), (16, 8), (32, 4)])
@pytest.mark.parametrize("views", [1, 4, 5])
def test_dense_matches_exact_arithmetic_for_many_lengths(frames: int, stride: int, views: int) -> None:
    for length in range(1, 400, 7):
        for view in range(views):
            expected = _exact_dense(length, frames, stride, view, views)
            assert dense_indices(length, frames, stride, view, views).tolist() == expected, (length, view)


def test_dense_step_is_not_the_stride() -> None:
    # PROTOCOLS.md 3.1: 8x8 steps by 9 and 16x4 by 4.2.
    assert dense_indices(300, 8, 8, 0, 4).tolist() == [0, 9, 18, 27, 36, 45, 54, 63]
    assert dense_indices(300, 16, 4, 0, 4).tolist() == [0, 4, 8, 12, 16, 21, 25, 29, 33, 37, 42, 46, 50, 54, 58, 63]


def test_dense_views_use_offset_placement() -> None:
    starts = [int(dense_indices(300, 16, 4, v, 4)[0]) for v in range(4)]
    assert starts == [0, 78, 156, 234]
    assert int(dense_indices(300, 16, 4, 3, 4)[-1]) == 297  # the last view stops before the last frame
    assert int(dense_indices(300, 16, 4)[0]) == 118  # one view: the centre clip


def test_short_video_views_are_identical_and_clamped() -> None:
    # PROTOCOLS.md 3.1: L = 40, 16x4.
    expected = [0, 4, 8, 12, 16, 21, 25, 29, 33, 37, 39, 39, 39, 39, 39, 39]
    for view in range(4):
        assert dense_indices(40, 16, 4, view, 4).tolist() == expected


def test_segment_rounds_half_to_even() -> None:
    # PROTOCOLS.md 3.2: L = 41, T = 16; half-up rounding would give 1 4 6 9 11 14 ...
    indices = segment_indices(41, 16).tolist()
    assert indices[:6] == [1, 3, 6, 9, 11, 13]


def test_segment_short_video_repeats_frames() -> None:
    assert segment_indices(10, 16).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6, 6, 7, 7, 8, 8]


def test_segment_fixture_example_from_the_spec() -> None:
    expected = [9, 28, 46, 65, 84, 102, 121, 140, 159, 177, 196, 215, 233, 252, 271, 289]
    assert segment_indices(300, 16).tolist() == expected
    assert sparse_indices(300, 4).tolist() == [37, 112, 187, 261]


@pytest.mark.parametrize("length", [1, 2, 5, 17, 300])
def test_sparse_never_leaves_the_video(length: int) -> None:
    for frames in (4, 8, 16, 32):
        for views in (1, 2, 3):
            for view in range(views):
                indices = sparse_indices(length, frames, view, views)
                assert indices.min() >= 0
                assert indices.max() <= length - 1


def test_random_dense_stays_inside_and_keeps_the_spacing() -> None:
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        indices = random_dense_indices(300, 16, 4, rng)
        assert indices.min() >= 0
        assert indices.max() <= 299
        assert 59 <= int(indices[-1] - indices[0]) <= 63  # a 64-frame clip, start truncated
        starts.add(int(indices[0]))
    assert min(starts) < 30
    assert max(starts) > 200  # starts spread over [0, delta = 236]
    assert random_dense_indices(40, 16, 4, rng).tolist() == dense_indices(40, 16, 4).tolist()  # delta = 0


def test_random_segment_draws_inside_each_segment() -> None:
    rng = np.random.default_rng(1)
    length, frames = 41, 16
    bounds = [round((length - 1) / frames * i) for i in range(frames + 1)]
    seen_first = set()
    for _ in range(300):
        indices = random_segment_indices(length, frames, rng)
        for i, index in enumerate(indices.tolist()):
            assert bounds[i] <= index <= bounds[i + 1]
        seen_first.add(int(indices[0]))
    assert seen_first == set(range(bounds[0], bounds[1] + 1))  # both segment ends can be drawn


def test_random_variants_are_reproducible_from_the_seed() -> None:
    for sample in (
        lambda rng: random_dense_indices(300, 8, 8, rng),
        lambda rng: random_segment_indices(300, 16, rng),
        lambda rng: random_sparse_indices(300, 16, rng),
    ):
        assert sample(np.random.default_rng(5)).tolist() == sample(np.random.default_rng(5)).tolist()


def test_random_sparse_is_clamped() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        assert random_sparse_indices(3, 16, rng).max() <= 2


def test_empty_video_fails_clearly() -> None:
    with pytest.raises(UniformerError, match="no frames"):
        dense_indices(0, 16, 4)
    with pytest.raises(UniformerError, match="no frames"):
        segment_indices(0, 16)
