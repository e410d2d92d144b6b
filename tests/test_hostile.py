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
import math
import os
import re
import resource
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from eval_data import CENTRES, TINY, colour_model, flat_video
from hub_server import LocalHub, serve_tiny_zoo_model
from huggingface_hub import constants
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from synthetic_video import shifted_mkv

from uniformer_cli import files
from uniformer_cli.data.loading import decoding_workers
from uniformer_cli.errors import UniformerError, VideoError, WriteError
from uniformer_cli.files import ensure_writable, remove_stale_temporaries
from uniformer_cli.models.config import ModelConfig
from uniformer_cli.weights import save_weights

# Address space of the child: torch, PyAV and decord map about 0.8 GiB after import; a tiny model and
# video need little more. A hostile file that got its way would ask for hundreds of GiB.
ADDRESS_SPACE = 4 * 2**30
# Typer's checks
USAGE_ERRORS = {
    "--timeline inf",
    "--timeline 1e308",
    "--fps inf",
    "features --dataset bogus",
    "train --device tpu",
    "predict -o a FIFO",
    "train --repeats 10**18",
    "train --seed -1",
    "flops --bench --batch-size 10**18",
}
INPUT_FAILURES = {
    "predict a FIFO",
    "a 4096x16 strip",
    "a 300-character file name",
}  # the command ran; that input failed (exit 3)
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


def sparse_pth(path: Path) -> Path:
    state = tiny_state()
    state["head.weight"] = state["head.weight"].to_sparse()
    torch.save(state, path)
    return path


def build_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(case, argv, what the error line must say). A usage error (a value outside an option's choices or
    range) exits 2, a failed input of a command that ran 3, any other failure 1."""
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
    device = special_file(tmp / "device.png", "device")
    fifo = special_file(tmp / "fifo.json", "fifo")
    sock = special_file(tmp / "s.npy", "socket")
    (tmp / "indexed.json").mkdir()
    (tmp / "loops").mkdir()
    for name in ("self", "again"):  # two links back: `**` through them never ends, unguarded
        (tmp / "loops" / name).symlink_to(".")
    strip = yuv_video(tmp / "strip.mp4", 4096, 16)
    predict = ["predict", str(video), *PROTOCOL, "--weights"]
    features = ["features", str(video), *PROTOCOL, "--weights"]
    # A copy of /dev/null as root; else a link to it, which counts as what it points to.
    kind = "it is a character device, not a regular file"
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
        (
            "--timeline inf",
            [*predict, str(good), "--timeline", "inf"],
            r"--timeline.*(less than or equal to 86400|x<=86400)",
        ),
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
        ("predict --plot onto a device", [*predict, str(good), "--timeline", "1", "--plot", str(device)], kind),
        ("predict -o a FIFO", [*predict, str(good), "-o", str(fifo)], "it is a named pipe"),
        ("features -o a socket", [*features, str(good), "-o", str(sock)], "it is a socket, not a regular file"),
        ("predict over loops of links", ["predict", str(tmp / "loops" / "**" / "*.mp4")], "no videos match"),
        ("predict a FIFO", [*predict, str(good), str(special_file(tmp / "pipe.mp4", "fifo"))], "not a regular file"),
        (
            "eval --list a FIFO",
            [
                "eval",
                "--dataset",
                "csv",
                "--list",
                str(special_file(tmp / "list.fifo", "fifo")),
                "-w",
                str(good),
                *PROTOCOL,
            ],
            r"cannot read .*list.fifo: it is a named pipe \(FIFO\), not a regular file",
        ),
        ("a 4096x16 strip", [*predict, str(good), str(strip)], r"4096x16 frames, an aspect ratio of 256:1"),
        (
            "train --repeats 10**18",
            [*train, "--dry-run", "--repeats", str(10**18)],
            r"--repeats.*(less than or equal to 16|x<=16)",
        ),
        ("train --seed -1", [*train, "--dry-run", "--seed", "-1"], r"--seed.*(greater than or equal to 0|0<=x)"),
        (
            "flops --bench --batch-size 10**18",
            ["flops", "--arch", "xxs", "--bench", "--batch-size", str(10**18)],
            r"--batch-size.*(less than or equal to 1024|x<=1024)",
        ),
        (
            "a sparse tensor in a .pth",
            [*predict, str(sparse_pth(tmp / "sparse.pth")), "--head-dim", "8"],
            r"tensor head.weight is a sparse tensor \(sparse_coo\), not a dense tensor",
        ),
        ("a 300-character file name", [*predict, str(good), str(tmp / ("n" * 300 + ".mp4"))], "the name is too long"),
        (
            "a 5000-character list path",
            ["eval", "--dataset", "csv", "--list", str(tmp.joinpath(*["d" * 200] * 25, "l.csv")), "-w", str(good)],
            r"/d+…d+/l\.csv \(5,\d{3} characters\): the name is too long",
        ),
        (
            "--fps inf",
            [*predict, str(good), "--timeline", "1", "--fps", "inf"],
            r"--fps.*(less than or equal to 10000|x<=10000)",
        ),
        ("--timeline 1e308", [*predict, str(good), "--timeline", "1e308"], r"--timeline.*(less than or equal|x<=)"),
        (
            "features --dataset bogus",
            ["features", "--dataset", "bogus", "-o", str(tmp / "f.npy"), "-w", str(good)],
            r"'bogus' is not one of 'k400'",
        ),
        (
            "features .npy whose index is a folder",
            [*features, str(good), "-o", str(tmp / "indexed.npy")],
            r"cannot write features index .*indexed.json: it is a folder",
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
        if result["code"] != (2 if name in USAGE_ERRORS else 3 if name in INPUT_FAILURES else 1):
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


# --- destinations: regular files and new paths only ------------------------------------------------------


def special_file(path: Path, kind: str) -> Path:
    """A FIFO, a socket or a character device (a copy of /dev/null, as root; a link to it otherwise) at
    `path`: what an output must never replace."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))
    elif kind == "device" and os.geteuid() == 0:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    else:
        path.symlink_to("/dev/null")
    return path


