"""`uniformer convert` and 2-D -> 3-D inflation: official and PySlowFast layouts reproduce the official
logits, full-size S/B shapes are inferred, image checkpoints inflate by the official rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_runner import run_cli
from parity import FIXTURES, PARITY, SMALL, fixture_input, official_logits
from torch import nn

from uniformer_cli.errors import CheckpointError
from uniformer_cli.models import create_model
from uniformer_cli.models.config import FAMILIES
from uniformer_cli.weights import inflate_image_state_dict, load_model, load_weights, read_checkpoint
from uniformer_cli.zoo import get_entry, load_labels

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("source", "fixture", "options"),
    [
        ("small_official.pth", "small", ["--head-dim", "16"]),
        ("small_pyslowfast.pth", "small", []),  # HEAD_DIM from the training checkpoint's cfg
        ("small_light_official.pth", "small_light", ["--head-dim", "16"]),
        ("small_light_ls_official.pth", "small_light_ls", ["--head-dim", "16"]),
        ("small_light_ls_pyslowfast.pth", "small_light_ls", []),
    ],
)
def test_converted_fixtures_reproduce_the_official_logits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, fixture: str, options: list[str]
) -> None:
    destination = tmp_path / "converted.safetensors"
    code, out, err = run_cli(capsys, "convert", PARITY / source, destination, *options, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["layout"].startswith("PySlowFast" if "pyslowfast" in source else "state_dict")
    assert summary["head_dim"] == 16
    model = load_model(destination)
    assert model.config.head_dim == 16
    with torch.no_grad():
        logits = model(fixture_input())
    torch.testing.assert_close(logits, official_logits(fixture), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("family", "zoo_name", "parameters", "keys"),
    [("s", None, 21_400_400, 331), ("b", "b32x4-k400", 49_813_200, 687)],
)
def test_full_size_official_layouts_convert_with_the_right_config(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    family: str,
    zoo_name: str | None,
    parameters: int,
    keys: int,
) -> None:
    config = FAMILIES[family].replace(num_classes=400)
    with torch.device("meta"):  # shapes only: random values are much cheaper than the model's init
        shapes = create_model(config).state_dict()
    state_dict = {
        key: torch.randn(value.shape) if value.is_floating_point() else torch.randint(9, value.shape)
        for key, value in shapes.items()
    }
    torch.save(state_dict, tmp_path / "official.pth")
    destination = tmp_path / "converted.safetensors"
    model_option = ["--model", zoo_name] if zoo_name else []
    code, out, err = run_cli(capsys, "convert", tmp_path / "official.pth", destination, *model_option, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["params"], summary["tensors"]) == (parameters, keys)
    assert (summary["arch"], summary["backbone"]) == (family, config.arch)
    stored = load_weights(destination)
    assert stored.config == config
    for key, tensor in state_dict.items():
        assert torch.equal(stored.state_dict[key], tensor), key
    if zoo_name:
        entry = get_entry(zoo_name)
        assert stored.labels == load_labels("k400")
        assert stored.protocol == entry.protocol.as_dict()
        assert summary["model"] == zoo_name
        assert summary["protocol"] == entry.protocol.as_dict()
    else:
        assert summary["model"] is None and summary["protocol"] is None
        assert stored.labels is None and stored.protocol is None


def test_the_table_output_names_what_was_inferred(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "convert", PARITY / "small_pyslowfast.pth", tmp_path / "m.safetensors")
    assert code == 0
    for expected in ("PySlowFast", "module.", "1-1-2-1", "16-32-64-128", "373,706"):
        assert expected in out


def test_without_model_the_note_says_predict_needs_protocol_flags_and_they_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "m.safetensors"
    code, _, err = run_cli(capsys, "convert", PARITY / "small_pyslowfast.pth", destination)
    assert code == 0, err
    assert "records no test protocol" in err and "--frames 16 --stride 4" in err and "--model NAME" in err
    code, _, err = run_cli(capsys, "predict", ROOT / "examples" / "yoga.mp4", "-w", destination, "-d", "cpu")
    assert code == 1 and "--frames" in err  # as the note said
    flags = ["--frames", "4", "--stride", "4", "--size", "64"]  # the note's flags (smaller, for speed)
    code, out, err = run_cli(capsys, "predict", ROOT / "examples" / "yoga.mp4", "-w", destination, "-d", "cpu", *flags)
    assert code == 0, err
    assert "class " in out  # no class names recorded
    code, _, err = run_cli(capsys, "-q", "convert", PARITY / "small_pyslowfast.pth", destination, "--force")
    assert code == 0 and "records no test protocol" not in err  # a note: -q hides it


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.pth", "out.safetensors"], "does not exist"),
        (["small_official.pth", "out.pth"], "must end in .safetensors"),
        (["small_official.pth", "out.safetensors", "--model", "s16x8-k400", "--head-dim", "16"], "either --model"),
        (["small_official.pth", "out.safetensors", "--model", "s16x8-k400"], "but zoo entry s16x8-k400 is"),
        (["small_official.pth", "out.safetensors"], "pass --head-dim"),
    ],
)
def test_convert_failures_are_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    source = PARITY / arguments[0]
    code, _, err = run_cli(capsys, "convert", source, tmp_path / arguments[1], *arguments[2:])
    assert code == 1
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / arguments[1]).exists()


def test_convert_keeps_an_existing_destination_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "out.safetensors"
    destination.write_bytes(b"an earlier conversion")
    source = PARITY / "small_official.pth"
    code, _, err = run_cli(capsys, "convert", source, destination, "--head-dim", "16")
    assert code == 1 and "out.safetensors already exists: pass --force" in err
    assert destination.read_bytes() == b"an earlier conversion"
    code, out, err = run_cli(capsys, "convert", source, destination, "--head-dim", "16", "--force", "-o", "-")
    assert code == 0, err
    assert json.loads(out)["destination"] == str(destination)
    assert load_model(destination).config.head_dim == 16


# --- 2-D ImageNet inflation --------------------------------------------------------------------------


def image_state_dict_like(video_state_dict: dict[str, torch.Tensor], classes: int) -> dict[str, torch.Tensor]:
    """A fake 2-D checkpoint with the video model's keys: every 3-D kernel replaced by a random 2-D one,
    and an ImageNet-sized head."""
    generator = torch.Generator().manual_seed(0)
    image = {}
    for key, value in video_state_dict.items():
        if value.ndim == 5:
            kernel = (value.shape[0], value.shape[1], value.shape[3], value.shape[4])
            value = torch.randn(kernel, generator=generator)
        image[key] = value
    image["head.weight"] = torch.randn(classes, video_state_dict["head.weight"].shape[1], generator=generator)
    image["head.bias"] = torch.randn(classes, generator=generator)
    return image


def test_inflated_kernels_give_the_2d_response_on_a_temporally_constant_input() -> None:
    video = read_checkpoint(PARITY / "small_official.pth").state_dict
    model = create_model(SMALL)
    image = image_state_dict_like(video, classes=1000)
    inflated = inflate_image_state_dict(image, model)
    generator = torch.Generator().manual_seed(1)
    convs = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv3d)]
    assert {module.kernel_size[0] for _, module in convs} == {1, 3, 5}  # every temporal size MODEL.md 8 names
    for name, conv in convs:
        kernel_2d, bias = image[f"{name}.weight"], image[f"{name}.bias"]
        frame = torch.randn(1, conv.in_channels, 12, 12, generator=generator)
        clip = frame.unsqueeze(2).expand(-1, -1, conv.kernel_size[0] + 2, -1, -1)
        spatial = {"stride": conv.stride[1:], "padding": conv.padding[1:], "groups": conv.groups}
        expected = F.conv2d(frame, kernel_2d, bias, **spatial)
        got = F.conv3d(
            clip,
            inflated[f"{name}.weight"],
            inflated[f"{name}.bias"],
            **{
                "stride": (1, *conv.stride[1:]),
                "padding": (0, *conv.padding[1:]),
                "groups": conv.groups,
            },
        )
        for t in range(got.shape[2]):
            torch.testing.assert_close(got[:, :, t], expected, rtol=1e-5, atol=1e-5, msg=name)
    # Everything else copies, except the head of another class count, which keeps the video model's.
    assert torch.equal(inflated["norm.running_var"], image["norm.running_var"])
    assert torch.equal(inflated["blocks3.0.attn.qkv.weight"], image["blocks3.0.attn.qkv.weight"])
    assert torch.equal(inflated["head.weight"], model.state_dict()["head.weight"])
    model.load_state_dict(inflated, strict=True)


def test_inflation_keeps_video_only_keys_and_refuses_foreign_ones() -> None:
    video = read_checkpoint(PARITY / "small_light_ls_official.pth").state_dict
    model = create_model(FIXTURES["small_light_ls"])
    image = {key: value for key, value in image_state_dict_like(video, 10).items() if ".gamma_" not in key}
    inflated = inflate_image_state_dict(image, model)
    for key, value in model.state_dict().items():
        if ".gamma_" in key:
            assert torch.equal(inflated[key], value), key
    assert torch.equal(inflated["head.weight"], image["head.weight"])  # same class count: copied
    with pytest.raises(CheckpointError, match=r"1 keys the video model does not have \(aux_head.weight\)"):
        inflate_image_state_dict({**image, "aux_head.weight": torch.zeros(1)}, model)
    with pytest.raises(CheckpointError, match=r"keys missing from the image weights \(cls_token\)"):
        inflate_image_state_dict({key: value for key, value in image.items() if key != "cls_token"}, model)
    with pytest.raises(CheckpointError, match="cannot be inflated"):
        inflate_image_state_dict({**image, "cls_upsample.weight": torch.zeros(3, 3)}, model)


def test_an_image_checkpoint_converts_to_an_inflated_video_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = read_checkpoint(PARITY / "small_official.pth").state_dict
    image = image_state_dict_like(video, classes=1000)
    torch.save({"model": image, "epoch": 300}, tmp_path / "in1k.pth")
    destination = tmp_path / "inflated.safetensors"
    code, out, err = run_cli(capsys, "convert", tmp_path / "in1k.pth", destination, "--head-dim", "16", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert "inflated" in summary["layout"] and summary["num_classes"] == 1000
    stored = load_weights(destination)
    kernel = stored.state_dict["blocks1.0.attn.weight"]
    assert kernel.shape[2] == 5
    torch.testing.assert_close(kernel.sum(dim=2), image["blocks1.0.attn.weight"])
    code, _, err = run_cli(capsys, "convert", tmp_path / "in1k.pth", destination, "--model", "s16x8-k400", "--force")
    assert code == 1 and "2-D ImageNet weights" in err
