"""Hostile and faulty input, through the CLI: every case ends in one `error:` line with exit status 1, no
traceback, in bounded time and memory.

The files are made here, small: checkpoints whose metadata or tensors claim far more than they hold,
malformed configs, complex weights, a text file named .pth, an empty training checkpoint; options out of
range; destinations that cannot be written. The cases run in one child process (the imports are paid
once) under an address-space limit (`RLIMIT_AS`), so a case that tried to allocate what a file claims
fails there instead of succeeding on a large machine; each case is timed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from eval_data import TINY, colour_model, flat_video
from safetensors.torch import save_file

from uniformer_cli import files
from uniformer_cli.data.loading import decoding_workers
from uniformer_cli.errors import UniformerError, WriteError
from uniformer_cli.files import ensure_writable, remove_stale_temporaries
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.weights import save_weights

# Address space of the child: torch, PyAV and decord map about 0.8 GiB after import; a tiny model and
# video need little more. A hostile file that got its way would ask for hundreds of GiB.
ADDRESS_SPACE = 4 * 2**30
USAGE_ERRORS = {"train --device tpu"}  # Typer's choice check
CASE_SECONDS = 20.0  # each case, import excluded; the cases here take well under a second
PROTOCOL = ["--frames", "4", "--stride", "1", "--size", "32"]

DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, sys, time, traceback
    from uniformer_cli.cli.app import main
    results = []
    for argv in json.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
                code = 0
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            except BaseException:
                code, err = -1, io.StringIO(err.getvalue() + traceback.format_exc())
        results.append({"code": code, "out": out.getvalue(), "err": err.getvalue(),
                        "seconds": time.perf_counter() - started})
    print(json.dumps(results))
    """
)


def limit_resources() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_cases(cases: list[list[str]], cwd: Path) -> list[dict[str, object]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "COLUMNS": "200"}
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(cases)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        preexec_fn=limit_resources,
        timeout=60 + CASE_SECONDS * len(cases),
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = json.loads(finished.stdout.strip().splitlines()[-1])
    assert time.perf_counter() - started < 60 + CASE_SECONDS * len(cases)
    return results


# --- hostile files -----------------------------------------------------------------------------------


def tiny_state() -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in colour_model().state_dict().items()}


def safetensors_with_config(path: Path, **changes: object) -> Path:
    """A tiny model's tensors under a metadata config that claims something else."""
    config = json.loads(TINY.replace(num_classes=8).to_json())
    config.update(changes)
    save_file(tiny_state(), str(path), metadata={"format": "pt", "uniformer_config": json.dumps(config)})
    return path


def expanded_head_pth(path: Path) -> Path:
    """1 stored head row viewed as 10**9 rows (stride 0): a small file that claims 10**9 classes."""
    state = tiny_state()
    state["head.weight"] = state["head.weight"][:1].expand(10**9, -1)
    state["head.bias"] = state["head.bias"][:1].expand(10**9)
    torch.save(state, path)
    return path


def complex_pth(path: Path) -> Path:
    state = tiny_state()
    state["head.weight"] = torch.complex(state["head.weight"], torch.ones_like(state["head.weight"]))
    torch.save(state, path)
    return path


