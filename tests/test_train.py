"""`uniformer train`: schedule, optimiser groups, batching, planning, checkpoints, resume, and a real run
that learns motion directions and whose exported model `uniformer predict` uses."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from hub_server import LocalHub, serve_tiny_zoo_model
from motion_data import DIRECTIONS, TINY, motion_dataset, motion_video, tiny_flags
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.optim.optimizer import register_optimizer_step_post_hook

from uniformer_cli.cli import train as train_command
from uniformer_cli.cli.app import app, main
from uniformer_cli.engine import checkpointing
from uniformer_cli.engine.checkpointing import load_checkpoint, save_checkpoint
from uniformer_cli.engine.train import (
    CosineSchedule,
    TrainForward,
    amp_dtype,
    build_model,
    parameter_groups,
    train,
)
from uniformer_cli.engine.train_config import SCRATCH_LR, Runtime, plan_training, resume_config
from uniformer_cli.engine.train_data import GlobalBatchSampler, TrainClips
from uniformer_cli.engine.train_options import AMP_CHOICES, AUG_CHOICES, TrainOptions
from uniformer_cli.errors import CheckpointError, DatasetError, UniformerError
from uniformer_cli.files import atomic_write
from uniformer_cli.models import create_model
from uniformer_cli.models.config import FAMILIES
from uniformer_cli.weights import save_weights
from uniformer_cli.zoo import IMAGENET_WEIGHTS, ZOO, get_entry


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `uniformer ARGS` in this process; returns stdout (fails on a non-zero exit)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    return captured.out


def read_metrics(run: Path, event: str) -> list[dict[str, object]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [record for record in records if record["event"] == event]


def tensorboard_scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar as TensorBoard shows it: the events written after a resumed run's
    `purge_step` replace those the crashed run wrote past its checkpoint."""
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model"]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread, and a second one competing for a busy core slows every
    step by orders of magnitude; subprocesses get OMP_NUM_THREADS=1 for the same reason."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def small_motion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 training and 1 validation video per class: enough for the plumbing tests."""
    return motion_dataset(tmp_path_factory.mktemp("small_motion"), 2, 1)


# ---------------------------------------------------------------------------------------------------
# Schedule, optimiser groups, batches


def test_cosine_schedule_warms_up_linearly_then_decays_to_the_floor() -> None:
    schedule = CosineSchedule(lr=1e-3, min_lr=1e-6, warmup_epochs=2, epochs=10)
    assert schedule(0) == pytest.approx(1e-6)
    assert schedule(1) == pytest.approx((1e-3 + 1e-6) / 2)
    assert schedule(2) == pytest.approx(1e-3)
    assert schedule(6) == pytest.approx((1e-3 + 1e-6) / 2)  # half-way through the cosine
    assert schedule(10) == pytest.approx(1e-6)
    values = [schedule(epoch / 10) for epoch in range(20, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_no_weight_decay_on_norms_biases_and_class_token() -> None:
    model = create_model(FAMILIES["xxs"].replace(depth=(1, 1, 2, 1), keep_ratio3=(1.0, 0.5), keep_ratio4=(0.5,)))
    decay, no_decay = parameter_groups(model, 0.05)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    no_decay_names = {names[id(parameter)] for parameter in no_decay["params"]}
    decay_names = {names[id(parameter)] for parameter in decay["params"]}
    assert len(no_decay_names) + len(decay_names) == len(names)
    assert {"cls_token", "norm.weight", "norm.bias", "head.bias", "blocks3.0.norm1.weight"} <= no_decay_names
    assert {"head.weight", "blocks3.0.attn.qkv.weight", "blocks1.0.attn.weight"} <= decay_names
    assert all(name.endswith("weight") for name in decay_names)


def test_batches_cover_distinct_videos_and_shards_agree_with_accumulation() -> None:
    single = GlobalBatchSampler(23, 2, accumulation=3, seed=7)
    assert single.steps_per_epoch == 3 and len(single) == 9
    single.set_position(epoch=1)
    single_batches = list(single)
    seen = [key for batch in single_batches for key in batch]
    assert len({index for _, index in seen}) == 18 and {epoch for epoch, _ in seen} == {1}
    # Three processes with one micro-batch each take the same chunks, rank r = accumulation step r.
    for rank in range(3):
        shard = GlobalBatchSampler(23, 2, world_size=3, rank=rank, seed=7)
        shard.set_position(epoch=1)
        assert list(shard) == single_batches[rank::3]
    # Resuming at step 2 of the epoch gives the rest of that epoch's batches.
    single.set_position(epoch=1, start_step=2)
    assert list(single) == single_batches[6:]
    single.set_position(epoch=2)
    assert list(single) != single_batches
    with pytest.raises(DatasetError, match="fewer than one global batch"):
        GlobalBatchSampler(5, 4, accumulation=2)


# ---------------------------------------------------------------------------------------------------
# Checkpoint files


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "weights": torch.ones(3)}, target)

    def crash_half_way(path: Path) -> None:
        path.write_bytes(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash_half_way)
    assert load_checkpoint(target)["step"] == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.pt"]


