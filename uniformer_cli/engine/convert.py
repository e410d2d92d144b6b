"""`uniformer convert`: an official, PySlowFast or 2-D ImageNet checkpoint -> self-describing safetensors."""

from __future__ import annotations

from pathlib import Path

from uniformer_cli.errors import UniformerError
from uniformer_cli.models.config import family_of
from uniformer_cli.weights import Conversion, convert_checkpoint
from uniformer_cli.zoo import get_entry

LAYOUTS = {
    "plain": "state_dict",
    "model_state": "PySlowFast training checkpoint (model_state)",
    "model": "training checkpoint (model)",
    "state_dict": "training checkpoint (state_dict)",
}


def convert(
    source: Path, destination: Path, *, model: str | None = None, head_dim: int | None = None, overwrite: bool = False
) -> Conversion:
    """Convert `source` to `destination` (.safetensors). `model` names the zoo entry the file is (its
    labels and protocol are recorded); `head_dim` is for custom widths that no released family has. An
    existing destination is replaced only with `overwrite`."""
    if destination.suffix.lower() != ".safetensors":
        raise UniformerError(f"the destination must end in .safetensors, got {destination.name}")
    if model is not None and head_dim is not None:
        raise UniformerError("give either --model (a zoo entry fixes the head width) or --head-dim, not both")
    if source.exists() and destination.exists() and source.samefile(destination):
        raise UniformerError("the destination is the source file")
    if destination.exists() and not overwrite:
        raise UniformerError(f"{destination} already exists: pass --force to overwrite it")
    entry = get_entry(model) if model is not None else None
    return convert_checkpoint(source, destination, entry=entry, head_dim=head_dim)


def conversion_summary(conversion: Conversion) -> dict[str, object]:
    """The `convert` record (docs/OUTPUT.md): what was read and written."""
    config = conversion.config
    entry = conversion.entry
    layout = LAYOUTS[conversion.layout]
    if conversion.stripped_prefix:
        layout += ", 'module.' prefix stripped"
    if conversion.inflated:
        layout += ", 2-D ImageNet weights inflated to 3-D"
    if conversion.mmaction:
        layout += ", MMAction2 keys mapped, LayerNorm eps 1e-5 kept"
    if conversion.head_order_from:
        layout += f", head rows put from MMAction2's {conversion.head_order_from} order into the official one"
    return {
        "source": str(conversion.source),
        "destination": str(conversion.destination),
        "model": entry.name if entry else None,
        "arch": family_of(config) or "custom",
        "backbone": config.arch,
        "layout": layout,
        "depth": list(config.depth),
        "embed_dim": list(config.embed_dim),
        "head_dim": config.head_dim,
        "mlp_ratio": config.mlp_ratio,
        "layer_scale": config.layer_scale,
        "num_classes": config.num_classes,
        "params": conversion.parameters,
        "tensors": conversion.tensors,
        "dataset": entry.dataset if entry else None,
        "protocol": entry.protocol.as_dict() if entry else None,
    }
