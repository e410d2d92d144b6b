"""CUDA checks (issue 12), run by benchmarks/gpu_check.sh on a machine with a GPU; skipped without one.

fp32 parity of the exact and the fast path with the official logits, bf16 against fp32 on real clips,
the default half-precision autocast of inference, and one autocast training step."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from parity import FIXTURES, fixture_input, fixture_model, official_logits
from test_precision import BF16_TOLERANCE, ranks_agree, real_clips

from uniformer_cli.device import batched_logits
from uniformer_cli.engine.train import TrainForward, amp_dtype, training_loss
from uniformer_cli.models import exact_attention
from uniformer_cli.models.fast import optimize_for_inference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def no_tf32() -> Iterator[None]:
    """Parity in true fp32: cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere and later."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_exact_and_fast_paths_give_the_official_logits_on_cuda(name: str) -> None:
    model = fixture_model(name).to(CUDA)
    x = fixture_input().to(CUDA)
    with torch.inference_mode(), exact_attention(model):
        exact = model(x).cpu()
    fast = optimize_for_inference(model, precision="fp32")
    with torch.inference_mode():
        fast_logits = fast(x).cpu()
    assert (exact - official_logits(name)).abs().max() < 1e-4
    assert (fast_logits - official_logits(name)).abs().max() < 1e-3


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("precision", ["bf16", "auto"])
def test_half_precision_keeps_the_top5_of_fp32_on_real_clips(name: str, precision: str) -> None:
    model = fixture_model(name).to(CUDA)
    reference = optimize_for_inference(model, precision="fp32")
    half = optimize_for_inference(model, precision=precision)  # auto: the device's autocast
    for clip_name, clip in real_clips().items():
        expected = batched_logits(reference, clip, CUDA, batch_size=1)[0]
        logits = batched_logits(half, clip, CUDA, batch_size=1)[0]
        bound = BF16_TOLERANCE * float(expected.std())
        if precision == "auto" and not torch.cuda.is_bf16_supported():
            bound /= 4  # fp16 keeps 3 more mantissa bits than bf16
        assert float((logits - expected).abs().max()) < bound, clip_name
        assert ranks_agree(expected, logits, 5, margin=2 * bound), clip_name


@pytest.mark.parametrize("name", ["small", "small_light"])
def test_an_autocast_training_step_learns(name: str) -> None:
    model = fixture_model(name).to(CUDA).train()
    dtype = amp_dtype("auto", CUDA, light=name != "small")
    forward = TrainForward(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    clips = torch.randn(4, 3, 8, 64, 64, device=CUDA)
    targets = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3], device=CUDA), 10).float()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    losses = []
    for _ in range(3):
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = training_loss(forward(clips), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    changed = [key for key, value in model.state_dict().items() if not torch.equal(value, before[key])]
    assert "head.weight" in changed
