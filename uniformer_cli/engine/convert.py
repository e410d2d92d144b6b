"""`uniformer convert`: an official, PySlowFast, MMAction2 (UniFormerV2) or 2-D ImageNet checkpoint ->
self-describing safetensors."""

from __future__ import annotations

import logging
from pathlib import Path

from uniformer_cli.errors import UniformerError
from uniformer_cli.files import refuse_to_replace
from uniformer_cli.models.config import family_of
from uniformer_cli.models.config_v2 import V2Config, v2_family_of
from uniformer_cli.weights import Conversion, convert_checkpoint
from uniformer_cli.zoo import ALL_LABEL_SET_SIZES, find_entry

log = logging.getLogger(__name__)

LAYOUTS = {
    "plain": "state_dict",
    "model_state": "PySlowFast training checkpoint (model_state)",
    "model": "training checkpoint (model)",
    "state_dict": "training checkpoint (state_dict)",
}
V2_LAYOUTS = {
    "pyslowfast": "UniFormerV2 keys under backbone. (official)",
    "mmaction": "MMAction2 UniFormerV2 (backbone. + cls_head.fc_cls)",
    "plain": "UniFormerV2 keys",
}


def convert(
    source: Path,
    destination: Path,
    *,
    model: str | None = None,
    head_dim: int | None = None,
    overwrite: bool = False,
    frames: int | None = None,
    labels: str | None = None,
) -> Conversion:
    """Convert `source` to `destination` (.safetensors). `model` names the zoo entry the file is (its
    labels and protocol are recorded); `head_dim` is for custom widths that no released family has. For
    a UniFormerV2 file without an entry, `frames` records a test protocol (sparse sampling, one view, the
    model's resolution) and `labels` names its head's label set (a Kinetics-710 head given a K400, K600
    or K700 set keeps that set's rows, in its order). An existing destination is replaced only with
    `overwrite`."""
    if destination.suffix.lower() != ".safetensors":
        raise UniformerError(f"the destination must end in .safetensors, got {destination.name}")
    if model is not None and head_dim is not None:
        raise UniformerError("give either --model (a zoo entry fixes the head width) or --head-dim, not both")
    if model is not None and (frames is not None or labels is not None):
        raise UniformerError("--model records the entry's protocol and labels: drop --frames and --labels")
    if labels is not None and labels not in ALL_LABEL_SET_SIZES:
        raise UniformerError(f"unknown label set {labels!r} (use one of {', '.join(ALL_LABEL_SET_SIZES)})")
    if source.exists() and destination.exists() and source.samefile(destination):
        raise UniformerError("the destination is the source file")
    refuse_to_replace([destination], overwrite, "the destination")
    entry = find_entry(model) if model is not None else None
    conversion = convert_checkpoint(
        source,
        destination,
        entry=entry,
        head_dim=head_dim,
        label_set=labels,
        frames=frames,
    )
    if conversion.protocol is None and not conversion.inflated:
        log.info(
            "%s records no test protocol (no --model): predict, eval and features will need the protocol flags, "
            "e.g. `uniformer predict clip.mp4 --weights %s --frames 16 --stride 4` (dense sampling) or `--frames "
            "8 --sampling segment`%s; to record a zoo entry's protocol and names instead, convert again with "
            "--model NAME --force (`uniformer models`)",
            destination,
            destination,
            "" if conversion.labels else ", and will name classes `class N`",
        )
    return conversion


def conversion_summary(conversion: Conversion) -> dict[str, object]:
    """The `convert` record (docs/OUTPUT.md): what was read and written. For UniFormerV2, `depth` is the
    number of blocks, `embed_dim` the width, `mlp_ratio` the blocks' MLP ratio."""
    config = conversion.config
    entry = conversion.entry
    layout = LAYOUTS[conversion.layout]
    if conversion.v2_layout is not None:
        layout += f", {V2_LAYOUTS[conversion.v2_layout]}"
    if conversion.stripped_prefix:
        layout += ", 'module.' prefix stripped"
    if conversion.inflated:
        layout += ", 2-D ImageNet weights inflated to 3-D"
    if conversion.mmaction:
        layout += ", MMAction2 keys mapped, LayerNorm eps 1e-5 kept"
    if conversion.head_order_from:
        layout += f", head rows put from MMAction2's {conversion.head_order_from} order into the official one"
    if isinstance(config, V2Config):
        arch, depth, widths, mlp_ratio, layer_scale = v2_family_of(config), [config.layers], [config.width], 4.0, None
    else:
        arch, depth, widths = family_of(config), list(config.depth), list(config.embed_dim)
        mlp_ratio, layer_scale = config.mlp_ratio, config.layer_scale
    return {
        "source": str(conversion.source),
        "destination": str(conversion.destination),
        "model": entry.name if entry else None,
        "arch": arch or "custom",
        "backbone": config.arch,
        "layout": layout,
        "depth": depth,
        "embed_dim": widths,
        "head_dim": config.head_dim,
        "mlp_ratio": mlp_ratio,
        "layer_scale": layer_scale,
        "num_classes": config.num_classes,
        "params": conversion.parameters,
        "tensors": conversion.tensors,
        "dataset": entry.dataset if entry else None,
        "protocol": conversion.protocol.as_dict() if conversion.protocol else None,
    }
