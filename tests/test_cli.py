"""The command as a whole: start-up cost and the package's lazily loaded exports."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import uniformer_cli
from uniformer_cli import data, engine, models
from uniformer_cli.cli.app import app, main
from uniformer_cli.cli.framework import GLOBAL_FLAGS, take_global_flags

PACKAGE = Path(uniformer_cli.__file__).parent

# Runs the command in a fresh interpreter and reports which heavy modules it imported.
PROBE = """
import contextlib, io, sys
from uniformer_cli.cli.app import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(sys.argv[1:])
print(sorted(name for name in ("torch", "safetensors", "huggingface_hub") if name in sys.modules))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["models"],
        ["predict", "--help"],
        ["eval", "--help"],
        ["train", "--help"],
        ["flops", "--help"],
        ["predict", "no-such-video.mp4"],
    ],
)
def test_help_listing_and_missing_inputs_do_not_import_torch(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_commands_that_compute_do_import_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "flops", "--arch", "xxs", "--frames", "4", "--size", "64"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "torch" in result.stdout


def test_lazy_exports_resolve_to_the_defining_modules() -> None:
    from uniformer_cli.models.factory import create_model
    from uniformer_cli.weights.loader import load_model

    assert uniformer_cli.load_model is load_model
    assert models.create_model is create_model
    assert data.load_views.__module__ == "uniformer_cli.data.views"
    assert uniformer_cli.load_predictor.__module__ == "uniformer_cli.engine.predict"
    assert engine.flops.__name__ == "uniformer_cli.engine.flops"
    for package in (uniformer_cli, data, models, engine):
        assert set(package.__all__) <= set(dir(package))
        for name in package.__all__:
            assert getattr(package, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = models.missing
    assert not hasattr(engine, "missing")


ROOT = Path(__file__).resolve().parent.parent
FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def test_every_option_the_documentation_uses_exists() -> None:
    commands = {}
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", None)  # a group: `uniformer data pack ...`
        commands.update(
            {f"{name} {sub}": each for sub, each in subcommands.items()} if subcommands else {name: command}
        )
    options = {
        name: {"-h", "--help"}
        | {flag for parameter in command.params for flag in (*parameter.opts, *parameter.secondary_opts)}
        for name, command in commands.items()
    }
    # `uniformer <command> ...` or `torchrun ... -m uniformer_cli.cli.app <command> ...` in a document.
    documented_command = re.compile(rf"(?:uniformer|uniformer_cli\.cli\.app) ({'|'.join(commands)})\b([^`#|]*)")
    documents = [ROOT / "README.md", *ROOT.glob("*/README.md"), *(ROOT / "docs").glob("*.md")]
    used = []
    for document in documents:
        for number, line in enumerate(document.read_text().splitlines(), start=1):
            for command, rest in documented_command.findall(line):
                used += [(f"{document.name}:{number}", command, flag) for flag in FLAG.findall(rest)]
    assert len(used) > 50  # the README's and docs' examples were found
    assert [use for use in used if use[2] not in options[use[1]]] == []


def test_library_code_logs_and_the_cli_chooses_the_level(capsys: pytest.CaptureFixture[str]) -> None:
    """Library modules report through `logging` (nothing in them prints); the CLI shows the package's
    records on stderr, from INFO by default, WARNING with --quiet and DEBUG with --verbose."""
    package = logging.getLogger("uniformer_cli")
    for flags, level in (([], logging.INFO), (["--quiet"], logging.WARNING), (["-v"], logging.DEBUG)):
        with pytest.raises(SystemExit) as exit_info:
            main([*flags, "models", "--json"])
        assert exit_info.value.code in (0, None)
        assert package.level == level
        capsys.readouterr()
        logging.getLogger("uniformer_cli.engine.train").info("epoch 1/2: val_top1 [50.00]%")
        logging.getLogger("uniformer_cli.device").warning("MPS cannot run here")
        err = capsys.readouterr().err
        assert ("epoch 1/2: val_top1 [50.00]%" in err) == (level <= logging.INFO), err
        assert "MPS cannot run here" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "-v", "models"])
    assert exit_info.value.code == 2
    printing = [
        path.relative_to(PACKAGE)
        for path in PACKAGE.rglob("*.py")
        if path.parent.name != "cli"
        and path.name != "progress.py"
        and re.search(r"\bprint\(|stderr_console", path.read_text())
    ]
    assert printing == []


