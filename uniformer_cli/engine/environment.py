"""`uniformer env`: what a bug report needs to know about this machine, in one record.

Versions of Python and of the packages that decide results and speed, the CPU's model and the features
the fast paths use (AVX-512, native bf16, AMX), the GPUs torch sees, the threads it runs, where the
cache is and how large, and the `HF_*` / `UNIFORMER_*` / thread settings in the environment (tokens
are never shown, only that they are set).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import torch
from huggingface_hub import constants

from uniformer_cli.engine.cache import cache_size, cached_models
from uniformer_cli.models.fast import cpu_has_native_bf16
from uniformer_cli.runtime import cpu_info
from uniformer_cli.version import __version__
from uniformer_cli.weights.cache import cache_home

# The distributions whose versions matter, by their names on PyPI.
PACKAGES = (
    "torch",
    "av",
    "decord",
    "torchcodec",
    "openvino",
    "onnx",
    "onnxruntime",
    "huggingface-hub",
    "safetensors",
    "numpy",
    "gdown",
    "matplotlib",
    "typer",
    "click",
    "rich",
)
# `uniformer env`'s CPU keys, and the feature (`runtime.FEATURES`, which says which flags show it) of each.
CPU_FEATURES = {"avx2": "AVX2", "avx512": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx": "AMX"}
# Environment variables that change what the commands do, shown with their values; tokens only as "set".
SETTINGS_PREFIXES = ("HF_", "HUGGINGFACE_", "UNIFORMER_")
THREAD_SETTINGS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def settings() -> dict[str, str]:
    """The environment variables that change the commands' behaviour (secrets shown as `set`)."""
    shown = {}
    for name in sorted(os.environ):
        if name.startswith(SETTINGS_PREFIXES) or name in THREAD_SETTINGS:
            secret = any(word in name for word in SECRET_WORDS)
            shown[name] = "set" if secret else os.environ[name]
    return shown


def cpu_record() -> dict[str, object]:
    info = cpu_info()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    features = {name: feature in info.features for name, feature in CPU_FEATURES.items()}
    return {
        "model": info.model,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        **features,
        "native_bf16": cpu_has_native_bf16(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
    }


def gpu_record() -> dict[str, object]:
    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            devices.append(
                {
                    "index": index,
                    "name": properties.name,
                    "memory_gib": round(properties.total_memory / 2**30, 1),
                    "capability": f"{properties.major}.{properties.minor}",
                    "bf16": torch.cuda.is_bf16_supported(),
                }
            )
    return {
        "cuda": torch.version.cuda,
        "cuda_devices": devices,
        "mps": bool(torch.backends.mps.is_available()),
    }


def environment() -> dict[str, object]:
    """The `env` record (docs/OUTPUT.md)."""
    cached = cached_models()
    return {
        "uniformer": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "cpu": cpu_record(),
        "gpu": gpu_record(),
        "threads": {"torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads()},
        "cache": {
            "home": str(cache_home()),
            "hub_cache": str(constants.HF_HUB_CACHE),
            "size_bytes": cache_size(),
            "models": len(cached),
            "offline": bool(constants.HF_HUB_OFFLINE),
        },
        "settings": settings(),
    }
