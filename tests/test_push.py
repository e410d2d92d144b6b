"""The Hub both ways: `uniformer push` through huggingface_hub's real upload client to the local Hub
(tests/hub_server.py), and any Hub repository holding a converted file as `--model NAMESPACE/NAME`: the model
`predict` runs and the starting point `train` fine-tunes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from cli_runner import run_cli
from eval_data import colour_model
from hub_server import LocalHub
from huggingface_hub.utils import HFValidationError, validate_repo_id
from hypothesis import given
from hypothesis import strategies as st
from motion_data import DIRECTIONS, motion_dataset
from safetensors.torch import load_file, save_file
from test_output import NAMES, documented_schema, write_data

import uniformer_cli
from uniformer_cli.engine.checkpointing import load_checkpoint
from uniformer_cli.errors import UniformerError
from uniformer_cli.models import ModelConfig, create_model
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import resolve_model, save_weights
from uniformer_cli.weights.header import WEIGHT_SUFFIXES, name_kind

TOKEN = "hf_test_token"
# The tiny UniFormer of the training tests (tests/motion_data.py's TINY).
TINY_TRAIN_CONFIG = ModelConfig(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 64), head_dim=16)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """test_output's tiny model as `train` or `convert --model` leave one (labels and protocol), its clips and
    its evaluation list (one video of which is unreadable)."""
    return write_data(tmp_path_factory.mktemp("push"))


@pytest.fixture
def hub(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    """The local Hub with a token for the namespace `me`, given as HF_TOKEN."""
    local_hub.server.add_token(TOKEN, "me")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return local_hub


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    return run_cli(capsys, *args)


def metadata_header(readme: str) -> dict[str, object]:
    assert readme.startswith("---\n")
    header, _, _ = readme[4:].partition("\n---\n")
    return yaml.safe_load(header)


def test_push_then_predict_through_the_hub(
    capsys: pytest.CaptureFixture[str], hub: LocalHub, trained: dict[str, Path]
) -> None:
    report = trained["root"] / "val.json"
    code, _, err = run(
        capsys, "eval", "-D", "csv", "--list", trained["root"] / "list.csv", "-w", trained["weights"],
        "--device", "cpu", "--workers", "0", "-o", report,
    )  # fmt: skip
    assert code == 3, err  # the unreadable video counts as wrong: a finished run all the same
    summary = json.loads(report.read_text())["summary"]

    code, out, err = run(capsys, "push", trained["weights"], "me/colours", "--eval", report, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert set(record) == documented_schema()["push"]
    assert (record["repo"], record["revision"], record["private"]) == ("me/colours", "main", False)
    assert record["files"] == ["model.safetensors", "README.md"] and record["error"] is None
    stored = hub.server.files("me/colours")
    assert stored["model.safetensors"] == trained["weights"].read_bytes()  # the file itself, metadata and all
    assert record["commit"] == hub.server._repos["me/colours"].revisions["main"].commit
    [commit] = hub.server.commits
    assert commit["header"]["summary"].startswith(f"Upload {trained['weights'].name} with uniformer")

    card = stored["README.md"].decode()
    metadata = metadata_header(card)
    assert (metadata["library_name"], metadata["license"], metadata["pipeline_tag"]) == (
        "uniformer", "mit", "video-classification"
    )  # fmt: skip
    [result] = metadata["model-index"][0]["results"]
    assert result["dataset"]["type"] == "csv" and result["dataset"]["split"] == summary["split"]
    assert [m["value"] for m in result["metrics"]] == [round(summary[key], 2) for key in ("top1", "top5", "mean_class")]
    assert "uniformer predict clip.mp4 --model me/colours" in card
    assert 'load_predictor("me/colours")' in card
    assert all(f"| {row} | {name} |" in card for row, name in enumerate(NAMES))  # the classes, by row
    assert "dense 4x2" in card and "2 x 1 = 2" in card  # the protocol

    # Downloaded back through the normal path, the model predicts what the local file predicts.
    code, out, err = run(capsys, "predict", trained["first"], trained["second"], "--model", "me/colours", "--json")
    assert code == 0, err
    from_hub = json.loads(out)
    code, out, _ = run(capsys, "predict", trained["first"], trained["second"], "-w", trained["weights"], "--json")
    local = json.loads(out)
    for hub_record, local_record in zip(from_hub, local, strict=True):
        assert hub_record["model"] == "me/colours"
        assert hub_record["top_k"] == local_record["top_k"] and hub_record["protocol"] == local_record["protocol"]
    ranked = uniformer_cli.load_predictor("me/colours", device="cpu")(trained["first"], top_k=3)
    assert [(c["index"], c["label"]) for c in ranked] == [(c["index"], c["label"]) for c in local[0]["top_k"][:3]]
    assert [c["score"] for c in ranked] == pytest.approx([c["score"] for c in local[0]["top_k"][:3]], abs=1e-6)
    assert uniformer_cli.load_model("me/colours", device="cpu").labels == NAMES

    # Cached: offline, the same answers without a request.
    requests = hub.count()
    hub.set_offline()
    code, out, err = run(capsys, "predict", trained["first"], "--model", "me/colours", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["top_k"] == local[0]["top_k"] and hub.count() == requests


def test_private_repositories_and_revisions(
    capsys: pytest.CaptureFixture[str], hub: LocalHub, trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(
        capsys, "push", trained["weights"], "me/hidden", "--private", "--revision", "v1", "--commit-message",
        "first cut", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["revision"] == "v1" and hub.server.is_private("me/hidden")
    assert hub.server.commits[-1]["header"]["summary"] == "first cut"
    assert "model.safetensors" not in hub.server.files("me/hidden", "main")  # the branch holds it

    monkeypatch.delenv("HF_TOKEN")  # a reader without the token does not see it
    code, _, err = run(capsys, "download", "me/hidden", "--revision", "v1")
    assert code == 1 and err.count("\n") == 1 and "was not found or is not accessible" in err
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert resolve_model("me/hidden", revision="v1", device="cpu").labels == NAMES
    code, _, err = run(capsys, "predict", trained["first"], "--model", "me/hidden", "--device", "cpu")
    assert code == 1 and err.count("\n") == 1
    assert "Hub repository me/hidden holds no .safetensors file" in err


def test_download_fetches_a_hub_model_ahead(
    capsys: pytest.CaptureFixture[str], hub: LocalHub, trained: dict[str, Path]
) -> None:
    hub.add_file("someone/model", "model.safetensors", trained["weights"])
    code, out, err = run(capsys, "download", "someone/model", "--json")
    assert code == 0, err
    [record] = json.loads(out)
    assert (record["model"], record["source"], record["error"]) == ("someone/model", "hub", None)
    assert Path(record["weights"]).read_bytes() == trained["weights"].read_bytes()
    assert record["sha256"] == hub.server._repos["someone/model"].revisions["main"].etags["model.safetensors"]


def test_any_single_safetensors_file_of_a_repository_loads(hub: LocalHub, trained: dict[str, Path]) -> None:
    hub.add_file("org/named", "weights/colours.safetensors", trained["weights"])
    hub.add_file("org/named", "notes.txt", b"not weights")
    loaded = resolve_model("org/named", device="cpu")
    assert (loaded.name, loaded.labels, loaded.path.name) == ("org/named", NAMES, "colours.safetensors")
    hub.set_offline()  # the cached snapshot names it offline
    assert resolve_model("org/named", device="cpu").path == loaded.path


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"README.md": b"# nothing"}, "holds no .safetensors file"),
        ({"a.safetensors": None, "b.safetensors": None}, "holds several .safetensors files (a.safetensors, b"),
        ({"model.safetensors": "plain"}, "is not a converted uniformer file"),
    ],
)
def test_a_repository_without_one_converted_file_is_one_error_line(
    capsys: pytest.CaptureFixture[str],
    hub: LocalHub,
    trained: dict[str, Path],
    files: dict[str, object],
    message: str,
) -> None:
    plain = trained["root"] / "plain.safetensors"
    save_file(colour_model().state_dict(), str(plain))  # official keys, no uniformer metadata
    for name, content in files.items():
        data = content if isinstance(content, bytes) else (plain if content == "plain" else trained["weights"])
        hub.add_file("org/other", name, data)  # type: ignore[arg-type]
    code, out, err = run(capsys, "predict", trained["first"], "--model", "org/other", "--device", "cpu")
    assert (code, out) == (1, "") and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_a_corrupt_download_is_refused(hub: LocalHub, trained: dict[str, Path]) -> None:
    hub.add_file("org/bad", "model.safetensors", trained["weights"], etag="0" * 64)
    with pytest.raises(UniformerError, match="is corrupt"):
        resolve_model("org/bad", device="cpu")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["me/new", "--private"], None),  # the token is missing: nothing is sent
        (["not a repo"], "is not a Hub model repository id"),
        (["me/x/y"], "is not a Hub model repository id"),
    ],
)
def test_push_checks_before_sending_anything(
    capsys: pytest.CaptureFixture[str],
    local_hub: LocalHub,
    trained: dict[str, Path],
    args: list[str],
    message: str | None,
) -> None:
    code, out, err = run(capsys, "push", trained["weights"], *args)
    assert (code, out) == (1, "") and err.count("\n") == 1, err
    assert (message or "push needs a Hugging Face token") in err
    assert local_hub.count() == 0


def test_push_refuses_files_that_would_not_serve(
    capsys: pytest.CaptureFixture[str], hub: LocalHub, trained: dict[str, Path]
) -> None:
    model = colour_model()
    bare = save_weights(trained["root"] / "bare.safetensors", model, model.config, labels=NAMES)
    unfinished = trained["root"] / "unfinished.json"
    unfinished.write_text(json.dumps({"summary": {"dataset": "csv", "split": "val", "top1": 50.0, "top5": 100.0,
                                                  "mean_class": 50.0, "counted": 1, "protocol_text": "4x2",
                                                  "complete": False}}))  # fmt: skip
    (trained["root"] / "model.pth").write_bytes(b"")
    for args, message in (
        ([bare, "me/x"], "carries no test protocol"),
        ([trained["root"] / "model.pth", "me/x"], "push uploads a converted .safetensors file"),
        ([trained["weights"], "me/x", "--eval", unfinished], "unfinished run"),
        ([trained["weights"], "me/x", "--eval", trained["first"]], "is not an evaluation report"),
    ):
        code, out, err = run(capsys, "push", *args)
        assert (code, out) == (1, "") and err.count("\n") == 1, err
        assert message in err
    assert hub.count() == 0


@pytest.mark.parametrize(("token", "status"), [("hf_unknown", "401"), (TOKEN, "403")])
def test_the_hubs_refusals_are_one_line(
    capsys: pytest.CaptureFixture[str],
    hub: LocalHub,
    trained: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    token: str,
    status: str,
) -> None:
    monkeypatch.setenv("HF_TOKEN", token)
    code, out, err = run(capsys, "push", trained["weights"], "someone-else/model")  # not the token's namespace
    assert (code, out) == (1, "") and err.count("\n") == 1, err
    assert f"({status})" in err and "Traceback" not in err


# --- which name is what ----------------------------------------------------------------------------------------


def test_a_local_path_wins_then_the_hub_grammar_then_the_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "mine").write_bytes(b"")
    assert name_kind("runs/mine") == "file"  # exists: a local path, though it reads as a repository id
    assert name_kind("runs/other") == "hub"
    assert name_kind(Path("me/model")) == "file"
    for name in ("me/model.safetensors", "me/model.pth", "./me", "a/b/c", "../me", "me/", "/abs/path"):
        assert name_kind(name) == "file", name
    for name in ("s-k400", "s16x8-k400", "uniformer_s16x8_k400"):
        assert name_kind(name) == "zoo", name
    with pytest.raises(UniformerError, match="carries its own labels and protocol"):
        resolve_model(tmp_path / "runs" / "mine", zoo_name="me/model")
    with pytest.raises(UniformerError, match="carries its own labels and protocol"):
        uniformer_cli.load_predictor("me/model", zoo_name="s-k400")


REPO_PART = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,20}[A-Za-z0-9])?", fullmatch=True)


@given(namespace=REPO_PART, name=REPO_PART)
def test_every_repository_id_the_hub_admits_is_a_hub_model(namespace: str, name: str) -> None:
    repo = f"{namespace}/{name}"
    try:
        validate_repo_id(repo)
    except HFValidationError:
        assert name_kind(repo) != "hub" or os.path.exists(repo)
        return
    expected = "file" if os.path.exists(repo) or repo.lower().endswith(WEIGHT_SUFFIXES) else "hub"
    assert name_kind(repo) == expected


# --- fine-tuning a Hub model ---------------------------------------------------------------------------------


def pushed_model(
    capsys: pytest.CaptureFixture[str], folder: Path, repo: str, labels: list[str], seed: int, *push: str
) -> dict[str, torch.Tensor]:
    """A tiny random UniFormer with `labels` and a 32 px protocol, uploaded with `uniformer push REPO *push`:
    its weights."""
    torch.manual_seed(seed)
    config = TINY_TRAIN_CONFIG.replace(num_classes=len(labels))
    model = create_model(config)
    protocol = ViewProtocol(frames=8, stride=2, size=32).as_dict()
    weights = save_weights(folder / f"{seed}.safetensors", model, config, labels, protocol)
    code, _, err = run(capsys, "push", weights, repo, *push)
    assert code == 0, err
    return load_file(weights)


def fine_tune(capsys: pytest.CaptureFixture[str], data: Path, folder: Path, *model: str) -> tuple[int, str]:
    """One optimiser step of `uniformer train --data DATA *model` (AdamW, no warm-up, no weight decay)."""
    code, _, err = run(
        capsys, "train", "--data", data, *model, "-o", folder, "--max-steps", "1", "--batch-size", "2",
        "--workers", "0", "--warmup-epochs", "0", "--weight-decay", "0", "--lr", "1e-3", "--drop-path", "0",
        "--no-flip", "--device", "cpu", "--json",
    )  # fmt: skip
    return code, err


def test_train_fine_tunes_a_hub_model_at_its_revision(
    capsys: pytest.CaptureFixture[str], hub: LocalHub, tmp_path: Path
) -> None:
    """`train --model NAMESPACE/NAME [--revision R]` starts from the weights that `predict --model` would load:
    after one AdamW step without weight decay no weight is more than the learning rate from the served one
    (independent random weights are ~100x further apart); the head is kept only when the repository's classes
    are the dataset's (TRAINING.md), otherwise a new one of the dataset's class count is trained."""
    data = motion_dataset(tmp_path / "motion", 1, 1)
    same = pushed_model(capsys, tmp_path, "me/same", list(DIRECTIONS), 1)
    pushed_model(capsys, tmp_path, "me/other", ["a", "b", "c"], 2)  # main: not the revision trained from
    other = pushed_model(capsys, tmp_path, "me/other", ["a", "b", "c"], 3, "--revision", "v1")
    # The trained weights (batch norms' running statistics move by their momentum instead).
    parameters = {name for name, _ in create_model(TINY_TRAIN_CONFIG).named_parameters()}
    for repo, revision, served, keeps_head in (("me/same", None, same, True), ("me/other", "v1", other, False)):
        run_folder = tmp_path / repo.replace("/", "-")
        at = ["--revision", revision] if revision else []
        code, err = fine_tune(capsys, data, run_folder, "--model", repo, *at)
        assert code == 0, err
        config = json.loads((run_folder / "config.json").read_text())
        assert (config["init"], config["init_model"], config["init_revision"]) == ("finetune", repo, revision)
        assert config["classes"] == sorted(DIRECTIONS) and config["model"]["num_classes"] == len(DIRECTIONS)
        trained = load_checkpoint(run_folder / "last.pt")["model"]
        step = config["lr"] + 1e-6  # AdamW's first step moves a weight by at most the rate (+ float32 rounding)
        kept = {key for key in parameters if keeps_head or not key.startswith("head.")}
        assert kept <= set(trained)
        moved = {key: float((trained[key] - served[key]).abs().max()) for key in kept}
        assert max(moved.values()) <= step, moved
        assert max(moved.values()) > 0  # and a step was taken
        assert trained["head.weight"].shape == (len(DIRECTIONS), 64)
    main = load_file(tmp_path / "2.safetensors")
    assert float((main["blocks3.0.attn.qkv.weight"] - other["blocks3.0.attn.qkv.weight"]).abs().max()) > 100 * step

    for start, message in (
        (["--scratch", "--revision", "v1"], "--revision selects the Hub version"),
        (["--model", "me/missing"], "Hub repository me/missing"),
        (["--model", "me/same", "--revision", "v2"], "revision 'v2' does not exist in me/same"),
    ):
        code, err = fine_tune(capsys, data, tmp_path / "refused", *start)
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
