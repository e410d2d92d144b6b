"""Training augmentation (uniformer_cli/data/augment.py): RandAugment ops, crops, flip, erasing, mixing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uniformer_cli.data import augment
from uniformer_cli.data.augment import (
    OPS,
    AugmentConfig,
    ClipAugment,
    MixupCutmix,
    RandAugment,
    random_erase,
    random_resized_crop_box,
    smoothed_targets,
    soft_cross_entropy,
)
from uniformer_cli.errors import UniformerError


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_clip(frames: int = 4, height: int = 20, width: int = 24, seed: int = 0) -> torch.Tensor:
    """float `[T, 3, H, W]` with uint8 values, as the RandAugment ops take them."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, 3, height, width), generator=generator).float()


def test_parse_randaugment_specs_of_the_recipes() -> None:
    official = RandAugment.parse("rand-m7-n4-mstd0.5-inc1")
    assert (official.magnitude, official.layers, official.magnitude_std, official.increasing) == (7.0, 4, 0.5, True)
    assert "PosterizeIncreasing" in official.op_names and "Posterize" not in official.op_names
    plain = RandAugment.parse("rand-m5-n2-mstd0.25")
    assert (plain.magnitude, plain.layers, plain.magnitude_std, plain.increasing) == (5.0, 2, 0.25, False)
    assert RandAugment.parse("rand") == RandAugment(magnitude=10.0, layers=2, magnitude_std=0.0)
    assert len(official.op_names) == len(plain.op_names) == 15
    for bad in ("auto-m9", "rand-q3", "rand-mx"):
        with pytest.raises(UniformerError):
            RandAugment.parse(bad)


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_treats_every_frame_alike_and_stays_in_range(name: str) -> None:
    op, level_to_arg = OPS[name]
    frame = random_clip(frames=1)
    clip = frame.expand(3, -1, -1, -1).clone()
    out = op(clip) if level_to_arg is None else op(clip, level_to_arg(6.0, rng()))
    assert out.shape == clip.shape
    assert out.min() >= 0 and out.max() <= 255 and torch.equal(out, out.round())
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


def test_tone_ops_follow_their_pil_definitions() -> None:
    x = random_clip()
    assert torch.equal(augment.invert(x), 255 - x)
    assert torch.equal(augment.solarize(x, 128), torch.where(x >= 128, 255 - x, x))
    assert torch.equal(augment.posterize(x, 2), x - x % 64)
    assert torch.equal(augment.posterize(x, 8), x)
    assert torch.equal(augment.brightness(x, 1.0), x)
    assert torch.equal(augment.brightness(x, 0.0), torch.zeros_like(x))
    grey = torch.full_like(x, 77.0)
    assert torch.equal(augment.color(grey, 0.3), grey) and torch.equal(augment.contrast(grey, 1.7), grey)
    stretched = augment.auto_contrast(x * 0.5 + 20)
    assert stretched.amin(dim=(2, 3)).eq(0).all() and stretched.amax(dim=(2, 3)).eq(255).all()


def reference_equalize(channel: np.ndarray) -> np.ndarray:
    """PIL's ImageOps.equalize for one 8-bit channel, written as its loop."""
    histogram = np.bincount(channel.ravel(), minlength=256)
    present = histogram[histogram > 0]
    step = (present.sum() - present[-1]) // 255
    if step == 0:
        return channel
    lut, total = [], step // 2
    for count in histogram:
        lut.append(min(total // step, 255))
        total += count
    return np.asarray(lut)[channel]


def test_equalize_matches_the_pil_algorithm() -> None:
    x = (random_clip(frames=2) * 0.4 + 30).round()  # a narrow histogram, so equalising changes it
    out = augment.equalize(x)
    for frame in range(2):
        for channel in range(3):
            expected = reference_equalize(x[frame, channel].long().numpy())
            np.testing.assert_array_equal(out[frame, channel].long().numpy(), expected)


def test_geometric_ops_follow_pil_conventions() -> None:
    x = random_clip(height=9, width=9)
    # PIL rotates counter-clockwise; at 90 degrees bicubic sampling hits pixel centres exactly.
    assert torch.equal(augment.rotate(x, 90.0), torch.rot90(x, 1, dims=(2, 3)))
    # TranslateX by +2 px samples 2 px to the right: content moves left, grey fills the right edge.
    moved = augment.translate_x(x, 2 / 9)
    assert torch.equal(moved[..., :7], x[..., 2:]) and moved[..., 7:].eq(augment.GREY).all()
    moved = augment.translate_y(x, -3 / 9)
    assert torch.equal(moved[..., 3:, :], x[..., :6, :]) and moved[..., :3, :].eq(augment.GREY).all()
    assert torch.equal(augment.shear_x(x, 0.0), x) and torch.equal(augment.shear_y(x, 0.0), x)


def test_randaugment_is_a_function_of_its_generator() -> None:
    clip = random_clip().to(torch.uint8)
    policy = RandAugment.parse("rand-m9-n4-mstd0.5-inc1")
    assert torch.equal(policy(clip, rng(3)), policy(clip, rng(3)))
    outputs = {policy(clip, rng(seed)).float().sum().item() for seed in range(6)}
    assert len(outputs) > 1


def test_random_resized_crop_boxes_respect_scale_and_aspect() -> None:
    generator = rng(1)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(90, 160, generator)
        assert top >= 0 and top + h <= 90 and left >= 0 and left + w <= 160
        if (h, w) != (90, 120):  # not the fallback
            assert 0.08 * 0.9 <= h * w / (90 * 160) <= 1.0
            assert 0.75 * 0.9 <= w / h <= 4 / 3 * 1.1
    # No box can fit: the centred box of the clamped aspect ratio.
    assert random_resized_crop_box(90, 160, generator, scale=(2.0, 3.0)) == (0, 20, 90, 120)


def test_random_erase_cuts_one_rectangle_through_all_frames() -> None:
    clip = torch.zeros(3, 5, 40, 50)
    random_erase(clip, rng(2))
    touched = clip != 0
    assert touched.any()
    mask = touched.any(dim=(0, 1))
    rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
    box = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
    assert mask[box].all() and mask.sum() == mask[box].numel()  # a full rectangle
    assert 0.02 * 0.8 <= mask.float().mean() <= 1 / 3 * 1.2
    region = clip[:, :, box[0], box[1]]
    assert not torch.equal(region[:, 0], region[:, 1])  # fresh noise per frame


def gradient_frames(frames: int = 4, height: int = 48, width: int = 64) -> torch.Tensor:
    """uint8 `[T, H, W, 3]`: red rises left to right, so a flip is visible."""
    ramp = torch.linspace(0, 255, width).round().to(torch.uint8)
    clip = torch.zeros(frames, height, width, 3, dtype=torch.uint8)
    clip[..., 0] = ramp
    return clip


def test_clip_augment_views_are_reproducible_and_shaped() -> None:
    official = ClipAugment(AugmentConfig(size=32, randaug="rand-m7-n4-mstd0.5-inc1", repeats=2))
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, 48, 64, 3), dtype=np.uint8))
    views = official(frames, rng(5))
    assert views.shape == (2, 3, 6, 32, 32) and views.dtype == torch.float32
    assert torch.equal(views, official(frames, rng(5)))
    assert not torch.equal(views[0], views[1])  # two independent augmentations of the same clip


