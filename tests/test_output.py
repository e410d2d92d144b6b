"""The output contract of docs/OUTPUT.md: every command's records hold the documented fields, the flags and
encodings mean the same everywhere, one exit-status rule, choices refused while parsing, tables that fit."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import json
import re
import shlex
from pathlib import Path

import pytest
import typer
from cli_runner import run_cli
from eval_data import colour, colour_model, flat_video
from hub_server import serve_tiny_zoo_model
from synthetic_video import numbered_frame, write_frame_folder

from uniformer_cli import engine
from uniformer_cli.cli import data as data_command
from uniformer_cli.cli import evaluate, explain, features, options
from uniformer_cli.cli import predict as predict_command
from uniformer_cli.cli.app import app
from uniformer_cli.cli.output import flatten
from uniformer_cli.protocol import ProtocolOverrides
from uniformer_cli.weights import save_weights
from uniformer_cli.zoo import ZOO
from uniformer_cli.zoo.v2 import V2_ZOO

ROOT = Path(__file__).resolve().parent.parent
PARITY = ROOT / "tests" / "fixtures" / "parity"
PROTOCOL = {"frames": 4, "stride": 2, "sampling": "dense", "clips": 2, "crops": 1, "size": 32, "channel_order": "rgb"}
NAMES = [f"class {k} [x]" for k in range(8)]  # brackets: rich markup, printed verbatim
COMMANDS = ("predict", "eval", "flops", "convert", "models")
# predict's own parameters: what to read and how to show it (the rest builds its inference request).
PREDICT_ONLY = {
    "paths",
    "top_k",
    "json_output",
    "output",
    "csv_file",
    "timeline",
    "fps",
    "plot",
    "batch_size",
    "decoder",
}


def documented_schema() -> dict[str, set[str]]:
    """The 'Schema' table of docs/OUTPUT.md: record name -> its fields."""
    text = (ROOT / "docs" / "OUTPUT.md").read_text()
    section = text[text.index("## Schema") :]
    section = section[: section.index("\n## ", 1)]
    schema = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[1].startswith("`"):
            schema[cells[0].replace("`", "")] = set(re.findall(r"`([\w.]+)`", cells[1]))
    return schema


SCHEMA = documented_schema()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_data(tmp_path_factory.mktemp("output"))


def write_data(root: Path) -> dict[str, Path]:
    """A tiny forced-colour model with its protocol and labels, two videos, an unreadable one, a list."""
    model = colour_model()
    weights = save_weights(root / "tiny.safetensors", model, model.config, labels=NAMES, protocol=PROTOCOL)
    first = flat_video(root / "first [1].mp4", colour(-1.5), size=(64, 48))
    second = flat_video(root / "second.mp4", colour(0.5), size=(64, 48))
    broken = root / "broken.mp4"
    broken.write_bytes(b"not a video" * 50)
    (root / "list.csv").write_text("first [1].mp4,0\nsecond.mp4,4\nbroken.mp4,2\n")
    return {"root": root, "weights": weights, "first": first, "second": second, "broken": broken}


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    return run_cli(capsys, *args)


def predict(capsys: pytest.CaptureFixture[str], data: dict[str, Path], *args: object) -> tuple[int, str, str]:
    return run(capsys, "predict", *args, "--weights", data["weights"], "--device", "cpu")


# --- the schema ---------------------------------------------------------------------------------------


def command_names() -> set[str]:
    """Every command, a group's as `group command` (`cache ls`)."""
    names = set()
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        nested = getattr(command, "commands", None)
        names |= {f"{name} {sub}" for sub in nested} if nested else {name}
    return names


def test_the_schema_table_covers_every_command() -> None:
    # Every command but train (its run folder and plan are docs/TRAINING.md's) has its record documented.
    assert command_names() - {"train"} <= set(SCHEMA)
    assert {"predict --timeline", "eval summary"} <= set(SCHEMA)
    assert SCHEMA["protocol"] == set(PROTOCOL) | {"single_crop"}