def test_checkpoints_load_with_weights_only_and_restore_rng(tmp_path: Path) -> None:
    torch.manual_seed(3)
    state = checkpointing.rng_state()
    save_checkpoint({"rng": state, "step": 4}, tmp_path / "c.pt")
    expected = (torch.rand(2), np.random.rand(), __import__("random").random())
    checkpointing.set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert torch.equal(torch.rand(2), expected[0])
    assert (np.random.rand(), __import__("random").random()) == expected[1:]
    (tmp_path / "not_ours.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "not_ours.pt")


# ---------------------------------------------------------------------------------------------------
# Planning


def test_plan_takes_the_recipe_and_scales_the_learning_rate(small_motion: Path) -> None:
    config = plan_training(TrainOptions(data=small_motion, arch="s"))  # from ImageNet weights
    recipe_entry = get_entry(config.recipe_from)
    assert recipe_entry.family == "s" and recipe_entry.dataset == "k400"
    recipe = recipe_entry.recipe
    assert config.batch_size == recipe.batch_size // 8
    assert config.lr == pytest.approx(recipe.lr * config.batch_size / recipe.batch_size)
    assert config.lr_rule.endswith(
        f"{recipe_entry.name}'s {recipe.lr:g} for {recipe.batch_size} videos per step, scaled linearly to "
        f"{config.global_batch}"
    )
    assert (config.epochs, config.warmup_epochs, config.weight_decay) == (
        recipe.epochs,
        recipe.warmup_epochs,
        recipe.weight_decay,
    )
    assert config.model.drop_path_rate == recipe_entry.drop_path
    assert config.classes == tuple(sorted(DIRECTIONS)) and config.model.num_classes == 4
    assert (config.protocol.frames, config.protocol.stride) == (
        recipe_entry.protocol.frames,
        recipe_entry.protocol.stride,
    )
    # 8 training videos: the plain augmentation chain without mixup.
    assert config.augment.randaug is None and not config.augment.resized_crop and config.mixup_alpha == 0
    scaled = plan_training(TrainOptions(data=small_motion, arch="s", batch_size=2, accum_steps=2))
    assert scaled.lr == pytest.approx(recipe.lr * 4 / recipe.batch_size)
    # A shorter schedule keeps the recipe's warm-up share; an explicit warm-up is taken as given.
    short = plan_training(TrainOptions(data=small_motion, arch="s", epochs=11))
    assert short.warmup_epochs == pytest.approx(recipe.warmup_epochs * 11 / recipe.epochs)
    explicit = plan_training(TrainOptions(data=small_motion, arch="s", epochs=11, warmup_epochs=2))
    assert explicit.warmup_epochs == 2
    given = plan_training(TrainOptions(data=small_motion, arch="s", lr=3e-3))
    assert (given.lr, given.lr_rule) == (3e-3, "0.003 (--lr)")


def test_scratch_runs_get_a_rate_and_schedule_that_learn(small_motion: Path) -> None:
    """From scratch (and so every custom architecture) the plan takes UniFormer's ImageNet-from-scratch
    rate, unscaled below its batch: the fine-tuning recipe scaled to 8 videos (1.25e-5) did not learn."""
    config = plan_training(TrainOptions(data=small_motion, init="scratch", arch="s", epochs=30))
    recipe = get_entry(config.recipe_from).recipe
    assert recipe.lr * config.global_batch / recipe.batch_size < 1e-4
    assert config.lr == SCRATCH_LR == 1e-3
    assert config.lr_rule == (
        "0.001: from scratch, UniFormer's ImageNet rate 0.001 for 1024 images, not scaled down to "
        f"{config.global_batch} (AdamW from scratch needs it)"
    )
    assert config.warmup_epochs == pytest.approx(30 * 5 / 300)
    assert (config.weight_decay, config.min_lr) == (recipe.weight_decay, 1e-5)
    custom = plan_training(tiny_options(small_motion, batch_size=4))
    assert custom.lr == SCRATCH_LR and "from scratch" in custom.lr_rule
    # Past the recipe's 1024 images per step the rate grows linearly, as the recipe's own rule does.
    large = plan_training(TrainOptions(data=small_motion, init="scratch", batch_size=2, accum_steps=1024))
    assert large.lr == pytest.approx(2e-3) and "scaled linearly to 2048" in large.lr_rule


def test_plan_official_augmentation_follows_the_recipe(small_motion: Path) -> None:
    config = plan_training(TrainOptions(data=small_motion, init="scratch", arch="xxs", aug="official"))
    recipe = get_entry(config.recipe_from).recipe
    assert config.augment.randaug == recipe.randaug and config.augment.resized_crop
    assert (config.augment.erase_prob, config.augment.repeats) == (0.25, 2)
    assert (config.mixup_alpha, config.cutmix_alpha, config.label_smoothing) == (0.8, 1.0, 0.1)
    assert config.model.arch == "light" and config.protocol.sampling == "sparse"


def test_docs_recipe_table_is_the_zoo() -> None:
    text = (Path(__file__).parents[1] / "docs" / "TRAINING.md").read_text(encoding="utf-8")
    table = text.split("<!-- recipes:start")[1].split("<!-- recipes:end")[0].splitlines()[3:]
    rows = {cells[0]: cells[1:] for cells in ([cell.strip() for cell in line.strip("|").split("|")] for line in table)}
    assert rows.keys() == ZOO.keys()
    for name, (init, batch, lr, epochs, warmup, decay, drop_path, randaug, flip) in rows.items():
        entry = ZOO[name]
        recipe = entry.recipe
        assert (init, int(batch), int(epochs), int(warmup), randaug, flip) == (
            recipe.init,
            recipe.batch_size,
            recipe.epochs,
            recipe.warmup_epochs,
            recipe.randaug,
            "yes" if recipe.flip else "no",
        ), name
        assert (float(lr), float(decay), float(drop_path)) == (recipe.lr, recipe.weight_decay, entry.drop_path), name


def test_plan_rejects_what_cannot_run(small_motion: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="train/"):
        plan_training(TrainOptions(data=tmp_path, init="scratch"))
    with pytest.raises(UniformerError, match="--scratch"):
        plan_training(TrainOptions(data=small_motion, depth=(1, 1, 1, 1)))
    with pytest.raises(UniformerError, match="ImageNet weights of xs"):
        plan_training(TrainOptions(data=small_motion, arch="xs"))
    with pytest.raises(UniformerError, match="aug"):
        plan_training(TrainOptions(data=small_motion, init="scratch", aug="fancy"))


def tiny_options(data: Path, **changes: object) -> TrainOptions:
    return TrainOptions(data=data, **{**TINY, **changes})  # type: ignore[arg-type]


def test_plan_with_a_released_recipe(small_motion: Path) -> None:
    entry = get_entry("xxs16-160-k400")
    config = plan_training(TrainOptions(data=small_motion, recipe=entry.name, init="scratch"))
    assert config.recipe_from == entry.name and config.model.arch == "light"
    assert (config.protocol.frames, config.protocol.sampling, config.protocol.size) == (16, "sparse", 160)
    assert config.weight_decay == entry.recipe.weight_decay and config.model.drop_path_rate == entry.drop_path
    assert config.lr == SCRATCH_LR  # --scratch: the from-scratch rate, whatever the recipe
    # The Something-Something recipes fine-tune a Kinetics model that only the authors' Drive has.
    with pytest.raises(CheckpointError, match="--weights"):
        plan_training(TrainOptions(data=small_motion, recipe="s16-sthv2-k400"))


def test_fine_tuning_keeps_the_head_only_for_the_same_classes(small_motion: Path, tmp_path: Path) -> None:
    source = plan_training(tiny_options(small_motion))
    model = create_model(source.model)
    torch.nn.init.normal_(model.head.weight)
    protocol = source.protocol.as_dict()
    same = save_weights(tmp_path / "same.safetensors", model, source.model, list(source.classes), protocol)
    other = save_weights(tmp_path / "other.safetensors", model, source.model, ["a", "b", "c", "d"], protocol)
    for weights, keeps_head in ((same, True), (other, False)):
        config = plan_training(TrainOptions(data=small_motion, model=str(weights)))
        assert config.model.depth == (1, 1, 1, 1) and config.protocol.size == 32
        tuned = build_model(config)
        assert torch.equal(tuned.patch_embed1.proj.weight, model.patch_embed1.proj.weight)
        assert torch.equal(tuned.head.weight, model.head.weight) == keeps_head


def test_image_weights_are_inflated_and_the_imagenet_head_dropped(small_motion: Path, tmp_path: Path) -> None:
    video = create_model(plan_training(tiny_options(small_motion)).model).state_dict()
    image = {key: value.sum(2) if value.ndim == 5 else value for key, value in video.items()}  # 2-D kernels
    image["head.weight"], image["head.bias"] = torch.randn(1000, 64), torch.randn(1000)
    torch.save({"model": image}, tmp_path / "image.pth")
    config = plan_training(tiny_options(small_motion, init=str(tmp_path / "image.pth")))
    assert (config.init, config.init_model) == ("imagenet", str(tmp_path / "image.pth"))
    model = build_model(config)
    stem = model.patch_embed1.proj.weight  # [O, I, 3, 4, 4]: the 2-D kernel repeated over time, divided by 3
    for frame in range(3):
        torch.testing.assert_close(stem[:, :, frame], image["patch_embed1.proj.weight"] / 3)
    assert model.head.weight.shape == (4, 64)


def test_imagenet_and_zoo_starting_points_come_through_the_hub(
    small_motion: Path, tmp_path: Path, local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    image = {key: value.sum(2) if value.ndim == 5 else value for key, value in served.model.state_dict().items()}
    image["head.weight"], image["head.bias"] = torch.randn(1000, 128), torch.randn(1000)
    torch.save({"model": image}, tmp_path / "tiny_in1k.pth")
    local_hub.add_file("test-org/uniformer-image", "tiny_in1k.pth", tmp_path / "tiny_in1k.pth")
    monkeypatch.setitem(IMAGENET_WEIGHTS, "tiny", ("test-org/uniformer-image", "tiny_in1k.pth"))

    from_imagenet = plan_training(TrainOptions(data=small_motion, arch="tiny"))
    assert (from_imagenet.init, from_imagenet.recipe_from) == ("imagenet", served.entry.name)
    stem = build_model(from_imagenet).patch_embed1.proj.weight
    torch.testing.assert_close(stem, image["patch_embed1.proj.weight"].unsqueeze(2).expand_as(stem) / 3)

    fine_tuned = plan_training(TrainOptions(data=small_motion, model=served.entry.name))
    assert (fine_tuned.init, fine_tuned.init_model, fine_tuned.recipe_from) == ("finetune", "tiny-k400", "tiny-k400")
    model = build_model(fine_tuned)
    assert torch.equal(model.blocks3[0].attn.qkv.weight, served.model.blocks3[0].attn.qkv.weight)
    assert model.head.weight.shape == (4, 128)  # the 400 Kinetics classes are not the motion classes


def test_light_model_trains_both_heads_with_checkpointing_and_bf16(small_motion: Path, tmp_path: Path) -> None:
    options = tiny_options(small_motion, arch="xxs", depth=(1, 1, 2, 1), output=tmp_path, amp="bf16", batch_size=2)
    config = plan_training(options)
    initial = build_model(config).state_dict()
    runtime = Runtime(workers=0, grad_checkpointing=(0, 1, 2, 0), max_steps=2)
    result = train(config, runtime)
    assert result.stopped_early and result.steps == 2 and result.best_top1 is None
    trained = load_checkpoint(tmp_path / "last.pt")
    assert trained["step"] == 2
    assert (tmp_path / "curves.png").is_file()
    # The token head only gets gradients from the two-head training loss (forward_train).
    assert not torch.equal(trained["model"]["head_cls.weight"], initial["head_cls.weight"])
    assert not torch.equal(trained["model"]["head.weight"], initial["head.weight"])
    with pytest.raises(UniformerError, match="already holds a run"):
        train(config, runtime)


def test_dry_run_prints_the_plan(small_motion: Path, capsys: pytest.CaptureFixture[str]) -> None:
    planned = json.loads(run_cli(["train", "--data", str(small_motion), *tiny_flags(), "--dry-run", "--json"], capsys))
    assert planned == json.loads(json.dumps(plan_training(tiny_options(small_motion)).to_dict()))
    with pytest.raises(SystemExit):
        main(["train", "--data", str(small_motion), *tiny_flags(), "--dry-run", "--batch-size", "3"])
    table = capsys.readouterr().err
    assert "3 x 1 accum x 1 proc = 3" in table and "s16x8-k400" in table
    assert Path(planned["output"]).is_absolute() and Path(planned["data"]).is_absolute()


def test_resume_refuses_to_change_the_run(small_motion: Path, tmp_path: Path) -> None:
    config = plan_training(tiny_options(small_motion, output=tmp_path))
    save_checkpoint({"config": config.to_dict()}, tmp_path / "last.pt")
    assert resume_config(tmp_path / "last.pt", TrainOptions()) == config
    assert resume_config(tmp_path / "last.pt", TrainOptions(epochs=99)).epochs == 99
    with pytest.raises(UniformerError, match="--lr"):
        resume_config(tmp_path / "last.pt", TrainOptions(lr=0.1))


# ---------------------------------------------------------------------------------------------------
# Real runs

RUN_FLAGS = [*tiny_flags(), "--no-flip", "--workers", "0", "--drop-path", "0", "--weight-decay", "0.01"]


@pytest.mark.slow
def test_training_learns_motion_and_predict_uses_the_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny UniFormer from scratch on 64 videos reaches >= 90% validation top-1 in under a
    minute of CPU;
    a single frame cannot tell the classes apart, so this needs the temporal modelling to work."""
    data = motion_dataset(tmp_path / "motion", 16, 8)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "-o", str(run), *RUN_FLAGS, "--epochs", "12", "--batch-size", "8"]
    args += ["--lr", "3e-3", "--warmup-epochs", "1", "--label-smoothing", "0", "--json"]
    result = json.loads(run_cli(args, capsys))
    assert result["best_top1"] >= 90.0, result["history"]
    assert result["epochs"] == 12 and not result["stopped_early"]
    epochs = read_metrics(run, "epoch")
    assert [record["epoch"] for record in epochs] == list(range(1, 13))
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert {path.name for path in run.iterdir()} >= {"last.pt", "best.pt", "best.safetensors", "config.json"}

    held_out = tmp_path / "held_out"
    held_out.mkdir()
    rng = np.random.default_rng(1234)  # not the dataset's seed: videos the model has never seen
    correct = 0
    for direction in DIRECTIONS:
        video = motion_video(held_out / f"{direction}.mp4", direction, rng)
        out = run_cli(["predict", str(video), "--weights", result["exported"], "--json"], capsys)
        correct += json.loads(out)[0]["predicted_label"] == direction
    assert correct >= 3  # a >= 90% model; allow one miss of four


# A 2-epoch run of 8 steps each, with every random augmentation on, that interrupted runs must reproduce.
INTERRUPTED_FLAGS = [
    *RUN_FLAGS, "--aug", "official", "--randaug", "rand-m7-n2-mstd0.5", "--mixup", "--drop-path", "0.1",
    "--epochs", "2", "--batch-size", "2", "--log-every", "1", "--val-every", "1", "--tensorboard",
]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, run folder) of the reference run, trained once for the interruption tests."""
    root = tmp_path_factory.mktemp("uninterrupted")
    data = motion_dataset(root / "motion", 4, 1)
    # Module fixtures start before the per-test `one_thread`; one thread, as the interrupted runs use,
    # keeps the summation order the same.
    with one_torch_thread(), pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(data), "-o", str(root / "run"), *INTERRUPTED_FLAGS, "--json"])
    assert exit_info.value.code in (0, None)
    return data, root / "run"