@pytest.mark.parametrize("flip", [True, False])
def test_flip_happens_only_when_enabled(flip: bool) -> None:
    basic = ClipAugment(AugmentConfig.basic(32, flip=flip))
    directions = set()
    for seed in range(12):
        red = basic(gradient_frames(), rng(seed))[0, 0, 0, 16]  # channel red, frame 0, middle row
        directions.add(bool(red[-1] > red[0]))
    assert directions == ({True, False} if flip else {True})


def test_basic_chain_jitters_the_short_side_within_8_to_10_sevenths() -> None:
    config = AugmentConfig.basic(70)
    assert config.jitter_range == (80, 100)
    assert AugmentConfig.basic(224).jitter_range == (256, 320)


def test_bgr_views_reverse_the_channels() -> None:
    frames = gradient_frames()
    rgb = ClipAugment(AugmentConfig.basic(32, flip=False))(frames, rng(0))
    bgr = ClipAugment(AugmentConfig.basic(32, flip=False, channel_order="bgr"))(frames, rng(0))
    assert torch.equal(bgr, rgb.flip(1))


def test_smoothed_targets_and_soft_cross_entropy() -> None:
    targets = smoothed_targets(torch.tensor([2, 0]), 4, 0.1)
    assert torch.allclose(targets.sum(1), torch.ones(2))
    assert targets[0, 2] == pytest.approx(0.9 + 0.025) and targets[0, 0] == pytest.approx(0.025)
    logits = torch.randn(2, 4)
    hard = smoothed_targets(torch.tensor([2, 0]), 4, 0.0)
    assert soft_cross_entropy(logits, hard) == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.tensor([2, 0])).item(), rel=1e-6
    )


def test_mixup_blends_each_clip_with_the_reversed_batch() -> None:
    mixer = MixupCutmix(num_classes=5, mixup_alpha=0.8, cutmix_alpha=0.0, smoothing=0.0)
    clips, labels = torch.randn(4, 3, 2, 8, 8), torch.tensor([0, 1, 2, 3])
    mixed, targets = mixer(clips, labels, rng(0))
    lam = targets[0, 0].item()
    assert 0 < lam < 1 and targets[0, 3].item() == pytest.approx(1 - lam)
    assert torch.allclose(mixed, lam * clips + (1 - lam) * clips.flip(0), atol=1e-6)


def test_cutmix_pastes_one_box_and_corrects_lambda_to_its_area() -> None:
    mixer = MixupCutmix(num_classes=3, mixup_alpha=0.0, cutmix_alpha=1.0, smoothing=0.0)
    clips = torch.stack([torch.zeros(3, 4, 16, 16), torch.ones(3, 4, 16, 16)])
    for seed in range(5):
        mixed, targets = mixer(clips, torch.tensor([0, 1]), rng(seed))
        pasted = mixed[0] == 1
        assert torch.equal(pasted, pasted[:1, :1].expand_as(pasted))  # same box in every channel and frame
        area = pasted[0, 0].float().mean().item()
        assert targets[0, 0].item() == pytest.approx(1 - area) and targets[0, 1].item() == pytest.approx(area)


def test_mixing_disabled_gives_the_clips_back_with_smoothed_targets() -> None:
    mixer = MixupCutmix(num_classes=3, mixup_alpha=0.0, cutmix_alpha=0.0, smoothing=0.3)
    clips = torch.randn(2, 3, 2, 4, 4)
    mixed, targets = mixer(clips, torch.tensor([1, 2]), rng(0))
    assert mixed is clips
    assert targets[0].tolist() == pytest.approx([0.1, 0.8, 0.1])
    assert not math.isnan(soft_cross_entropy(torch.randn(2, 3), targets).item())