def identity(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return status.st_ino, status.st_mode, status.st_rdev


def _writers(tmp: Path) -> dict[str, Callable[[Path], object]]:
    from uniformer_cli import plots
    from uniformer_cli.engine.checkpointing import save_checkpoint
    from uniformer_cli.engine.features import FeatureSet, write_features

    features = FeatureSet(torch.zeros(1, 4), ["a.mp4"], None, [], {"model": "m"})

    def plot(path: Path) -> object:
        figure = plots.figure(1, 1)
        figure.subplots().plot([0, 1])
        return plots.save(figure, path)

    return {
        "atomic_write": lambda path: files.atomic_write(path, lambda temporary: temporary.write_text("x")),
        "write_with_fallback": lambda path: files.write_with_fallback(path, lambda t: t.write_text("x"), "output"),
        "ensure_writable": lambda path: files.ensure_writable(path),
        "weights": lambda path: save_weights(path, colour_model(), TINY.replace(num_classes=8)),
        "checkpoint": lambda path: save_checkpoint({"step": 1}, path),
        "features": lambda path: write_features(path.with_suffix(".npy") if path.suffix != ".npy" else path, features),
        "plot": plot,
    }


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["fifo", "socket", "device"]), writer=st.sampled_from(sorted(_writers(Path()))))
def test_outputs_never_replace_or_write_a_device_fifo_or_socket(kind: str, writer: str) -> None:
    with tempfile.TemporaryDirectory(prefix="dest") as folder:
        tmp = Path(folder)
        target = special_file(tmp / ("out.npy" if writer == "features" else "out"), kind)
        before = identity(target)
        previous, tempfile.tempdir = tempfile.tempdir, str(tmp / "fallback")
        try:
            with pytest.raises((OSError, UniformerError)) as refused:
                _writers(tmp)[writer](target)
        finally:
            tempfile.tempdir = previous
        assert "not a regular file" in str(refused.value)
        assert identity(target) == before  # the node itself, untouched
        assert sorted(path.name for path in tmp.iterdir() if path.name != "fallback") == [target.name]


def test_a_symbolic_link_is_followed_and_kept(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    files.atomic_write(link, lambda temporary: temporary.write_text("new"))
    assert link.is_symlink() and real.read_text() == "new"


def test_a_long_but_valid_file_name_is_written(tmp_path: Path) -> None:
    name = "n" * 250 + ".json"  # 255 bytes: the longest a name may be; its temporary file must still fit
    files.write_or_fail(tmp_path / name, lambda temporary: temporary.write_text("x"), "output")
    assert [path.name for path in tmp_path.iterdir()] == [name]
    with pytest.raises(WriteError, match="the name is too long"):
        files.ensure_writable(tmp_path / ("n" * 300))


# --- products that took long to compute are never lost to the last write --------------------------------


def fill_disk_for(monkeypatch: pytest.MonkeyPatch, targets: set[Path], fallback: Path) -> None:
    """Writes to `targets` fail as on a full disk; the temporary folder is `fallback`."""
    real = files.atomic_write

    def full_disk(path: str | Path, write: Callable[[Path], object]) -> None:
        if Path(path) in targets:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, write)

    monkeypatch.setattr(files, "atomic_write", full_disk)
    fallback.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(fallback))


@pytest.mark.parametrize("suffix", [".safetensors", ".npy"])
def test_features_are_saved_elsewhere_when_the_disk_fills(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from uniformer_cli.engine.features import index_path, read_features

    video = flat_video(tmp_path / "clip.mp4", (200, 128, 30), frames=8)
    weights = save_weights(tmp_path / "tiny.safetensors", colour_model(), TINY.replace(num_classes=8))
    output = tmp_path / "out" / f"features{suffix}"
    fill_disk_for(monkeypatch, {output, index_path(output)}, tmp_path / "safe")
    code, _, err = run_cli(capsys, "features", video, "-w", weights, *PROTOCOL, "-o", output)
    assert code == 1 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]  # after the progress bar
    assert line.startswith(f"error: cannot write features {output}: the disk is full; the results were saved to")
    saved = sorted((tmp_path / "safe").iterdir())
    assert [path.suffix for path in saved] == ([".json", ".npy"] if suffix == ".npy" else [suffix])
    assert all(str(path) in line for path in saved)
    assert read_features(saved[-1]).videos == [str(video)]


def test_plots_are_saved_elsewhere_when_the_disk_fills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uniformer_cli import plots

    target = tmp_path / "plot.png"
    fill_disk_for(monkeypatch, {target}, tmp_path / "safe")
    with pytest.raises(WriteError, match=r"cannot write plot .*plot.png: the disk is full; the results were saved"):
        plots.per_class_plot(target, ["a", "b"], [0, 1], [0, 0])
    (saved,) = (tmp_path / "safe").iterdir()
    assert saved.read_bytes().startswith(b"\x89PNG")


# --- non-finite weights: an error for each input, and strict JSON ---------------------------------------


