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
def test_malloc_keeps_large_blocks_unless_the_user_tuned_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [key for key in os.environ if key.startswith("MALLOC_")]:
        monkeypatch.delenv(key)
    assert runtime.keep_large_blocks() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert runtime.keep_large_blocks() is False
