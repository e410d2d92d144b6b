"""`runtime.cpu_info`: the CPU's model name and features, read without torch."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from uniformer_cli import runtime
from uniformer_cli.runtime import FEATURES, CpuInfo, _from_cpuinfo, cpu_info

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse avx2 avx512f avx512_bf16
processor\t: 1
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse avx2 avx512f avx512_bf16
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16 i8mm
CPU implementer\t: 0x41
"""


def test_x86_and_arm_cpuinfo_give_the_model_and_features() -> None:
    x86 = _from_cpuinfo(X86)
    assert x86.model == "AMD EPYC 9B14 (family 25, model 17)"
    assert x86.features == ("AVX512-BF16", "AVX-512", "AVX2")
    assert x86.native_bf16
    arm = _from_cpuinfo(ARM)
    assert arm.features == ("Arm BF16", "Arm NEON") and arm.native_bf16
    assert arm.model  # Arm kernels print no model name: the platform's stands in
    plain = _from_cpuinfo("flags : fpu sse avx2\n")
    assert plain.features == ("AVX2",) and not plain.native_bf16
    assert "AVX2" in plain.describe()


@given(st.text())
def test_any_cpuinfo_text_reads_without_error(text: str) -> None:
    info = _from_cpuinfo(text)
    assert isinstance(info, CpuInfo) and info.model
    assert set(info.features) <= set(FEATURES)


@given(st.sets(st.sampled_from(sorted(set().union(*FEATURES.values()) | {"sse", "fpu", "aes"}))))
def test_features_follow_the_flags_and_the_fingerprint_them(flags: set[str]) -> None:
    info = CpuInfo("some CPU", frozenset(flags))
    assert set(info.features) == {name for name, shown_by in FEATURES.items() if shown_by & flags}
    assert info.fingerprint() == CpuInfo("some CPU", frozenset(flags)).fingerprint()
    assert info.fingerprint() != CpuInfo("another CPU", frozenset(flags)).fingerprint()


def test_this_machine_is_described_without_importing_torch() -> None:
    probe = "import sys; from uniformer_cli import runtime as r; print(r.cpu_info().describe(), 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines == [f"{cpu_info().describe()} False"]
    assert runtime.cpu_info() is cpu_info()  # read once
