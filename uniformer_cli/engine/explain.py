"""Where the model looks: Grad-CAM over space and time (`uniformer explain`).

One clip (the protocol's temporal sampling, 1 clip, centre crop) goes through the exact network. The map
is Grad-CAM on a layer's output feature map `A` `[C, T', H', W']` (a UniFormer stage, a UniFormerV2
backbone block's patch tokens: `VideoNetwork.logits_and_map`; by default the layer the network names,
`default_map_layer`, measured as its comment says): each channel is weighted by the mean gradient of the
target logit over its positions, `ReLU(sum_c w_c A_c)`, then upsampled (trilinear) to the sampled frames
`[T, S, S]` and scaled to [0, 1]. The target is the predicted class or a chosen one (name or index). The
same code serves every family.

`explain_video` writes the clip with the map overlaid (`.mp4` with H.264 or `.gif`) and a PNG contact
sheet of the frames with the class and score in its title, and with `save_map` the maps as data
(`engine.arrays`): `raw`, Grad-CAM as computed, float32 `[T', H', W']` (the layer's map, neither upsampled
nor scaled: what pytorch-grad-cam-style code starts from), and `upsampled`, float32 `[T, S, S]` (the
overlay's map: trilinear to the sampled frames, divided by its maximum), with the class, score, layer,
protocol and frame times as metadata.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from uniformer_cli import plots
from uniformer_cli.data import transforms
from uniformer_cli.data.datasets import parse_integer
from uniformer_cli.data.sampling import clip_indices
from uniformer_cli.data.video import open_video
from uniformer_cli.data.views import read_view_frames, views_from_frames
from uniformer_cli.engine.arrays import FORMATS, index_path, write_arrays
from uniformer_cli.engine.inference import open_model
from uniformer_cli.engine.request import InferenceRequest
from uniformer_cli.errors import UniformerError
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.files import ensure_writable, refuse_to_replace, write_with_fallback
from uniformer_cli.models.network import VideoNetwork
from uniformer_cli.protocol import ViewProtocol

logger = logging.getLogger(__name__)

OUTPUTS = (".mp4", ".gif")
DISPLAY_SIDE = 256  # small crops are enlarged (whole pixels) to at least this side in the outputs
SHEET_FRAMES = 8  # frames on the contact sheet, evenly spaced over the clip
MAP_FORMAT_TAG = "uniformer-gradcam/1"


MAP_FORMATS = FORMATS  # --save-map: `.safetensors`, or `.npy` (+ `.raw.npy`, `.json`)


@dataclass(frozen=True)
class ExplainRequest:
    video: Path
    output: Path | None = None  # the overlay clip (.mp4 or .gif); None: the maps alone (`save_map`)
    inference: InferenceRequest = field(default_factory=InferenceRequest)  # the model (exact: Grad-CAM)
    target: str | None = None  # a class name or index; None: the predicted class
    decoder: str = "auto"
    alpha: float = 0.5  # weight of the heat map in the overlay
    layer: int | None = None  # the layer whose map Grad-CAM uses; None: the network's `default_map_layer`
    save_map: Path | None = None  # the maps as data (`MAP_FORMATS`)
    force: bool = False  # replace existing outputs


@dataclass
class Explanation:
    """A clip's class activation map and what it was computed for."""

    cam: torch.Tensor  # float32 [T, S, S] in [0, 1], one map per sampled frame
    raw: torch.Tensor  # float32 [T', H', W']: Grad-CAM on the layer's map, before upsampling and scaling
    frames: np.ndarray  # uint8 [T, S, S, 3]: the frames the model saw (RGB, cropped)
    times: list[float]  # seconds of each sampled frame
    index: int
    label: str
    score: float  # the class's softmax probability on this clip
    model: str = ""
    protocol: str = ""
    layer: int = 0  # the layer whose map it is


@dataclass(frozen=True)
class ExplainResult:
    video: Path | None  # the overlay clip, None without one
    sheet: Path | None
    explanation: Explanation
    maps: list[Path] = field(default_factory=list)  # the files `save_map` wrote


def grad_cam(
    model: VideoNetwork, clip: torch.Tensor, target: int | None = None, layer: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of one clip `[1, 3, T, S, S]` on layer `layer`'s output map (None: the network's default):
    (`[T', H', W']` map, not upsampled or scaled; logits `[classes]`). `target` None takes the top class."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            clip = clip.detach().requires_grad_(True)
            batch_logits, activations = model.logits_and_map(clip, layer or model.default_map_layer)
            logits = batch_logits[0]
            chosen = int(logits.argmax()) if target is None else target
            (gradients,) = torch.autograd.grad(logits[chosen], activations)
    finally:
        model.train(was_training)
    weights = gradients[0].float().mean(dim=(1, 2, 3), keepdim=True)
    return torch.relu((weights * activations.detach()[0].float()).sum(dim=0)), logits.detach()


