"""Device choice and autocast precision rules (uniformer_cli/device.py)."""

from __future__ import annotations

import logging

import pytest
import torch

from uniformer_cli import device as device_module
from uniformer_cli.device import autocast_dtype, select_device
from uniformer_cli.errors import UniformerError
from uniformer_cli.models import fp16_safe
from uniformer_cli.models.light import UniFormerLight
from uniformer_cli.models.uniformer import UniFormer


def test_cpu_runs_in_full_precision() -> None:
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("cpu"), fp16_safe=False) is None


def test_light_models_never_get_float16(monkeypatch: pytest.MonkeyPatch) -> None:
    # MPS has no bf16 autocast here: a light model stays in fp32 rather than overflow in fp16.
    mps = torch.device("mps")
    assert autocast_dtype(mps) is torch.float16
    assert autocast_dtype(mps, fp16_safe=False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert autocast_dtype(torch.device("cuda"), fp16_safe=False) is None
    assert autocast_dtype(torch.device("cuda")) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_dtype(torch.device("cuda"), fp16_safe=False) is torch.bfloat16


def test_fp16_safety_follows_the_architecture() -> None:
    assert not fp16_safe(UniFormerLight.__new__(UniFormerLight))
    assert fp16_safe(UniFormer.__new__(UniFormer))
    assert fp16_safe(torch.nn.Linear(2, 2))


def test_mps_without_conv3d_falls_back_to_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(device_module, "mps_runs_conv3d", lambda: False)
    with caplog.at_level(logging.WARNING, logger="uniformer_cli"):
        assert select_device("mps") == torch.device("cpu")
    assert [(record.name, record.levelno) for record in caplog.records] == [("uniformer_cli.device", logging.WARNING)]
    assert "using the CPU" in caplog.text
    monkeypatch.setattr(device_module, "mps_runs_conv3d", lambda: True)
    assert select_device("mps") == torch.device("mps")


def test_absent_or_unknown_devices_fail_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(UniformerError, match="no CUDA GPU"):
        select_device("cuda")
    with pytest.raises(UniformerError, match="MPS is not available"):
        select_device("mps")
    with pytest.raises(UniformerError, match="unknown device"):
        select_device("tpu")
