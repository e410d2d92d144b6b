"""`create_model(config)` and the switches that the engine flips on a built network."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import overload

from torch import nn

from uniformer_cli.models.config import ModelConfig
from uniformer_cli.models.config_v2 import V2Config
from uniformer_cli.models.layers import Attention
from uniformer_cli.models.light import UniFormerLight
from uniformer_cli.models.uniformer import UniFormer
from uniformer_cli.models.uniformerv2 import InProjAttention, UniFormerV2

UniFormerModel = UniFormer | UniFormerLight

MODEL_CLASSES: dict[str, Callable[[ModelConfig], UniFormerModel]] = {
    "uniformer": UniFormer,
    "light": UniFormerLight,
}


@overload
def create_model(config: ModelConfig) -> UniFormerModel: ...
@overload
def create_model(config: V2Config) -> UniFormerV2: ...
def create_model(config: ModelConfig | V2Config) -> UniFormerModel | UniFormerV2:
    """A freshly initialised network (train mode) for `config`; `model.config` holds the config."""
    if isinstance(config, V2Config):
        return UniFormerV2(config)
    return MODEL_CLASSES[config.arch](config)


def fp16_safe(model: nn.Module) -> bool:
    """Whether half-precision autocast may run `model`: not the light models, whose fp16 training
    overflowed (MODEL.md 11); any module that is not a UniFormer is left to the caller's choice."""
    return not isinstance(getattr(model, "_orig_mod", model), UniFormerLight)  # _orig_mod: torch.compile


class exact_attention:  # lower case: it reads as a call, `exact_attention(model)`, as often as a `with`
    """Switch every attention of `model` to the explicit fp32 path (or back to SDPA with `enabled=False`).

    Takes effect immediately; used as a context manager it restores each module's previous mode on exit.
    """

    def __init__(self, model: nn.Module, enabled: bool = True) -> None:
        self.modules = [module for module in model.modules() if isinstance(module, (Attention, InProjAttention))]
        self.previous = [module.exact for module in self.modules]
        for module in self.modules:
            module.exact = enabled

    def __enter__(self) -> exact_attention:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for module, previous in zip(self.modules, self.previous, strict=True):
            module.exact = previous
