"""`VideoNetwork`: what the engine asks of a network, whichever family it is (UniFormer v1, its light
models, UniFormerV2).

The commands never look at a network's blocks themselves: features, explain, flops and the fast path
ask the network through these methods, so that every command runs every family by the same code.

- Layers are numbered from 1 in network order. `forward_features(x, layer)` pools layer `layer`'s output
  into one vector per clip; the last layer (`feature_layers`, the default) is what the classifier reads,
  so `head(forward_features(x, feature_layers)) == forward(x)`. UniFormer: the 4 stages (stage 4 after
  the final norm). UniFormerV2: its backbone blocks, then one more, the fused video token.
- `logits_and_map(x, layer)` gives the logits together with layer `layer`'s output as a map
  `[B, C, T', H', W']` (1..`map_layers`) that the logits depend on: Grad-CAM's input. `default_map_layer`
  is the layer `uniformer explain` uses unless told (each family says how it was measured).
- `repeated_blocks()` are the blocks that repeat with the same shapes (the FLOP counter runs each kind
  once) and `cost_groups` the submodules whose work `flops --by-stage` reports, in network order.
"""

from __future__ import annotations

import torch
from torch import nn


class VideoNetwork(nn.Module):
    """Base of every video network (module doc). Input float32 `[B, 3, T, H, W]`, output logits."""

    # Every network has a `head`, its classifier's linear layer: `head(forward_features(x)) == forward(x)`.
    # Set by `fast.optimize_for_inference`: "auto" (the device's autocast applies), "fp32" or "bf16".
    precision: str = "auto"
    cost_groups: tuple[str, ...] = ()  # module paths; the work outside them is reported as "head"
    head_prefixes: tuple[str, ...] = ()  # state_dict keys of the classifier(s): a run on other classes drops them
    checkpoint_groups: tuple[str, ...] = ()  # what `set_grad_checkpointing` counts blocks in (stages, backbone)

    @property
    def device(self) -> torch.device:
        """Where the weights are: inputs go there (`model(views.to(model.device))`)."""
        return next(self.parameters()).device

    @property
    def feature_layers(self) -> int:
        """How many layers `forward_features` takes; the last one is the classifier's input."""
        raise NotImplementedError

    @property
    def map_layers(self) -> int:
        """How many layers `logits_and_map` takes."""
        raise NotImplementedError

    @property
    def clip_size(self) -> int | None:
        """The only crop side the network takes (UniFormerV2: its position embedding's), None: any."""
        return None

    @property
    def default_map_layer(self) -> int:
        """The layer `uniformer explain` maps unless told (each family says how it was measured)."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Layer `layer`'s output pooled into `[B, D]` (module doc)."""
        raise NotImplementedError

    def logits_and_map(self, x: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits `[B, classes]`, layer `layer`'s output as a map `[B, C, T', H', W']` in their graph)."""
        raise NotImplementedError

    def repeated_blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True, blocks: tuple[int, ...] | None = None) -> None:
        """Recompute activations in backward: every block, or the first `blocks[i]` of `checkpoint_groups[i]`."""
        raise NotImplementedError

    @property
    def checkpoints_by_default(self) -> bool:
        """Whether training recomputes activations unless told otherwise (UniFormerV2-L: memory)."""
        return False

    def no_weight_decay(self) -> set[str]:
        """Parameters trained without weight decay besides the 1-D ones and biases (the optimiser's rule)."""
        return set()


def check_layer(layer: int, count: int, what: str = "layer") -> None:
    """A `ValueError` unless 1 <= `layer` <= `count`."""
    if not 1 <= layer <= count:
        raise ValueError(f"{what} must be 1..{count}, got {layer}")
