"""The official UniFormerV2 model, from the user's own checkout of OpenGVLab/UniFormerV2, for bench_v2.py.

Nothing of the official code is in this repository: `--official DIR` names a clone of
OpenGVLab/UniFormerV2, whose model module (`slowfast/models/uniformerv2_model.py`) is imported from DIR at
run time and built with the settings of one of its released experiment configs (`exp/<dataset>/<name>/
config.yaml`), read from DIR too, the way its PySlowFast wrapper (`slowfast/models/uniformerv2.py`) hands
them to the builder function the config names. What the experiment does not set takes the value of the
official defaults (`slowfast/config/defaults.py`, section UNIFORMERV2): DW_REDUCTION 1.5, DOUBLE_LMHRA
True, FROZEN False.

What the module needs beyond torch: its logger comes from the checkout's own `slowfast.utils.logging`,
which needs `pip install simplejson iopath`. It imports `DropPath` from timm, which needs torchvision,
which this project never installs: when timm is absent a stand-in module `timm.models.layers` is
registered whose `DropPath` refuses to be built. The official blocks only build one for a drop-path rate
above 0, and every experiment config of the K400 models sets 0, so the stand-in is never used.

The weights: every parameter of the official model is drawn at random (its zero-initialised layers too, so
that every branch computes) and saved as an official `.pyth` (`model_state`, keys under `backbone.`, the
PySlowFast wrapper's layout), which our reader loads as `--weights` does: both models hold the same numbers.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MODULE = Path("slowfast/models/uniformerv2_model.py")
B16_EXPERIMENT = "k400/k400_b16_f8x224"  # UniFormerV2-B/16, K400, 8x224
L14_EXPERIMENT = "k400/k400+k710_l14_f8x224"  # UniFormerV2-L/14, K400 (K710 pre-trained), 8x224
# The official defaults (slowfast/config/defaults.py) of the builder's settings no K400 experiment sets.
DEFAULTS = {"DW_REDUCTION": "1.5", "DOUBLE_LMHRA": "True", "FROZEN": "False"}


class OfficialError(Exception):
    """The checkout cannot give the official model: the message is one line saying why and what to do."""


def _value(text: str | list[str]) -> object:
    """A config scalar (or list of them) as YAML reads it: booleans, numbers, else the unquoted string."""
    if isinstance(text, list):
        return [_value(item) for item in text]
    if text in ("True", "False", "true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


def released_settings(config_text: str) -> tuple[str, dict[str, object]]:
    """The builder function an experiment config names (UNIFORMERV2.BACKBONE) and its keyword arguments,
    as the official PySlowFast wrapper passes them, with pretrained CLIP loading off."""
    from uniformer_cli.weights.checkpoint_v2 import yacs_sections

    sections = yacs_sections(config_text)
    v2 = {**DEFAULTS, **sections.get("UNIFORMERV2", {})}
    model, data = sections.get("MODEL", {}), sections.get("DATA", {})
    try:
        settings = {
            "pretrained": False,
            "use_checkpoint": _value(model["USE_CHECKPOINT"]),
            "checkpoint_num": _value(model["CHECKPOINT_NUM"]),
            "num_classes": _value(model["NUM_CLASSES"]),
            "t_size": _value(data["NUM_FRAMES"]),
            "dw_reduction": _value(v2["DW_REDUCTION"]),
            "backbone_drop_path_rate": _value(v2["BACKBONE_DROP_PATH_RATE"]),
            "temporal_downsample": _value(v2["TEMPORAL_DOWNSAMPLE"]),
            "no_lmhra": _value(v2["NO_LMHRA"]),
            "double_lmhra": _value(v2["DOUBLE_LMHRA"]),
            "return_list": _value(v2["RETURN_LIST"]),
            "n_layers": _value(v2["N_LAYERS"]),
            "n_dim": _value(v2["N_DIM"]),
            "n_head": _value(v2["N_HEAD"]),
            "mlp_factor": _value(v2["MLP_FACTOR"]),
            "drop_path_rate": _value(v2["DROP_PATH_RATE"]),
            "mlp_dropout": _value(v2["MLP_DROPOUT"]),
            "cls_dropout": _value(v2["CLS_DROPOUT"]),
            "frozen": _value(v2["FROZEN"]),
        }
        builder = _value(v2["BACKBONE"])
    except KeyError as missing:
        raise OfficialError(f"the experiment config sets no {missing.args[0]}") from None
    return str(builder), settings


def _drop_path_stand_in() -> None:
    """Register `timm.models.layers.DropPath` as a stand-in that refuses to be built (see the module doc)."""
    from torch import nn

    class DropPath(nn.Module):
        """Stand-in for timm's stochastic depth, which the official blocks build only for a rate above 0."""

        def __init__(self, rate: float) -> None:
            raise OfficialError(f"a drop-path rate of {rate} needs timm's DropPath: pip install timm")

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath  # type: ignore[attr-defined]
    models = types.ModuleType("timm.models")
    models.layers = layers  # type: ignore[attr-defined]
    timm = types.ModuleType("timm")
    timm.models = models  # type: ignore[attr-defined]
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})


@functools.cache
def official_module(checkout: Path) -> types.ModuleType:
    """The official model module, imported (once) from `checkout` (a clone of OpenGVLab/UniFormerV2)."""
    path = checkout / MODULE
    if not path.is_file():
        raise OfficialError(f"{checkout} is not a checkout of OpenGVLab/UniFormerV2: it has no {MODULE}")
    missing = [name for name in ("simplejson", "iopath") if importlib.util.find_spec(name) is None]
    if missing:
        raise OfficialError(f"the official code's logging needs {', '.join(missing)}: pip install simplejson iopath")
    if importlib.util.find_spec("timm") is None:
        _drop_path_stand_in()
    sys.path.insert(0, str(checkout))  # the module imports `slowfast.utils.logging` from the checkout
    spec = importlib.util.spec_from_file_location("official_uniformerv2_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_model(checkout: Path, experiment: str, seed: int = 0, **changes: object) -> torch.nn.Module:
    """The official network of `experiment` (e.g. B16_EXPERIMENT) in eval mode, every parameter random;
    `changes` replace builder settings (e.g. `use_checkpoint`)."""
    import torch

    config = checkout / "exp" / f"{experiment}/config.yaml"
    if not config.is_file():
        raise OfficialError(f"{checkout} has no {config.relative_to(checkout)}: is it OpenGVLab/UniFormerV2?")
    builder, settings = released_settings(config.read_text(encoding="utf-8"))
    settings.update(changes)
    module = official_module(checkout)
    if not callable(getattr(module, builder, None)):
        raise OfficialError(f"{MODULE} has no builder {builder!r}, which {experiment} names")
    model: torch.nn.Module = getattr(module, builder)(**settings)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim > 1:
                parameter.normal_(0.0, 0.02, generator=generator)
            elif name.endswith("weight"):  # LayerNorm / BatchNorm scales near 1
                parameter.normal_(1.0, 0.1, generator=generator)
            else:  # biases, class embeddings, the fusion weight: the official zeros become numbers
                parameter.normal_(0.0, 0.02, generator=generator)
    return model.eval()


def save_official_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """`model`'s weights as the official PySlowFast checkpoint holds them: `model_state`, keys under
    `backbone.` (the wrapper's attribute)."""
    import torch

    torch.save({"model_state": {f"backbone.{key}": value for key, value in model.state_dict().items()}}, path)
