"""Install the PyTorch build that fits this machine, before `pip install .` (the README's first step).

PyPI's torch for Linux is the CUDA build (gigabytes of CUDA libraries a machine without an NVIDIA GPU
never uses), so where there is no NVIDIA GPU this installs the CPU build from PyTorch's CPU index; with an
NVIDIA GPU (Linux), and on macOS (Apple GPUs through MPS), PyPI's own build. A torch that is already
installed is left alone: install another build first (https://pytorch.org/get-started/locally/) and this
keeps it. The version is the one CI tests (`TESTED`), unless `--version` says otherwise.

    python3 install_torch.py            # then: python3 -m pip install .
    python3 install_torch.py --dry-run  # only print what it would run

Standard library only: it runs before anything of the package is installed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata

TESTED = "2.13.0"  # the torch that CI (.ci/run) installs and tests
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
GET_STARTED = "https://pytorch.org/get-started/locally/"


@dataclass(frozen=True)
class Plan:
    """What to install (`build`, and the pip arguments) or nothing, and why."""

    build: str  # "cpu", "pypi" or "installed"
    pip_arguments: tuple[str, ...]
    reason: str


def installed_torch() -> str | None:
    """The installed torch's version (without importing it), or None."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver is loaded (Linux) or its tool is on the PATH (any system)."""
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def plan(system: str, nvidia: bool, installed: str | None, version: str = TESTED, choice: str = "auto") -> Plan:
    """The install for a machine: `system` as `platform.system()` names it, whether it has an NVIDIA GPU,
    the torch already installed, the version wanted and the build asked for (auto, cpu, pypi)."""
    if installed is not None:
        return Plan("installed", (), f"torch {installed} is installed: left as it is")
    requirement = f"torch=={version}" if version[0].isdigit() else f"torch{version}"
    cpu = Plan("cpu", (requirement, "--index-url", CPU_INDEX), "the CPU build, from PyTorch's CPU index")
    pypi = Plan("pypi", (requirement,), "PyPI's build")
    if choice == "cpu":
        return cpu
    if choice == "pypi":
        return pypi
    if system == "Darwin":
        return Plan("pypi", pypi.pip_arguments, "PyPI's build: CPU and Apple GPUs (MPS)")
    if system == "Linux" and nvidia:
        return Plan("pypi", pypi.pip_arguments, "PyPI's CUDA build, for the NVIDIA GPU")
    if system == "Windows" and nvidia:
        return Plan(
            "cpu",
            cpu.pip_arguments,
            f"the CPU build: PyPI has no CUDA build for Windows; for the GPU, install torch from the CUDA "
            f"index {GET_STARTED} gives for your driver, then run this again (it keeps an installed torch)",
        )
    return Plan("cpu", cpu.pip_arguments, "the CPU build, from PyTorch's CPU index (no NVIDIA GPU here)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the pip command instead of running it")
    parser.add_argument(
        "--build", choices=("auto", "cpu", "pypi"), default="auto", help="cpu or PyPI's build (default: by GPU)"
    )
    parser.add_argument("--version", default=TESTED, help=f"a version or a specifier such as '>=2.5' ({TESTED})")
    parser.add_argument("-q", "--quiet", action="store_true", help="pass --quiet to pip")
    options = parser.parse_args(argv)
    chosen = plan(platform.system(), has_nvidia_gpu(), installed_torch(), options.version, options.build)
    if not chosen.pip_arguments:
        print(chosen.reason)
        return 0
    command = [sys.executable, "-m", "pip", "install", *(["--quiet"] if options.quiet else []), *chosen.pip_arguments]
    print(f"installing {chosen.reason}: {' '.join(command[1:])}", flush=True)
    if options.dry_run:
        return 0
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
