"""`uniformer flops`: counts in the paper's convention (1 multiply-accumulate = 1 FLOP) land on the paper's
figures, the stage split adds up, and the CLI's table / JSON / CSV / bench outputs hold what they promise.

Counting runs on meta tensors, so even full-size 32-frame models cost a fraction of a second here."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from torch.utils.flop_counter import FlopCounterMode

from uniformer_cli.engine.flops import STAGE_GROUPS, cost_rows, count_macs, select_workloads
from uniformer_cli.models import FAMILIES, ModelConfig, create_model, exact_attention
from uniformer_cli.models.config_v2 import V2_FAMILIES, V2Config, last_layers
from uniformer_cli.zoo import ZOO, get_entry
from uniformer_cli.zoo.v2 import PUBLISHED_TFLOPS, V2_ZOO


def run_flops(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    return run_cli(capsys, "flops", *args)


def gflops(family: str, frames: int, size: int) -> float:
    return count_macs(FAMILIES[family], frames, size).macs / 1e9


# Issue 5: the paper's per-view figures (Kinetics totals / 4 views).
@pytest.mark.parametrize(
    ("family", "frames", "paper"),
    [("s", 8, 17.5), ("s", 16, 41.8), ("s", 32, 109.5), ("b", 8, 40.3), ("b", 16, 96.7), ("b", 32, 259.0)],
)
def test_per_view_counts_match_the_paper(family: str, frames: int, paper: float) -> None:
    assert gflops(family, frames, 224) == pytest.approx(paper, rel=0.02)


@pytest.mark.parametrize(("name", "paper_total"), [("s16-sthv2-k600", 125.0), ("b16-sthv1-k400", 290.0)])
def test_something_something_totals_over_three_crops_match_the_paper(name: str, paper_total: float) -> None:
    (row,) = cost_rows(select_workloads(model=name))
    assert (row.clips, row.crops) == (1, 3)
    assert row.gflops == pytest.approx(paper_total, rel=0.02)
    assert row.gflops == pytest.approx(3 * row.gflops_per_view)


# MODEL.md 9: the same convention counted on the official light modules (two decimals).
@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("xxs4-128-k400", 1.00),
        ("xxs4-160-k400", 1.57),
        ("xxs8-128-k400", 2.02),
        ("xxs8-160-k400", 3.22),
        ("xxs16-128-k400", 4.19),
        ("xxs16-160-k400", 6.83),
        ("xxs32-160-k400", 15.26),
        ("xs32-192-k400", 33.79),
    ],
)
def test_light_model_counts_match_the_official_modules(name: str, spec: float) -> None:
    entry = get_entry(name)
    count = count_macs(entry.config, entry.protocol.frames, entry.protocol.size).macs / 1e9
    assert count == pytest.approx(spec, abs=0.006)
    # ... and stay within the documented 0-2.5% below the zoo's one-decimal figures.
    assert -0.025 <= count / entry.gflops_per_view - 1 <= 0.012


@pytest.mark.parametrize(
    ("config", "params"),
    [
        (FAMILIES["s"], 21_400_400),
        (FAMILIES["b"], 49_813_200),
        (FAMILIES["xxs"], 9_833_896),
        (FAMILIES["xxs"].replace(layer_scale=0.1), 9_840_616),
        (FAMILIES["xs"], 16_099_552),
    ],
)
def test_parameter_counts_are_those_of_the_official_models(config: ModelConfig, params: int) -> None:
    assert count_macs(config, 4, 128).params == params


def test_the_count_is_convolutions_linears_and_attention_matmuls_only() -> None:
    """An independent hand count of a tiny S-style network: every conv (depthwise too) as output positions x
    kernel volume x in x out channels (per group), every Linear as in x out per token, attention as 2 N^2 C."""
    config = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(8, 16, 32, 64), head_dim=8, num_classes=10)
    d0, d1, d2, d3 = config.embed_dim
    # Grids after each patch embedding for a 4x32x32 clip: (2, 8, 8), (2, 4, 4), (2, 2, 2), (2, 1, 1).
    p1, p2, p3, p4 = 128, 32, 8, 2

    def conv_block(c: int, positions: int) -> int:  # pos_embed 3^3 + attn 5^3 depthwise, conv1/conv2, MLP 4x
        return positions * ((27 + 125) * c + 2 * c * c + 8 * c * c)

    def attention_block(c: int, tokens: int) -> int:  # pos_embed, qkv + proj, MLP 4x, q k^T and probs x v
        return 27 * c * tokens + 4 * c * c * tokens + 8 * c * c * tokens + 2 * tokens * tokens * c

    expected = (
        p1 * d0 * 3 * 3 * 4 * 4
        + conv_block(d0, p1)
        + p2 * d1 * d0 * 4
        + conv_block(d1, p2)
        + p3 * d2 * d1 * 4
        + attention_block(d2, p3)
        + p4 * d3 * d2 * 4
        + attention_block(d3, p4)
        + d3 * 10
    )
    assert count_macs(config, 4, 32).macs == expected


def plain_count(config: ModelConfig | V2Config, frames: int, size: int) -> tuple[int, int]:
    """MACs and parameters of a whole forward pass counted op by op: no shared counts, no rescaling."""
    with torch.device("meta"):
        model = create_model(config)
    model.eval().requires_grad_(False)
    exact_attention(model)
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, frames, size, size, device="meta"))
    return counter.get_total_flops() // 2, sum(parameter.numel() for parameter in model.parameters())


# Issue 12: each architecture and clip shape is counted once (class counts rescale the classifiers, and
# repeated blocks reuse their first count); the results must be those of a full count.
@pytest.mark.parametrize(
    ("config", "frames", "size"),
    [
        (FAMILIES["b"].replace(num_classes=174, split=True), 8, 64),
        (FAMILIES["s"].replace(num_classes=1, std=True), 6, 96),
        (FAMILIES["xxs"].replace(num_classes=51, layer_scale=0.1), 4, 96),
        (FAMILIES["xs"].replace(num_classes=600), 6, 128),
    ],
)
def test_shared_counts_equal_a_full_count(config: ModelConfig, frames: int, size: int) -> None:
    count_macs(config.replace(num_classes=400), frames, size)  # the shared count, made first
    count = count_macs(config, frames, size)
    assert (count.macs, count.params) == plain_count(config, frames, size)
    assert sum(count.stage_macs.values()) == count.macs


@pytest.mark.parametrize(("family", "frames", "size"), [("s", 16, 224), ("xxs", 16, 160)])
def test_the_stage_split_adds_up_to_the_total(family: str, frames: int, size: int) -> None:
    count = count_macs(FAMILIES[family], frames, size)
    assert list(count.stage_macs) == list(STAGE_GROUPS)
    assert sum(count.stage_macs.values()) == count.macs
    assert all(macs > 0 for macs in count.stage_macs.values())
    # Global attention over every token dominates: stage 3 is the most expensive part of every UniFormer.
    assert max(count.stage_macs, key=count.stage_macs.__getitem__) == "blocks3"


def test_json_row_schema_with_stages(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_flops(capsys, "--model", "s16x8-k400", "--by-stage", "--json")
    assert code == 0
    (row,) = json.loads(out)
    entry = ZOO["s16x8-k400"]
    assert (row["model"], row["arch"]) == (entry.name, "s")
    assert (row["frames"], row["size"], row["clips"], row["crops"], row["views"]) == (16, 224, 4, 1, 4)
    assert row["params"] == 21_400_400
    assert row["gflops_per_view"] == pytest.approx(row["macs_per_view"] / 1e9)
    assert row["gflops"] == pytest.approx(4 * row["gflops_per_view"])
    assert (row["paper_gflops_per_view"], row["paper_gflops"]) == (entry.gflops_per_view, entry.gflops)
    assert row["diff_pct"] == pytest.approx((row["gflops_per_view"] / entry.gflops_per_view - 1) * 100)
    assert list(row["stages"]) == list(STAGE_GROUPS)
    assert sum(row["stages"].values()) == pytest.approx(row["gflops_per_view"])
    assert "bench" not in row


def test_frames_alone_lists_the_zoo_entries_of_that_length_and_csv_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_flops(capsys, "--frames", "16", "-o", tmp_path / "cost.csv")
    assert code == 0
    names = [entry.name for entry in [*ZOO.values(), *V2_ZOO.values()] if entry.protocol.frames == 16]
    assert all(name in out for name in names)  # the table
    rows = list(csv.DictReader(io.StringIO((tmp_path / "cost.csv").read_text())))
    assert [row["model"] for row in rows] == names
    assert {"params", "gflops_per_view", "gflops", "views", "paper_gflops", "diff_pct"} <= set(rows[0])
    for row in rows:
        assert float(row["gflops"]) == pytest.approx(float(row["gflops_per_view"]) * int(row["views"]))
        if row["model"] in ZOO:  # UniFormerV2's totals are not published
            assert float(row["gflops"]) == pytest.approx(float(row["paper_gflops"]), rel=0.025)


def test_csv_to_stdout_replaces_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    # --csv FILE is kept as the old spelling of -o FILE.csv; `-` is stdout.
    code, out, _ = run_flops(capsys, "--arch", "xxs", "--frames", "8", "--size", "128", "--by-stage", "--csv", "-")
    assert code == 0
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert (row["model"], row["arch"], row["frames"], row["size"], row["views"]) == ("xxs", "xxs", "8", "128", "1")
    stage_columns = [f"stages.{group}" for group in STAGE_GROUPS]
    assert sum(float(row[column]) for column in stage_columns) == pytest.approx(float(row["gflops_per_view"]))
    # The architecture at a released clip shape is shown beside that release's figure.
    assert float(row["paper_gflops_per_view"]) == get_entry("xxs8-128-k400").gflops_per_view


def test_a_length_nobody_released_costs_every_architecture_at_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_flops(capsys, "--frames", "12", "--json")
    assert code == 0
    rows = json.loads(out)
    released = [*ZOO.values(), *V2_ZOO.values()]
    assert {(row["arch"], row["size"]) for row in rows} == {(e.family, e.protocol.size) for e in released}
    assert all(row["frames"] == 12 and row["paper_gflops_per_view"] is None for row in rows)
    by_family = {row["arch"]: row["gflops_per_view"] for row in rows}
    assert gflops("s", 8, 224) < by_family["s"] < gflops("s", 16, 224)


def test_a_zoo_model_recomputed_at_another_shape_drops_the_paper_figure(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_flops(capsys, "--model", "b16x4-k400", "--frames", "8", "--clips", "2", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["frames"], row["views"], row["paper_gflops_per_view"], row["diff_pct"]) == (8, 2, None, None)
    assert row["macs_per_view"] == count_macs(FAMILIES["b"], 8, 224).macs


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--model", "s16x8-k400", "--arch", "s"], "either --model or --arch"),
        (["--arch", "s", "--json", "--csv", "-"], "both write to stdout"),
        (["--arch", "s", "--size", "16"], "cannot run this architecture on 16-frame 16x16 clips"),
    ],
)
def test_bad_requests_fail_with_one_line(
    capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    code, _, err = run_flops(capsys, *arguments)
    assert code == 1
    assert message in err
    assert "Traceback" not in err


def test_help_says_what_is_and_is_not_counted(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_flops(capsys, "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "depthwise included" in text
    assert "Not counted: normalisation" in text


def test_bench_measures_the_chosen_batch(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_flops(
        capfd, "--arch", "xxs", "--frames", "4", "--size", "64", "--bench", "--device", "cpu", "--batch-size", "2",
        "--warmup", "1", "--runs", "2", "--json",
    )  # fmt: skip
    assert code == 0
    (row,) = json.loads(out)
    bench = row["bench"]
    assert (bench["device"], bench["precision"], bench["batch_size"], bench["runs"]) == ("cpu", "fp32", 2, 2)
    assert bench["latency_ms"] > 0
    assert bench["clips_per_s"] == pytest.approx(2 / (bench["latency_ms"] / 1e3))
    # The weights alone are 4 bytes per parameter, and a forward pass allocates activations on top.
    assert bench["peak_memory_mb"] > row["params"] * 4 / 2**20
    assert "profiler" not in err  # the CPU profiler's native log lines (captured here at the descriptor level)


# UniFormerV2 (issue 24): the published per-view figures are MMAction2's, in TFLOPs to one decimal
# (zoo.v2.PUBLISHED_TFLOPS); every count rounds to its figure.
@pytest.mark.parametrize(("family", "frames", "size"), sorted(PUBLISHED_TFLOPS))
def test_v2_counts_round_to_the_published_figures(family: str, frames: int, size: int) -> None:
    count = count_macs(V2_FAMILIES[family], frames, size)
    assert round(count.macs / 1e12, 1) == PUBLISHED_TFLOPS[(family, frames, size)]
    assert round(count.params / 1e6) == (115 if family == "v2-b16" else 354)  # MMAction2's "params" column


def test_v2_zoo_rows_show_the_published_figure_and_its_rounding(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_flops(capsys, "--model", "v2-l14x16-k400-k710", "--by-stage", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["paper_gflops_per_view"], row["paper_gflops"], row["diff_pct"]) == (1300.0, None, 0.0)
    assert list(row["stages"]) == ["conv1", "transformer.resblocks", "transformer.dpe", "transformer.dec", "head"]
    assert sum(row["stages"].values()) == pytest.approx(row["gflops_per_view"])
    code, out, _ = run_flops(capsys, "--model", "v2-l14x16-k400-k710", "--by-stage")
    assert code == 0 and "1.3T" in out and "rounds" in out and "resblocks" in out
    code, out, _ = run_flops(capsys, "--arch", "v2-b16", "--json")
    (row,) = json.loads(out)
    assert (row["frames"], row["size"], row["paper_gflops_per_view"]) == (8, 224, 100.0)
    assert count_macs(V2_FAMILIES["v2-b16"], 8, 224).macs == row["macs_per_view"]


def test_v2_count_is_the_hand_count() -> None:
    """An independent count of a tiny UniFormerV2 (local MHRA before attention and MLP, decoder on both
    blocks): the patch embedding, per frame the attention projections, q k^T and probabilities x v, and the
    4x MLP, the local MHRA's pointwise convs and 3-tap temporal conv on the patch tokens; per decoder layer
    the 3x3x3 depthwise position conv, the query's and the video's projections, its attention and MLP."""
    config = V2Config(
        patch_size=8, resolution=32, width=16, layers=2, head_dim=8, return_layers=(0, 1), local_mhra="double",
        num_classes=10,
    )  # fmt: skip
    c, t, p = config.width, 4, (32 // 8) ** 2  # channels, frames, patches per frame
    n, r = 1 + p, config.mhra_width
    embed = t * p * c * 3 * 8 * 8
    mhra = t * p * (c * r + 3 * r + r * c)
    block = t * (n * c * 3 * c + 2 * n * n * c + n * c * c + n * 8 * c * c) + 2 * mhra
    decoder = t * p * c * 27 + c * c + t * n * 2 * c * c + 2 * t * n * c + c * c + 8 * c * c
    assert count_macs(config, t, 32).macs == embed + 2 * block + 2 * decoder + c * 10


@pytest.mark.parametrize(
    "config",
    [
        V2_FAMILIES["v2-b16"].replace(num_classes=174, local_mhra="double", temporal_downsample=True,
                                      return_layers=last_layers(12, 8)),
        V2_FAMILIES["v2-l14"].replace(num_classes=339, frozen=True, layers=6, return_layers=last_layers(6, 4)),
    ],
    ids=["sth-b16", "frozen-l14"],
)  # fmt: skip
def test_v2_shared_counts_equal_a_full_count(config: V2Config) -> None:
    count_macs(config.replace(num_classes=400), 8, config.resolution)
    count = count_macs(config, 8, config.resolution)
    assert (count.macs, count.params) == plain_count(config, 8, config.resolution)
    assert sum(count.stage_macs.values()) == count.macs
