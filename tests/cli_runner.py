"""Run the `uniformer` command in-process, as the tests of its subcommands do."""

from __future__ import annotations

import pytest

from uniformer_cli.cli.app import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """`uniformer ARGS`: its exit status, stdout and stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err
