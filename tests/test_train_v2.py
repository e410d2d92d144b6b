"""`uniformer train` for UniFormerV2 (issue 24): the backbone starts from CLIP's ViT (the Hub's OpenAI
layout, the official extract, timm's), the recipes are the official experiments from CLIP (AdamW, no
mixup, no erasing, no smoothing, the frozen variant), gradient checkpointing, and a real run on the local
Hub whose exported model `uniformer predict` uses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from hub_server import LocalHub
from motion_data import motion_dataset

from uniformer_cli.engine.checkpointing import load_checkpoint
from uniformer_cli.engine.train import build_model, parameter_groups, train
from uniformer_cli.engine.train_config import Runtime, plan_training
from uniformer_cli.engine.train_options import TrainOptions
from uniformer_cli.errors import CheckpointError, UniformerError
from uniformer_cli.models import create_model
from uniformer_cli.models.config_v2 import V2_FAMILIES, V2Config
from uniformer_cli.models.uniformerv2 import UniFormerV2
from uniformer_cli.weights import save_weights
from uniformer_cli.weights.clip import clip_backbone_state, clip_names, load_clip_backbone
from uniformer_cli.zoo.v2 import CLIP_WEIGHTS, RECIPES, V2_ZOO

# A CLIP ViT small enough for two CPU cores: 32 px frames of 8x8 patches, two blocks of width 32.
TINY_CLIP = V2Config(patch_size=8, resolution=32, width=32, layers=2, head_dim=16, return_layers=(0, 1))
CLIP_REPO, CLIP_FILE = "test-org/vit_tiny_clip.openai", "pytorch_model.bin"


def openai_clip(config: V2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """A whole CLIP model in OpenAI's layout: the visual encoder (`visual.`, 2-D patch embedding, `proj`
    and `ln_post`) beside a text tower whose keys look like the visual ones without the prefix."""
    generator = torch.Generator().manual_seed(seed)
    width, patch = config.width, config.patch_size
    state = {
        "visual.conv1.weight": torch.randn(width, 3, patch, patch, generator=generator),
        "visual.class_embedding": torch.randn(width, generator=generator),
        "visual.positional_embedding": torch.randn(config.grid**2 + 1, width, generator=generator),
        "visual.ln_pre.weight": torch.randn(width, generator=generator),
        "visual.ln_pre.bias": torch.randn(width, generator=generator),
        "visual.ln_post.weight": torch.randn(width, generator=generator),
        "visual.ln_post.bias": torch.randn(width, generator=generator),
        "visual.proj": torch.randn(width, 16, generator=generator),
        "token_embedding.weight": torch.randn(50, 16, generator=generator),
        "transformer.resblocks.0.attn.in_proj_weight": torch.randn(48, 16, generator=generator),  # the text tower
    }
    shapes = {
        "attn.in_proj_weight": (3 * width, width),
        "attn.in_proj_bias": (3 * width,),
        "attn.out_proj.weight": (width, width),
        "attn.out_proj.bias": (width,),
        "ln_1.weight": (width,),
        "ln_1.bias": (width,),
        "mlp.c_fc.weight": (4 * width, width),
        "mlp.c_fc.bias": (4 * width,),
        "mlp.c_proj.weight": (width, 4 * width),
        "mlp.c_proj.bias": (width,),
        "ln_2.weight": (width,),
        "ln_2.bias": (width,),
    }
    for block in range(config.layers):
        for name, shape in shapes.items():
            state[f"visual.transformer.resblocks.{block}.{name}"] = torch.randn(shape, generator=generator)
    return state


def timm_layout(openai: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same visual weights under timm's ViT names (timm's own conversion of OpenAI's files)."""
    swaps = [
        ("conv1", "patch_embed.proj"), ("positional_embedding", "pos_embed"), ("transformer.resblocks.", "blocks."),
        ("ln_pre", "norm_pre"), ("ln_post", "norm"), ("ln_", "norm"), ("in_proj_", "qkv."), ("out_proj", "proj"),
        ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"),
    ]  # fmt: skip
    state = {}
    for key, value in openai.items():
        if not key.startswith("visual."):
            continue
        key = key.removeprefix("visual.")
        for old, new in swaps:
            key = key.replace(old, new)
        if key == "proj":
            key, value = "head.weight", value.t()
        elif key == "class_embedding":
            key, value = "cls_token", value[None, None]
        elif key == "pos_embed":
            value = value[None]
        state[key] = value
    return state