# --- help, global flags, diagnostics ---------------------------------------------------------------------


def every_command() -> list[list[str]]:
    """The argv of every command, a group's as [group, command]."""
    found = []
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        nested = getattr(command, "commands", None)
        found += [[name, sub] for sub in nested] if nested else [[name]]
    return found


@pytest.mark.parametrize("argv", every_command(), ids=" ".join)
def test_help_reads_at_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """Nothing cut, no value shown for a flag, every option's words there, each example on its own line."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "-h"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "…" not in out and "<bool>" not in out and "<str>" not in out and "<int" not in out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    command = typer.main.get_command(app)
    for name in argv:
        command = command.commands[name]  # type: ignore[attr-defined]
    text = " ".join(out.split())
    for parameter in command.params:
        if parameter.help and not parameter.hidden:
            assert " ".join(parameter.help.split()) in text.replace("- ", "-"), parameter.name
    examples = [line.strip() for line in (command.epilog or "").splitlines()[2:] if line.startswith("  ")]
    for example in examples:
        assert f"    {example}\n" in out  # whole, on its own line
    assert bool(examples) == ("Examples:" in out)


def test_the_command_list_shows_whole_summaries(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["-h"])
    commands = capsys.readouterr().out.split("Commands:")[1]
    assert "..." not in commands and "…" not in commands
    for name in ("cache", "env", "download", "predict"):
        assert f"\n  {name} " in commands


def test_no_command_takes_the_global_flags_as_its_own() -> None:
    for argv in every_command():
        command = typer.main.get_command(app)
        for name in argv:
            command = command.commands[name]  # type: ignore[attr-defined]
        flags = {flag for parameter in command.params for flag in (*parameter.opts, *parameter.secondary_opts)}
        assert not flags & set(GLOBAL_FLAGS), argv


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["models", "--json", "-q"], logging.WARNING),
        (["models", "-v", "--json"], logging.DEBUG),
        (["-q", "models", "--json"], logging.WARNING),
        (["cache", "ls", "--json", "--quiet"], logging.WARNING),
        (["cache", "ls", "--json", "--verbose"], logging.DEBUG),
        (["models", "--json"], logging.INFO),
    ],
)
def test_quiet_and_verbose_also_work_after_the_command(
    capsys: pytest.CaptureFixture[str], local_hub, argv: list[str], level: int
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    assert logging.getLogger("uniformer_cli").level == level
    assert json.loads(capsys.readouterr().out) is not None  # the flags were not passed to the command


def test_global_flags_stop_at_a_double_dash_and_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["x.mp4", "-q", "--", "-v"]
    assert take_global_flags(args) == {"quiet"} and args == ["x.mp4", "--", "-v"]
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "-q", "-v"])
    assert exit_info.value.code == 2
    assert "exclude each other" in capsys.readouterr().err


def test_wide_tables_keep_every_column(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    with pytest.raises(SystemExit):
        main(["models"])
    narrow = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["models", "--wide"])
    wide = capsys.readouterr().out
    dropped = re.search(r"not shown at this width: (.*?) \(--json", " ".join(narrow.split()))
    assert dropped is not None and "not shown at this width" not in wide
    wide_header = next(line for line in wide.splitlines() if "top-1" in line)
    assert all(column in wide_header for column in dropped.group(1).split(", "))
    assert max(len(line) for line in wide.splitlines()) > 60


def test_uniformer_debug_shows_the_traceback_behind_the_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    argv = ["convert", tmp_path / "missing.pth", tmp_path / "out.safetensors"]
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err and err.count("error:") == 1
    monkeypatch.setenv("UNIFORMER_DEBUG", "1")
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("error:") == 1
    assert "Traceback (most recent call last)" in err and "require_file" in err
    assert err.rstrip().splitlines()[-1].startswith("error:")  # the line the traceback explains comes last


def test_env_reports_versions_cpu_cache_and_hides_tokens(
    capsys: pytest.CaptureFixture[str], local_hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from uniformer_cli.runtime import cpu_info
    from uniformer_cli.version import __version__

    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("UNIFORMER_DRIVE_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(SystemExit) as exit_info:
        main(["env", "--json"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    record = json.loads(out)
    assert "hf_secret_value" not in out and record["settings"]["HF_TOKEN"] == "set"
    assert record["settings"]["UNIFORMER_DRIVE_ENDPOINT"] == "http://127.0.0.1:9"
    assert record["uniformer"] == __version__ and record["packages"]["torch"] == torch.__version__
    assert record["cpu"]["avx512"] == ("avx512f" in cpu_info().flags)
    assert record["cpu"]["model"] == cpu_info().model
    assert record["gpu"]["cuda_devices"] == [] if not torch.cuda.is_available() else record["gpu"]["cuda_devices"]
    assert record["cache"]["home"] == str(local_hub.home / "uniformer")
    assert record["threads"]["torch"] == torch.get_num_threads()
    with pytest.raises(SystemExit):
        main(["env"])
    table = capsys.readouterr().out
    assert "hf_secret_value" not in table and f"torch {torch.__version__}" in table


def test_quiet_hides_the_bars_and_huggingface_hubs_until_the_next_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub.utils import are_progress_bars_disabled

    from uniformer_cli.cli import progress

    monkeypatch.delenv(progress.HUB_BARS_VARIABLE, raising=False)
    with pytest.raises(SystemExit):
        main(["models", "--json", "-q"])
    assert not progress.progress_shown() and progress.ProgressBars(True).bars.disable
    assert os.environ[progress.HUB_BARS_VARIABLE] == "1" and are_progress_bars_disabled()
    with pytest.raises(SystemExit):
        main(["models", "--json"])
    assert progress.progress_shown() and progress.HUB_BARS_VARIABLE not in os.environ
    assert not are_progress_bars_disabled()
    capsys.readouterr()


# `leave` ends the process at once after running the atexit handlers (temporary folders, pools) and flushing;
# whether the code after it runs shows whether it returned for the normal exit.
LEAVE = """
import atexit, sys, threading
from uniformer_cli.cli.app import leave
atexit.register(lambda: print("teardown"))
if sys.argv[1] == "thread":
    threading.Thread(target=threading.Event().wait, args=(0.5,)).start()
if sys.argv[1] == "traced":
    sys.settrace(lambda *_: None)
print("output", end="")
leave(3)
print(" after leave", end="")
sys.exit(4)
"""


@pytest.mark.parametrize("case", ["alone", "thread", "traced"])
def test_leave_flushes_and_exits_at_once_unless_a_thread_or_tracer_needs_the_teardown(case: str) -> None:
    result = subprocess.run([sys.executable, "-c", LEAVE, case], capture_output=True, text=True, timeout=60)
    if case == "alone":
        assert (result.returncode, result.stdout) == (3, "outputteardown\n")
    else:  # a live non-daemon thread (joined), or a tracer (writes its results): the normal exit
        assert (result.returncode, result.stdout) == (4, "output after leaveteardown\n")


def test_the_console_command_leaves_with_the_commands_status_and_output() -> None:
    command = [sys.executable, "-m", "uniformer_cli.cli.app"]
    listing = subprocess.run([*command, "models", "--json"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and json.loads(listing.stdout)
    usage = subprocess.run([*command, "models", "--no-such-option"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and usage.stderr.startswith("error:")
