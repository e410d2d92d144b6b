"""The fast path's attention kernels (models/fast_attention.py): each computes softmax(q kᵀ) v on any
shape and chunking, the scale fold is exact, and the per-shape choice measures each kernel before it
settles, then sticks (or is forced)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from parity import fixture_input, fixture_model, official_logits

from uniformer_cli.models import fast_attention, layers
from uniformer_cli.models.fast import optimize_for_inference
from uniformer_cli.models.fast_attention import (
    KERNELS,
    TRIALS,
    FastAttention,
    KernelChoice,
    candidates,
    explicit_attention,
    fold_attention_scale,
    forced_kernel,
    shape_key,
)
from uniformer_cli.models.layers import Attention
from uniformer_cli.models.onednn import onednn_linear_works


def qkv_views(batch: int, heads: int, length: int, depth: int, seed: int) -> tuple[torch.Tensor, ...]:
    """q, k, v as the attention layer makes them: strided views of one `[B, N, 3, H, D]` tensor."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, length, 3, heads, depth, generator=generator)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return q * depth**-0.5, k, v


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (q.double() @ k.double().transpose(-2, -1)).softmax(-1) @ v.double()


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 5),
    heads=st.integers(1, 6),
    length=st.integers(1, 70),
    depth=st.sampled_from([4, 16, 28]),
    score_bytes=st.sampled_from([64, 4096, 12 * 2**20]),
    seed=st.integers(0, 2**16),
)
def test_both_kernels_compute_attention_for_any_shape_and_chunking(
    batch: int, heads: int, length: int, depth: int, score_bytes: int, seed: int
) -> None:
    q, k, v = qkv_views(batch, heads, length, depth, seed)
    expected = reference(q, k, v)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_attention, "SCORE_BYTES", score_bytes)  # down to chunks of one query row
        for name, kernel in KERNELS.items():
            out = kernel(q, k, v)
            assert out.shape == q.shape
            torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5, msg=name)
    # The heads side by side are a view, as the output projection reads them.
    assert explicit_attention(q, k, v).transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_bf16_attention_stays_close_to_float64(name: str) -> None:
    q, k, v = qkv_views(2, 5, 200, 64, seed=0)
    out = KERNELS[name](q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    assert (out.double() - reference(q, k, v)).abs().max().item() < 0.02


def test_scale_folded_into_q_gives_the_same_attention() -> None:
    torch.manual_seed(0)
    attention = Attention(64, 4, qkv_bias=True).eval()
    x = torch.randn(2, 30, 64)
    with torch.no_grad():
        before = attention(x)
        fold_attention_scale(attention)
        assert attention.scale == 1.0
        # 16-wide heads: the scale 1/4 is a power of two, so the fold is exact.
        torch.testing.assert_close(attention(x), before, atol=1e-6, rtol=1e-6)


class Recorder:
    """Kernels that record their calls (each still computes the real attention)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.kernels = {name: self.recording(name, kernel) for name, kernel in KERNELS.items()}

    def recording(self, name: str, kernel):  # type: ignore[no-untyped-def]
        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            self.calls.append(name)
            return kernel(q, k, v)

        return run


def test_the_choice_alternates_trials_then_keeps_the_winner(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(fast_attention, "KERNELS", recorder.kernels)
    choice = KernelChoice()
    q, k, v = qkv_views(1, 2, 40, 16, seed=1)
    expected = reference(q, k, v)
    tried = candidates(q)
    assert set(tried) == set(KERNELS) - (set() if onednn_linear_works() else {"onednn"})
    for _ in range(len(tried) * TRIALS + 4):
        torch.testing.assert_close(choice.run(q, k, v).double(), expected, atol=1e-5, rtol=1e-5)
    trials = recorder.calls[: len(tried) * TRIALS]
    assert sorted(trials[: len(tried)]) == sorted(tried)  # alternating: each kernel once per round
    assert all(trials.count(name) == TRIALS for name in tried)
    key = shape_key(q, k)
    assert list(choice.decided) == [key] and not choice.trials
    assert recorder.calls[len(tried) * TRIALS :] == [choice.decided[key]] * 4
    # Another shape is measured on its own.
    q2, k2, v2 = qkv_views(2, 2, 40, 16, seed=2)
    choice.run(q2, k2, v2)
    assert list(choice.decided) == [key] and shape_key(q2, k2) in choice.trials


def test_kernels_without_onednn_are_the_only_candidates_for_other_dtypes() -> None:
    q, _, _ = qkv_views(1, 1, 4, 4, seed=0)
    assert "onednn" not in candidates(q.double())


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_a_forced_kernel_runs_the_whole_fast_model_within_the_fast_tolerance(name: str) -> None:
    model = fixture_model("small_light_ls")
    fast = optimize_for_inference(model)
    assert any(isinstance(module, FastAttention) for module in fast.modules())
    assert all(module.scale == 1.0 for module in fast.modules() if isinstance(module, Attention))
    with forced_kernel(name), torch.inference_mode():
        logits = fast(fixture_input())
    assert (logits - official_logits("small_light_ls")).abs().max().item() < 1e-4


def test_forcing_an_unknown_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown attention kernel"), forced_kernel("magic"):
        pass


@pytest.mark.parametrize("amx", [True, False])
def test_bf16_training_attention_matches_sdpa_forward_and_backward(monkeypatch: pytest.MonkeyPatch, amx: bool) -> None:
    """Under `--amp bf16` on a CPU without AMX the training model's attention runs as plain matmuls
    (`Attention.fused`): the same values and gradients as SDPA, to bf16 precision."""
    monkeypatch.setattr(layers, "cpu_has_amx", lambda: amx)
    torch.manual_seed(0)
    attention = Attention(64, 4, qkv_bias=True)
    x = torch.randn(2, 50, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(x)
    out.float().square().sum().backward()
    grads = (x.grad, attention.qkv.weight.grad)
    reference = Attention(64, 4, qkv_bias=True)
    reference.load_state_dict(attention.state_dict())
    x_ref = x.detach().clone().requires_grad_(True)
    reference(x_ref).square().sum().backward()  # float32, fused SDPA
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference(x_ref).detach(), atol=0.05, rtol=0.05)
    for got, expected in zip(grads, (x_ref.grad, reference.qkv.weight.grad), strict=True):
        assert got is not None and expected is not None
        assert (got - expected).abs().max() < 0.05 * expected.abs().max()
