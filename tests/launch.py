"""Running the `uniformer` CLI in fresh processes, alone or as a `torchrun` job (for the distributed tests)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_uniformer(
    *args: str, processes: int = 1, timeout: float = 300, script: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`uniformer ARGS` in a subprocess, or in `processes` torchrun workers (standalone rendezvous); with
    `script`, that Python file runs instead of the CLI module and gets ARGS.

    Every process gets one thread, as torchrun gives each of its workers: a busy second core would slow
    a two-thread process by orders of magnitude.
    """
    command = [sys.executable]
    if processes > 1:
        command += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command += [script] if script is not None else ["-m", "uniformer_cli.cli.app"]
    command += args
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, check=False)
