"""Process settings the CLI makes before torch loads (issue 12): passive OpenMP waiting unless the user
chose, glibc keeping large blocks. What they buy is measured in benchmarks/bench_engines.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from uniformer_cli import runtime


def test_thread_defaults_fill_only_what_the_user_left_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh `uniformer` process
    environ: dict[str, str] = {}
    assert runtime.configure_threads(environ) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    chosen = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert runtime.configure_threads(chosen) == {}
    assert chosen == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_nothing_is_set_once_torch_is_loaded() -> None:
    import torch  # noqa: F401  (loaded: OpenMP has read its settings)

    environ: dict[str, str] = {}
    assert runtime.configure_threads(environ) == {} and environ == {}


def test_the_command_sets_them_before_torch_loads() -> None:
    """In a fresh process, `main` runs before any command imports torch, and libgomp sees the value."""
    probe = (
        "import os, sys; from uniformer_cli.cli import app; "
        "app.configure_runtime(); assert 'torch' not in sys.modules; import torch; "
        "print(os.environ['OMP_WAIT_POLICY'])"
    )
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["PASSIVE"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_keeps_large_blocks_unless_the_user_tuned_it() -> None:
    """In fresh processes (this one's thresholds were set, or not, by whichever test called first)."""
    probe = (
        "import sys; from uniformer_cli import runtime; print(runtime.keep_large_blocks(), runtime.keep_large_blocks())"
    )
    clean = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    cases = [
        (clean, probe, "True True"),  # the second call does nothing more (cached)
        ({**clean, "MALLOC_ARENA_MAX": "2"}, probe, "False False"),
        (clean, "import openvino; " + probe, "True True"),  # OpenVINO loaded first changes nothing
    ]
    for environment, code, expected in cases:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected
