"""Two machines, played by two torchrun launchers on 127.0.0.1: docs/TRAINING.md's sbatch script, run as
it is with stand-ins for Slurm's `srun` and `scontrol`, trains on packed shards with c10d rendezvous;
one "node" is killed mid-epoch, the job is requeued and resumes, and the run ends with the weights of
one process that accumulates the same global batches."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launch import run_uniformer
from motion_data import motion_dataset, tiny_flags
from storage_servers import free_port

from uniformer_cli.engine.checkpointing import load_checkpoint
from uniformer_cli.engine.packing import PackRequest, pack

DOCS = Path(__file__).parents[1] / "docs" / "TRAINING.md"
WEIGHT_TOLERANCE = 1e-5  # as tests/test_train_distributed.py: DDP and accumulation differ in summation order
LOSS_TOLERANCE = 1e-5
# 12 training videos, 2 per process and step: 3 steps an epoch; a checkpoint every 2 steps.
FLAGS = [*tiny_flags(), "--no-flip", "--epochs", "3", "--batch-size", "2", "--save-every", "2"]
RUNTIME = "--workers 0 --log-every 1 --json"

# `srun` on one machine: the command once per node, each in a session of its own (so that a test can
# kill one "node" whole: its torchrun and the processes it started), logs and pids in $NODES.
SRUN = """#!/usr/bin/env bash
pids=()
for node in $(seq 0 $((SLURM_NNODES - 1))); do
    SLURM_NODEID=$node setsid "$@" > "$NODES/node$node.out" 2> "$NODES/node$node.err" &
    pids+=($!)
    echo $! > "$NODES/node$node.pid"
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""
SCONTROL = "#!/usr/bin/env bash\necho 127.0.0.1\n"


def sbatch_script() -> str:
    """The sbatch script of docs/TRAINING.md, as a user copies it."""
    block = DOCS.read_text(encoding="utf-8").split("<!-- sbatch:start")[1].split("<!-- sbatch:end")[0]
    return block.split("```bash\n", 1)[1].split("```", 1)[0]


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [record["loss"] for record in records if record["event"] == "step"]


def _logged_steps(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().split("\n")[:-1] if metrics.exists() else []  # not a line being written
    return max((json.loads(line)["step"] for line in lines), default=0)


class Job:
    """`sbatch` of the script on two "nodes" of this machine."""

    def __init__(self, tmp_path: Path, data: Path, run: Path) -> None:
        self.script = tmp_path / "train.sbatch"
        self.script.write_text(sbatch_script())
        bin_folder = tmp_path / "slurm-bin"
        bin_folder.mkdir()
        for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
            (bin_folder / name).write_text(text)
            (bin_folder / name).chmod(0o755)
        self.nodes = tmp_path / "nodes"
        self.nodes.mkdir()
        self.environment = {
            **os.environ,
            "PATH": f"{bin_folder}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "OMP_NUM_THREADS": "1",
            "SLURM_NNODES": "2",
            "SLURM_JOB_NODELIST": "node[0-1]",
            "SLURM_JOB_ID": "4242",
            "NODES": str(self.nodes),
            "DATA": str(data),
            "RUN": str(run),
            "PROCS_PER_NODE": "1",
            "RUNTIME": RUNTIME,
        }
        self.restarts = 0

    def start(self) -> subprocess.Popen[str]:
        environment = {**self.environment, "PORT": str(free_port()), "SLURM_RESTART_COUNT": str(self.restarts)}
        self.restarts += 1
        return subprocess.Popen(
            ["bash", str(self.script), *FLAGS],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def logs(self) -> str:
        return "\n".join(path.read_text()[-3000:] for path in sorted(self.nodes.glob("node*.err")))

    def result(self) -> dict[str, object]:
        """What rank 0 printed (`--json`): the other node prints nothing."""
        printed = [text for path in sorted(self.nodes.glob("node*.out")) if (text := path.read_text().strip())]
        assert len(printed) == 1, printed
        return json.loads(printed[0])

    def kill_node(self, node: int) -> None:
        """SIGKILL a node's torchrun and every process below it (torchrun starts its workers in
        sessions of their own), as a machine that fails takes them all at once."""
        launcher = int((self.nodes / f"node{node}.pid").read_text())
        for pid in reversed(_process_tree(launcher)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, parents first (Linux /proc)."""
    found, position = [pid], 0
    while position < len(found):
        for task in Path(f"/proc/{found[position]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                found.extend(int(child) for child in task.read_text().split())
        position += 1
    return found


@pytest.mark.slow
def test_two_nodes_train_on_shards_survive_a_lost_node_and_resume_to_the_single_process_weights(
    tmp_path: Path,
) -> None:
    data = motion_dataset(tmp_path / "motion", 3, 1)
    shards = tmp_path / "shards"
    pack(PackRequest(data, shards, shard_bytes=30_000))
    reference = tmp_path / "reference"
    single = run_uniformer(
        "train", "--data", str(shards), "-o", str(reference), *FLAGS, *RUNTIME.split(), "--accum-steps", "2"
    )
    assert single.returncode == 0, single.stderr[-3000:]

    run = tmp_path / "run"
    job = Job(tmp_path, shards, run)
    first = job.start()
    deadline = time.monotonic() + 300
    while _logged_steps(run) < 4 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.poll() is None, f"the job ended before a node could be lost: {job.logs()}"
    job.kill_node(1)
    first.communicate(timeout=300)
    assert first.returncode != 0, "the job must fail when a node is lost"
    saved = load_checkpoint(run / "last.pt")["step"]
    assert 0 < saved < 9, saved  # the last checkpoint before the loss: an epoch end or a periodic one

    requeued = job.start()  # the script finds last.pt and resumes
    _, errors = requeued.communicate(timeout=300)
    assert requeued.returncode == 0, f"{errors[-2000:]}\n{job.logs()}"
    result = job.result()
    assert result["steps"] == 9 and not result["stopped_early"]

    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and config["data"] == str(shards)
    losses, expected = _losses(run), _losses(reference)
    assert len(losses) == len(expected) == 9  # every step once: the lost node's unsaved steps were replaced
    assert losses == pytest.approx(expected, rel=LOSS_TOLERANCE)
    ours, theirs = load_checkpoint(run / "last.pt")["model"], load_checkpoint(reference / "last.pt")["model"]
    parameters = [name for name in ours if "running_" not in name and "num_batches" not in name]
    assert max((ours[name] - theirs[name]).abs().max().item() for name in parameters) <= WEIGHT_TOLERANCE