def test_predict_records_hold_the_schema_and_keep_failures(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path]
) -> None:
    paths = [data["first"], data["broken"], data["second"]]
    code, out, err = predict(capsys, data, *paths, "--json", "--top-k", "3")
    assert code == 3, err  # one input failed, the others were written
    records = json.loads(out)
    assert [record["video"] for record in records] == [str(path) for path in paths]
    for record in records:
        assert set(record) == SCHEMA["predict"]
        assert set(record["protocol"]) == SCHEMA["protocol"]
        assert record["model"] == record["weights"] == str(data["weights"])
    good, failed, other = records
    assert failed["error"] and all(failed[key] is None for key in ("predicted_index", "score", "top_k"))
    assert good["error"] is None and [set(item) for item in good["top_k"]] == [SCHEMA["class"]] * 3
    assert (good["predicted_index"], good["predicted_label"]) == (0, NAMES[0])
    assert (other["predicted_index"], other["predicted_label"]) == (4, NAMES[4])
    assert good["score"] == good["top_k"][0]["score"]
    assert err.count("error:") == 1 and "broken.mp4" in err


def test_timeline_records_hold_the_schema(capsys: pytest.CaptureFixture[str], data: dict[str, Path]) -> None:
    code, out, err = predict(capsys, data, data["first"], "--timeline", "0.2", "--json")
    assert code == 0, err
    [record] = json.loads(out)
    assert set(record) == SCHEMA["predict --timeline"]
    assert record["windows"] and all(set(window) == SCHEMA["window"] for window in record["windows"])


def test_eval_records_hold_the_schema(capsys: pytest.CaptureFixture[str], data: dict[str, Path]) -> None:
    code, out, err = run(
        capsys, "eval", "-D", "csv", "--list", data["root"] / "list.csv", "-w", data["weights"], "--device", "cpu",
        "--workers", "0", "--json",
    )  # fmt: skip
    assert code == 3, err
    document = json.loads(out)
    assert set(document) == {"summary", "classes", "videos"}
    assert set(document["summary"]) == SCHEMA["eval summary"]
    first, second, broken = document["videos"]
    for record in document["videos"]:
        assert set(record) == SCHEMA["eval"]
    assert (first["true_index"], first["true_label"], first["predicted_label"], first["correct"]) == (
        0, NAMES[0], NAMES[0], True
    )  # fmt: skip
    assert second["true_label"] == NAMES[4] and [set(item) for item in second["top5"]] == [SCHEMA["class"]] * 5
    assert broken["error"] and broken["correct"] is None and broken["true_index"] == 2


def test_flops_convert_and_models_records_hold_the_schema(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "flops", "--model", "s16x8-k400", "--by-stage", "--json")
    assert code == 0
    [row] = json.loads(out)
    assert set(row) == SCHEMA["flops"] | {"stages"}
    code, out, err = run(capsys, "convert", PARITY / "small_official.pth", tmp_path / "s.safetensors", "--head-dim", 16,
                         "--json")  # fmt: skip
    assert code == 0, err
    assert set(json.loads(out)) == SCHEMA["convert"]
    code, out, _ = run(capsys, "models", "--json")
    rows = json.loads(out)
    assert all(set(row) == SCHEMA["models"] for row in rows) and len(rows) == len(ZOO) + len(V2_ZOO)


def test_data_pack_and_check_records_hold_the_schema(capsys: pytest.CaptureFixture[str], data: dict[str, Path]) -> None:
    root = data["root"] / "packing"
    for split in ("train", "val"):
        flat_video(root / split / "red" / "a.mp4", colour(-1.5), size=(64, 48))
    (root / "val" / "red" / "b.mp4").write_bytes(b"not a video" * 50)
    code, out, err = run(capsys, "data", "pack", root, data["root"] / "packed", "--json")
    assert code == 3, err
    document = json.loads(out)
    assert set(document) == SCHEMA["data pack summary"]
    assert [set(record) for record in document["records"]] == [SCHEMA["data pack"]] * 3
    assert [record["error"] is None for record in document["records"]] == [True, True, False]
    code, out, err = run(capsys, "data", "check", root, "--json")
    assert code == 3, err
    document = json.loads(out)
    assert set(document) == SCHEMA["data check summary"]
    assert [set(record) for record in document["records"]] == [SCHEMA["data check"]] * 3


