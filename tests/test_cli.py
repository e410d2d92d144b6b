"""The command as a whole: start-up cost and the package's lazily loaded exports."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import uniformer_cli
from uniformer_cli import data, engine, models
from uniformer_cli.cli.app import app, main

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
    [["--help"], ["models"], ["predict", "--help"], ["eval", "--help"], ["train", "--help"], ["flops", "--help"]],
)
def test_help_and_listing_do_not_import_torch(args: list[str]) -> None:
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
