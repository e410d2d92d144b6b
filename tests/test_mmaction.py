"""MMAction2 UniFormer checkpoints: key map, the head put in the official class order by name, the
LayerNorm epsilon kept, through `convert` and `--weights`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hub_server import TINY_CONFIG
from hypothesis import given, settings
from hypothesis import strategies as st

from uniformer_cli import resolve_model
from uniformer_cli.errors import CheckpointError
from uniformer_cli.models import create_model
from uniformer_cli.weights import convert_checkpoint, load_weights
from uniformer_cli.weights.mmaction import from_mmaction, head_order, is_mmaction, mmaction_labels
from uniformer_cli.zoo import load_labels

ORDER = head_order("k400")  # official index -> MMAction2 row


def mmaction_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`model` (official order) as MMAction2 stores it: prefixed keys, head rows in MMAction2's order."""
    rows = torch.empty(len(ORDER), dtype=torch.long)
    rows[torch.tensor(ORDER)] = torch.arange(len(ORDER))  # MMAction2 row -> official index
    state = {"backbone." + key: value for key, value in model.state_dict().items() if not key.startswith("head.")}
    state["cls_head.fc_cls.weight"] = model.head.weight.detach()[rows].clone()
    state["cls_head.fc_cls.bias"] = model.head.bias.detach()[rows].clone()
    return state


def clip() -> torch.Tensor:
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(5))


def test_the_label_maps_name_the_same_classes_in_another_order_everywhere() -> None:
    official, mmaction = load_labels("k400"), mmaction_labels("k400")
    assert sorted(official) == sorted(mmaction) and len(set(mmaction)) == 400
    assert all(official[index] != mmaction[index] for index in range(400))  # no index agrees
    assert all(mmaction[ORDER[index]] == official[index] for index in range(400))
    # Two rows by name: MMAction2 sorts alphabetically, the official file does not.
    assert mmaction[0] == "abseiling" and official[ORDER.index(0)] == "abseiling"
    assert official[0] == "riding a bike" and mmaction[ORDER[0]] == "riding a bike"


def test_an_mmaction2_checkpoint_converts_to_the_logits_mmaction2_computes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = create_model(TINY_CONFIG.replace(norm_eps=1e-5)).eval()  # what MMAction2 runs
    torch.save({"meta": {"epoch": 3}, "state_dict": mmaction_state(reference)}, tmp_path / "mm.pth")

    conversion = convert_checkpoint(tmp_path / "mm.pth", tmp_path / "mm.safetensors", head_dim=16)

    assert conversion.mmaction and conversion.head_order_from == "k400"
    stored = load_weights(tmp_path / "mm.safetensors")
    assert stored.config is not None and stored.config.norm_eps == 1e-5
    converted = resolve_model(tmp_path / "mm.safetensors", device="cpu").model
    direct = resolve_model(tmp_path / "mm.pth", head_dim=16, device="cpu").model  # --weights reads it as well
    with torch.no_grad():
        expected = reference(clip())
        torch.testing.assert_close(converted(clip()), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(direct(clip()), expected, rtol=0, atol=1e-6)
    assert all(module.eps == 1e-5 for name, module in converted.named_modules() if name.endswith(("norm1", "norm2")))


def test_renaming_the_keys_alone_would_load_and_be_wrong() -> None:
    torch.manual_seed(0)
    reference = create_model(TINY_CONFIG.replace(norm_eps=1e-5)).eval()
    state = mmaction_state(reference)
    renamed = {
        key.removeprefix("backbone.").replace("cls_head.fc_cls.", "head."): value for key, value in state.items()
    }
    wrong = create_model(TINY_CONFIG.replace(norm_eps=1e-5)).eval()
    wrong.load_state_dict(renamed)
    right = create_model(TINY_CONFIG.replace(norm_eps=1e-5)).eval()
    right.load_state_dict(from_mmaction(state, "test").state_dict)
    with torch.no_grad():
        expected = reference(clip())
        assert not torch.allclose(wrong(clip()), expected, rtol=0, atol=1e-3)
        torch.testing.assert_close(right(clip()), expected, rtol=0, atol=1e-6)


def test_a_head_of_another_size_keeps_its_rows_and_other_keys_are_named(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(TINY_CONFIG.replace(num_classes=7, norm_eps=1e-5)).eval()
    state = {"backbone." + key: value for key, value in model.state_dict().items() if not key.startswith("head.")}
    state["cls_head.fc_cls.weight"], state["cls_head.fc_cls.bias"] = model.head.weight, model.head.bias
    mapped = from_mmaction(state, "test")
    assert mapped.label_set is None
    torch.testing.assert_close(mapped.state_dict["head.weight"], model.head.weight, rtol=0, atol=0)

    state["cls_head.extra.weight"] = torch.zeros(3)
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"cls_head\.extra\.weight"):
        resolve_model(tmp_path / "extra.pth", head_dim=16)


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(
        st.sampled_from(["backbone.a", "backbone.b", "a", "b", "cls_head.fc_cls.weight", "cls_head.fc_cls.bias", "x"]),
        unique=True,
    ),
    rows=st.integers(1, 500),
)
def test_any_key_set_maps_or_fails_with_one_checkpoint_error(keys: list[str], rows: int) -> None:
    state = {key: torch.zeros(rows, 2) if key.endswith("weight") else torch.zeros(rows) for key in keys}
    if not is_mmaction(state):
        assert not any(key.startswith("backbone.") for key in keys) or "cls_head.fc_cls.weight" not in keys
        return
    try:
        mapped = from_mmaction(state, "generated")
    except CheckpointError as error:
        assert "\n" not in str(error)
        return
    assert set(mapped.state_dict) == {
        key.removeprefix("backbone.").replace("cls_head.fc_cls.", "head.") for key in keys
    }
    assert (mapped.label_set == "k400") == (rows == 400)
