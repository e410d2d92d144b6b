"""The bf16 route (issue 12): numerics against fp32 on real clips, float32 in and out, the options that
reach it, and one-line errors where a CPU cannot run it. Speed lives in benchmarks/bench_engines.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from parity import FIXTURES, SMALL, SMALL_LIGHT, V2_FIXTURES, fixture_model, v2_fixture_model

from uniformer_cli import load_model, runtime
from uniformer_cli.cli import options
from uniformer_cli.device import batched_logits
from uniformer_cli.engine.train import TrainForward, training_loss
from uniformer_cli.errors import UniformerError
from uniformer_cli.models import ModelConfig, create_model, layers
from uniformer_cli.models import fast as fast_module
from uniformer_cli.models.fast import check_precision, optimize_for_inference
from uniformer_cli.models.fast_attention import KERNELS, forced_kernel
from uniformer_cli.settings import PRECISIONS
from uniformer_cli.weights import save_weights

CLIPS = Path(__file__).parent / "fixtures" / "preprocess" / "Tw2yXa6CzWE_inputs.npz"
# bf16 keeps 8 bits of mantissa: measured errors on these models and clips are 1.4-3.8% of the fp32
# logits' standard deviation; 6% leaves room for other CPUs' kernels.
BF16_TOLERANCE = 0.06
TINY = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16, num_classes=3)


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Numerics are checked on any CPU: where bf16 is emulated it is slower, not different."""
    monkeypatch.setattr(fast_module, "cpu_has_native_bf16", lambda: True)


def real_clips() -> dict[str, torch.Tensor]:
    """Preprocessed views of a real Kinetics video under the K400, Sth-Sth and light-model protocols."""
    with np.load(CLIPS) as stored:
        return {name: torch.from_numpy(stored[name].astype(np.float32))[None] for name in stored.files}


def ranks_agree(reference: torch.Tensor, other: torch.Tensor, k: int, margin: float) -> bool:
    """The top-k of `other` is that of `reference`, except that classes whose reference logits lie
    within `margin` of each other (a tie at this precision) may swap."""
    order = reference.argsort(descending=True)[:k].tolist()
    other_order = other.argsort(descending=True)[:k].tolist()
    if other_order == order:
        return True
    ranked = reference.sort(descending=True).values
    for position, (expected, got) in enumerate(zip(order, other_order, strict=True)):
        if expected != got and abs(float(reference[got] - ranked[position])) > margin:
            return False
    return True


@pytest.mark.usefixtures("native_bf16")
@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_bf16_keeps_the_top5_of_fp32_on_real_clips(name: str, kernel: str) -> None:
    """With either attention kernel the fast path may measure faster (`models.fast_attention`)."""
    assert_bf16_keeps_the_top5(fixture_model(name), real_clips(), kernel)


def assert_bf16_keeps_the_top5(model: torch.nn.Module, clips: dict[str, torch.Tensor], kernel: str) -> None:
    exact = optimize_for_inference(model, precision="fp32")
    bf16 = optimize_for_inference(model, precision="bf16")
    for clip_name, clip in clips.items():
        with torch.inference_mode():
            reference = exact(clip)[0]
            with forced_kernel(kernel):
                logits = bf16(clip)[0]
        assert logits.dtype == torch.float32
        bound = BF16_TOLERANCE * float(reference.std())
        error = float((logits - reference).abs().max())
        assert error < bound, (clip_name, error, bound)
        assert error > 0  # bf16 really ran
        assert ranks_agree(reference, logits, 5, margin=2 * bound), clip_name


@pytest.mark.usefixtures("native_bf16")
@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("name", sorted(V2_FIXTURES))
def test_v2_bf16_keeps_the_top5_of_fp32_on_real_clips(name: str, kernel: str) -> None:
    """UniFormerV2 in bf16 (its fast path, `models.fast.optimize_v2`, with each attention kernel) on the real
    clips scaled to the fixture's size."""
    model = v2_fixture_model(name)
    side = model.config.resolution
    clips = {
        clip_name: torch.nn.functional.interpolate(clip, size=(clip.shape[2], side, side), mode="trilinear")
        for clip_name, clip in real_clips().items()
    }
    assert_bf16_keeps_the_top5(model, clips, kernel)


@pytest.mark.usefixtures("native_bf16")
def test_bf16_model_takes_float32_clips_keeps_its_attributes_and_leaves_the_original() -> None:
    model = create_model(TINY).eval()
    model.labels = ["a", "b", "c"]  # type: ignore[assignment]
    weight = model.head.weight.clone()
    bf16 = optimize_for_inference(model, precision="bf16")
    assert bf16.labels == ["a", "b", "c"] and bf16.config == TINY and bf16.precision == "bf16"
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    assert model.head.weight.dtype == torch.float32 and torch.equal(model.head.weight, weight)
    clips = torch.randn(3, 3, 4, 32, 32)
    logits = batched_logits(bf16, clips, torch.device("cpu"), batch_size=2)
    assert logits.shape == (3, 3) and logits.dtype == torch.float32
    with torch.inference_mode():  # the feature extractors take float32 clips too
        assert bf16.forward_features(clips).dtype == torch.float32
        assert bf16.forward_stages(clips).shape[:2] == (3, TINY.embed_dim[3])


def test_the_cli_offers_the_precisions_the_model_code_knows() -> None:
    assert tuple(choice.value for choice in options.Precision) == PRECISIONS


