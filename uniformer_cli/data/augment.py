"""Training augmentation on clip tensors (PROTOCOLS.md 7.1-7.2), with no torchvision and no PIL.

- `RandAugment`: timm-style video RandAugment, the same operations and magnitudes for every frame,
  on uint8 clips `[T, 3, H, W]` (the 15 ops of timm re-implemented with torch; geometric ops resample
  bicubically with a grey fill, like PIL).
- `ClipAugment`: one decoded clip -> `repeats` augmented, normalised views `[R, 3, T, S, S]`: RandAugment,
  then either the official random resized crop or short-side jitter + random crop, flip, random erasing.
- `MixupCutmix`: batch-level Mixup/CutMix (partner = the reversed batch) with label-smoothed targets.

Every random draw comes from the `numpy.random.Generator` passed in, so a sample's augmentation is a
function of the seed the caller derives (the trainer uses (seed, epoch, sample index)): identical
across processes, ranks, worker counts and resumed runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from uniformer_cli.data.transforms import normalise, resize, short_side_resize
from uniformer_cli.errors import UniformerError

GREY = 128.0  # fill of the geometric ops (timm's img_mean for the video recipe)
MAX_LEVEL = 10.0  # RandAugment magnitudes live in [0, 10]


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch generator seeded from `rng`, for the tensor-sized draws (erasing noise)."""
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


# ---------------------------------------------------------------------------------------------------
# RandAugment operations: x is float32 [T, C, H, W] holding uint8 values; each returns the same.


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL ImageEnhance: interpolate (factor < 1) or extrapolate (factor > 1) from `degenerate`."""
    return (degenerate + factor * (image - degenerate)).clamp(0, 255).floor()


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """PIL's "L" conversion (ITU-R 601-2 luma), `[T, 1, H, W]`."""
    return (x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114).round()


def auto_contrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each frame's channels to the full 0-255 range (channels that are flat stay)."""
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    flat = high <= low
    scale = 255.0 / torch.where(flat, torch.ones_like(high), high - low)
    return torch.where(flat, x, ((x - low) * scale).clamp(0, 255).floor())


def equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's histogram equalisation, per frame and channel."""
    frames, channels, height, width = x.shape
    values = x.reshape(frames * channels, height * width).long()
    histogram = torch.zeros(frames * channels, 256, dtype=torch.long).scatter_add_(1, values, torch.ones_like(values))
    # PIL divides by (pixels - count of the highest present value) / 255 and leaves the image alone if 0.
    top_value = 255 - (histogram.flip(1) > 0).long().argmax(dim=1, keepdim=True)
    step = (histogram.sum(dim=1, keepdim=True) - histogram.gather(1, top_value)) // 255
    below = histogram.cumsum(dim=1) - histogram
    lut = ((below + step // 2) // step.clamp(min=1)).clamp(max=255)
    equalized = lut.gather(1, values)
    equalized = torch.where(step > 0, equalized, values)
    return equalized.reshape(x.shape).float()


def invert(x: torch.Tensor) -> torch.Tensor:
    return 255.0 - x


def posterize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the `bits` most significant bits of every value (8 or more: unchanged)."""
    if bits >= 8:
        return x
    mask = ~(2 ** (8 - bits) - 1) & 0xFF
    return (x.to(torch.uint8) & mask).float()


def solarize(x: torch.Tensor, threshold: int) -> torch.Tensor:
    return torch.where(x >= threshold, 255.0 - x, x)


def solarize_add(x: torch.Tensor, add: int, threshold: int = 128) -> torch.Tensor:
    return torch.where(x < threshold, (x + add).clamp(max=255), x)


def color(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(_grayscale(x).expand_as(x), x, factor)


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    mean = (_grayscale(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5).floor()
    return _blend(mean.expand_as(x), x, factor)


def brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(torch.zeros_like(x), x, factor)


def sharpness(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with PIL's SMOOTH filter (3x3, centre weight 5, sum 13); the 1-pixel border is kept."""
    kernel = torch.ones(3, 3)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, 3, 3)
    smooth = F.conv2d(x, kernel, groups=x.shape[1]).round().clamp(0, 255)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, factor)


