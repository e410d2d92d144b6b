"""MMAction2 UniFormer (v1) checkpoints: their keys, their Kinetics-400 head order and their LayerNorm
epsilon, turned into an official state_dict (docs/MMACTION2.md).

An MMAction2 checkpoint is `{"meta": ..., "state_dict": ...}` (`checkpoint.read_checkpoint` unwraps
it) whose backbone keys carry `backbone.` before the official names and whose classifier is
`cls_head.fc_cls` (MMAction2's `I3DHead`, open-mmlab/mmaction2 `mmaction/models/heads/i3d_head.py`).
Three facts differ from the official release, and each is handled here:

- keys: `backbone.X` is the official `X`; `cls_head.fc_cls.weight/bias` is `head.weight/bias`;
- class order: a 400-row head follows MMAction2's Kinetics-400 label map
  (`tools/data/kinetics/label_map_k400.txt`, shipped as `zoo/labels/k400-mmaction.txt`), which
  differs from the official order at every index; its rows are put in the official order by class
  name. Renaming alone would load and give wrong classes;
- LayerNorm epsilon: MMAction2's backbone builds its attention-block LayerNorms with PyTorch's default
  1e-5 (`mmaction/models/backbones/uniformer.py`), the official code with 1e-6; the model keeps 1e-5
  (`ModelConfig.norm_eps`) so that it computes what MMAction2 computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from uniformer_cli.errors import CheckpointError
from uniformer_cli.zoo import load_labels

BACKBONE_PREFIX = "backbone."
HEAD_PREFIX = "cls_head.fc_cls."
# MMAction2's normalisation constants (`ActionDataPreprocessor` buffers): the test protocol's business,
# not weights; dropped should a checkpoint carry them.
DROPPED_PREFIX = "data_preprocessor."
NORM_EPS = 1e-5  # PyTorch's LayerNorm default, which MMAction2's UniFormer backbone keeps
# MMAction2's label maps (label sets of the package, `zoo.load_labels`), by the official label set they reorder.
LABEL_MAPS = {"k400": "k400-mmaction"}


@dataclass(frozen=True)
class MMActionWeights:
    state_dict: dict[str, torch.Tensor]  # official key names, head rows in the official order
    label_set: str | None  # the label set whose MMAction2 order the head was permuted from; None: kept as is


def is_mmaction(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """An MMAction2 recognizer's state_dict: backbone keys under `backbone.` and an `I3DHead` classifier."""
    return any(key.startswith(BACKBONE_PREFIX) for key in state_dict) and f"{HEAD_PREFIX}weight" in state_dict


def mmaction_labels(label_set: str) -> list[str]:
    """MMAction2's class names of `label_set`, index = its head row."""
    return load_labels(LABEL_MAPS[label_set])


def head_order(label_set: str) -> list[int]:
    """For each official class index, the MMAction2 row of the class with the same name."""
    rows = {name: row for row, name in enumerate(mmaction_labels(label_set))}
    official = load_labels(label_set)
    missing = [name for name in official if name not in rows]
    if missing or len(rows) != len(official):
        raise CheckpointError(f"MMAction2's {label_set} label map does not name the official classes ({missing[:3]})")
    return [rows[name] for name in official]


def from_mmaction(state_dict: Mapping[str, torch.Tensor], source: str) -> MMActionWeights:
    """The official state_dict of an MMAction2 UniFormer checkpoint (see the module docstring). Keys that
    are neither backbone nor head keep their names, so the strict load names them."""
    result: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIX):
            continue
        if key.startswith(BACKBONE_PREFIX):
            name = key.removeprefix(BACKBONE_PREFIX)
        elif key.startswith(HEAD_PREFIX):
            name = "head." + key.removeprefix(HEAD_PREFIX)
        else:
            name = key
        if name in result:
            raise CheckpointError(f"{source} is malformed: two of its keys map to {name}")
        result[name] = value
    weight, bias = result.get("head.weight"), result.get("head.bias")
    rows = int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None
    label_set = next((name for name in LABEL_MAPS if rows == len(load_labels(name))), None)
    if label_set is not None and weight is not None:
        order = torch.tensor(head_order(label_set))
        result["head.weight"] = weight[order]
        if bias is not None:
            if bias.shape != weight.shape[:1]:
                raise CheckpointError(f"{source} is malformed: cls_head.fc_cls.bias has {list(bias.shape)} values")
            result["head.bias"] = bias[order]
    return MMActionWeights(result, label_set)
