"""UniFormer video networks: `create_model(config)` builds the architecture a `ModelConfig` names.

- `UniFormer` (S/B, `uniformer.py`) and `UniFormerLight` (XXS/XS, `light.py`) take float32
  `[B, 3, T, H, W]` and return logits `[B, num_classes]`; their state_dict keys are the official ones.
- Attention runs through fused SDPA by default; `exact_attention(model)` switches to the explicit
  softmax(q k^T * scale) v reference (what the FLOP counter needs to see).
- `config.py` needs no torch: the zoo and the CLI read it; everything else loads on first use.
"""

from typing import TYPE_CHECKING

from uniformer_cli.lazy import lazy_attributes
from uniformer_cli.models.config import FAMILIES, ModelConfig

if TYPE_CHECKING:
    from uniformer_cli.models.factory import create_model, exact_attention, fp16_safe
    from uniformer_cli.models.light import UniFormerLight
    from uniformer_cli.models.uniformer import UniFormer

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        ".factory": ("create_model", "exact_attention", "fp16_safe"),
        ".light": ("UniFormerLight",),
        ".uniformer": ("UniFormer",),
    },
)

__all__ = [
    "FAMILIES",
    "ModelConfig",
    "UniFormer",
    "UniFormerLight",
    "create_model",
    "exact_attention",
    "fp16_safe",
]
