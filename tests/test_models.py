"""The exact models: official keys and logits, sizes, shapes, options, init, drop path, checkpointing."""

from __future__ import annotations

import math

import pytest
import torch
from parity import FIXTURES, SMALL, SMALL_LIGHT, fixture_input, fixture_model, official_keys, official_logits
from torch import nn

from uniformer_cli.errors import UniformerError
from uniformer_cli.models import FAMILIES, UniFormer, UniFormerLight, create_model, exact_attention
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.models.layers import Attention, CBlock, DropPath, SABlock
from uniformer_cli.models.light import EvoBlock
from uniformer_cli.models.uniformer import SplitSABlock

TOLERANCE = 1e-4  # MODEL.md 10: float32 CPU against the official logits


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_state_dict_keys_shapes_and_order_are_official(name: str) -> None:
    state = create_model(FIXTURES[name]).state_dict()
    ours = [(key, list(value.shape), str(value.dtype).removeprefix("torch.")) for key, value in state.items()]
    assert ours == official_keys(name)


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("exact", [False, True], ids=["sdpa", "exact"])
def test_official_weights_reproduce_official_logits(name: str, exact: bool) -> None:
    model = fixture_model(name)
    exact_attention(model, enabled=exact)
    with torch.no_grad():
        logits = model(fixture_input())
    assert logits.shape == (2, 10)
    assert (logits - official_logits(name)).abs().max().item() < TOLERANCE


@pytest.mark.parametrize(
    ("family", "layer_scale", "params", "keys"),
    [
        ("s", None, 21_400_400, 331),
        ("b", None, 49_813_200, 687),
        ("xxs", None, 9_833_896, 334),
        ("xxs", 0.1, 9_840_616, 368),
        ("xs", None, 16_099_552, 384),
    ],
)
def test_full_size_parameter_and_key_counts(family: str, layer_scale: float | None, params: int, keys: int) -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = create_model(FAMILIES[family].replace(num_classes=400, layer_scale=layer_scale))
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys


def test_create_model_picks_the_class_and_keeps_the_config() -> None:
    assert type(create_model(SMALL)) is UniFormer
    light = create_model(SMALL_LIGHT)
    assert type(light) is UniFormerLight
    assert light.config is SMALL_LIGHT


