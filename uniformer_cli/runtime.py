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
import hashlib
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

# What this CPU is, read without torch: its model name and the vector / matrix features that decide which
# kernels and which engine run fastest on it (benchmarks print them with every table, `uniformer env`
# reports them, and `--engine auto` keys its measurements by them). Feature names as printed, and the
# flags (x86 /proc/cpuinfo, Arm `Features`, macOS `hw.optional.arm.FEAT_*`) that show each:
FEATURES = {
    "AMX": frozenset({"amx_bf16", "amx_tile", "amx_int8"}),
    "AVX512-BF16": frozenset({"avx512_bf16"}),
    "AVX-512": frozenset({"avx512f"}),
    "AVX2": frozenset({"avx2"}),
    "Arm BF16": frozenset({"bf16", "FEAT_BF16"}),
    "Arm NEON": frozenset({"asimd", "neon", "AdvSIMD"}),
}
# Native bf16 arithmetic (x86: AVX512-BF16, AMX; Arm: the BF16 extension); elsewhere it is emulated.
NATIVE_BF16 = frozenset({"AMX", "AVX512-BF16", "Arm BF16"})


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as Linux describes it in /proc/cpuinfo, or macOS through `sysctl` (elsewhere: its name
    from `platform`, no flags)."""

    model: str
    flags: frozenset[str]

    @property
    def features(self) -> tuple[str, ...]:
        """The `FEATURES` this CPU has, in their order."""
        return tuple(name for name, shown_by in FEATURES.items() if shown_by & self.flags)

    @property
    def native_bf16(self) -> bool:
        return bool(NATIVE_BF16.intersection(self.features))

    def describe(self) -> str:
        """`model (features; N logical CPUs)`, the line benchmarks print."""
        features = ", ".join(self.features) or "no AVX2 / AVX-512 / AMX / NEON reported"
        return f"{self.model} ({features}; {os.cpu_count()} logical CPUs)"

    def fingerprint(self) -> str:
        """A short stable id of the model name and features, for per-machine cache records."""
        text = f"{self.model}|{','.join(self.features)}|{os.cpu_count()}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _platform_name() -> str:
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def _from_cpuinfo(text: str) -> CpuInfo:
    """The first processor's entry of /proc/cpuinfo; x86 family and model numbers join the name (virtual
    machines often report a bare "AMD EPYC", which spans several generations)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = next((fields[key] for key in ("model name", "Model", "Hardware") if fields.get(key)), "")
    model = model or _platform_name()
    family, number = fields.get("cpu family", ""), fields.get("model", "")
    if family.isdigit() and number.isdigit():
        model = f"{model} (family {family}, model {number})"
    return CpuInfo(model, frozenset((fields.get("flags") or fields.get("Features") or "").split()))


def _from_sysctl() -> CpuInfo:
    import subprocess

    def sysctl(*names: str) -> str:
        try:
            done = subprocess.run(["sysctl", *names], capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout

    flags = set()
    for line in sysctl("hw.optional").splitlines():
        name, _, value = line.partition(":")
        if value.strip() == "1":
            flags.add(name.strip().rpartition(".")[2])  # hw.optional.arm.FEAT_BF16 -> FEAT_BF16
    return CpuInfo(sysctl("-n", "machdep.cpu.brand_string").strip() or _platform_name(), frozenset(flags))


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU model and feature flags (x86 `flags`, Arm `Features`, macOS `hw.optional`),
    read once."""
    if sys.platform == "linux":
        try:
            return _from_cpuinfo(CPUINFO.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            pass
    elif sys.platform == "darwin":
        return _from_sysctl()
    return CpuInfo(_platform_name(), frozenset())


def _thread_setting(name: str) -> int | None:
    """A positive thread count from an OpenMP-style variable (`4`, or `4,2` for nested levels)."""
    value = os.environ.get(name, "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _physical_cores(cpus: set[int]) -> int:
    """The distinct cores under the logical CPUs `cpus` (SMT siblings counted once), by sysfs; the
    CPUs themselves where the topology cannot be read."""
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            cores.add((package, (topology / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def torch_threads() -> int | None:
    """The intra-op thread count torch will start with in this process, known without importing it
    (what `torch.get_num_threads()` reports before anyone sets it; tests/test_torch_free.py holds the two
    equal): MKL_NUM_THREADS, else OMP_NUM_THREADS, at most the logical CPUs; else the physical cores
    this process may run on. None where that rule is not known to hold (other systems than Linux)."""
    if sys.platform != "linux":
        return None
    asked = _thread_setting("MKL_NUM_THREADS") or _thread_setting("OMP_NUM_THREADS")
    if asked is not None:
        return min(asked, os.cpu_count() or asked)
    return _physical_cores(os.sched_getaffinity(0))
