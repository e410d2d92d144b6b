"""The README's set-up step (`install_torch.py`): the CPU build where no NVIDIA GPU is, PyPI's build with one
(and on macOS), the version CI tests, and an installed torch left alone."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_torch", ROOT / "install_torch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


script = load_script()


@pytest.mark.parametrize(
    ("system", "nvidia", "build"),
    [
        ("Linux", False, "cpu"),
        ("Linux", True, "pypi"),
        ("Windows", False, "cpu"),
        ("Windows", True, "cpu"),  # PyPI has no CUDA build for Windows: the note says where it is
        ("Darwin", False, "pypi"),
        ("Darwin", True, "pypi"),
        ("FreeBSD", False, "cpu"),
    ],
)
def test_the_build_follows_the_machine(system: str, nvidia: bool, build: str) -> None:
    chosen = script.plan(system, nvidia, None)
    assert chosen.build == build
    assert chosen.pip_arguments[0] == f"torch=={script.TESTED}"
    assert ("--index-url" in chosen.pip_arguments) == (build == "cpu")
    if build == "cpu":
        assert chosen.pip_arguments[-1] == "https://download.pytorch.org/whl/cpu"
    if system == "Windows" and nvidia:
        assert "get-started" in chosen.reason


def test_an_installed_torch_is_left_alone_and_choices_override() -> None:
    for system, nvidia in (("Linux", False), ("Linux", True), ("Darwin", False)):
        chosen = script.plan(system, nvidia, "2.9.1+cu128")
        assert (chosen.build, chosen.pip_arguments) == ("installed", ())
        assert "2.9.1+cu128" in chosen.reason
    assert script.plan("Linux", True, None, choice="cpu").build == "cpu"
    assert script.plan("Linux", False, None, choice="pypi").pip_arguments == (f"torch=={script.TESTED}",)
    assert script.plan("Linux", False, None, version=">=2.5").pip_arguments[0] == "torch>=2.5"


def test_the_tested_version_is_the_one_ci_installs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python install_torch.py" in ci and "torch==" not in ci  # CI runs the README's step itself
    assert script.TESTED in (ROOT / "README.md").read_text()


def test_the_script_runs_here_and_keeps_this_torch() -> None:
    """This environment has torch: the step says so and installs nothing."""
    import torch

    done = subprocess.run(
        [sys.executable, str(ROOT / "install_torch.py")], capture_output=True, text=True, timeout=60, check=True
    )
    assert re.fullmatch(rf"torch {re.escape(torch.__version__)} is installed: left as it is\n", done.stdout)


def test_a_dry_run_prints_the_pip_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(script, "installed_torch", lambda: None)
    monkeypatch.setattr(script, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(script.platform, "system", lambda: "Linux")
    monkeypatch.setattr(script.subprocess, "call", lambda command: pytest.fail(f"ran {command}"))
    assert script.main(["--dry-run", "-q"]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"installing the CPU build, from PyTorch's CPU index (no NVIDIA GPU here): -m pip install --quiet "
        f"torch=={script.TESTED} --index-url https://download.pytorch.org/whl/cpu\n"
    )