# --- flags and encodings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_every_encoding_holds_the_same_records(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    paths = [data["first"], data["broken"]]
    code, out, _ = predict(capsys, data, *paths, "--json")
    records = json.loads(out)
    target = tmp_path / f"out{suffix}"
    code, out, _ = predict(capsys, data, *paths, "-o", target)
    assert code == 3
    assert NAMES[0] in out  # the tables still print when the records go to a file
    text = target.read_text()
    if suffix == ".json":
        read = json.loads(text)
    elif suffix == ".jsonl":
        read = [json.loads(line) for line in text.splitlines()]
    else:
        read = list(csv.DictReader(io.StringIO(text)))
        records = [{k: "" if v is None else str(v) for k, v in flatten(record).items()} for record in records]
    for got, want in zip(read, records, strict=True):
        got.pop("elapsed_s"), want.pop("elapsed_s")
        assert got == want


def test_output_to_stdout_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "-o", "-")
    assert code == 0
    assert json.loads(out)[0]["model"] == next(iter(ZOO))


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_file_of_unknown_format_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    required = {"predict": ["clip.mp4"], "eval": ["-D", "csv"], "convert": ["a.pth", "b.safetensors"]}
    code, out, err = run(capsys, command, *required.get(command, []), "-o", tmp_path / "out.txt")
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and err.count("\n") == 1
    assert ".json, .jsonl or .csv" in err


# --- exit status and usage errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option", "valid"),
    [
        (["predict", "a.mp4", "--crops", "2"], "--crops", "'1', '3'"),
        (["predict", "a.mp4", "--device", "gpu"], "--device", "'auto', 'cpu', 'cuda', 'mps'"),
        (["predict", "a.mp4", "--sampling", "uniform"], "--sampling", "'dense', 'segment', 'sparse'"),
        (["predict", "a.mp4", "--decoder", "ffmpeg"], "--decoder", "'auto', 'decord', 'pyav'"),
        (["eval", "--dataset", "kinetics"], "--dataset", "'k400'"),
        (["eval", "-D", "k400", "--channel-order", "rbg"], "--channel-order", "'rgb', 'bgr'"),
        (["flops", "--arch", "q"], "--arch", "'s', 'b', 'xxs', 'xs'"),
        (["flops", "--bogus"], "--bogus", "No such option"),
        (["models", "extra"], "extra", "unexpected extra argument"),
    ],
)
def test_usage_errors_are_one_line_with_the_valid_values(
    capsys: pytest.CaptureFixture[str], args: list[str], option: str, valid: str
) -> None:
    code, out, err = run(capsys, *args)
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert option in err and valid.lower() in err.lower()
    assert "╭" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("command", "request_class", "derived", "command_only"),
    [
        (evaluate.evaluate, engine.evaluate.EvalRequest, {"inference", "json_path"}, {"json_output", "output", "plot"}),
        (features.features, engine.features.FeaturesRequest, {"inference"}, {"json_output"}),
        (explain.explain, engine.explain.ExplainRequest, {"inference"}, {"json_output"}),
        (predict_command.predict, None, set(), PREDICT_ONLY),
        (
            data_command.pack,
            engine.packing.PackRequest,
            {"shard_bytes", "overwrite"},
            {"shard_size", "force", "json_output", "output"},
        ),
        (data_command.check, engine.doctor.CheckRequest, set(), {"json_output", "output"}),
    ],
)
def test_each_option_reaches_its_request_by_name(
    command: object, request_class: type | None, derived: set[str], command_only: set[str]
) -> None:
    """The commands build their engine request, and the inference request inside it
    (`options.inference_request`), from their parameters by name (`options.fields_from`): a parameter whose
    name matches no field would be dropped silently, so it fails here; and every request field is either a
    parameter or one the command derives."""
    parameters = set(inspect.signature(command).parameters)  # type: ignore[arg-type]
    fields = {field.name for field in dataclasses.fields(request_class)} if request_class else set()
    inference = {field.name for field in dataclasses.fields(engine.request.InferenceRequest)} - {"protocol"}
    protocol = {field.name for field in dataclasses.fields(ProtocolOverrides)}
    assert fields - parameters == derived
    taken = fields | protocol | {name for name in inference if name in parameters} | set(options.RENAMED)
    assert parameters - taken == command_only


def test_choices_reach_the_command_as_plain_values(capsys: pytest.CaptureFixture[str], data: dict[str, Path]) -> None:
    code, out, err = predict(capsys, data, data["first"], "--crops", "3", "--sampling", "SPARSE", "--json")
    assert code == 0, err
    [record] = json.loads(out)
    assert (record["protocol"]["crops"], record["protocol"]["sampling"]) == (3, "sparse")