def record_shapes(model: nn.Module, names: list[str]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name in names:
        module = model.get_submodule(name)
        module.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
    return shapes


def test_s16_at_224_feature_shapes() -> None:
    """MODEL.md 2.6 (the one full-size S16 at 224 run of the suite)."""
    model = create_model(FAMILIES["s"]).eval()
    shapes = record_shapes(model, [f"patch_embed{i}" for i in (1, 2, 3, 4)] + ["blocks3.0.attn", "blocks4.0.attn"])
    with torch.inference_mode():
        logits = model(torch.randn(1, 3, 16, 224, 224))
    assert shapes == {
        "patch_embed1": (1, 64, 8, 56, 56),
        "patch_embed2": (1, 128, 8, 28, 28),
        "patch_embed3": (1, 320, 8, 14, 14),
        "patch_embed4": (1, 512, 8, 7, 7),
        "blocks3.0.attn": (1, 1568, 320),
        "blocks4.0.attn": (1, 392, 512),
    }
    assert [model.get_submodule(f"blocks{i}.0.attn").num_heads for i in (3, 4)] == [5, 8]
    assert logits.shape == (1, 400)


def test_xxs16_at_160_shapes_and_kept_tokens() -> None:
    """MODEL.md 3.4: 800 tokens in stage 3 (400 kept), 200 in stage 4 (100 kept), cls 224 -> 448."""
    model = create_model(FAMILIES["xxs"]).eval()
    shapes = record_shapes(
        model,
        ["patch_embed1", "patch_embed2", "patch_embed3", "patch_embed4", "cls_upsample"]
        + [f"blocks3.{i}.attn.qkv" for i in range(8)]
        + ["blocks4.0.attn.qkv", "blocks4.1.attn.qkv"],
    )
    with torch.inference_mode():
        logits = model(torch.randn(1, 3, 16, 160, 160))
    assert shapes["patch_embed1"] == (1, 56, 8, 40, 40)
    assert shapes["patch_embed2"] == (1, 112, 8, 20, 20)
    assert shapes["patch_embed3"] == (1, 224, 8, 10, 10)
    assert shapes["patch_embed4"] == (1, 448, 8, 5, 5)
    assert shapes["cls_upsample"] == (1, 1, 448)
    # Sequence lengths: cls + all 800 tokens, then cls + 400 kept + the representative token.
    assert shapes["blocks3.0.attn.qkv"] == (1, 801, 672)
    assert {shapes[f"blocks3.{i}.attn.qkv"] for i in range(1, 8)} == {(1, 402, 672)}
    assert shapes["blocks4.0.attn.qkv"] == shapes["blocks4.1.attn.qkv"] == (1, 102, 1344)
    assert [model.get_submodule(f"blocks{i}.0.attn").num_heads for i in (3, 4)] == [8, 16]
    assert logits.shape == (1, 400)


def test_odd_grids_follow_the_official_size_rules() -> None:
    """T -> floor((T-1)/2)+1; patch embeddings floor; the light stem ceils twice; scores pool with floor."""
    tiny_light = SMALL_LIGHT.replace(depth=(1, 1, 2, 1), keep_ratio3=(1.0, 0.5), keep_ratio4=(0.5,))
    for config, size, grid in [(SMALL, 70, (4, 2, 2)), (tiny_light, 70, (4, 2, 2))]:
        model = create_model(config).eval()
        shapes = record_shapes(model, ["patch_embed4"])
        with torch.no_grad():
            assert model(torch.randn(1, 3, 7, size, size)).shape == (1, 10)
        assert shapes["patch_embed4"][2:] == grid


def test_std_and_split_options_change_kernels_and_add_temporal_attention() -> None:
    config = SMALL.replace(std=True, split=True)
    model = create_model(config)
    state = model.state_dict()
    assert state["patch_embed2.proj.weight"].shape == (32, 16, 3, 2, 2)
    assert state["patch_embed1.proj.weight"].shape == (16, 3, 3, 4, 4)
    assert len(state) == len(create_model(SMALL).state_dict()) + 6 * 3  # 3 split blocks, 6 more keys each
    block_keys = [key.removeprefix("blocks3.0.") for key in state if key.startswith("blocks3.0.")]
    assert block_keys[:8] == [
        "pos_embed.weight",
        "pos_embed.bias",
        "t_norm.weight",
        "t_norm.bias",
        "t_attn.qkv.weight",
        "t_attn.qkv.bias",
        "t_attn.proj.weight",
        "t_attn.proj.bias",
    ]
    assert len(block_keys) == 20
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 8, 64, 64)).shape == (1, 10)


def test_split_block_at_init_is_per_frame_spatial_attention() -> None:
    """The temporal branch starts as a zero update, so the block attends within each frame only."""
    torch.manual_seed(0)
    split = SplitSABlock(32, 2, 4.0, True, 0.0).eval()
    split.reset_temporal_attention()
    spatial = SABlock(32, 2, 4.0).eval()
    spatial.load_state_dict({k: v for k, v in split.state_dict().items() if not k.startswith("t_")})
    x = torch.randn(2, 32, 3, 4, 5)
    with torch.no_grad():
        grid = x + split.pos_embed(x)
        nn.init.zeros_(spatial.pos_embed.weight)
        nn.init.zeros_(spatial.pos_embed.bias)
        per_frame = torch.stack([spatial(grid[:, :, t : t + 1])[:, :, 0] for t in range(3)], dim=2)
        assert torch.allclose(split(x), per_frame, atol=1e-5)
        # Once the temporal attention has weights, other frames matter (an all-ones `proj` would add the
        # same value to every channel, which `norm1` removes: randomise both).
        nn.init.normal_(split.t_attn.qkv.weight)
        nn.init.normal_(split.t_attn.proj.weight)
        assert not torch.allclose(split(x), per_frame, atol=1e-3)


