"""What the commands do (predict, evaluate, train, flops, convert, features, explain, export, push), with no
drawing: long steps report through `events.Progress` callbacks. `inference.open_model` is the one way
every command opens a model for inference.

The CLI refers to `engine.<module>.<name>` inside its commands: the modules (and torch) load on first
use, so `uniformer --help` stays fast."""

from typing import TYPE_CHECKING

from uniformer_cli.lazy import lazy_attributes

if TYPE_CHECKING:
    from uniformer_cli.engine import (
        arrays,
        cache,
        cards,
        checkpointing,
        convert,
        distributed,
        doctor,
        download,
        environment,
        evaluate,
        explain,
        export,
        features,
        flops,
        inference,
        interchange,
        openvino_engine,
        packing,
        predict,
        prefetch,
        push,
        request,
        results,
        scoring,
        signals,
        torch_free,
        train,
        train_config,
        train_data,
        train_options,
    )

__all__ = [
    "arrays",
    "cache",
    "cards",
    "checkpointing",
    "convert",
    "distributed",
    "doctor",
    "download",
    "environment",
    "evaluate",
    "explain",
    "export",
    "features",
    "flops",
    "inference",
    "interchange",
    "openvino_engine",
    "packing",
    "predict",
    "prefetch",
    "push",
    "request",
    "results",
    "scoring",
    "signals",
    "torch_free",
    "train",
    "train_config",
    "train_data",
    "train_options",
]

__getattr__, __dir__ = lazy_attributes(__name__, submodules=__all__)