def upsample(cam: torch.Tensor, frames: int, side: int) -> torch.Tensor:
    """A `[T', H', W']` map -> `[frames, side, side]` (trilinear), scaled so its maximum is 1."""
    full = F.interpolate(cam[None, None], size=(frames, side, side), mode="trilinear", align_corners=False)[0, 0]
    peak = full.max()
    return full / peak if peak > 0 else full


def display_frames(views: torch.Tensor, channel_order: str) -> np.ndarray:
    """The uint8 RGB frames `[T, S, S, 3]` of one normalised view `[3, T, S, S]` (undoing the normalisation)."""
    pixels = views.flip(0) if channel_order == "bgr" else views
    levels = (pixels * transforms.STD + transforms.MEAN) * 255
    return levels.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()


def resolve_target(target: str | None, labels: Sequence[str] | None, classes: int) -> int | None:
    """A class index from a name (case-insensitive) or an index, or None for the predicted class."""
    if target is None:
        return None
    index = parse_integer(target.strip())
    if index is not None:
        if not 0 <= index < classes:
            raise UniformerError(f"--class {index} is out of range: the model has {classes} classes (0-{classes - 1})")
        return index
    names = {name.lower(): i for i, name in enumerate(labels or [])}
    if target.lower() not in names:
        known = "its classes are listed by `uniformer models`" if labels else "the model has no class names"
        raise UniformerError(f"--class {target!r} is not a class of this model ({known}); give an index instead")
    return names[target.lower()]


def explain_clip(
    model: VideoNetwork,
    frames: np.ndarray,
    positions: np.ndarray,
    protocol: ViewProtocol,
    times: list[float],
    labels: Sequence[str] | None,
    target: int | None = None,
    layer: int | None = None,
) -> Explanation:
    """Grad-CAM (on layer `layer`'s output; None: the network's default) of the first view built from
    `read_view_frames` output."""
    layer = layer or model.default_map_layer
    view = views_from_frames(frames, positions, protocol)[0]
    cam, logits = grad_cam(model, view[None].to(model.device), target, layer)
    named = len(labels) if labels else logits.numel()
    probabilities = logits[:named].softmax(dim=0)
    index = int(probabilities.argmax()) if target is None else target
    label = labels[index] if labels and index < len(labels) else f"class {index}"
    return Explanation(
        cam=upsample(cam.cpu(), view.shape[1], view.shape[2]),
        raw=cam.cpu(),
        frames=display_frames(view, protocol.channel_order),
        times=times,
        index=index,
        label=label,
        score=float(probabilities[index]) if index < named else float("nan"),
        layer=layer,
    )


def overlay(frames: np.ndarray, cam: torch.Tensor, alpha: float) -> np.ndarray:
    """Frames blended with the heat map's colours (`alpha` of the map), enlarged to `DISPLAY_SIDE`."""
    colours = plots.colormap(cam.numpy()).astype(np.float32)
    blended = ((1 - alpha) * frames.astype(np.float32) + alpha * colours).round().astype(np.uint8)
    factor = max(1, math.ceil(DISPLAY_SIDE / frames.shape[1]))
    return blended.repeat(factor, axis=1).repeat(factor, axis=2)


def write_clip(path: Path, frames: np.ndarray, fps: float) -> None:
    """`.mp4` (H.264, yuv420p) or `.gif`, atomically (elsewhere when `path` cannot take it: `write_with_fallback`)."""
    height, width = frames.shape[1:3]
    rate = max(1, round(fps))

    def write(temporary: Path) -> None:
        gif = path.suffix == ".gif"
        with av.open(str(temporary), "w", format="gif" if gif else "mp4") as container:
            stream = container.add_stream("gif" if gif else "libx264", rate=rate)
            stream.width, stream.height = width - width % 2, height - height % 2
            stream.pix_fmt = "rgb8" if gif else "yuv420p"
            for image in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: stream.height, : stream.width]))
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))

    write_with_fallback(path, write, "explanation video")


EXPLAIN_STEPS = ("load the model", "decode the clip", "Grad-CAM", "write the clip", "draw the contact sheet")