def test_help_version_and_completion(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-h")
    assert code == 0 and "Usage: uniformer" in out and "--install-completion" in out
    assert "predict" in out and "Exit status" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and re.fullmatch(r"uniformer \S+\n", out)
    for command in COMMANDS:
        code, out, _ = run(capsys, command, "-h")
        assert code == 0 and f"Usage: uniformer {command}" in out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_and_shows_its_default(name: str) -> None:
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    for parameter in command.params:
        if parameter.param_type_name != "option":
            continue
        assert parameter.help, f"{name} {parameter.name} has no help"
        if parameter.is_flag or parameter.hidden:
            continue
        # A concrete default is shown (None means "not given": the help says what happens then).
        assert parameter.default is None or parameter.show_default is not False, f"{name} {parameter.opts}"


# --- tables -------------------------------------------------------------------------------------------------


def render(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int, *args: object) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(variable, raising=False)
    code, out, err = run(capsys, *args)
    assert code in (0, 3), err
    assert max(len(line) for line in out.splitlines()) <= width, out
    assert "…" not in out, out
    return out


def words(text: str) -> set[str]:
    return set(text.replace(",", " ").split())


@pytest.mark.parametrize("width", [60, 80, 120])
def test_models_table_keeps_every_number_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    text = words(render(capsys, monkeypatch, width, "models"))
    for entry in ZOO.values():
        assert {entry.name, f"{entry.top1:.1f}", f"{entry.gflops:g}"} <= text, entry.name
    for v2 in V2_ZOO.values():
        assert {v2.name, f"{v2.top1:.1f}" if v2.top1 else "-"} <= text, v2.name
    assert {"Hub", "MMAction2", "Drive", "none"} <= text  # the source column, at every width


@pytest.mark.parametrize("args", [["--frames", "16"], ["--model", "b32x4-k400", "--by-stage"]])
def test_flops_tables_keep_every_number_whole_at_60_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    rows = json.loads(run(capsys, "flops", *args, "--json")[1])
    text = words(render(capsys, monkeypatch, 60, "flops", *args))
    for row in rows:
        # UniFormerV2's published figures are rounded to 0.1 TFLOPs: a count that rounds to one says so.
        difference = "rounds" if row["model"] in V2_ZOO else f"{row['diff_pct']:+.1f}%"
        assert {f"{row['gflops_per_view']:.2f}", f"{row['gflops']:.1f}", difference} <= text
        for group, value in (row.get("stages") or {}).items():
            if not group.startswith("patch_embed"):  # the four embeddings share one column
                assert (f"{value:.2f}" if value >= 0.01 else f"{value:.1g}") in text, group


def test_predict_on_several_videos_prints_one_summary_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, data: dict[str, Path]
) -> None:
    text = render(
        capsys, monkeypatch, 60, "predict", data["first"], data["second"], data["broken"], "-w", data["weights"],
        "--device", "cpu",
    )  # fmt: skip
    assert text.count("top-1") == 1  # one table, not one per video
    assert NAMES[0] in text and NAMES[4] in text  # brackets verbatim
    assert "[1].mp4" in text and "second.mp4" in text  # the video column folds long paths
    for record in json.loads(predict(capsys, data, data["first"], data["second"], "--json")[1]):
        assert f"{record['score']:.1%}" in text


# --- command behaviour the issue asked for -------------------------------------------------------------------


def test_timeline_on_a_frame_folder_asks_for_fps(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path], tmp_path: Path
) -> None:
    folder = write_frame_folder(tmp_path / "frames", [numbered_frame(i, 48, 64) for i in range(20)])
    code, out, err = predict(capsys, data, folder, "--timeline", "1")
    assert (code, out) == (1, "")
    assert "frame folder" in err and "--fps" in err
    code, out, err = predict(capsys, data, folder, "--timeline", "1", "--fps", "10", "--json")
    assert code == 0, err
    [record] = json.loads(out)
    assert [(w["start"], w["end"]) for w in record["windows"]] == [(0.0, 1.0), (1.0, 2.0)]


# --- examples in the README and in --help ---------------------------------------------------------------------


