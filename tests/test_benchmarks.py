"""benchmarks/gpu_check.sh has no GPU to run on in CI: it must at least parse, and its measuring part must
run end to end (on the CPU, tiny shapes: `--dry-run`), so that the first lent GPU gets figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_the_gpu_check_script_parses_and_refuses_unknown_arguments() -> None:
    subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_check.sh")], check=True)
    refused = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--fast"], capture_output=True, text=True)
    assert refused.returncode == 2 and "usage:" in refused.stderr


@pytest.mark.slow
def test_the_gpu_checks_measuring_part_runs_on_the_cpu() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--dry-run"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for part in ("== model throughput", "== predict", "== eval scoring", "== train steps", "gpu_check.py done"):
        assert part in done.stdout, (part, done.stdout)
    assert "FAILED" not in done.stdout, done.stdout