def strict_json(text: str) -> object:
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("damage", ["all NaN", "infinite bias", "head of 3e38"])
def test_non_finite_outputs_fail_each_input_and_name_the_weights(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from uniformer_cli.weights.store import save_safetensors

    state = tiny_state()
    if damage == "all NaN":
        state = {key: value.fill_(math.nan) if value.is_floating_point() else value for key, value in state.items()}
    elif damage == "infinite bias":
        state["head.bias"][0] = math.inf
    else:
        state["head.weight"] = torch.full_like(state["head.weight"], 3e38)
    weights = tmp_path / "broken.safetensors"
    config = TINY.replace(num_classes=8)
    save_safetensors(state, weights, {"format": "pt", "uniformer_config": config.to_json()})
    video = flat_video(tmp_path / "clip.mp4", (200, 128, 30), frames=8)
    (tmp_path / "list.csv").write_text("clip.mp4,1\n")
    message = f"not finite numbers (NaN or infinity): the weights {weights} are unusable"

    code, out, err = run_cli(capsys, "predict", video, "-w", weights, *PROTOCOL, "--json")
    assert code == 3 and "Traceback" not in err
    (record,) = strict_json(out)  # type: ignore[misc]
    assert message in record["error"] and record["score"] is None
    assert err.strip().splitlines() == [f"error: {video}: the network's outputs are {message}"]

    report = tmp_path / "report.json"
    evaluate = ["eval", "--dataset", "csv", "--list", tmp_path / "list.csv", "-w", weights, *PROTOCOL]
    code, out, err = run_cli(capsys, *evaluate, "--json", "-o", report)
    assert code == 3 and "Traceback" not in err
    for document in (strict_json(out), strict_json(report.read_text())):
        (video_record,) = document["videos"]  # type: ignore[index]
        assert message in video_record["error"] and video_record["correct"] is None

    # Features are read before the head: only weights broken below it break them.
    code, out, err = run_cli(capsys, "features", video, "-w", weights, *PROTOCOL, "-o", tmp_path / "f.npy", "--json")
    failures = strict_json(out)["failures"]  # type: ignore[index]
    if damage == "all NaN":
        assert code == 3 and message in failures[0]["error"]
    else:
        assert code == 0 and failures == []
    strict_json((tmp_path / "f.json").read_text())


def test_json_writers_never_write_nan_or_infinity() -> None:
    from uniformer_cli.cli.output import Result, encode

    records = [{"score": math.nan, "nested": {"values": [math.inf, -math.inf, 1.5]}}]
    expected = {"score": None, "nested": {"values": [None, None, 1.5]}}
    assert strict_json(encode(Result(records), "json")) == [expected]
    assert strict_json(encode(Result(records), "jsonl")) == expected


# --- resume files: continued only from what they were computed from ------------------------------------


def test_resume_is_refused_when_the_list_or_the_weights_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flat_video(tmp_path / "clip.mp4", (200, 128, 30), frames=8)
    flat_video(tmp_path / "other.mp4", (20, 128, 30), frames=8)
    weights = save_weights(tmp_path / "tiny.safetensors", colour_model(), TINY.replace(num_classes=8))
    listing = tmp_path / "list.csv"
    listing.write_text("clip.mp4,1\nother.mp4,2\n")
    report, features = tmp_path / "report.json", tmp_path / "features.safetensors"
    evaluate = ["eval", "--dataset", "csv", "--list", listing, "-w", weights, *PROTOCOL, "-o", report, "--resume"]
    extract = ["features", "--dataset", "csv", "--list", listing, "-w", weights, *PROTOCOL, "-o", features, "--resume"]
    for command in (evaluate, extract):
        code, _, err = run_cli(capsys, *command)
        assert code == 0, err
        code, _, err = run_cli(capsys, *command)  # the same again: everything comes from the file
        assert code == 0, err
    listing.write_text("clip.mp4,3\nother.mp4,2\n")  # a label changed
    for command in (evaluate, extract):
        code, _, err = run_cli(capsys, *command)
        assert code == 1 and "Traceback" not in err
        (line,) = err.strip().splitlines()
        assert "cannot resume from" in line and "another list of videos or labels (its sha256 differs)" in line
    listing.write_text("clip.mp4,1\nother.mp4,2\n")
    save_weights(weights, colour_model(list(reversed(CENTRES))), TINY.replace(num_classes=8))
    for command in (evaluate, extract):
        code, _, err = run_cli(capsys, *command)
        assert code == 1 and "another weights (their sha256 differs)" in err


@settings(max_examples=40, deadline=None)
@given(
    record=st.dictionaries(
        st.sampled_from(["video", "true_index", "top5", "error", "score"]),
        st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.integers(), max_size=3)),
    )
)
def test_resume_records_of_the_wrong_types_are_one_line(record: dict[str, object]) -> None:
    from uniformer_cli.engine.evaluate import RESUME_KEYS, load_previous

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report.json"
        path.write_text(json.dumps({"summary": {}, "videos": [record]}))
        with pytest.raises(UniformerError, match=f"cannot resume from {path}"):
            load_previous(path, dict.fromkeys(RESUME_KEYS, "x"))


# --- decoded frames are bounded before decoding ----------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(width=st.integers(-2, 2**20), height=st.integers(-2, 2**20))
def test_decoded_frame_sizes_are_bounded_or_refused(width: int, height: int) -> None:
    from uniformer_cli.data.video import MAX_ASPECT_RATIO, MAX_DECODED_PIXELS, decode_size

    try:
        decoded = decode_size("clip.mp4", width, height)
    except VideoError as error:
        assert str(error).startswith("clip.mp4 ")
        assert (
            min(width, height) < 1
            or max(width, height) / min(width, height) > MAX_ASPECT_RATIO
            or (width * height > 2**28)
        )
        return
    assert decoded[0] * decoded[1] <= MAX_DECODED_PIXELS
    assert decoded == (width, height) or (width * height > MAX_DECODED_PIXELS and decoded[0] <= width)
    assert abs(decoded[0] / decoded[1] - width / height) <= width / height * 2 / min(decoded)  # the aspect kept