def train_until_step(data: Path, run: Path, step: int, *flags: str, new_session: bool = False) -> subprocess.Popen:
    """Start `uniformer train` in a subprocess; return once metrics.jsonl has logged `step`."""
    command = [sys.executable, "-m", "uniformer_cli.cli.app", "train", "--data", str(data), "-o", str(run)]
    process = subprocess.Popen(
        [*command, *INTERRUPTED_FLAGS, *flags, "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=ONE_THREAD,
        start_new_session=new_session,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        complete_lines = metrics.read_text().split("\n")[:-1] if metrics.exists() else []  # not one being written
        if any(json.loads(line)["step"] >= step for line in complete_lines):
            return process
        time.sleep(0.01)
    process.kill()
    raise AssertionError(f"training never logged step {step}: {process.communicate()[1].decode()[-2000:]}")


def resume_and_compare(interrupted: Path, reference: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--resume` the interrupted run: the final weights equal the uninterrupted run's (tolerance 1e-6;
    the runs are deterministic, so in practice identical), and its logs read as one run."""
    # TensorBoard orders event files by the second they were created in (then by process id): a restart
    # within the interrupted run's first second, which only this in-process resume is fast enough for,
    # would sort before it.
    time.sleep(1.0)
    resumed = json.loads(
        run_cli(
            ["train", "--resume", str(interrupted), "--workers", "0", "--log-every", "1", "--tensorboard", "--json"],
            capsys,
        )
    )
    assert resumed["steps"] == 16 and not resumed["stopped_early"] and resumed["interrupted_by"] is None
    expected, actual = final_weights(reference), final_weights(interrupted)
    assert expected.keys() == actual.keys()
    worst = max((expected[key].double() - actual[key].double()).abs().max().item() for key in expected)
    assert worst <= 1e-6
    # The log reads as one run: every step once, and the same epoch records as the reference.
    assert [record["step"] for record in read_metrics(interrupted, "step")] == list(range(1, 17))
    epochs = zip(read_metrics(reference, "epoch"), read_metrics(interrupted, "epoch"), strict=True)
    for ours, theirs in epochs:
        assert ours.keys() == theirs.keys()
        assert all(math.isclose(ours[key], theirs[key], rel_tol=1e-6) for key in ours if key != "event")
    # TensorBoard shows the same run: the events the first process wrote past its checkpoint are purged.
    board = tensorboard_scalars(interrupted, "step/loss")
    assert [step for step, _ in board] == list(range(1, 17))
    steps = read_metrics(interrupted, "step")
    assert [loss for _, loss in board] == pytest.approx([record["loss"] for record in steps])
    ours = tensorboard_scalars(interrupted, "epoch/train_loss")
    theirs = tensorboard_scalars(reference, "epoch/train_loss")
    assert [step for step, _ in ours] == [step for step, _ in theirs] == [8, 16]
    assert [loss for _, loss in ours] == pytest.approx([loss for _, loss in theirs], rel=1e-6)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(
    uninterrupted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL mid-epoch: the last periodic checkpoint (--save-every 2) is complete, and resuming from it
    ends where the uninterrupted run ended."""
    data, reference = uninterrupted
    crashed = tmp_path / "crashed"
    process = train_until_step(data, crashed, 3, "--save-every", "2")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    state = load_checkpoint(crashed / "last.pt")  # complete and readable: never half-written
    assert state["step"] % 8 != 0, "the kill should land mid-epoch (8 steps per epoch)"
    resume_and_compare(crashed, reference, capsys)


# A DataLoader whose worker is still decoding when Ctrl-C reaches the whole process group. Workers are
# spawned, as on macOS: forked ones would inherit the main process's stop handler and hide the problem.
CTRL_C_DURING_LOADING = """
import time
from torch.utils.data import DataLoader, Dataset
from uniformer_cli.data.loading import init_decoding_worker
from uniformer_cli.engine.signals import StopSignal


class Slow(Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, index):
        time.sleep(0.3)
        return index


if __name__ == "__main__":
    with StopSignal(announce=False) as stop:
        loader = DataLoader(
            Slow(), batch_size=None, num_workers=1, worker_init_fn=init_decoding_worker, multiprocessing_context="spawn"
        )
        batches = iter(loader)
        first = next(batches)
        print("loading", flush=True)
        print([first, *batches], stop.received, flush=True)
"""


def test_ctrl_c_leaves_decoding_workers_running(tmp_path: Path) -> None:
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_DURING_LOADING)
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None and process.stdout.readline() == "loading\n"
    os.killpg(process.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert out == f"[0, 1, 2, 3, 4, 5] {int(signal.SIGINT)}\n"  # every batch arrived; the main process noted the stop


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stop_signal_saves_the_current_step_and_resumes_to_the_same_weights(
    stop: str, uninterrupted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C (SIGINT to the whole process group, DataLoader workers included) or SIGTERM (a scheduler's
    pre-emption): training finishes its step, saves it (no --save-every here), exits with 128 + the
    signal number and resumes to the uninterrupted run's weights."""
    data, reference = uninterrupted
    stopped = tmp_path / "stopped"
    process = train_until_step(data, stopped, 3, "--workers", "1", new_session=True)
    if stop == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    number = signal.SIGINT if stop == "ctrl-c" else signal.SIGTERM
    assert process.returncode == 128 + number, err.decode()[-2000:]
    assert f"{number.name}: stopping, saving the last completed step" in err.decode()
    state = load_checkpoint(stopped / "last.pt")
    logged = [record["step"] for record in read_metrics(stopped, "step")]
    assert state["step"] == logged[-1] >= 3  # the step it was in when the signal came, saved
    assert state["step"] % 8 != 0, "the stop should land mid-epoch (8 steps per epoch)"
    resume_and_compare(stopped, reference, capsys)


class Interruption:
    """Sends `number` to this process inside a phase of optimiser step `step` (1-based), found by hooks and
    not by timing: "loading" (the loader decoding the step's first clip, no workers), "forward" (a few
    modules into the step's training forward), "backward" (the moment its backward pass begins),
    "update" (right after its optimiser update) or "validation" (the first forward in eval mode after
    step `step`). It counts the training forwards that finished and the optimiser updates made."""

    def __init__(self, step: int, phase: str, number: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.step, self.phase, self.number = step, phase, number
        self.started = self.finished = self.updates = self.clips = 0
        self.modules_in_step = 0
        self.sent = False
        self.handles = [
            torch.nn.modules.module.register_module_forward_pre_hook(self.before_module),
            torch.nn.modules.module.register_module_forward_hook(self.after_module),
            register_optimizer_step_post_hook(self.after_update),
        ]
        item = TrainClips._item

        def counted_item(clips: TrainClips, *args: object, **kwargs: object) -> object:
            self.clips += 1
            if phase == "loading" and self.clips == (step - 1) * 2 + 1:  # batch size 2
                self.send()
            return item(clips, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(TrainClips, "_item", counted_item)

    def send(self) -> None:
        assert not self.sent
        self.sent = True
        os.kill(os.getpid(), self.number)

    def before_module(self, module: torch.nn.Module, args: object) -> None:
        if self.phase == "validation" and not module.training and self.updates == self.step and not self.sent:
            self.send()
        if isinstance(module, TrainForward):
            self.started += 1
            self.modules_in_step = 0
        elif self.started == self.step and self.finished < self.step:
            self.modules_in_step += 1
            if self.phase == "forward" and self.modules_in_step == 5:
                self.send()

    def after_module(self, module: torch.nn.Module, args: object, output: object) -> None:
        if not isinstance(module, TrainForward):
            return
        self.finished += 1
        if self.phase == "backward" and self.finished == self.step:
            logits = output[0] if isinstance(output, tuple) else output
            assert isinstance(logits, torch.Tensor)
            logits.register_hook(lambda grad: self.send())

    def after_update(self, *args: object) -> None:
        self.updates += 1
        if self.phase == "update" and self.updates == self.step:
            self.send()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize(
    ("phase", "stop"), [("loading", "SIGINT"), ("forward", "SIGTERM"), ("backward", "SIGINT")]
)  # fmt: skip
def test_a_stop_signal_abandons_the_step_in_progress_and_saves_the_last_completed_one(
    phase: str,
    stop: str,
    uninterrupted: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A signal inside step 5 (while its clips load, inside its forward or its backward pass) ends the
    run without finishing that step: no update, last.pt holds step 4 as the uninterrupted run had it,
    exit 128 + the signal number, and resuming ends with the uninterrupted run's weights."""
    data, reference = uninterrupted
    stopped = tmp_path / "stopped"
    number = getattr(signal, stop)
    interruption = Interruption(5, phase, number, monkeypatch)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--data", str(data), "-o", str(stopped), *INTERRUPTED_FLAGS, "--json"])
    finally:
        interruption.remove()
    err = capsys.readouterr().err
    assert exit_info.value.code == 128 + number, err[-2000:]
    assert f"{stop}: stopping, saving the last completed step" in err
    assert interruption.sent and interruption.updates == 4
    assert interruption.finished == {"loading": 4, "forward": 4, "backward": 5}[phase]
    state = load_checkpoint(stopped / "last.pt")
    assert state["step"] == 4 and [record["step"] for record in read_metrics(stopped, "step")] == [1, 2, 3, 4]
    assert not (stopped / "curves.png").exists()  # left to the resumed run, which draws them
    # The checkpoint is the one an uninterrupted run saves after step 4 (--save-every 4), to the bit.
    saved = tmp_path / "saved"
    with pytest.raises(SystemExit):
        main(["train", "--data", str(data), "-o", str(saved), *INTERRUPTED_FLAGS, "--max-steps", "4", "--json"])
    expected = load_checkpoint(saved / "last.pt")
    assert expected["step"] == 4
    for key in ("model", "optimizer", "rng", "epoch_losses", "history", "epoch"):
        assert same(state[key], expected[key]), key
    capsys.readouterr()
    resume_and_compare(stopped, reference, capsys)
    assert (stopped / "curves.png").is_file()


@pytest.mark.parametrize("phase", ["validation", "update"])
def test_a_stop_signal_at_an_epoch_end_saves_the_epoch_with_its_validation_still_to_do(
    phase: str,
    uninterrupted: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM inside the first epoch's validation, or after the epoch's last update (before validating),
    stops without validating: last.pt holds step 8 without the epoch's record, and the resumed run
    validates that epoch first, ending as the uninterrupted run did."""
    data, reference = uninterrupted
    stopped = tmp_path / "stopped"
    interruption = Interruption(8, phase, signal.SIGTERM, monkeypatch)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--data", str(data), "-o", str(stopped), *INTERRUPTED_FLAGS, "--json"])
    finally:
        interruption.remove()
    assert exit_info.value.code == 143, capsys.readouterr().err[-2000:]
    assert interruption.sent and interruption.updates == 8
    state = load_checkpoint(stopped / "last.pt")
    assert state["step"] == 8 and state["epoch_ended"] is False and state["history"] == []
    assert len(state["epoch_losses"]) == 8 and read_metrics(stopped, "epoch") == []
    capsys.readouterr()
    resume_and_compare(stopped, reference, capsys)


def same(a: object, b: object) -> bool:
    """Equal to the bit: tensors, and containers of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same, a, b))
    return a == b


# ---------------------------------------------------------------------------------------------------
# The command's options


def test_each_train_option_is_spelled_once_and_reaches_the_engine() -> None:
    """`uniformer train` takes one parameter per `TrainOptions` and `Runtime` field, under the field's name,
    and builds both from them by name: an option missing on either side fails here, not silently."""
    parameters = set(inspect.signature(train_command.train).parameters)
    plan = {field.name for field in dataclasses.fields(TrainOptions)}
    runtime = {field.name for field in dataclasses.fields(Runtime)}
    assert plan <= parameters and runtime <= parameters
    assert parameters - plan - runtime == train_command.COMMAND_ONLY
    assert not plan & runtime


def test_train_help_groups_every_option_with_help_and_default() -> None:
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    panels = {
        parameter.name: getattr(parameter, "rich_help_panel", None)
        for parameter in command.params
        if parameter.param_type_name == "option" and parameter.name != "help"
    }
    assert set(panels.values()) == set(train_command.PANELS), panels
    for parameter in command.params:
        if parameter.param_type_name != "option" or parameter.name == "help":
            continue
        assert parameter.help, parameter.name
        if not parameter.is_flag and parameter.default is None:
            assert "[default: " in parameter.help.replace("\\[", "["), parameter.name
        elif not parameter.is_flag:
            assert parameter.show_default is not False, parameter.name


def test_amp_auto_trains_every_model_in_float32_on_the_cpu() -> None:
    """`--amp auto` on the CPU is float32 for the S/B and the light models alike; bf16 is asked for
    (TRAINING.md: it pays on CPUs with native bf16), fp16 refused there (its gradient scaler is CUDA's)."""
    cpu = torch.device("cpu")
    for light in (False, True):
        assert amp_dtype("auto", cpu, light) is None and amp_dtype("off", cpu, light) is None
        assert amp_dtype("bf16", cpu, light) == torch.bfloat16
        with pytest.raises(UniformerError, match="needs a CUDA GPU"):
            amp_dtype("fp16", cpu, light)


def test_train_choices_are_refused_at_parse_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert tuple(member.value for member in train_command.Amp) == AMP_CHOICES
    assert tuple(member.value for member in train_command.Aug) == AUG_CHOICES
    for flag, value in (("--amp", "fp8"), ("--aug", "strong"), ("--arch", "q"), ("--val-crops", "2")):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", flag, value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and flag in err and err.count("\n") == 1, err


def test_the_plan_says_where_the_learning_rate_came_from(
    small_motion: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--data", str(small_motion), *tiny_flags(), "--dry-run"])
    table = capsys.readouterr().err
    assert "from scratch" in table and "not scaled down" in table