def test_unknown_precision_and_emulated_bf16_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UniformerError, match="unknown precision 'fp16'"):
        check_precision("fp16", torch.device("cpu"))
    monkeypatch.setattr(fast_module, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(UniformerError, match="needs a CPU with native bf16"):
        optimize_for_inference(create_model(TINY), precision="bf16")
    check_precision("fp32", torch.device("cpu"))  # fp32 needs nothing


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    flags = "fpu sse avx512f avx512bw"
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    for extra, expected in (("", False), (" avx512_bf16", True), (" amx_bf16 amx_tile", True)):
        fast_module.cpu_has_native_bf16.cache_clear()
        runtime.cpu_info.cache_clear()
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}{extra}\n")
        monkeypatch.setattr(runtime, "CPUINFO", cpuinfo)
        assert fast_module.cpu_has_native_bf16() is expected
        assert runtime.cpu_info().model == "Test CPU"
    fast_module.cpu_has_native_bf16.cache_clear()
    runtime.cpu_info.cache_clear()


@pytest.mark.usefixtures("native_bf16")
def test_load_model_with_a_precision_returns_the_fast_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(TINY).eval()
    weights = save_weights(tmp_path / "tiny.safetensors", model, TINY)
    exact = load_model(weights)
    assert exact.precision == "auto" and exact.head.weight.dtype == torch.float32  # unchanged default
    bf16 = load_model(weights, device="cpu", precision="bf16")
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.inference_mode():
        reference, logits = exact(clip), bf16(clip)
    assert logits.dtype == torch.float32
    assert (logits - reference).abs().max() < BF16_TOLERANCE * reference.std() + 1e-3
    with pytest.raises(UniformerError, match="unknown precision"):
        load_model(weights, precision="half")


@pytest.mark.usefixtures("native_bf16")
def test_flops_bench_reports_its_precision(capsys: pytest.CaptureFixture[str]) -> None:
    common = ("flops", "--arch", "xxs", "--frames", "4", "--size", "64", "--bench", "--warmup", "0", "--runs", "1")
    for precision in ("fp32", "bf16"):
        code, out, err = run_cli(capsys, *common, "--precision", precision, "--device", "cpu", "--json")
        assert code == 0, err
        assert json.loads(out)[0]["bench"]["precision"] == precision


def test_cli_refuses_bf16_on_a_cpu_without_it_before_loading(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(fast_module, "cpu_has_native_bf16", lambda: False)
    clip = Path(__file__).parent / "fixtures" / "preprocess" / "carphone_pristine.mp4"
    missing = tmp_path / "not-downloaded.safetensors"  # never read: the precision is checked first
    code, out, err = run_cli(capsys, "predict", clip, "--weights", missing, "--device", "cpu", "--precision", "bf16")
    assert (code, out) == (1, "")
    assert err.strip().splitlines() == [err.strip()] and "native bf16" in err


def is_depthwise(module: torch.nn.Module) -> bool:
    return type(module) is torch.nn.Conv3d and module.groups == module.in_channels > 1


@pytest.mark.parametrize("config", [SMALL, SMALL_LIGHT], ids=["s", "light"])
def test_bf16_training_runs_depthwise_convolutions_in_float32(config: ModelConfig) -> None:
    """Under CPU bf16 autocast (`train --amp bf16`) the depthwise convolutions run in float32
    (`layers.depthwise`: oneDNN's bf16 depthwise backward is the slower one), the pointwise ones in bf16,
    and a training step's gradients stay within bf16 precision of float32's."""
    torch.manual_seed(0)
    model = create_model(config.replace(drop_path_rate=0.0)).train()
    outputs: dict[str, set[torch.dtype]] = {"depthwise": set(), "pointwise": set()}

    def note(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        if type(module) is torch.nn.Conv3d and module.kernel_size == (1, 1, 1):
            outputs["pointwise"].add(output.dtype)
        elif is_depthwise(module):
            outputs["depthwise"].add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(note)
    clips, targets = torch.randn(2, 3, 8, 64, 64), torch.full((2, 10), 0.1)
    gradients = []
    try:
        for dtype in (torch.bfloat16, None):
            state = {key: value.clone() for key, value in model.state_dict().items()}  # BatchNorm statistics
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                training_loss(TrainForward(model)(clips), targets).backward()
            model.load_state_dict(state)
            gradients.append({name: parameter.grad for name, parameter in model.named_parameters()})
            if dtype is not None:
                assert outputs == {"depthwise": {torch.float32}, "pointwise": {torch.bfloat16}}
    finally:
        handle.remove()
    bf16, float32 = gradients
    assert all(grad is not None and grad.dtype == torch.float32 for grad in bf16.values())
    # bf16 keeps 8 bits of mantissa: the whole gradient is ~1% off float32's.
    difference = torch.cat([(bf16[name] - grad).flatten() for name, grad in float32.items()])  # type: ignore[operator]
    reference = torch.cat([grad.flatten() for grad in float32.values()])  # type: ignore[union-attr]
    assert difference.norm() <= 0.05 * reference.norm()


def test_depthwise_is_the_plain_convolution_outside_cpu_autocast() -> None:
    conv = layers.depthwise_conv(8, 3)
    x = torch.randn(1, 8, 2, 5, 5)
    assert torch.equal(layers.depthwise(conv, x), conv(x))
