"""Process settings for CPU inference that must be made before torch loads: one place, applied by the
CLI at start-up; Python users call `uniformer_cli.configure_runtime()` before their first `import torch`.

- OpenMP threads that sleep when idle (`OMP_WAIT_POLICY=PASSIVE`) instead of spinning: on a machine
  doing other work, a spinning thread steals the core that the thread everyone waits for needs, and each
  of the ~400 parallel regions of a forward pass then waits for a descheduled thread. libgomp reads the
  variable once, when torch loads it; a value the user set is kept.
- glibc malloc keeps freed large blocks (`M_MMAP_THRESHOLD` at its maximum, `M_TRIM_THRESHOLD` high):
  otherwise every activation above the (adaptive) mmap threshold is mapped fresh from the kernel and
  page-faulted on each forward pass, then unmapped. Made through `mallopt`, so it also works after
  start-up; skipped where the C library is not glibc.

See benchmarks/README.md for what each setting measured.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

THREAD_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
# mallopt parameters (malloc.h) and values: blocks up to 32 MiB (glibc's largest mmap threshold on 64-bit)
# come from the heap and are reused; the heap top is returned to the kernel only beyond 512 MiB.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 512 * 2**20


def configure_threads(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set `THREAD_DEFAULTS` the user has not set; returns what was set. Has no effect on OpenMP once
    torch is loaded (then nothing is set)."""
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules:
        return {}
    applied = {key: value for key, value in THREAD_DEFAULTS.items() if key not in environ}
    environ.update(applied)
    return applied


@functools.cache
def keep_large_blocks() -> bool:
    """Tell glibc malloc to keep freed blocks up to `MMAP_THRESHOLD` for reuse (see the module doc).
    False where there is no glibc, or a `MALLOC_*` variable shows the user chose their own settings.
    Done once per process. (The crashes once blamed on these settings came from OpenVINO's signal
    stacks, see `engine.export.openvino_core`: the thresholds only decided where they landed.)"""
    if sys.platform != "linux" or any(key.startswith("MALLOC_") for key in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def configure_runtime() -> None:
    """Both settings; call it before importing torch (the `uniformer` command does)."""
    configure_threads()
    keep_large_blocks()


CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as Linux describes it in /proc/cpuinfo (elsewhere: its name from `platform`, no flags)."""

    model: str
    flags: frozenset[str]


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU model and feature flags (x86 `flags`, Arm `Features`), read once."""
    model, flags = "", frozenset[str]()
    if sys.platform == "linux":
        try:
            text = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and not model:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = frozenset(value.split())
    if not model:
        import platform

        model = platform.processor() or platform.machine()
    return CpuInfo(model, flags)