def test_initialisation_follows_model_md_section_5() -> None:
    torch.manual_seed(0)
    model = create_model(FAMILIES["s"])
    qkv = model.blocks3[0].attn.qkv
    assert qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert qkv.bias.abs().max().item() == 0
    assert model.head.bias.abs().max().item() == 0
    norm = model.blocks3[0].norm1
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and norm.bias.abs().max().item() == 0
    conv = model.blocks1[0].mlp.fc1
    bound = 1 / math.sqrt(conv.weight[0].numel())
    assert conv.weight.abs().max().item() <= bound and conv.weight.abs().max().item() > 0.9 * bound
    batch_norm = model.blocks1[0].norm1
    assert torch.equal(batch_norm.running_var, torch.ones(64)) and batch_norm.running_mean.abs().max().item() == 0

    light = create_model(FAMILIES["xxs"].replace(layer_scale=0.1))
    assert light.cls_token.abs().max().item() == 0
    gammas = [p for name, p in light.named_parameters() if "gamma" in name]
    assert len(gammas) == 2 * sum(light.config.depth)
    assert all(torch.all(g == 0.1) for g in gammas)

    split = create_model(SMALL.replace(split=True)).blocks3[0].t_attn
    assert split.qkv.weight.abs().max().item() == 0 and split.qkv.bias.abs().max().item() == 0
    assert torch.all(split.proj.weight == 1) and split.proj.bias.abs().max().item() == 0


def test_drop_path_rates_are_linearly_spaced_over_all_blocks() -> None:
    with torch.device("meta"):
        model = create_model(FAMILIES["s"].replace(drop_path_rate=0.3))
        light = create_model(FAMILIES["xs"].replace(drop_path_rate=0.1))
    rates = [block.drop_path.rate for stage in model.stages() for block in stage]
    expected = [0.3 * i / (sum(model.config.depth) - 1) for i in range(sum(model.config.depth))]
    assert rates == pytest.approx(expected)
    assert [b.drop_path.rate for s in light.stages() for b in s][-1] == pytest.approx(0.1)