@pytest.mark.parametrize("layout", ["openai", "extract", "timm"])
def test_clip_weights_start_the_backbone_and_nothing_else(layout: str) -> None:
    """Every layout gives the same backbone; the 2-D patch embedding becomes the 3-frame one with the CLIP
    kernel at the centre frame (temporal downsampling), and UniFormerV2's own parts keep their init."""
    config = TINY_CLIP.replace(local_mhra="double", temporal_downsample=True)
    clip = openai_clip(config)
    weights = {
        "openai": clip,
        "extract": {k.removeprefix("visual."): v for k, v in clip.items() if k.startswith("visual.")},
        "timm": timm_layout(clip),
    }[layout]
    torch.manual_seed(0)
    model = create_model(config)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.load_state_dict(clip_backbone_state(clip_names(weights, layout), model, layout))
    state = model.state_dict()
    assert torch.equal(state["conv1.weight"][:, :, 1], clip["visual.conv1.weight"])
    assert not state["conv1.weight"][:, :, [0, 2]].any()
    for key in ("class_embedding", "positional_embedding", "transformer.resblocks.1.attn.in_proj_weight"):
        assert torch.equal(state[key], clip[f"visual.{key}"]), key
    own = [key for key in state if "lmhra" in key or key.startswith(("transformer.dec", "transformer.proj"))]
    assert own and all(torch.equal(state[key], before[key]) for key in own)


def test_a_clip_that_does_not_fit_is_one_error(tmp_path: Path) -> None:
    model = create_model(TINY_CLIP)
    wide = openai_clip(TINY_CLIP.replace(width=48, head_dim=16))
    with pytest.raises(
        CheckpointError, match=r"is another CLIP than this UniFormerV2's: class_embedding \[48\] vs \[32\]"
    ):
        clip_backbone_state(clip_names(wide, "wide.bin"), model, "wide.bin")
    shallow = {k: v for k, v in openai_clip(TINY_CLIP).items() if ".resblocks.1." not in k}
    with pytest.raises(CheckpointError, match="does not fit 2 CLIP blocks of width 32: it has no transformer"):
        clip_backbone_state(clip_names(shallow, "shallow.bin"), model, "shallow.bin")
    torch.save({"weight": torch.ones(2)}, tmp_path / "other.bin")
    with pytest.raises(CheckpointError, match="is not a CLIP ViT checkpoint"):
        load_clip_backbone(model, tmp_path / "other.bin")


def test_the_recipes_are_the_official_experiments_from_clip() -> None:
    b16 = RECIPES["k400/k400_b16_f8x224"]
    assert (b16.init, b16.batch_size, b16.lr, b16.epochs, b16.warmup_epochs, b16.gpus) == ("clip", 256, 1e-5, 55, 5, 8)
    assert (b16.mixup, b16.erase_prob, b16.repeats, b16.label_smoothing, b16.weight_decay) == (False, 0.0, 1, 0.0, 0.05)
    frozen = V2_ZOO["v2-l14x8-336-k400-frozen"]
    assert (
        frozen.config.frozen
        and frozen.recipe is not None
        and (frozen.recipe.lr, frozen.recipe.warmup_epochs)
        == (
            8e-4,
            0,
        )
    )
    sth = V2_ZOO["v2-b16x16-sthv2"]
    assert sth.recipe is not None and not sth.recipe.flip and sth.recipe.repeats == 2
    assert (sth.drop_path, sth.config.decoder_drop_path_rate) == (0.2, 0.4)
    assert V2_ZOO["v2-b16x8-k400-k710"].recipe is None  # fine-tunes a K710 model