def yuv_video(path: Path, width: int, height: int, frames: int = 2, fps: int = 30) -> Path:
    """A flat H.264 video written from YUV planes (no RGB frame of that size is ever made)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        planes = np.full((height * 3 // 2, width), 90, np.uint8)
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(planes, format="yuv420p")))
        container.mux(stream.encode(None))
    return path


def test_frames_larger_than_the_bound_are_shrunk_by_the_decoder(tmp_path: Path) -> None:
    from uniformer_cli.data.video import MAX_DECODED_PIXELS, open_video

    video = yuv_video(tmp_path / "large.mp4", 4608, 4096, frames=1)  # 18.9 million pixels
    with open_video(video) as opened:
        (frame,) = opened.read([0])
        assert (opened.width, opened.height) == (frame.shape[1], frame.shape[0])
    assert frame.shape[0] * frame.shape[1] <= MAX_DECODED_PIXELS and frame.shape[1] > frame.shape[0]
    assert abs(frame.shape[1] / frame.shape[0] - 4608 / 4096) < 0.01
    assert abs(int(frame[2000, 2000, 1]) - int(frame[10, 10, 1])) <= 1  # the flat picture, not garbage


def test_a_stream_declaring_an_absurd_frame_rate_is_refused_before_its_window_fills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    video = yuv_video(tmp_path / "fast.mp4", 64, 48, frames=30, fps=100000)
    weights = save_weights(tmp_path / "tiny.safetensors", colour_model(), TINY.replace(num_classes=8))
    with video.open("rb") as stream:
        monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": stream})())
        code, _, err = run_cli(capsys, "predict", "-", "-w", weights, *PROTOCOL, "--timeline", "2")
    assert code == 1 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert re.search(r"stdin declares 100000 fps: a 2 s window is 200,000 frames, .* GiB held at the model", line)


# --- walks, lists, archives and counts -------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    folders=st.lists(st.lists(st.sampled_from("ab"), min_size=1, max_size=3), max_size=5),
    links=st.lists(st.tuples(st.lists(st.sampled_from("ab"), max_size=2), st.integers(0, 3)), max_size=3),
    pattern=st.sampled_from(["**/*.mp4", "**", "a/**/*.mp4", "*/**", "**/b/*.mp4", "*/*.mp4"]),
)
def test_globs_match_glob_and_end_on_loops_of_links(
    folders: list[list[str]], links: list[tuple[list[str], int]], pattern: str
) -> None:
    import glob

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        for parts in folders:
            (root.joinpath(*parts)).mkdir(parents=True, exist_ok=True)
            (root.joinpath(*parts) / "clip.mp4").write_bytes(b"")
        expected = sorted(Path(path) for path in glob.glob(str(root / pattern), recursive=True))
        assert files.glob_paths(str(root / pattern)) == expected  # no links: exactly glob's answer
        for number, (parts, up) in enumerate(links):  # links to a folder above: loops
            folder = root.joinpath(*parts)
            if folder.is_dir():
                (folder / f"up{number}").symlink_to("../" * min(up, len(parts)) or ".")
        found = files.glob_paths(str(root / pattern))
        assert set(expected) <= set(found)  # terminated, and found at least what the loop-free tree holds
        assert all(len(path.parts) < len(root.parts) + 12 for path in found)


def test_a_pth_whose_records_declare_too_much_is_refused_before_inflating(tmp_path: Path) -> None:
    import zipfile

    from uniformer_cli.weights.checkpoint import read_checkpoint

    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + bytes(80 * 2**20))
        archive.writestr("archive/version", "3\n")
    assert bomb.stat().st_size < 2**20
    with pytest.raises(UniformerError, match=r"record archive/data.pkl declares 83,886,082 bytes \(compressed"):
        read_checkpoint(bomb)


# --- numbers in lists and label files: ASCII integers, finite seconds, or one line ------------------------

# Texts a list's number may hold: integers, and what `isdigit`, `int` or `float` would wrongly take.
NUMBERS = st.one_of(
    st.integers(-3, 120).map(str),
    st.sampled_from(["²", "¹", "١", "٣", "1_0", "+1", "1.5", "15.0", "1e3", "inf", "-inf", "nan", "Infinity", "1e400"]),
    st.text(alphabet="0123456789²¹١.e+-_ ", min_size=1, max_size=6),
)


def _read_or_refuse(name: str, root: Path, list_file: Path | None, classes: int) -> object:
    """The split, or the `DatasetError` (one line): any other exception fails the test."""
    from uniformer_cli.data.datasets import read_dataset
    from uniformer_cli.errors import DatasetError

    try:
        return read_dataset(name, root, list_file=list_file, num_classes=classes)
    except DatasetError as error:
        assert "\n" not in str(error)
        return error


@settings(max_examples=60, deadline=None)
@given(frames=NUMBERS, label=NUMBERS, number=NUMBERS, start=NUMBERS)
def test_numbers_in_lists_are_read_or_refused_in_one_line(frames: str, label: str, number: str, start: str) -> None:
    from uniformer_cli.data.datasets import parse_integer
    from uniformer_cli.zoo import load_labels

    ascii_integer = re.fullmatch(r"-?[0-9]+", frames) is not None
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "frames.txt").write_text(f"clip {frames} {label}\n")
        split = _read_or_refuse("hmdb51", root, root / "frames.txt", 51)
        if ascii_integer and int(frames) >= 0 and parse_integer(label) in range(51):
            assert split.samples[0].num_frames == int(frames)  # type: ignore[attr-defined]
        (root / "ucfTrainTestlist").mkdir()
        ucf = load_labels("ucf101")
        (root / "ucfTrainTestlist" / "classInd.txt").write_text(
            f"{number} {ucf[0]}\n" + "".join(f"{i + 1} {name}\n" for i, name in enumerate(ucf) if i)
        )
        (root / "ucfTrainTestlist" / "trainlist01.txt").write_text(f"{ucf[1]}/v.avi {label}\n")
        _read_or_refuse("ucf101", root, root / "ucfTrainTestlist" / "trainlist01.txt", 101)
        (root / "k400.csv").write_text(f"label,youtube_id,time_start,time_end,split\nabseiling,x,{start},10,val\n")
        split = _read_or_refuse("k400", root, root / "k400.csv", 400)
        if re.fullmatch(r"[0-9]{1,6}(\.[0-9]*)?", start):
            assert split.samples[0].path.name == f"x_{int(float(start)):06d}_000010.mp4"  # type: ignore[attr-defined]
        (root / "list.csv").write_text(f"clip.mp4,{label}\n")
        _read_or_refuse("csv", root, root / "list.csv", 8)
        labels = load_labels("sthv2")
        table = {name: (number if index == 0 else str(index)) for index, name in enumerate(labels)}
        (root / "labels").mkdir()
        (root / "labels" / "labels.json").write_text(json.dumps(table).replace(f'"{number}"', number, 1))
        (root / "labels" / "validation.json").write_text(json.dumps([{"id": "1", "template": labels[1]}]))
        _read_or_refuse("sthv2", root, root / "labels" / "validation.json", 174)


# --- text shown to people: control characters and undecodable names escaped, one line each --------------


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40))
def test_text_from_files_is_shown_as_one_harmless_line(text: str) -> None:
    from uniformer_cli.cli.progress import print_error, stderr_console
    from uniformer_cli.cli.text import escape, visible

    shown = visible(text)
    assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", shown)
    shown.encode("utf-8")  # printable in any UTF-8 terminal: no lone surrogates left
    assert visible(shown.replace("\\", "")) == shown.replace("\\", "")  # nothing left to escape
    if text.isprintable() and "\\" not in text:
        assert shown == text  # ordinary text is shown as it is
    with stderr_console.capture() as captured:
        print_error(text)
    lines = captured.get().splitlines()
    # rich doubles a trailing backslash, so that markup after it is not escaped by it
    assert len(lines) == 1 and lines[0] in (f"error: {shown}", f"error: {shown}\\")
    assert escape("[bold]x\x1b") == "\\[bold]x\\x1b"


def test_control_characters_from_labels_and_file_names_never_reach_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = ["\x1b[31mred\x07", "two\nlines", "\u202eevil", "d", "e", "f", "g", "h"]
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8), labels)
    video = flat_video(tmp_path / "es\x1b[2Jc\x07.mp4", (200, 128, 30), frames=8)
    missing = tmp_path / "gone\nerror: forged.mp4"
    code, out, err = run_cli(capsys, "predict", video, missing, "-w", weights, *PROTOCOL, "-k", "8")
    assert code == 3
    assert not re.search("[\x07\x1b\u202e]", out + err)
    squashed = "".join(out.split())  # whatever the table's wrapping
    assert "es\\x1b[2Jc\\x07.mp4" in squashed and "\\x1b[31mred\\x07" in squashed and "two\\nlines" in squashed
    (line,) = err.strip().splitlines()
    assert line == f"error: no such file or folder: {tmp_path}/gone\\nerror: forged.mp4"
    code, out, _ = run_cli(capsys, "predict", video, "-w", weights, *PROTOCOL, "--json", "-k", "8")
    record = json.loads(out)[0]  # JSON keeps the exact strings
    assert record["video"] == str(video) and {c["label"] for c in record["top_k"]} == set(labels)


@settings(max_examples=5, deadline=None)
@given(names=st.lists(st.text(alphabet="$\\^_{}ab \x1b\n", min_size=1, max_size=8), min_size=2, max_size=3))
def test_plots_draw_any_label_or_file_name_as_plain_text(names: list[str]) -> None:
    import numpy as np

    from uniformer_cli import plots

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "plot.png"
        probabilities = np.full((2, len(names)), 1 / len(names))
        plots.timeline_plot(target, [(0, 1), (1, 2)], probabilities, names, f"{names[0]} · $x^2$ · \\frac")
        assert target.read_bytes().startswith(b"\x89PNG")
        plots.confusion_plot(target, names, [0, 1], [1, 0])


# --- names that are not UTF-8, closed streams --------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_read_and_written_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = Path(os.fsdecode(bytes(tmp_path / "clip") + b"-caf\xe9.mp4"))
    flat_video(tmp_path / "clip.mp4", (200, 128, 30), frames=8).rename(video)
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8))
    code, out, err = run_cli(capsys, "predict", video, "-w", weights, *PROTOCOL, "-o", tmp_path / "out.csv", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["video"] == str(video)  # `\udce9` in the JSON: the same name back
    assert out.isascii() or "\udce9" not in out
    assert b"-caf\xe9.mp4," in (tmp_path / "out.csv").read_bytes()  # the bytes the name has on disk
    code, out, err = run_cli(capsys, "predict", video, "-w", weights, *PROTOCOL, "--decoder", "decord")
    assert (
        code == 3
        and err.strip()
        == f"error: decord cannot open {tmp_path}/clip-caf\\xe9.mp4: its name is not UTF-8 (use --decoder pyav)"
    )


def uniformer_process(*args: object, closed: int | None = None, **options: object) -> subprocess.Popen[bytes]:
    """`uniformer ARGS` in a child process; `closed`: a standard descriptor it starts without."""
    command = [sys.executable, "-m", "uniformer_cli.cli.app", *map(str, args)]
    preexec = (lambda: os.close(closed)) if closed is not None else None
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, preexec_fn=preexec, **options)  # type: ignore[call-overload]


@pytest.mark.parametrize("closed", ["stdin", "stdout"])
def test_a_closed_stdin_or_stdout_is_one_error_line(tmp_path: Path, closed: str) -> None:
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8))
    if closed == "stdin":
        args, message = ["predict", "-", "-w", weights, *PROTOCOL, "--timeline", "1"], "stdin is closed"
    else:
        args, message = ["models", "--json"], "cannot write the results to stdout: it is closed"
    process = uniformer_process(*args, closed=0 if closed == "stdin" else 1, stderr=subprocess.PIPE)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    (line,) = err.decode().strip().splitlines()
    assert line.startswith("error: ") and message in line


# --- signals: every command stops, saves what it saves, and exits 130 / 143 -------------------------------

SIGNALS = {"SIGINT": (signal.SIGINT, 130, "Ctrl-C (SIGINT)"), "SIGTERM": (signal.SIGTERM, 143, "SIGTERM")}


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_predict_stopped_mid_run_writes_what_finished(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from uniformer_cli.engine import predict as predict_engine

    number, status, words = SIGNALS[name]
    videos = [flat_video(tmp_path / f"clip{index}.mp4", (200, 128, 30), frames=8) for index in range(4)]
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8))
    predict_many = predict_engine.Predictor.predict_many

    def signalled_after_two(self: object, *args: object, **kwargs: object) -> object:
        for count, outcome in enumerate(predict_many(self, *args, **kwargs), start=1):  # type: ignore[arg-type]
            yield outcome
            if count == 2:
                os.kill(os.getpid(), number)  # Ctrl-C, or a scheduler's SIGTERM

    monkeypatch.setattr(predict_engine.Predictor, "predict_many", signalled_after_two)
    output = tmp_path / "out.jsonl"
    code, _, _ = run_cli(capsys, "predict", *videos, "-w", weights, *PROTOCOL, "-o", output)
    assert code == status
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["video"] for record in records] == list(map(str, videos))
    assert [record["error"] for record in records[:2]] == [None, None] and records[0]["score"] is not None
    for video, record in zip(videos[2:], records[2:], strict=True):
        assert record["error"] == f"{video}: not predicted: {words} stopped the run" and record["score"] is None


def write_mpegts(path: Path, frames: int, fps: int = 30) -> Path:
    """An H.264 MPEG-TS clip, which can be read from a pipe."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(frames):
            image = np.full((48, 64, 3), (index * 9) % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def test_ctrl_c_stops_an_idle_stream_and_saves_its_windows(tmp_path: Path) -> None:
    stream = write_mpegts(tmp_path / "live.ts", 150).read_bytes()
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8))
    output = tmp_path / "live.json"
    args = ["predict", "-", "-w", weights, *PROTOCOL, "--timeline", "1", "--json", "-o", output]
    process = uniformer_process(*args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(stream[: len(stream) * 3 // 5])  # 3 of 5 seconds, then the producer goes quiet
    process.stdin.flush()
    windows = [json.loads(process.stdout.readline()) for _ in range(2)]  # the two final windows: now it waits
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)  # the producer never closes the pipe: only the signal ends it
    assert process.returncode == 130, err.decode()
    assert "Traceback" not in err.decode() and "Exception ignored" not in err.decode()
    (record,) = json.loads(output.read_text())
    assert [window["start"] for window in record["windows"][:2]] == [window["start"] for window in windows]


def test_sigterm_stops_an_idle_stream_and_saves_its_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    from uniformer_cli.cli import predict as predict_cli

    stream = write_mpegts(tmp_path / "live.ts", 150).read_bytes()
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8))
    reading, writing = os.pipe()
    os.write(writing, stream[: len(stream) * 3 // 5])  # the producer stays, quiet, with its end open
    lines = []
    write_stdout = predict_cli.write_stdout

    def terminated_when_idle(text: str) -> None:
        write_stdout(text)
        lines.append(text)
        if len(lines) == 2:  # both final windows are out: it is waiting for the producer
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()

    monkeypatch.setattr(predict_cli, "write_stdout", terminated_when_idle)
    with os.fdopen(reading, "rb") as pipe:
        monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": pipe})())
        output = tmp_path / "live.json"
        code, _, err = run_cli(
            capsys, "predict", "-", "-w", weights, *PROTOCOL, "--timeline", "1", "--json", "-o", output
        )
    os.close(writing)
    assert code == 143 and err.strip().splitlines()[-1] == "terminated (SIGTERM)"
    (record,) = json.loads(output.read_text())
    assert len(record["windows"]) == 2


# --- native decoder crashes: suspicious containers are decoded in a checked child process ----------------


def test_a_container_that_crashes_decord_is_decoded_in_a_checked_child(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    from uniformer_cli.data.video import CheckedVideo, open_video

    hostile = shifted_mkv(tmp_path / "late.mkv", 1e9)  # decord: std::bad_alloc, SIGABRT
    with open_video(hostile) as guarded, open_video(hostile, "pyav", guarded=False) as direct:
        assert isinstance(guarded, CheckedVideo) and guarded.decoder == "pyav"
        assert np.array_equal(guarded.read([0, 5, 11]), direct.read([0, 5, 11]))  # the same frames, from a child
        assert (guarded.num_frames, guarded.fps, guarded.width) == (direct.num_frames, direct.fps, direct.width)
    with open_video(hostile, "decord") as crashing, pytest.raises(VideoError) as crashed:
        crashing.read([0, 1])
    assert re.fullmatch(
        rf"the decord decoder crashed \(SIGABRT\) on {hostile} \(.*\), in the separate process it ran in because "
        r"its timestamps reach 1e\+09 s at 12 fps, 1.2e\+10 frames for the 12 it stores \(--decoder pyav reads it\)",
        str(crashed.value),
    )
    ordinary = flat_video(tmp_path / "clip.mkv", (200, 128, 30), frames=8, size=(64, 48))
    with open_video(ordinary) as opened:
        assert not isinstance(opened, CheckedVideo)  # ordinary files never pay for a child
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8))
    code, out, err = run_cli(
        capsys, "predict", hostile, ordinary, "-w", weights, *PROTOCOL, "--decoder", "decord", "--json"
    )
    assert code == 3 and [record["error"] is None for record in json.loads(out)] == [False, True]
    (line,) = err.strip().splitlines()
    assert line.startswith("error: the decord decoder crashed (SIGABRT)")


CHILD_DECODE = textwrap.dedent(
    """
    import json, sys
    from uniformer_cli.data.video import open_video
    from uniformer_cli.errors import VideoError
    for path in json.loads(sys.argv[1]):
        for decoder in ("decord", "pyav", "auto"):
            try:
                with open_video(path, decoder) as video:
                    video.read([0, video.num_frames - 1])
            except VideoError:
                pass
    print("survived")
    """
)


@settings(max_examples=2, deadline=None)
@given(
    clips=st.lists(
        st.tuples(st.sampled_from([0.0, 5.0, 3.6e3, 1e6, 1e9, 9e9, 1e12]), st.sampled_from([0.0, 1e5, 1e9])),
        min_size=3,
        max_size=4,
    )
)
def test_no_container_timestamps_take_the_process_down(clips: list[tuple[float, float]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        paths = [str(shifted_mkv(Path(folder) / f"{n}.mkv", *clip, frames=6)) for n, clip in enumerate(clips)]
        finished = subprocess.run(
            [sys.executable, "-c", CHILD_DECODE, json.dumps(paths)], capture_output=True, text=True, timeout=300
        )
    assert finished.returncode == 0 and finished.stdout.strip() == "survived", finished.stderr[-2000:]


# --- kill -9 at the worst moment, then the same command again --------------------------------------------

# Runs `uniformer ARGV` and kills itself with SIGKILL the `skip + 1`-th time a file named TARGET is about
# to be renamed into place: the output's bytes are written and synced, nothing is renamed yet (the worst
# moment a power cut or the OOM killer can choose). `features` checkpoints after every video here.
KILLED_AT_RENAME = textwrap.dedent(
    """
    import json, os, signal, sys
    target, skip = sys.argv[1], int(sys.argv[2])
    real = os.replace

    def replace(source, destination, *args, **kwargs):
        global skip
        if os.path.basename(os.fspath(destination)) == target:
            if skip == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            skip -= 1
        return real(source, destination, *args, **kwargs)

    os.replace = replace
    from uniformer_cli.engine import features
    features.CHECKPOINT_SECONDS = -1.0
    from uniformer_cli.cli.app import main
    main(json.loads(sys.argv[3]))
    """
)


def killed_at_rename(argv: list[object], target: str, skip: int = 0) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", KILLED_AT_RENAME, target, str(skip), json.dumps(list(map(str, argv)))]
    finished = subprocess.run(command, capture_output=True, timeout=600, env=env)
    assert finished.returncode == -signal.SIGKILL, finished.stderr.decode()[-2000:]
    time.sleep(1.1)  # a dead process's temporary file is removed once it is a second old


def leftovers(folder: Path) -> list[str]:
    """Temporary files and scratch folders of interrupted writes under `folder`."""
    return sorted(path.name for path in folder.rglob("*") if path.name.endswith(".tmp"))


def test_convert_killed_before_its_rename_is_redone_without_leftovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from uniformer_cli.weights import load_weights

    source = tmp_path / "official.pth"
    torch.save(tiny_state(), source)
    argv = ["convert", source, tmp_path / "out" / "tiny.safetensors", "--head-dim", "8"]
    killed_at_rename(argv, "tiny.safetensors")
    assert not (tmp_path / "out" / "tiny.safetensors").exists() and len(leftovers(tmp_path)) == 1
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    stored = load_weights(tmp_path / "out" / "tiny.safetensors")
    assert all(torch.equal(stored.state_dict[key], value) for key, value in tiny_state().items())
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_features_killed_at_a_checkpoint_resume_to_the_uninterrupted_result(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from uniformer_cli.engine.features import read_features

    videos = [flat_video(tmp_path / f"clip{n}.mp4", (40 + 50 * n, 128, 30), frames=8) for n in range(3)]
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8))
    reference, output = tmp_path / "reference" / f"f{suffix}", tmp_path / "out" / f"f{suffix}"
    code, _, err = run_cli(capsys, "features", *videos, "-w", weights, *PROTOCOL, "-o", reference)
    assert code == 0, err
    argv = ["features", *videos, "-w", weights, *PROTOCOL, "-o", output, "--resume"]
    # The second checkpoint (two videos done) dies before its rename: the first one (one video) stands.
    killed_at_rename(argv, "f.partial.safetensors" if suffix == ".npy" else output.name, skip=1)
    assert len(leftovers(tmp_path / "out")) == 1
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    assert json.loads(out)["computed"] == 2  # the first video came from the checkpoint
    done, expected = read_features(output), read_features(reference)
    assert done.videos == expected.videos and torch.allclose(done.features, expected.features, atol=1e-6)
    assert leftovers(tmp_path / "out") == [] and sorted(p.name for p in output.parent.iterdir()) == sorted(
        p.name for p in reference.parent.iterdir()
    )  # the checkpoint went with the final write


def test_a_npy_and_its_index_torn_apart_by_a_kill_still_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from uniformer_cli.engine.features import read_features

    videos = [flat_video(tmp_path / f"clip{n}.mp4", (40 + 50 * n, 128, 30), frames=8) for n in range(3)]
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8))
    output = tmp_path / "f.npy"
    argv = ["features", *videos, "-w", weights, *PROTOCOL, "-o", output, "--resume"]
    killed_at_rename(argv, "f.json")  # the final .npy is in place, its index is not
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert read_features(output).videos == list(map(str, videos)) and leftovers(tmp_path) == []