def test_drop_path_drops_whole_samples_and_rescales_the_rest() -> None:
    torch.manual_seed(0)
    drop = DropPath(0.25)
    x = torch.ones(4000, 3, 2)
    out = drop(x)
    per_sample = out.flatten(1)
    kept = per_sample[per_sample != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.75))
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)
    assert (per_sample[:, 0] == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert torch.equal(drop.eval()(x), x)


def gradients(model: nn.Module, x: torch.Tensor, seed: int, light_train: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model.zero_grad()
    if light_train:
        logits, token_logits = model.forward_train(x)
        (logits.square().sum() + token_logits.square().sum()).backward()
    else:
        model(x).square().sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("config", [SMALL, SMALL_LIGHT.replace(layer_scale=0.5)], ids=["uniformer", "light"])
def test_gradient_checkpointing_gives_the_same_gradients(config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = create_model(config.replace(drop_path_rate=0.2)).train()
    x = torch.randn(2, 3, 4, 32, 32)
    light = config.arch == "light"
    plain = gradients(model, x, seed=1, light_train=light)

    calls = []
    block, block_forward = model.blocks2[0], model.blocks2[0].forward
    block.forward = lambda *inputs: calls.append(1) or block_forward(*inputs)
    model.set_grad_checkpointing(True)
    checkpointed = gradients(model, x, seed=1, light_train=light)
    assert len(calls) == 2  # the forward ran again during backward
    assert plain.keys() == checkpointed.keys() and len(plain) > 50
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-6, rtol=1e-5), name

    model.set_grad_checkpointing(True, blocks=(0, 0, 1, 0))
    assert [b.checkpointed for s in model.stages() for b in s] == [False, False, True] + [False] * (
        sum(config.depth) - 3
    )
    model.set_grad_checkpointing(False)
    assert not any(b.checkpointed for s in model.stages() for b in s)


def test_light_forward_train_adds_the_class_token_head() -> None:
    model = fixture_model("small_light_ls")
    x = fixture_input()
    with torch.no_grad():
        logits, token_logits = model.forward_train(x)
        cls, _ = model.forward_tokens(x)
        assert torch.allclose(logits, model(x))
        assert torch.allclose(token_logits, model.head_cls(model.norm_cls(cls[:, 0])))
        assert not torch.allclose(token_logits, logits, atol=1e-2)
        model.train()
        assert isinstance(model(x), torch.Tensor)


def test_light_token_positions_survive_bfloat16_beyond_256_tokens() -> None:
    """Indices stay integral: with silent branches, every token must come back to its own position."""
    torch.manual_seed(0)
    block = EvoBlock(16, 2, 3.0, True, 0.0, None, keep_ratio=0.5).eval()
    for module in (block.pos_embed, block.attn.proj, block.mlp.fc2):
        nn.init.zeros_(module.weight)
        nn.init.zeros_(module.bias)
    block = block.to(torch.bfloat16)
    x = torch.randn(1, 16, 2, 16, 16, dtype=torch.bfloat16)  # 512 tokens
    scores = torch.rand(1, 512)
    with torch.no_grad():
        _, out, new_scores = block(torch.zeros(1, 1, 16, dtype=torch.bfloat16), x, scores)
    assert torch.equal(out, x)
    dropped = scores < scores.median()
    assert torch.equal(new_scores[dropped], scores[dropped])  # only the kept tokens' scores change
    assert not torch.equal(new_scores, scores)


def test_exact_attention_switches_every_attention_and_restores_on_exit() -> None:
    model = create_model(SMALL.replace(split=True))
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attentions) == 6 and not any(a.exact for a in attentions)
    with exact_attention(model):
        assert all(a.exact for a in attentions)
    assert not any(a.exact for a in attentions)
    exact_attention(model)
    assert all(a.exact for a in attentions)
    exact_attention(model, enabled=False)
    assert not any(a.exact for a in attentions)


def test_exact_attention_computes_the_explicit_matmuls() -> None:
    """The FLOP counter relies on the exact path: two matmuls per attention, no fused kernel."""
    model = fixture_model("small")
    with exact_attention(model), torch.profiler.profile() as prof, torch.no_grad():
        model(fixture_input())
    names = {event.key for event in prof.key_averages()}
    assert not any("scaled_dot_product" in name for name in names)
    with torch.profiler.profile() as prof, torch.no_grad():
        model(fixture_input())
    assert any("scaled_dot_product" in event.key for event in prof.key_averages())


def test_light_config_needs_a_full_first_stage3_block() -> None:
    with pytest.raises(UniformerError, match="keep ratio 1"):
        SMALL_LIGHT.replace(keep_ratio3=(0.5, 0.5, 0.5))


def test_conv_blocks_use_batch_norm_and_attention_blocks_layer_norm_eps() -> None:
    model = create_model(SMALL_LIGHT)
    block = next(m for m in model.modules() if isinstance(m, CBlock))
    assert isinstance(block.norm1, nn.BatchNorm3d) and block.norm1.eps == 1e-5 and block.norm1.momentum == 0.1
    evo = model.blocks3[0]
    assert evo.norm1.eps == evo.norm2.eps == 1e-6
    assert model.patch_embed2.norm.eps == model.norm_cls.eps == 1e-5
    assert evo.mlp.act.approximate == "none"


def test_feature_maps_are_channels_last_on_cpu_unless_the_official_layout_is_asked_for() -> None:
    model = fixture_model("small")
    layouts: list[bool] = []
    model.blocks1[0].register_forward_pre_hook(
        lambda _m, inputs: layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last_3d))
    )
    x = fixture_input()
    with torch.no_grad():
        default = model(x)
        model.channels_last = False
        official_layout = model(x)
    assert layouts == [True, False]
    assert (default - official_layout).abs().max().item() < 1e-5