@pytest.fixture
def tiny_family(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, object]]:
    """A tiny backbone family with its CLIP served on the local Hub, and two zoo entries that follow the
    official B/16 Kinetics-400 and frozen L/14@336 experiments (their recipes) on it."""
    monkeypatch.setitem(V2_FAMILIES, "v2-tiny", TINY_CLIP)
    clip = openai_clip(TINY_CLIP)
    torch.save(clip, tmp_path / CLIP_FILE)
    local_hub.add_file(CLIP_REPO, CLIP_FILE, tmp_path / CLIP_FILE)
    monkeypatch.setitem(CLIP_WEIGHTS, "v2-tiny", (CLIP_REPO, CLIP_FILE))
    for name, released in (("v2-tiny-k400", "v2-b16x8-k400"), ("v2-tiny-frozen", "v2-l14x8-336-k400-frozen")):
        base = V2_ZOO[released]
        protocol = replace(base.protocol, frames=4, size=TINY_CLIP.resolution)
        monkeypatch.setitem(V2_ZOO, name, replace(base, name=name, family="v2-tiny", protocol=protocol))
    yield {"clip": clip, "data": motion_dataset(tmp_path / "motion", 2, 1)}


def test_a_run_from_clip_follows_the_recipe_and_its_model_predicts(
    tiny_family: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tiny_family["data"]
    code, out, err = run_cli(capsys, "train", "--data", data, "--recipe", "v2-tiny-k400", "--dry-run", "--json")
    assert code == 0, err
    planned = json.loads(out)
    assert (planned["init"], planned["recipe_from"], planned["model"]["arch"]) == ("clip", "v2-tiny-k400", "v2")
    # The official B/16 recipe: 1e-5 for 256 videos per step (scaled to 32, the per-GPU share), AdamW weight
    # decay 0.05, plain cross entropy without mixup or smoothing.
    assert planned["batch_size"] == 32 and planned["lr"] == pytest.approx(1e-5 * 32 / 256)
    assert (planned["weight_decay"], planned["mixup_alpha"], planned["label_smoothing"]) == (0.05, 0.0, 0.0)
    assert (planned["epochs"], planned["warmup_epochs"]) == (55, 5)

    config = plan_training(
        TrainOptions(data=data, recipe="v2-tiny-k400", batch_size=2, epochs=1, output=tmp_path / "r")
    )
    model = build_model(config)
    assert isinstance(model, UniFormerV2) and not model.checkpoints_by_default
    clip = tiny_family["clip"]
    assert torch.equal(
        model.transformer.resblocks[0].mlp.c_fc.weight, clip["visual.transformer.resblocks.0.mlp.c_fc.weight"]
    )
    decay, no_decay = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    # ZERO_WD_1D_PARAM: 1-D parameters and biases only (the temporal class token and positions decay).
    assert {"transformer.temporal_cls_token", "positional_embedding"} <= {names[id(p)] for p in decay["params"]}
    assert {"class_embedding", "transformer.balance"} <= {names[id(p)] for p in no_decay["params"]}

    result = train(config, Runtime(workers=0, device="cpu"))
    assert result.epochs == 1 and result.exported is not None
    video = next((Path(data) / "val" / "left").iterdir())
    code, out, err = run_cli(capsys, "predict", video, "-w", result.exported, "--json", "--device", "cpu")
    assert code == 0, err
    assert json.loads(out)[0]["predicted_label"] in ("down", "left", "right", "up")


def test_the_frozen_recipe_trains_the_decoder_and_head_only(tiny_family: dict[str, object], tmp_path: Path) -> None:
    config = plan_training(
        TrainOptions(data=tiny_family["data"], recipe="v2-tiny-frozen", batch_size=2, epochs=1, output=tmp_path)
    )
    assert config.model.frozen and config.lr == pytest.approx(8e-4 * 2 / 256)
    initial = build_model(config).state_dict()
    train(config, Runtime(workers=0, device="cpu", max_steps=2))
    trained = load_checkpoint(tmp_path / "last.pt")["model"]
    frozen = [key for key in initial if key.startswith(UniFormerV2.frozen_modules)]
    assert frozen and all(torch.equal(trained[key], initial[key]) for key in frozen)
    assert not torch.equal(trained["transformer.proj.2.weight"], initial["transformer.proj.2.weight"])
    assert not torch.equal(trained["transformer.dec.0.mlp.c_fc.weight"], initial["transformer.dec.0.mlp.c_fc.weight"])


def test_gradient_checkpointing_of_the_backbone(tiny_family: dict[str, object], tmp_path: Path) -> None:
    """L/14 recomputes its blocks by default; any UniFormerV2 takes 'all' or a block count, and the
    gradients are the plain ones."""
    with torch.device("meta"):
        assert create_model(V2_FAMILIES["v2-l14"]).checkpoints_by_default
        assert not create_model(V2_FAMILIES["v2-b16"]).checkpoints_by_default
    torch.manual_seed(0)
    model = create_model(TINY_CLIP.replace(local_mhra="single", decoder_dropout=0.0, head_dropout=0.0))
    clips = torch.randn(2, 3, 4, 32, 32)
    model(clips).square().sum().backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True, (1,))
    assert [block.checkpointed for block in model.blocks()] == [True, False]
    model(clips).square().sum().backward()
    for name, parameter in model.named_parameters():
        if name in plain:
            torch.testing.assert_close(parameter.grad, plain[name])
    config = plan_training(
        TrainOptions(data=tiny_family["data"], recipe="v2-tiny-k400", batch_size=2, epochs=1, output=tmp_path)
    )
    with pytest.raises(UniformerError, match="takes 1 block count"):
        train(config, Runtime(workers=0, device="cpu", grad_checkpointing=(0, 0, 1, 0), max_steps=1))