@pytest.mark.slow
def test_export_killed_before_its_rename_is_redone_without_leftovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8))
    argv = ["export", weights, *PROTOCOL, "--format", "onnx", "-o", tmp_path / "out"]
    killed_at_rename(argv, "w.onnx")
    assert len(leftovers(tmp_path / "out")) == 2  # the scratch folder and the file being placed
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert (tmp_path / "out" / "w.onnx").is_file() and leftovers(tmp_path / "out") == []


# --- two processes building one cached file, a damaged cache, a read-only cache ---------------------------

# `uniformer ARGV...` for each argv, in one process that knows the tiny zoo entry of `serve_tiny_zoo_model`
# (downloaded from the parent's local Hub through HF_ENDPOINT); prints the exit statuses as JSON.
TINY_ZOO_DRIVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import pytest
    from hub_server import register_tiny_zoo_entry
    register_tiny_zoo_entry(pytest.MonkeyPatch(), Path(sys.argv[2]))
    from uniformer_cli.cli.app import main
    codes = []
    for argv in json.loads(sys.argv[3]):
        try:
            main(argv)
            codes.append(0)
        except SystemExit as done:
            codes.append(done.code)
    print(json.dumps(codes))
    """
)


def tiny_zoo_process(folder: Path, *commands: list[object], prefix: list[str] | None = None) -> subprocess.Popen[str]:
    folder.mkdir(parents=True, exist_ok=True)
    argv = json.dumps([list(map(str, command)) for command in commands])
    script = [sys.executable, "-c", TINY_ZOO_DRIVER, str(Path(__file__).parent), str(folder), argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*(prefix or []), *script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def waiting_for(lock: Path, processes: int, timeout: float = 300.0) -> None:
    """Return once `processes` processes wait for the flock on `lock` (Linux: /proc/locks lists waiters)."""
    inode = lock.stat().st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = Path("/proc/locks").read_text().splitlines()
        waiters = [line for line in lines if "->" in line and line.split()[-3].endswith(f":{inode}")]
        if len(waiters) >= processes:
            return
        time.sleep(0.05)
    raise AssertionError(f"{processes} processes never waited for {lock}")


@pytest.mark.slow
def test_two_processes_converting_one_hub_model_convert_it_once(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from uniformer_cli.files import exclusive
    from uniformer_cli.weights import hub
    from uniformer_cli.weights.cache import build_lock

    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    video = flat_video(tmp_path / "clip.mp4", (200, 128, 30), frames=8)
    command = ["predict", video, "--model", "tiny-k400", "--json"]
    converted = hub.download(served.entry).converted
    with exclusive(build_lock(converted)):  # both reach the conversion while the lock is held
        processes = [tiny_zoo_process(tmp_path / f"driver{n}", command) for n in range(2)]
        waiting_for(build_lock(converted), 2)
    results = [process.communicate(timeout=600) for process in processes]
    assert [json.loads(out.splitlines()[-1]) for out, _ in results] == [[0], [0]], results
    once = sum("".join(err.split()).count("tosafetensors(once)") for _, err in results)  # lines wrap
    assert once == 1  # the second process found it converted
    ranked = [json.loads("\n".join(out.splitlines()[:-1]))[0]["top_k"] for out, _ in results]
    assert ranked[0] == ranked[1]  # the same predictions from the one converted copy
    from uniformer_cli.weights.cache import integrity_problem

    assert integrity_problem(converted) is None and leftovers(local_hub.home) == []


@pytest.mark.slow
def test_two_processes_building_one_openvino_cache_build_it_once(tmp_path: Path) -> None:
    from uniformer_cli.engine import openvino_engine
    from uniformer_cli.files import exclusive
    from uniformer_cli.protocol import ViewProtocol
    from uniformer_cli.weights.cache import build_lock

    home = tmp_path / "hf"
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8))
    video = flat_video(tmp_path / "clip.mp4", (200, 128, 30), frames=8)
    command = [sys.executable, "-m", "uniformer_cli.cli.app", "predict", str(video), "-w", str(weights), *PROTOCOL]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(home)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HOME", str(home))
        folder = openvino_engine.ir_folder(weights, ViewProtocol(frames=4, stride=1, size=32))
        lock = build_lock(folder)
    with exclusive(lock):
        processes = [
            subprocess.Popen(
                [*command, "--engine", "openvino", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(2)
        ]
        waiting_for(lock, 2)
    results = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], results
    assert sum("".join(err.split()).count("toOpenVINOonce") for _, err in results) == 1  # lines wrap
    scores = [[entry["score"] for entry in json.loads(out)[0]["top_k"]] for out, _ in results]
    assert scores[0] == scores[1]
    records = {f"{name}.sha256.json" for name in openvino_engine.IR_FILES}
    assert {path.name for path in folder.iterdir()} == {*openvino_engine.IR_FILES, *records, "compiled-fp32"}
    assert leftovers(home) == []


@pytest.mark.slow
def test_a_damaged_openvino_cache_is_rebuilt_or_recompiled_never_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import random

    from uniformer_cli.engine import openvino_engine
    from uniformer_cli.engine.predict import load_predictor

    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    caplog.set_level("INFO", logger="uniformer_cli")
    protocol = {"frames": 4, "stride": 1, "clips": 1, "crops": 1, "size": 32, "sampling": "dense"}
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8), None, protocol)
    clips = torch.randn(3, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = load_predictor(weights, device="cpu", engine="torch", precision="fp32").logits(clips)

    def logits() -> torch.Tensor:
        return load_predictor(weights, device="cpu", engine="openvino", precision="fp32").logits(clips)

    def builds() -> int:
        return sum("to OpenVINO once" in record.getMessage() for record in caplog.records)

    torch.testing.assert_close(logits(), expected, atol=1e-4, rtol=0)
    (folder,) = openvino_engine.cache_root().iterdir()
    damages = {
        "model.bin truncated": lambda: (folder / "model.bin").write_bytes((folder / "model.bin").read_bytes()[:100]),
        "model.xml edited": lambda: (folder / "model.xml").write_text(
            (folder / "model.xml").read_text().replace('version="11"', 'version="10"', 1) + "\n"
        ),
    }
    for count, (damage, apply) in enumerate(damages.items(), start=2):
        apply()
        torch.testing.assert_close(logits(), expected, atol=1e-4, rtol=0, msg=damage)
        assert builds() == count, damage  # converted again, never compiled from the damaged file
    rng = random.Random(0)
    for _ in range(6):  # random bytes in OpenVINO's compiled blob: it checks its blobs and compiles again
        (blob,) = (folder / "compiled-fp32").iterdir()
        data = bytearray(blob.read_bytes())
        for _ in range(rng.choice([1, 8, 64])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        blob.write_bytes(bytes(data[: rng.choice([len(data), len(data) // 2])]))
        torch.testing.assert_close(logits(), expected, atol=1e-4, rtol=0)
    assert builds() == 3


def read_only(home: Path) -> list[str]:
    """A command prefix that runs with `home` read-only: a read-only bind mount in a new mount namespace
    (root ignores permissions), else the permissions taken away by the caller (see the test)."""
    if os.geteuid() != 0:
        return []
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("root without mount namespaces: no way to make a folder read-only for this test")
    return ["unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(home)]


def test_a_read_only_hf_home_with_a_populated_cache_serves_every_command(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path)
    video = flat_video(tmp_path / "clip.mp4", (200, 128, 30), frames=8)
    (tmp_path / "list.csv").write_text(f"{video},abseiling\n")
    commands = [
        ["predict", video, "--model", "tiny-k400", "--json"],
        ["eval", "--dataset", "csv", "--list", tmp_path / "list.csv", "--model", "tiny-k400", "--json"],
        ["features", video, "--model", "tiny-k400", "-o", tmp_path / "f.npy", "--force", "--json"],
    ]
    for command in commands:  # populate the cache
        code, _, err = run_cli(capsys, *command)
        assert code == 0, err
    before = {path: path.stat().st_mtime_ns for path in local_hub.home.rglob("*") if path.is_file()}
    prefix = read_only(local_hub.home)
    if not prefix:
        for path in [local_hub.home, *local_hub.home.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
    try:
        touched = subprocess.run([*prefix, "sh", "-c", 'touch "$0/probe"', str(local_hub.home)], capture_output=True)
        assert touched.returncode != 0, "the cache is still writable"
        process = tiny_zoo_process(tmp_path / "driver", *commands, prefix=prefix)
        out, err = process.communicate(timeout=600)
    finally:
        for path in [local_hub.home, *local_hub.home.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert json.loads(out.splitlines()[-1]) == [0, 0, 0], err
    assert "Traceback" not in err and "error" not in err.lower() and "warning" not in err.lower(), err
    assert {path: path.stat().st_mtime_ns for path in local_hub.home.rglob("*") if path.is_file()} == before


# Runs `uniformer ARGV`, saving eval's and features' progress after every video (instead of every minute).
SAVING_EVERY_VIDEO = textwrap.dedent(
    """
    import json, sys
    from uniformer_cli.engine import evaluate, features
    evaluate.CHECKPOINT_SECONDS = features.CHECKPOINT_SECONDS = -1.0
    from uniformer_cli.cli.app import main
    main(json.loads(sys.argv[1]))
    """
)


def test_ctrl_c_to_eval_and_its_decoding_workers_saves_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    videos = [flat_video(tmp_path / f"clip{n}.mp4", (40 + 20 * n, 128, 30), frames=8) for n in range(8)]
    (tmp_path / "list.csv").write_text("".join(f"{video.name},{n % 8}\n" for n, video in enumerate(videos)))
    weights = save_weights(tmp_path / "w.safetensors", colour_model(), TINY.replace(num_classes=8))
    report = tmp_path / "report.json"
    argv = ["eval", "--dataset", "csv", "--list", tmp_path / "list.csv", "-w", weights, *PROTOCOL, "-o", report]
    command = [sys.executable, "-c", SAVING_EVERY_VIDEO, json.dumps([*map(str, argv), "--workers", "2", "-b", "1"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    while not report.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the first video is saved: the run is under way
    os.killpg(process.pid, signal.SIGINT)  # what a terminal does: the workers get it too
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err.decode()[-2000:]
    saved = json.loads(report.read_text())["summary"]
    assert saved["complete"] is False and 1 <= saved["videos"] < 8
    code, _, err_text = run_cli(capsys, *argv, "--resume")
    assert code == 0, err_text
    done = json.loads(report.read_text())["summary"]
    assert (done["complete"], done["videos"], done["evaluated"]) == (True, 8, 8 - saved["videos"])
    code, _, _ = run_cli(capsys, *argv[:-2], "-o", tmp_path / "uninterrupted.json")
    assert json.loads((tmp_path / "uninterrupted.json").read_text())["summary"]["top1"] == done["top1"]


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(alphabet="0123456789.eE+-_ ²١KMGTiBb", max_size=30), st.from_regex(r"[0-9]{1,400}GB")))
def test_a_shard_size_is_a_bounded_number_of_bytes_or_one_line(text: str) -> None:
    from uniformer_cli.engine.packing import SHARD_BYTES_RANGE, parse_size

    try:
        size = parse_size(text)
    except UniformerError as error:
        assert "\n" not in str(error)
        return
    assert SHARD_BYTES_RANGE[0] <= size <= SHARD_BYTES_RANGE[1]


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(
    fields=st.dictionaries(st.sampled_from(["videos", "labels", "failures", "format", "layer"]), JSON_VALUES),
    rows=st.integers(0, 3),
)
def test_features_resume_files_of_the_wrong_types_are_one_line(fields: dict[str, object], rows: int) -> None:
    import numpy as np

    from uniformer_cli.engine.features import FORMAT_TAG, read_features

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.npy"
        np.save(path, np.zeros((rows, 4), np.float32))
        path.with_suffix(".json").write_text(json.dumps({"format": FORMAT_TAG, **fields}))
        try:
            read = read_features(path)
        except UniformerError as error:
            assert f"{path}" in str(error) and "\n" not in str(error)
            return
        assert len(read.videos) == rows and all(isinstance(video, str) for video in read.videos)
