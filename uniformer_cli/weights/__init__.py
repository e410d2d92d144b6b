"""Weights you can trust: safe checkpoint reading, architecture inference, safetensors with metadata,
Hub downloads converted once, and `load_model` / `resolve_model` on top of them.

Loaded on first use, so `weights.header` (what a name names, a safetensors header) reads without torch."""

from typing import TYPE_CHECKING

from uniformer_cli.lazy import lazy_attributes

if TYPE_CHECKING:
    from uniformer_cli.weights.checkpoint import (
        RawCheckpoint,
        infer_config,
        inflate_image_state_dict,
        load_state_dict_strict,
        read_checkpoint,
    )
    from uniformer_cli.weights.loader import (
        Conversion,
        LoadedModel,
        ZooDownload,
        convert_checkpoint,
        fetch_zoo_download,
        fetch_zoo_weights,
        load_model,
        resolve_model,
    )
    from uniformer_cli.weights.store import StoredWeights, load_weights, save_weights

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        ".checkpoint": (
            "RawCheckpoint",
            "infer_config",
            "inflate_image_state_dict",
            "load_state_dict_strict",
            "read_checkpoint",
        ),
        ".loader": (
            "Conversion",
            "LoadedModel",
            "ZooDownload",
            "convert_checkpoint",
            "fetch_zoo_download",
            "fetch_zoo_weights",
            "load_model",
            "resolve_model",
        ),
        ".store": ("StoredWeights", "load_weights", "save_weights"),
    },
)

__all__ = [
    "Conversion",
    "LoadedModel",
    "RawCheckpoint",
    "StoredWeights",
    "ZooDownload",
    "convert_checkpoint",
    "fetch_zoo_download",
    "fetch_zoo_weights",
    "infer_config",
    "inflate_image_state_dict",
    "load_model",
    "load_state_dict_strict",
    "load_weights",
    "read_checkpoint",
    "resolve_model",
    "save_weights",
]