def test_v2_start_points_that_make_no_sense_are_one_error(tiny_family: dict[str, object]) -> None:
    data = tiny_family["data"]
    for options, message in [
        (TrainOptions(data=data, recipe="v2-tiny-k400", init="imagenet"), "--init imagenet does not start"),
        (TrainOptions(data=data, recipe="v2-tiny-k400", depth=(1, 1, 1, 1)), "keeps its CLIP backbone's widths"),
        (TrainOptions(data=data, recipe="v2-b16x8-k400-k710"), "fine-tunes a Kinetics-710 model"),
        (TrainOptions(data=data, arch="s", init="clip"), "--init clip does not start a UniFormer"),
    ]:
        with pytest.raises(UniformerError, match=message):
            plan_training(options)


def test_fine_tuning_a_v2_model_on_other_classes_gives_it_a_new_head(
    tiny_family: dict[str, object], tmp_path: Path
) -> None:
    torch.manual_seed(3)
    source = create_model(TINY_CLIP.replace(num_classes=10)).eval()
    protocol = V2_ZOO["v2-tiny-k400"].protocol.as_dict()
    weights = save_weights(tmp_path / "v2.safetensors", source, source.config, [f"c{i}" for i in range(10)], protocol)
    config = plan_training(TrainOptions(data=tiny_family["data"], weights=weights))
    assert (config.init, config.recipe_from, config.model.num_classes) == ("finetune", "v2-tiny-k400", 4)
    model = build_model(config)
    assert torch.equal(model.transformer.dec[1].attn.in_proj_weight, source.transformer.dec[1].attn.in_proj_weight)
    assert model.head.weight.shape == (4, TINY_CLIP.width)
