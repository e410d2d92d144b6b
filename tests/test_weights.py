"""Checkpoint reading, architecture inference, strict loading and the safetensors store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hub_server import LocalHub, serve_tiny_zoo_model
from parity import FIXTURES, PARITY, SMALL, SMALL_LIGHT, fixture_input, official_keys, official_logits
from safetensors import SafetensorError
from safetensors.torch import save_file

from uniformer_cli.errors import CheckpointError, UniformerError, WriteError
from uniformer_cli.models import create_model
from uniformer_cli.models.config import FAMILIES, ModelConfig
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import (
    convert_checkpoint,
    infer_config,
    load_model,
    load_state_dict_strict,
    load_weights,
    read_checkpoint,
    resolve_model,
    save_weights,
    store,
)
from uniformer_cli.weights.checkpoint import cfg_head_dim, check_matches_entry, light_keep_ratios
from uniformer_cli.zoo import get_entry, load_labels


def official_key_names(fixture: str) -> list[str]:
    return [key for key, _, _ in official_keys(fixture)]


# --- reading -----------------------------------------------------------------------------------------


def test_plain_and_pyslowfast_layouts_read_to_the_same_official_state_dict() -> None:
    plain = read_checkpoint(PARITY / "small_official.pth")
    wrapped = read_checkpoint(PARITY / "small_pyslowfast.pth")
    assert (plain.layout, plain.stripped_prefix, plain.head_dim) == ("plain", False, None)
    assert (wrapped.layout, wrapped.stripped_prefix, wrapped.head_dim) == ("model_state", True, 16)
    assert list(plain.state_dict) == official_key_names("small")
    assert list(wrapped.state_dict) == official_key_names("small")
    for key, tensor in plain.state_dict.items():
        assert torch.equal(wrapped.state_dict[key], tensor), key


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_other_wrappers_are_unwrapped(tmp_path: Path, wrapper: str) -> None:
    weights = {"module.a": torch.ones(2), "module.b": torch.zeros(1)}
    torch.save({wrapper: weights, "epoch": 3}, tmp_path / "c.pth")
    raw = read_checkpoint(tmp_path / "c.pth")
    assert raw.layout == wrapper
    assert list(raw.state_dict) == ["a", "b"]


class CodePayload:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_with_a_code_payload_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"head.weight": torch.zeros(2, 2)}, "extra": CodePayload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pth: .*\(posix\.system\)"):
        read_checkpoint(path)
    assert not marker.exists()
    # The payload is live: an unsafe load does run it (here harmlessly creating the marker file).
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable PyTorch checkpoint"),
        (b"not a checkpoint at all" * 10, "not a readable PyTorch checkpoint"),
    ],
)
def test_unreadable_files_fail_with_one_clear_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as error:
        read_checkpoint(path)
    assert "\n" not in str(error.value)


def test_truncated_missing_and_non_state_dict_files(tmp_path: Path) -> None:
    whole = (PARITY / "small_official.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        load_weights(tmp_path)
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="holds a Tensor, not a state_dict"):
        read_checkpoint(tmp_path / "tensor.pth")
    torch.save({"a": torch.zeros(1), "epoch": 3}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="epoch are not tensors"):
        read_checkpoint(tmp_path / "mixed.pth")


def test_cfg_head_dim_reads_only_the_uniformer_section() -> None:
    cfg = "MVIT:\n  HEAD_DIM: 3\nUNIFORMER:\n  DEPTH: [1, 1]\n  HEAD_DIM: 28\nDATA:\n  HEAD_DIM: 5\n"
    assert cfg_head_dim(cfg) == 28
    assert cfg_head_dim("MODEL:\n  NUM_CLASSES: 10\n") is None
    assert cfg_head_dim("UNIFORMER:\n  HEAD_DIM: ~\n") is None


# --- inference ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("small", SMALL),
        ("small_light", SMALL_LIGHT),
        ("small_light_ls", FIXTURES["small_light_ls"]),
    ],
)
def test_infer_config_of_the_parity_fixtures(fixture: str, expected: ModelConfig) -> None:
    state_dict = read_checkpoint(PARITY / f"{fixture}_official.pth").state_dict
    assert infer_config(state_dict, head_dim=16) == expected


@pytest.mark.parametrize("family", ["s", "b", "xxs", "xs"])
def test_released_families_are_recognised_with_their_head_width(family: str) -> None:
    config = FAMILIES[family].replace(num_classes=174)
    with torch.device("meta"):
        state_dict = create_model(config).state_dict()
    assert infer_config(state_dict) == config


def test_split_std_and_mlp_variants_are_read_from_the_tensors() -> None:
    config = SMALL.replace(split=True, std=True, mlp_ratio=3.0, qkv_bias=False)
    with torch.device("meta"):
        state_dict = create_model(config).state_dict()
    assert infer_config(state_dict, head_dim=16) == config


def test_custom_widths_need_a_head_dim() -> None:
    state_dict = read_checkpoint(PARITY / "small_official.pth").state_dict
    with pytest.raises(CheckpointError, match="pass --head-dim"):
        infer_config(state_dict)
    assert infer_config(state_dict, family_hint="b").head_dim == FAMILIES["b"].head_dim


def test_light_keep_ratio_rule_gives_the_released_ratios() -> None:
    for family in ("xxs", "xs"):
        config = FAMILIES[family]
        assert light_keep_ratios(config.depth[2], config.depth[3]) == (config.keep_ratio3, config.keep_ratio4)


def test_non_uniformer_state_dicts_are_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not a UniFormer checkpoint: it has no patch_embed1\.proj\.weight"):
        infer_config({"fc.weight": torch.zeros(2, 2)})
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match=r"resnet\.pth is not a UniFormer checkpoint"):
        convert_checkpoint(tmp_path / "resnet.pth", tmp_path / "out.safetensors")


# --- strict loading ----------------------------------------------------------------------------------


def test_strict_loading_names_missing_unexpected_and_mis_shaped_keys() -> None:
    model = create_model(SMALL)
    state_dict = dict(read_checkpoint(PARITY / "small_official.pth").state_dict)
    del state_dict["norm.weight"]
    state_dict["extra.weight"] = torch.zeros(1)
    state_dict["head.weight"] = torch.zeros(7, 128)
    with pytest.raises(CheckpointError) as error:
        load_state_dict_strict(model, state_dict, "file.pth")
    message = str(error.value)
    assert "\n" not in message
    assert "1 missing keys (norm.weight)" in message
    assert "1 unexpected keys (extra.weight)" in message
    assert "head.weight [7, 128] vs [10, 128]" in message


def test_the_wrong_architecture_is_refused_in_one_line() -> None:
    light = read_checkpoint(PARITY / "small_light_official.pth").state_dict
    with pytest.raises(CheckpointError, match=r"does not fit UniFormer \(depth 1-1-2-1.*missing keys.*, \.\.\.\)"):
        load_state_dict_strict(create_model(SMALL), light, "light.pth")


def test_a_file_that_is_not_the_named_zoo_entry_is_refused() -> None:
    with pytest.raises(CheckpointError, match="but zoo entry b32x4-k400 is a UniFormer"):
        check_matches_entry(FAMILIES["s"], get_entry("b32x4-k400"), "s.pth")
    hmdb = get_entry("s16x4-hmdb51-k400")
    for classes in (51, 101):  # the HMDB51 head may carry either (MODEL.md 6.2)
        check_matches_entry(FAMILIES["s"].replace(num_classes=classes), hmdb, "hmdb.pth")
    with pytest.raises(CheckpointError):
        check_matches_entry(FAMILIES["s"].replace(num_classes=10), hmdb, "hmdb.pth")


# --- safetensors store -------------------------------------------------------------------------------


def test_save_and_load_round_trip_keeps_config_labels_protocol_and_tensors(tmp_path: Path) -> None:
    model = create_model(SMALL)
    labels = [f"class {i}" for i in range(10)]
    protocol = ViewProtocol(frames=8, stride=4, clips=2).as_dict()
    path = save_weights(tmp_path / "sub" / "m.safetensors", model, SMALL, labels=labels, protocol=protocol)
    stored = load_weights(path)
    assert (stored.config, stored.labels, stored.protocol) == (SMALL, labels, protocol)
    assert set(stored.state_dict) == set(model.state_dict())
    for key, tensor in model.state_dict().items():
        assert torch.equal(stored.state_dict[key], tensor), key
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]  # no temporary file left behind


def test_shared_and_non_contiguous_tensors_are_stored(tmp_path: Path) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    state = {"a": base, "tied": base, "view": base[1], "transposed": base.t(), "alone": torch.ones(2)}
    stored = load_weights(save_weights(tmp_path / "s.safetensors", state, SMALL)).state_dict
    for key, tensor in state.items():
        assert torch.equal(stored[key], tensor), key


def test_a_failed_write_leaves_the_previous_file_intact_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_weights(tmp_path / "m.safetensors", {"a": torch.ones(2)}, SMALL)
    before = path.read_bytes()

    def crash(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str]) -> None:
        Path(filename).write_bytes(b"half a file")
        raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")

    monkeypatch.setattr(store, "save_file", crash)
    with pytest.raises(WriteError, match=r"cannot write weights .*m\.safetensors: the disk is full; the previous file"):
        save_weights(path, {"a": torch.zeros(2)}, SMALL)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    with pytest.raises(WriteError, match=r"cannot write .*inside-a-file\.safetensors: a part of the path is a file"):
        save_weights(path / "inside-a-file.safetensors", {"a": torch.ones(2)}, SMALL)


def test_bad_safetensors_files_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(tmp_path / "junk.safetensors")
    save_file({"a": torch.ones(1)}, str(tmp_path / "meta.safetensors"), metadata={"uniformer_config": "{oops"})
    with pytest.raises(CheckpointError, match="unreadable uniformer metadata"):
        load_weights(tmp_path / "meta.safetensors")
    with pytest.raises(UniformerError, match="11 labels for a model with 10 outputs"):
        save_weights(tmp_path / "x.safetensors", {"a": torch.ones(1)}, SMALL, labels=["x"] * 11)


# --- load_model / resolve_model on files -------------------------------------------------------------


def test_load_model_on_an_official_pth_reproduces_the_official_logits() -> None:
    inputs, expected = fixture_input(), official_logits("small")
    model = load_model(PARITY / "small_pyslowfast.pth")  # head_dim from the file's cfg
    assert not model.training
    assert model.labels is None and model.zoo_entry is None and model.protocol is None
    with torch.no_grad():
        torch.testing.assert_close(model(inputs), expected, rtol=0, atol=1e-4)
    with pytest.raises(CheckpointError, match="--head-dim"):
        load_model(str(PARITY / "small_official.pth"))
    assert load_model(str(PARITY / "small_official.pth"), head_dim=16).config == SMALL


def test_a_safetensors_file_without_uniformer_metadata_is_inferred(tmp_path: Path) -> None:
    inputs, expected = fixture_input(), official_logits("small_light_ls")
    state_dict = read_checkpoint(PARITY / "small_light_ls_official.pth").state_dict
    save_file(state_dict, str(tmp_path / "foreign.safetensors"))
    loaded = resolve_model(tmp_path / "foreign.safetensors", head_dim=16)
    assert loaded.config == FIXTURES["small_light_ls"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(inputs), expected, rtol=0, atol=1e-4)


def test_a_local_file_named_as_a_zoo_entry_gets_its_labels_and_protocol(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, hub_repo=None, hub_file=None)
    loaded = resolve_model(served.source, zoo_name="tiny-k400")
    assert loaded.labels == load_labels("k400")
    assert loaded.protocol == served.entry.protocol
    assert loaded.model.zoo_entry == served.entry
    assert resolve_model(served.source, head_dim=16).labels is None  # never guessed from the class count
    with pytest.raises(CheckpointError, match="but zoo entry s16x8-k400 is a UniFormer"):
        resolve_model(served.source, zoo_name="s16x8-k400")
    assert local_hub.count() == 0


def test_image_checkpoints_do_not_pass_for_video_classifiers(tmp_path: Path) -> None:
    image = {
        key: value[:, :, 0] if value.ndim == 5 else value
        for key, value in read_checkpoint(PARITY / "small_official.pth").state_dict.items()
    }
    torch.save({"model": image}, tmp_path / "image.pth")
    with pytest.raises(CheckpointError, match="2-D ImageNet weights"):
        load_model(tmp_path / "image.pth", head_dim=16)


def test_loaded_parameters_own_their_memory_even_from_views_in_a_pth(tmp_path: Path) -> None:
    """Models take the file's tensors without a copy; a .pth whose tensors are views of one storage (and
    one view under two keys) still gives parameters that alias nothing, at the model's element type."""
    state_dict = create_model(SMALL).state_dict()
    names = [key for key, value in state_dict.items() if value.is_floating_point()]
    flat = torch.cat([state_dict[key].flatten() for key in names])
    views, offset = {}, 0
    for key in names:
        views[key] = flat[offset : offset + state_dict[key].numel()].view_as(state_dict[key])
        offset += state_dict[key].numel()
    first, twin = next((a, b) for a in names for b in names if a < b and views[a].shape == views[b].shape)
    views[twin] = views[first]
    views[names[0]] = views[names[0]].half()
    torch.save({**state_dict, **views}, tmp_path / "views.pth")
    model = resolve_model(tmp_path / "views.pth", head_dim=16).model
    loaded = model.state_dict()
    pointers = [tensor.untyped_storage().data_ptr() for tensor in loaded.values()]
    assert len(set(pointers)) == len(pointers)
    assert all(parameter.dtype == torch.float32 and parameter.requires_grad for parameter in model.parameters())
    for key in names:
        assert torch.equal(loaded[key], views[key].float()), key