def explain_video(request: ExplainRequest, progress: ProgressCallback | None = None) -> ExplainResult:
    """Load the model, compute the video's Grad-CAM and write the overlay clip and the contact sheet, and
    the maps as data with `save_map`; each step is reported to `progress`."""

    def step(done: int) -> None:
        detail = {"step": EXPLAIN_STEPS[done]} if done < len(EXPLAIN_STEPS) else {}
        notify(progress, Progress("explaining", done, len(EXPLAIN_STEPS), detail))

    if request.output is None and request.save_map is None:
        raise UniformerError(
            "name what to write: -o OUT.mp4|OUT.gif (the overlay), --save-map FILE (the maps), or both"
        )
    if request.output is not None and request.output.suffix.lower() not in OUTPUTS:
        raise UniformerError(f"-o {request.output}: name an .mp4 or .gif file (the contact sheet goes beside it)")
    if request.save_map is not None and request.save_map.suffix.lower() not in MAP_FORMATS:
        raise UniformerError(f"--save-map {request.save_map}: name a .npy or .safetensors file")
    if not 0 <= request.alpha <= 1:
        raise UniformerError(f"--alpha must be between 0 and 1, got {request.alpha:g}")
    if request.output is not None:  # every output checked before any work
        plots.require_matplotlib()
        ensure_writable(request.output, "explanation video")
        ensure_writable(request.output.with_suffix(".png"), "contact sheet")
    if request.save_map is not None:
        ensure_writable(request.save_map, "explanation maps")
    refuse_to_replace(products(request), request.force, "the explanation")
    step(0)
    opened = open_model(request.inference, exact=True, progress=progress)  # Grad-CAM needs exact gradients
    step(1)
    model = opened.network
    assert isinstance(model, VideoNetwork)
    if request.layer is not None and not 1 <= request.layer <= model.map_layers:
        raise UniformerError(f"--layer must be 1..{model.map_layers} for {opened.name}, got {request.layer}")
    protocol = replace(opened.protocol, clips=1, crops=1, single_crop="centre")
    target = resolve_target(request.target, opened.labels, opened.config.num_classes)
    with open_video(request.video, request.decoder) as video:
        frames, positions = read_view_frames(video, protocol)
        indices = clip_indices(protocol, video.num_frames)[0]
        times = [float(i) / video.fps for i in indices]
        fps = video.fps
    step(2)
    explanation = explain_clip(model, frames, positions, protocol, times, opened.labels, target, request.layer)
    explanation.model = opened.name
    explanation.protocol = protocol.describe()
    maps = [] if request.save_map is None else save_maps(request.save_map, explanation, request, protocol)
    if request.output is None:
        step(len(EXPLAIN_STEPS))  # the maps alone: no clip, no sheet
        return ExplainResult(None, None, explanation, maps)
    blended = overlay(explanation.frames, explanation.cam, request.alpha)
    # Sampled frames play at the pace they were taken from the video.
    spacing = (indices[-1] - indices[0]) / max(1, len(indices) - 1) if len(indices) > 1 else 1
    step(3)
    write_clip(request.output, blended, fps / max(1.0, float(spacing)))
    sheet = request.output.with_suffix(".png")
    title = (
        f"{explanation.label} (class {explanation.index}): {explanation.score:.1%}  ·  "
        f"{explanation.model}  ·  {request.video.name}"
    )
    shown = np.unique(np.linspace(0, len(blended) - 1, min(SHEET_FRAMES, len(blended))).round().astype(int))
    step(4)
    plots.contact_sheet(sheet, blended[shown], [times[i] for i in shown], title)
    step(len(EXPLAIN_STEPS))
    return ExplainResult(request.output, sheet, explanation, maps)


def products(request: ExplainRequest) -> list[Path]:
    """Every file the request writes: the overlay clip and its contact sheet, the maps (a `.npy` map comes
    with `.raw.npy` and its `.json` index, as `save_maps` writes them)."""
    files = [] if request.output is None else [request.output, request.output.with_suffix(".png")]
    if request.save_map is not None:
        files.append(request.save_map)
        if request.save_map.suffix.lower() == ".npy":
            files += [request.save_map.with_suffix(".raw.npy"), index_path(request.save_map)]
    return files


def save_maps(path: Path, explanation: Explanation, request: ExplainRequest, protocol: ViewProtocol) -> list[Path]:
    """Write the raw and the upsampled maps with what they explain (module doc); the files written."""
    metadata = {
        "format": MAP_FORMAT_TAG,
        "video": str(request.video),
        "model": explanation.model,
        "explained_index": explanation.index,
        "explained_label": explanation.label,
        "score": explanation.score,
        "layer": explanation.layer,
        "protocol": protocol.as_dict(),
        "times": explanation.times,
        "raw": "Grad-CAM on the layer's output map, ReLU(sum_c w_c A_c): [T', H', W'], not upsampled or scaled",
        "upsampled": "raw, trilinear to the sampled frames [T, S, S] and divided by its maximum (the overlay's map)",
    }
    return write_arrays(path, {"upsampled": explanation.cam, "raw": explanation.raw}, metadata, "explanation maps")