def documented_examples() -> list[tuple[str, list[str]]]:
    """(where, argv) of every `uniformer COMMAND ...` example in the README, the docs and `--help`."""
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    pattern = re.compile(rf"(?:uniformer|uniformer_cli\.cli\.app) ((?:{'|'.join(commands)})\b[^`#|\\\n]*)")
    # In Markdown the fenced code blocks hold the examples (inline code in prose names options); in --help,
    # the "Example(s):" paragraph.
    fence = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
    documents = [ROOT / "README.md", *sorted(ROOT.glob("*/README.md")), *sorted((ROOT / "docs").glob("*.md"))]
    sources = [(path.name, block) for path in documents for block in fence.findall(path.read_text())]
    # In --help, the examples are the epilog's.
    sources += [(f"{name} --help", command.epilog or "") for name, command in commands.items()]
    examples = []
    for where, text in sources:
        for match in pattern.finditer(text):
            line = match.group(1).strip().rstrip(".,;")
            if "..." in line or "FILE" in line.split() or line.count("'") % 2:
                continue  # a pattern or a quoted message, not an example
            examples.append((where, shlex.split(line)))
    return examples


def test_every_documented_example_parses() -> None:
    """Each example's options exist and its values pass the parser (choices, numbers, -o formats)."""
    group = typer.main.get_command(app)
    examples = documented_examples()
    assert len(examples) > 20
    for where, argv in examples:
        command = group.commands[argv[0]]  # type: ignore[attr-defined]
        try:
            command.make_context(argv[0], argv[1:])
        except Exception as error:  # reported with the example that failed
            pytest.fail(f"{where}: uniformer {shlex.join(argv)}: {error}")


def runnable(argv: list[str]) -> bool:
    """Examples that run here in seconds: `models`, `flops --model` (no --bench), and `predict` on the
    example clip (its zoo models served tiny from the local Hub)."""
    if argv[0] == "flops":
        return "--model" in argv and "--bench" not in argv
    return argv[0] == "models" or (argv[0] == "predict" and "examples/yoga.mp4" in argv)


@pytest.mark.parametrize(
    "argv", sorted({tuple(argv) for _, argv in documented_examples() if runnable(argv)}), ids=" ".join
)
def test_the_documented_examples_run(
    capsys: pytest.CaptureFixture[str], local_hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: tuple
) -> None:
    # The zoo entries the examples name (and their aliases s-k400, b-k400) become tiny random models
    # downloaded from the local Hub, so the README's quick start runs the real download-convert-predict path.
    for name in ("s16x8-k400", "b32x4-k400"):
        serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, name=name)
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # files the examples write land in tmp_path
    monkeypatch.chdir(tmp_path)
    extra = ["--device", "cpu"] if argv[0] == "predict" else []
    code, out, err = run(capsys, *argv, *extra)
    assert code == 0, err
    if "--json" in argv:
        assert json.loads(out)


def test_commands_get_plain_values_never_enum_members() -> None:
    received = {}

    def command(device: str, crops: int | None, sampling: str | None = None) -> None:
        received.update(device=device, crops=crops, sampling=sampling)

    options.plain_choices(command)(device=options.Device.cpu, crops=options.Crops("3"), sampling=None)
    assert received == {"device": "cpu", "crops": 3, "sampling": None}
    assert type(received["device"]) is str and type(received["crops"]) is int


def test_eval_writes_jsonl_and_csv_and_resumes_only_from_json(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path], tmp_path: Path
) -> None:
    base = ("eval", "-D", "csv", "--list", data["root"] / "list.csv", "-w", data["weights"], "-d", "cpu", "-j", "0")
    code, _, err = run(capsys, *base, "-o", tmp_path / "videos.jsonl")
    assert code == 3, err
    lines = [json.loads(line) for line in (tmp_path / "videos.jsonl").read_text().splitlines()]
    assert [line["true_label"] for line in lines] == [NAMES[0], NAMES[4], NAMES[2]]
    code, _, err = run(capsys, *base, "-o", tmp_path / "videos.csv")
    rows = list(csv.DictReader((tmp_path / "videos.csv").open()))
    assert [row["error"] != "" for row in rows] == [False, False, True]
    assert rows[0]["protocol.frames"] == "4" and rows[0]["correct"] == "True"
    code, out, err = run(capsys, *base, "-o", tmp_path / "videos.csv", "--resume")
    assert (code, out) == (1, "") and "--resume needs -o FILE.json" in err


