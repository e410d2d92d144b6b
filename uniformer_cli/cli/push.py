"""`uniformer push WEIGHTS REPO_ID`: thin layer over `engine.push`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from uniformer_cli import engine
from uniformer_cli.cli.options import fields_from
from uniformer_cli.cli.output import JsonFlag, Output, OutputOption, Result
from uniformer_cli.cli.text import escape
from uniformer_cli.settings import DEFAULT_LICENSE


def push(
    weights: Annotated[
        Path,
        typer.Argument(help="A .safetensors file written by convert or train.", metavar="WEIGHTS", show_default=False),
    ],
    repo_id: Annotated[
        str,
        typer.Argument(
            help="The Hub model repository, NAMESPACE/NAME (created if missing).", metavar="REPO_ID", show_default=False
        ),
    ],
    private: Annotated[
        bool, typer.Option("--private", help="Create the repository private (an existing one keeps its visibility).")
    ] = False,
    revision: Annotated[
        str | None,
        typer.Option(
            "--revision",
            help="Branch to commit to, created from main if missing. \\[default: main]",
            show_default=False,
        ),
    ] = None,
    commit_message: Annotated[
        str | None,
        typer.Option("--commit-message", help="\\[default: Upload FILE with uniformer VERSION]", show_default=False),
    ] = None,
    eval_file: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            help="An `uniformer eval -o FILE.json` report: its top-1, top-5 and mean class accuracy go into the "
            "model card (and the Hub's model-index).",
            show_default=False,
        ),
    ] = None,
    license: Annotated[
        str, typer.Option("--license", help="The model card's licence id (the official weights are MIT).")
    ] = DEFAULT_LICENSE,
    json_output: JsonFlag = False,
    output: OutputOption = None,
) -> None:
    """Upload a model to the Hugging Face Hub: the safetensors file (as model.safetensors, with its
    architecture, class names and test protocol) and a generated model card (README.md).

    Anyone can then run it with `--model REPO_ID` (predict, eval, features, explain, export) or in Python
    with load_model("REPO_ID"). The token is the one of `hf auth login`, or HF_TOKEN.

    Examples:
    `uniformer push runs/mine/best.safetensors me/uniformer-mine --eval val.json`
    `uniformer push s16.safetensors me/uniformer-s16 --private --revision v1`
    """
    destination = Output(json_output, output)
    report = engine.push.push_model(engine.push.PushRequest(**fields_from(engine.push.PushRequest, locals())))
    record = {
        "repo": report.repo,
        "revision": report.revision,
        "commit": report.commit,
        "url": report.url,
        "files": report.files,
        "weights": str(report.weights),
        "private": report.private,
        "error": None,
    }
    destination.finish(Result([record], document=record), lambda console: _print(console, report))


def _print(console: Console, report: engine.push.PushReport) -> None:
    console.print(escape(f"pushed {report.weights} to {report.repo} ({report.revision}, commit {report.commit[:12]})"))
    console.print(escape(f"{report.url}  ·  run it: uniformer predict clip.mp4 --model {report.repo}"))