def build_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(case, argv, what the error line must say). A usage error (a value outside an option's choices)
    exits 2, any other failure 1."""
    video = flat_video(tmp / "clip.mp4", (200, 128, 30), frames=8)
    good = save_weights(tmp / "good.safetensors", colour_model(), TINY.replace(num_classes=8))
    (tmp / "text.pth").write_text("hello world\n")
    (tmp / "run").mkdir()
    (tmp / "run" / "last.pt").write_bytes(b"")
    (tmp / "a-file").write_text("not a folder")
    truncated = tmp / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for split in ("train", "val"):
        for label in ("a", "b"):
            (tmp / "data" / split / label).mkdir(parents=True)
            (tmp / "data" / split / label / "clip.mp4").write_bytes(video.read_bytes())
    predict = ["predict", str(video), *PROTOCOL, "--weights"]
    train = ["train", "--data", str(tmp / "data"), "--scratch", "--arch", "xxs", "--frames", "4", "--size", "32"]
    return [
        ("text .pth", [*predict, str(tmp / "text.pth")], r"text.pth is not a readable PyTorch checkpoint \(corrupt"),
        (
            "num_classes 10**9 in metadata",
            [*predict, str(safetensors_with_config(tmp / "classes.safetensors", num_classes=10**9))],
            "num_classes 1000000000 is out of range",
        ),
        (
            "width 128*8192 in metadata",
            [*predict, str(safetensors_with_config(tmp / "width.safetensors", embed_dim=[8, 8, 16, 128 * 8192]))],
            "width of stage 4 1048576 is out of range",
        ),
        (
            "depth 10**6 in metadata",
            [*predict, str(safetensors_with_config(tmp / "depth.safetensors", depth=[1, 1, 10**6, 1]))],
            "depth of stage 3 1000000 is out of range",
        ),
        (
            "depth 'abcd'",
            [*predict, str(safetensors_with_config(tmp / "abcd.safetensors", depth="abcd"))],
            "depth must be a list",
        ),
        (
            "head_dim 0",
            [*predict, str(safetensors_with_config(tmp / "head0.safetensors", head_dim=0))],
            "head_dim 0 is out of range",
        ),
        (
            "mlp_ratio 1e12",
            [*predict, str(safetensors_with_config(tmp / "mlp.safetensors", mlp_ratio=1e12))],
            r"mlp_ratio 1e\+12 is out of range",
        ),
        (
            "num_classes -1",
            [*predict, str(safetensors_with_config(tmp / "minus.safetensors", num_classes=-1))],
            "num_classes -1 is out of range",
        ),
        (
            "metadata config that the tensors do not hold",
            [*predict, str(safetensors_with_config(tmp / "more.safetensors", num_classes=5000))],
            r"does not fit .* keys of another shape \(file vs model\) \(head.weight \[8, 16\] vs \[5000, 16\]",
        ),
        (
            ".pth head expanded to 10**9 rows",
            [*predict, str(expanded_head_pth(tmp / "expanded.pth")), "--head-dim", "8"],
            r"tensor head.weight \[1000000000, 16\] claims 16,000,000,000 values but the file stores \d+ for it",
        ),
        (
            "complex weights",
            [*predict, str(complex_pth(tmp / "complex.pth")), "--head-dim", "8"],
            "unsupported element type .*head.weight complex64",
        ),
        ("truncated safetensors", [*predict, str(truncated)], "is not a readable safetensors file"),
        (
            "--frames 100000",
            ["predict", str(video), "--weights", str(good), "--frames", "100000", "--stride", "1"],
            "frames 100000 is out of range",
        ),
        ("--size 100000", [*predict, str(good), "--size", "100000"], "size 100000 is out of range"),
        ("--timeline inf", [*predict, str(good), "--timeline", "inf"], "positive, finite window length"),
        (
            "train --resume with a 0-byte last.pt",
            ["train", "--resume", str(tmp / "run")],
            r"cannot read training checkpoint .*last.pt \(the file is empty\)",
        ),
        ("train --device tpu", [*train, "--dry-run", "--device", "tpu"], "'tpu' is not one of"),
        (
            "train --randaug rand-mX-nY",
            [*train, "--dry-run", "--randaug", "rand-mX-nY"],
            "bad RandAugment spec 'rand-mX-nY'",
        ),
        (
            "train -o under a file",
            [*train, "-o", str(tmp / "a-file" / "run"), "--max-steps", "1"],
            r"cannot write training checkpoint .*a-file is a file, not a folder",
        ),
        (
            "convert into a path under a file",
            ["convert", str(expanded_head_pth(tmp / "src.pth")), str(tmp / "a-file" / "out.safetensors")],
            r"cannot write converted weights .*a-file is a file, not a folder",
        ),
        (
            "predict --csv under a file",
            [*predict, str(good), "--csv", str(tmp / "a-file" / "out.csv")],
            r"cannot write CSV output .*a-file is a file, not a folder",
        ),
        (
            "eval -o under a file",
            [
                "eval",
                "--dataset",
                "csv",
                "--list",
                str(tmp / "list.csv"),
                "--weights",
                str(good),
                *PROTOCOL,
                "-o",
                str(tmp / "a-file" / "report.json"),
            ],
            r"cannot write JSON output .*a-file is a file, not a folder",
        ),
    ]


def test_hostile_cases_end_in_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("clip.mp4,1\n")
    cases = build_cases(tmp_path)
    results = run_cases([argv for _, argv, _ in cases], tmp_path)
    failures = []
    for (name, _, message), result in zip(cases, results, strict=True):
        err = str(result["err"])
        lines = err.strip().splitlines()
        problems = []
        if result["code"] != (2 if name in USAGE_ERRORS else 1):
            problems.append(f"exit status {result['code']}")
        if "Traceback" in err:
            problems.append("a traceback")
        if len(lines) != 1 or not lines[0].startswith("error:"):
            problems.append(f"{len(lines)} lines")
        elif not re.search(message, lines[0]):
            problems.append("another message")
        if float(result["seconds"]) > CASE_SECONDS:  # type: ignore[arg-type]
            problems.append(f"{result['seconds']:.1f} s")
        if problems:
            failures.append(f"{name}: {', '.join(problems)}: {err[-600:]}")
    assert not failures, "\n".join(failures)


# --- writes that fail late -----------------------------------------------------------------------------


def test_a_checkpoint_that_cannot_be_written_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uniformer_cli.engine.checkpointing import load_checkpoint, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(WriteError, match=r"last.pt: the disk is full; the previous last.pt is intact"):
        save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_destinations_are_checked_before_work(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="is a file, not a folder"):
        ensure_writable(tmp_path / "file" / "deeper" / "out.json")
    with pytest.raises(WriteError, match="it is a folder"):
        ensure_writable(tmp_path)
    with pytest.raises(WriteError, match=r"needs about .* MiB"):
        ensure_writable(tmp_path / "big.bin", needed_bytes=2**62)
    assert ensure_writable(tmp_path / "new" / "folder" / "out.json") == tmp_path / "new" / "folder" / "out.json"
    assert not (tmp_path / "new").exists()  # checked, not created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe file is gone


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead, live = 2**22 + 17, os.getppid()
    stale = tmp_path / f".last.pt.{dead}.0123abcd.tmp"
    running = tmp_path / f".last.pt.{live}.0123abcd.tmp"
    old = tmp_path / f".last.pt.{live}.89abcdef.tmp"
    mine = tmp_path / f".last.pt.{os.getpid()}.0123abcd.tmp"
    other = tmp_path / ".notes.tmp"
    for path in (stale, running, old, mine, other):
        path.write_text("partial")
        os.utime(path, (time.time() - 60, time.time() - 60))
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([stale, old])
    assert running.exists() and mine.exists() and other.exists()


def test_workers_are_capped_at_the_cores(caplog: pytest.LogCaptureFixture) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert decoding_workers(1000) == cores
    assert "more than the" in caplog.text
    assert decoding_workers(0) == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"depth": (1, 1, 129, 1)}, "depth of stage 3 129 is out of range"),
        ({"num_classes": 0}, "num_classes 0 is out of range"),
        ({"mlp_ratio": float("nan")}, "mlp_ratio must be a finite number"),
        ({"head_dim": 3}, "width 16 is not a multiple of head_dim 3"),
        ({"qkv_bias": "yes"}, "qkv_bias must be true or false"),
        ({"drop_path_rate": 1.5}, "drop_path_rate 1.5 is out of range"),
    ],
)
def test_model_configs_are_bounded(changes: dict[str, object], message: str) -> None:
    with pytest.raises(UniformerError, match=message):
        TINY.replace(**changes)
    with pytest.raises(UniformerError, match="must be a JSON object"):
        ModelConfig.from_json("[1, 2]")


def test_eval_keeps_its_results_when_the_report_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flat_video(tmp_path / "clip.mp4", (200, 128, 30), frames=8)
    weights = save_weights(tmp_path / "tiny.safetensors", colour_model(), TINY.replace(num_classes=8))
    (tmp_path / "list.csv").write_text("clip.mp4,1\n")
    target = tmp_path / "out" / "report.json"
    real = files.atomic_write

    def full_disk(path: str | Path, write: Callable[[Path], object]) -> None:
        if Path(path) == target:  # the disk fills while the evaluation runs
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, write)

    monkeypatch.setattr(files, "atomic_write", full_disk)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "safe"))
    (tmp_path / "safe").mkdir()
    args = ["eval", "--dataset", "csv", "--list", tmp_path / "list.csv", "--weights", weights, *PROTOCOL, "-o", target]
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write evaluation report {target}: the disk is full; the results were saved")
    (saved,) = (tmp_path / "safe").iterdir()
    assert str(saved) in last
    assert "clip.mp4" in saved.read_text()  # the per-video results, not only the summary


def test_a_storage_failure_anywhere_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from uniformer_cli.engine import convert

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "out.safetensors"))

    monkeypatch.setattr(convert, "convert", full_disk)
    code, _, err = run_cli(capsys, "convert", tmp_path / "in.pth", tmp_path / "out.safetensors")
    assert (code, err.strip()) == (1, f"error: {tmp_path / 'out.safetensors'}: the disk is full")


def test_a_resumed_checkpoint_is_checked_against_its_config_before_allocation(tmp_path: Path) -> None:
    from uniformer_cli.engine.checkpointing import load_checkpoint, save_checkpoint

    state = tiny_state()
    state["head.weight"] = state["head.weight"][:1].expand(10**9, -1)
    save_checkpoint({"model": state, "step": 3}, tmp_path / "last.pt")
    with pytest.raises(UniformerError, match=r"tensor head.weight \[1000000000, 16\] claims"):
        load_checkpoint(tmp_path / "last.pt")