def test_help_reflows_paragraphs_and_keeps_examples_on_their_lines() -> None:
    from uniformer_cli.cli.framework import help_text

    doc = """First line
    continues here.

    Examples:
    `uniformer flops --frames 16`
    `uniformer models --json`
    """
    assert help_text(doc) == (
        "First line continues here.",
        "\b\nExamples:\n  uniformer flops --frames 16\n  uniformer models --json",
    )


def test_features_and_explain_summaries_hold_the_schema(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path], tmp_path: Path
) -> None:
    code, out, err = run(
        capsys, "features", data["first"], data["broken"], "-w", data["weights"], "-d", "cpu",
        "-o", tmp_path / "f.safetensors", "--json",
    )  # fmt: skip
    assert code == 3, err  # the broken video failed, the other's features were written
    summary = json.loads(out)
    assert set(summary) == SCHEMA["features"]
    assert summary["failures"] == [{"video": str(data["broken"]), "error": summary["failures"][0]["error"]}]
    code, out, err = run(
        capsys, "explain", data["first"], "-w", data["weights"], "-d", "cpu", "-o", tmp_path / "e.gif", "--json"
    )
    assert code == 0, err
    record = json.loads(out)
    assert set(record) == SCHEMA["explain"]
    assert (record["video"], record["explained_label"]) == (str(data["first"]), NAMES[0])


def test_a_timeline_record_names_the_protocol_each_window_used(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path]
) -> None:
    """The model's protocol has 2 clips; each timeline window is scored with 1 (or --clips) and the centre
    crop, and that is what the record says. `elapsed_s` is the time taken, not the video's length."""
    assert PROTOCOL["clips"] == 2
    for extra, clips in (([], 1), (["--clips", "3"], 3)):
        code, out, err = predict(capsys, data, data["first"], "--timeline", "0.5", "--json", *extra)
        assert code == 0, err
        [record] = json.loads(out)
        assert record["protocol"] == {**PROTOCOL, "clips": clips, "crops": 1, "single_crop": "centre"}
        assert "seconds" not in record and record["elapsed_s"] >= 0


def test_products_are_kept_unless_force_and_results_are_replaced(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path], tmp_path: Path
) -> None:
    """One rule (issue 25): features, explanations, exports and converted weights take long to make and
    are never overwritten without --force; result files (-o of predict, eval, flops, models) are replaced."""
    base = ("-w", data["weights"], "-d", "cpu")
    features = tmp_path / "f.npy"
    assert run(capsys, "features", data["first"], *base, "-o", features)[0] == 0
    index = features.with_suffix(".json").read_text()
    code, out, err = run(capsys, "features", data["second"], *base, "-o", features)
    assert (code, out) == (1, "") and "already exist" in err and "--force" in err and "--resume" in err
    assert features.with_suffix(".json").read_text() == index  # untouched
    assert run(capsys, "features", data["second"], *base, "-o", features, "--force")[0] == 0
    assert json.loads(features.with_suffix(".json").read_text())["videos"] == [str(data["second"])]
    code, _, err = run(capsys, "features", data["second"], *base, "-o", features, "--force", "--resume")
    assert code == 1 and "give one of them" in err

    clip = tmp_path / "e.gif"
    assert run(capsys, "explain", data["first"], *base, "-o", clip)[0] == 0
    code, _, err = run(capsys, "explain", data["first"], *base, "-o", clip)
    assert code == 1 and "already exist" in err and "--force" in err
    assert run(capsys, "explain", data["first"], *base, "-o", clip, "-f")[0] == 0

    results = tmp_path / "p.json"
    results.write_text("old")
    assert run(capsys, "predict", data["first"], *base, "-o", results)[0] == 0
    assert json.loads(results.read_text())[0]["video"] == str(data["first"])
    for command in ("features", "explain", "export", "convert"):
        code, out, _ = run(capsys, command, "-h")
        assert "--force" in out and "Replace files that already exist" in " ".join(out.split())
    code, out, _ = run(capsys, "predict", "-h")
    assert "replaced, atomically" in " ".join(out.split())


def test_a_dataset_without_root_is_a_command_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for argv in (["eval", "--dataset", "k400"], ["features", "--dataset", "k400", "-o", tmp_path / "f.npy"]):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, "") and err.count("\n") == 1
        assert "Missing option '--root'" in err and "--list" in err