def affine(x: torch.Tensor, matrix: tuple[float, float, float, float, float, float]) -> torch.Tensor:
    """PIL `Image.transform(AFFINE, matrix)`: output pixel centre (u, v) samples the input at
    (a u + b v + c, d u + e v + f), bicubic, grey outside the frame."""
    frames, _, height, width = x.shape
    a, b, c, d, e, f = matrix
    v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    source_x = a * u + b * v + c
    source_y = d * u + e * v + f
    # grid_sample's align_corners=False maps -1/+1 to the outer pixel edges, i.e. pixel coordinates 0 and W.
    grid = torch.stack((source_x / width * 2 - 1, source_y / height * 2 - 1), dim=-1)
    grid = grid.expand(frames, height, width, 2)
    # Zero padding around (x - fill) is a constant-fill padding around x.
    sampled = F.grid_sample(x - GREY, grid, mode="bicubic", padding_mode="zeros", align_corners=False) + GREY
    return sampled.round().clamp(0, 255)


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Counter-clockwise rotation about the frame centre (PIL `Image.rotate`)."""
    height, width = x.shape[-2:]
    angle = -math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    centre_x, centre_y = width / 2, height / 2
    return affine(
        x,
        (
            cos,
            sin,
            centre_x - cos * centre_x - sin * centre_y,
            -sin,
            cos,
            centre_y + sin * centre_x - cos * centre_y,
        ),
    )


def shear_x(x: torch.Tensor, factor: float) -> torch.Tensor:
    return affine(x, (1.0, factor, 0.0, 0.0, 1.0, 0.0))


def shear_y(x: torch.Tensor, factor: float) -> torch.Tensor:
    return affine(x, (1.0, 0.0, 0.0, factor, 1.0, 0.0))


def translate_x(x: torch.Tensor, fraction: float) -> torch.Tensor:
    return affine(x, (1.0, 0.0, fraction * x.shape[-1], 0.0, 1.0, 0.0))


def translate_y(x: torch.Tensor, fraction: float) -> torch.Tensor:
    return affine(x, (1.0, 0.0, 0.0, 0.0, 1.0, fraction * x.shape[-2]))


# Magnitude (0-10) -> argument, as timm's `LEVEL_TO_ARG`; `rng` draws the random sign.
def _signed(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() > 0.5 else value


def _enhance_level(level: float, rng: np.random.Generator) -> float:
    return level / MAX_LEVEL * 1.8 + 0.1


def _enhance_increasing_level(level: float, rng: np.random.Generator) -> float:
    return 1.0 + _signed(level / MAX_LEVEL * 0.9, rng)


def _posterize_level(level: float, rng: np.random.Generator) -> int:
    return int(level / MAX_LEVEL * 4)


def _posterize_increasing_level(level: float, rng: np.random.Generator) -> int:
    return 4 - _posterize_level(level, rng)


def _solarize_level(level: float, rng: np.random.Generator) -> int:
    return int(level / MAX_LEVEL * 256)


def _solarize_increasing_level(level: float, rng: np.random.Generator) -> int:
    return 256 - _solarize_level(level, rng)


Op = tuple[Callable[..., torch.Tensor], Callable[[float, np.random.Generator], float | int] | None]

OPS: dict[str, Op] = {
    "AutoContrast": (auto_contrast, None),
    "Equalize": (equalize, None),
    "Invert": (invert, None),
    "Rotate": (rotate, lambda level, rng: _signed(level / MAX_LEVEL * 30.0, rng)),
    "Posterize": (posterize, _posterize_level),
    "PosterizeIncreasing": (posterize, _posterize_increasing_level),
    "Solarize": (solarize, _solarize_level),
    "SolarizeIncreasing": (solarize, _solarize_increasing_level),
    "SolarizeAdd": (solarize_add, lambda level, rng: int(level / MAX_LEVEL * 110)),
    "Color": (color, _enhance_level),
    "ColorIncreasing": (color, _enhance_increasing_level),
    "Contrast": (contrast, _enhance_level),
    "ContrastIncreasing": (contrast, _enhance_increasing_level),
    "Brightness": (brightness, _enhance_level),
    "BrightnessIncreasing": (brightness, _enhance_increasing_level),
    "Sharpness": (sharpness, _enhance_level),
    "SharpnessIncreasing": (sharpness, _enhance_increasing_level),
    "ShearX": (shear_x, lambda level, rng: _signed(level / MAX_LEVEL * 0.3, rng)),
    "ShearY": (shear_y, lambda level, rng: _signed(level / MAX_LEVEL * 0.3, rng)),
    "TranslateXRel": (translate_x, lambda level, rng: _signed(level / MAX_LEVEL * 0.45, rng)),
    "TranslateYRel": (translate_y, lambda level, rng: _signed(level / MAX_LEVEL * 0.45, rng)),
}
_COMMON = ("AutoContrast", "Equalize", "Invert", "Rotate", "SolarizeAdd", "ShearX", "ShearY")
_TRANSLATE = ("TranslateXRel", "TranslateYRel")
_TONES = ("Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness")
PLAIN_OPS = (*_COMMON, *_TONES, *_TRANSLATE)
INCREASING_OPS = (*_COMMON, *(f"{name}Increasing" for name in _TONES), *_TRANSLATE)


@dataclass(frozen=True)
class RandAugment:
    """timm's RandAugment for video: `layers` ops drawn with replacement, each applied with
    probability `prob` at a magnitude drawn per application from N(magnitude, magnitude_std) clipped
    to [0, magnitude_max]; one draw serves every frame of the clip."""

    magnitude: float = MAX_LEVEL
    layers: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = MAX_LEVEL
    increasing: bool = False
    prob: float = 0.5

    @classmethod
    def parse(cls, spec: str) -> RandAugment:
        """timm config strings: `rand-m7-n4-mstd0.5-inc1`, `rand-m5-n2-mstd0.25`, `rand`."""
        name, *parts = spec.strip().lower().split("-")
        values = {"m": MAX_LEVEL, "n": 2.0, "mstd": 0.0, "mmax": MAX_LEVEL, "inc": 0.0, "p": 0.5}
        matches = [re.fullmatch(r"([a-z]+)(inf|[0-9]*\.?[0-9]+)", part) for part in parts]
        if name != "rand" or any(match is None or match[1] not in values for match in matches):
            raise UniformerError(
                f"bad RandAugment spec {spec!r}: expected 'rand' then fields m, n, mstd, mmax, inc, p"
                " (e.g. rand-m7-n4-mstd0.5-inc1)"
            )
        values.update((match[1], float(match[2])) for match in matches if match)
        return cls(
            magnitude=values["m"],
            layers=int(values["n"]),
            magnitude_std=values["mstd"],
            magnitude_max=values["mmax"],
            increasing=bool(values["inc"]),
            prob=values["p"],
        )

    @property
    def op_names(self) -> tuple[str, ...]:
        return INCREASING_OPS if self.increasing else PLAIN_OPS

    def _level(self, rng: np.random.Generator) -> float:
        if self.magnitude_std == math.inf:
            level = rng.uniform(0, self.magnitude)
        elif self.magnitude_std > 0:
            level = rng.normal(self.magnitude, self.magnitude_std)
        else:
            level = self.magnitude
        return float(np.clip(level, 0.0, self.magnitude_max))

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """`clip`: uint8 `[T, 3, H, W]`; returns the augmented uint8 clip."""
        x = clip.float()
        for name in rng.choice(self.op_names, size=self.layers, replace=True):
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            op, level_to_arg = OPS[str(name)]
            x = op(x) if level_to_arg is None else op(x, level_to_arg(self._level(rng), rng))
        return x.to(torch.uint8)


# ---------------------------------------------------------------------------------------------------
# Spatial augmentation on normalised float clips [3, T, H, W].


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (0.75, 4 / 3),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a box with area fraction ~ U(scale) and log-uniform aspect (w/h) in `ratio`;
    after `attempts` misses, the centred box of the clamped aspect (PySlowFast's rule)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h, endpoint=True)), int(rng.integers(0, width - w, endpoint=True)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_erase(clip: torch.Tensor, rng: np.random.Generator, area: tuple[float, float] = (0.02, 1 / 3)) -> None:
    """In place on `[..., H, W]`: one rectangle (2-33% of the frame, aspect 0.3-3.3, the same in every
    frame) filled with fresh standard-normal noise per pixel and frame; skipped if 100 draws miss."""
    height, width = clip.shape[-2:]
    log_aspect = (math.log(0.3), math.log(1 / 0.3))
    for _ in range(100):
        target_area = rng.uniform(*area) * height * width
        aspect = math.exp(rng.uniform(*log_aspect))
        h = round(math.sqrt(target_area * aspect))
        w = round(math.sqrt(target_area / aspect))
        if w < width and h < height:
            top = int(rng.integers(0, height - h, endpoint=True))
            left = int(rng.integers(0, width - w, endpoint=True))
            region = clip[:, :, top : top + h, left : left + w]
            region.copy_(torch.randn(region.shape, generator=_torch_generator(rng)))
            return


@dataclass(frozen=True)
class AugmentConfig:
    """How one training clip becomes its views (defaults: the official recipe, PROTOCOLS.md 7.1)."""

    size: int = 224
    randaug: str | None = "rand-m7-n4-mstd0.5-inc1"  # None: no RandAugment
    resized_crop: bool = True  # False: short-side jitter in `jitter` then a random square crop
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 4 / 3)
    jitter: tuple[int, int] | None = None  # short-side range; default 8/7 to 10/7 of `size` (256-320 at 224)
    flip: bool = True
    erase_prob: float = 0.25
    repeats: int = 2  # views of the same decoded clip per video (repeated augmentation)
    channel_order: str = "rgb"  # "bgr" reverses the channels last, for checkpoints trained on BGR frames

    def __post_init__(self) -> None:
        # A malformed spec fails when the run is planned (a dry run too), not at the first training clip.
        if self.randaug not in (None, "none", ""):
            RandAugment.parse(self.randaug)

    @classmethod
    def basic(cls, size: int, *, flip: bool = True, channel_order: str = "rgb") -> AugmentConfig:
        """The official no-`AUG` path (PROTOCOLS.md 4.3): short-side jitter, random crop, flip; for small data."""
        return cls(
            size=size,
            randaug=None,
            resized_crop=False,
            flip=flip,
            erase_prob=0.0,
            repeats=1,
            channel_order=channel_order,
        )

    @property
    def jitter_range(self) -> tuple[int, int]:
        return self.jitter or (round(self.size * 8 / 7), round(self.size * 10 / 7))


class ClipAugment:
    """Decoded uint8 frames `[T, H, W, 3]` (RGB) -> `repeats` augmented views `[R, 3, T, size, size]`."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self.randaug = RandAugment.parse(config.randaug) if config.randaug else None

    def view(self, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        config = self.config
        if self.randaug is not None:
            frames = self.randaug(frames.permute(0, 3, 1, 2), rng).permute(0, 2, 3, 1)
        if config.resized_crop:
            height, width = frames.shape[1:3]
            top, left, h, w = random_resized_crop_box(height, width, rng, config.scale, config.ratio)
            # Normalising is per pixel: crop first, so only the box is converted to floats.
            clip = resize(normalise(frames[:, top : top + h, left : left + w]), (config.size, config.size))
        else:
            clip = normalise(frames)  # float [3, T, H, W]
            low, high = config.jitter_range
            clip = short_side_resize(clip, int(rng.integers(low, high, endpoint=True)))
            height, width = clip.shape[-2:]
            top = int(rng.integers(0, height - config.size)) if height > config.size else 0
            left = int(rng.integers(0, width - config.size)) if width > config.size else 0
            clip = clip[..., top : top + config.size, left : left + config.size]
        if config.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
        if config.erase_prob > 0 and rng.random() < config.erase_prob:
            clip = clip.contiguous()
            random_erase(clip, rng)
        if config.channel_order == "bgr":
            clip = clip.flip(0)
        return clip.contiguous()

    def __call__(self, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return torch.stack([self.view(frames, rng) for _ in range(self.config.repeats)])


# ---------------------------------------------------------------------------------------------------
# Batch-level mixing and targets.


def smoothed_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with `1 - smoothing + smoothing/K` on the label and `smoothing/K` elsewhere."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy against soft targets, averaged over the batch (computed in float32)."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


@dataclass(frozen=True)
class MixupCutmix:
    """timm's batch Mixup/CutMix (probability 1): CutMix with probability `switch_prob` (lambda ~
    Beta(cutmix_alpha)), else Mixup (lambda ~ Beta(mixup_alpha)); sample i is mixed with sample N-1-i;
    a CutMix box is the same in every frame and lambda is corrected to its clipped area."""

    num_classes: int
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    switch_prob: float = 0.5
    smoothing: float = 0.1

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def _draw(self, rng: np.random.Generator) -> tuple[float, bool]:
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    def __call__(
        self, clips: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`clips [B, 3, T, H, W]`, integer `labels [B]` -> mixed clips (new tensor) and soft targets `[B, K]`."""
        targets = smoothed_targets(labels, self.num_classes, self.smoothing)
        if not self.enabled or clips.shape[0] < 2:
            return clips, targets
        lam, use_cutmix = self._draw(rng)
        partner = clips.flip(0)
        if use_cutmix:
            height, width = clips.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            cut_h, cut_w = int(height * cut), int(width * cut)
            centre_y, centre_x = int(rng.integers(0, height)), int(rng.integers(0, width))
            top, bottom = np.clip((centre_y - cut_h // 2, centre_y + cut_h // 2), 0, height)
            left, right = np.clip((centre_x - cut_w // 2, centre_x + cut_w // 2), 0, width)
            clips = clips.clone()
            clips[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
            lam = 1.0 - float((bottom - top) * (right - left)) / (height * width)
        else:
            clips = clips * lam + partner * (1.0 - lam)
        return clips, targets * lam + targets.flip(0) * (1.0 - lam)
