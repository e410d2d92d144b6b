"""The Python API gives the command line's answers (issue 20): `load_views(video, model.protocol)` is exactly
what `uniformer predict` feeds the model, for every protocol family of the zoo, and `load_predictor(...)`
returns `predict --json`'s ranked scores. The README's Python block runs as written."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from hub_server import LocalHub, serve_tiny_zoo_model

import uniformer_cli
from uniformer_cli.errors import UniformerError
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.zoo import ZOO
from uniformer_cli.zoo.v2 import V2_ZOO

ROOT = Path(__file__).resolve().parent.parent
VIDEO = ROOT / "examples" / "yoga.mp4"
TOLERANCE = 1e-5  # probabilities; the CLI runs the fast path, the API's model the exact one
# One protocol of each family the zoo's entries use (at a small size): Kinetics' dense clips, the
# Something-Something segments on BGR frames with the first (left) crop, the light models' sparse
# sampling, three crops along the long side (UCF101 / HMDB51; the Sth segments as released), and
# UniFormerV2's sparse clips, several of them, each in three crops.
FAMILIES = {
    "dense-k400": ViewProtocol(frames=8, stride=2, clips=2, crops=1, size=64),
    "segment-sth-bgr": ViewProtocol(frames=8, sampling="segment", size=64, channel_order="bgr", single_crop="first"),
    "sparse-light": ViewProtocol(frames=6, sampling="sparse", size=48),
    "three-crop": ViewProtocol(frames=4, stride=4, clips=2, crops=3, size=64, channel_order="bgr"),
    "segment-three-crop": ViewProtocol(frames=8, sampling="segment", crops=3, size=64, channel_order="bgr"),
    "sparse-v2": ViewProtocol(frames=4, sampling="sparse", clips=2, crops=3, size=64),
}


def zoo_families() -> set[tuple[str, str, int]]:
    """(sampling, channel order, crops) of the released entries of both families (UniFormer, UniFormerV2):
    the families the API must follow."""
    protocols = [e.protocol for e in ZOO.values()] + [e.protocol for e in V2_ZOO.values()]
    return {(p.sampling, p.channel_order, p.crops) for p in protocols}


def multi_view_samplings(protocols: list[ViewProtocol]) -> set[str]:
    return {p.sampling for p in protocols if p.views > 1}


def test_the_families_cover_the_zoo() -> None:
    tested = {(p.sampling, p.channel_order, p.crops) for p in FAMILIES.values()}
    released = zoo_families()
    # Every sampling rule and channel order the zoo uses, and both crop counts, are among those tested.
    assert {s for s, _, _ in released} <= {s for s, _, _ in tested}
    assert {c for _, c, _ in released} <= {c for _, c, _ in tested}
    assert {n for _, _, n in released} <= {n for _, _, n in tested}
    # Every sampling rule the zoo runs with several views (clips x crops) is tested with several.
    zoo = [e.protocol for e in ZOO.values()] + [e.protocol for e in V2_ZOO.values()]
    assert multi_view_samplings(zoo) <= multi_view_samplings(list(FAMILIES.values()))


def cli_scores(capsys: pytest.CaptureFixture[str], *arguments: object) -> dict[int, float]:
    code, out, err = run_cli(capsys, "predict", VIDEO, "--json", *arguments)
    assert code == 0, err
    [record] = json.loads(out)
    return {ranked["index"]: ranked["score"] for ranked in record["top_k"]}


@pytest.mark.parametrize("family", FAMILIES)
def test_load_views_feeds_the_model_what_predict_feeds_it(
    family: str, local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    protocol = FAMILIES[family]
    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, name=f"tiny-{family}", protocol=protocol)
    model = uniformer_cli.load_model(served.entry.name)
    assert model.protocol == protocol  # the model's protocol, as it is, is what load_views takes
    views = uniformer_cli.load_views(VIDEO, model.protocol)
    assert views.shape == (protocol.views, 3, protocol.frames, protocol.size, protocol.size)
    with torch.inference_mode():
        probabilities = model(views.to(model.device)).mean(0).softmax(0)
    expected = cli_scores(capsys, "--model", served.entry.name, "--top-k", "10")
    assert list(expected) == probabilities.topk(10).indices.tolist()
    for index, score in expected.items():
        assert probabilities[index].item() == pytest.approx(score, abs=TOLERANCE)
    if protocol.channel_order == "bgr":  # the route this issue mended: RGB views give another answer
        rgb = uniformer_cli.load_views(VIDEO, model.protocol, channel_order="rgb")
        with torch.inference_mode():
            wrong = model(rgb).mean(0).softmax(0)
        assert max(abs(wrong[i].item() - s) for i, s in expected.items()) > 100 * TOLERANCE


def test_load_views_takes_the_protocol_in_every_form(tmp_path: Path) -> None:
    protocol = FAMILIES["three-crop"]
    by_position = uniformer_cli.load_views(VIDEO, protocol)
    assert torch.equal(uniformer_cli.load_views(VIDEO, protocol=protocol.as_dict()), by_position)
    assert torch.equal(
        uniformer_cli.load_views(VIDEO, frames=4, stride=4, clips=2, crops=3, size=64, channel_order="bgr"), by_position
    )
    one_clip = uniformer_cli.load_views(VIDEO, protocol, clips=1)  # a change, as --clips 1 would make
    assert one_clip.shape[0] == 3
    with pytest.raises(UniformerError, match="load_views needs a protocol"):
        uniformer_cli.load_views(VIDEO, frames=8)
    with pytest.raises(UniformerError, match="unknown view protocol fields: colour"):
        uniformer_cli.load_views(VIDEO, {"frames": 8, "stride": 2, "colour": "bgr"})


def test_a_predictor_is_called_like_the_transformers_pipeline(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, name="tiny-call", protocol=FAMILIES["dense-k400"])
    predictor = uniformer_cli.load_predictor(served.entry.name)
    ranked = predictor(VIDEO, top_k=3)
    assert [set(item) for item in ranked] == [{"label", "score", "index"}] * 3
    expected = cli_scores(capsys, "--model", served.entry.name, "--top-k", "3")
    assert [item["index"] for item in ranked] == list(expected)
    assert [item["score"] for item in ranked] == pytest.approx(list(expected.values()), abs=TOLERANCE)
    assert ranked[0]["label"] == served.entry.labels()[ranked[0]["index"]]
    assert predictor([VIDEO, VIDEO], top_k=3) == [ranked, ranked]
    with pytest.raises(UniformerError):
        predictor(tmp_path / "missing.mp4")


def test_load_model_and_load_predictor_pick_the_device_alike() -> None:
    import inspect

    for function in (uniformer_cli.load_model, uniformer_cli.load_predictor, uniformer_cli.resolve_model):
        assert inspect.signature(function).parameters["device"].default == "auto", function


def readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Python\n") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]


def test_the_readme_python_block_runs_as_written(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    """The block names the zoo's default model; the local Hub serves a tiny one under its name, with the
    released protocol, so the block's three calls run unchanged and are held to the CLI's answer."""
    released = ZOO["s16x8-k400"]
    small = replace(released.protocol, frames=8, clips=2, size=96)  # the released rule, cheaper views
    serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, name="s16x8-k400", protocol=small)
    monkeypatch.chdir(ROOT)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_python_block(), "README.md", "exec"), {})
    label_line, ranked_line = printed.getvalue().strip().splitlines()
    expected = cli_scores(capsys, "--model", "s-k400", "--top-k", "3")
    labels = released.labels()
    assert label_line == labels[next(iter(expected))]
    ranked = eval(ranked_line, {})  # the printed list of dicts
    assert [item["index"] for item in ranked] == list(expected)
    assert [item["label"] for item in ranked] == [labels[index] for index in expected]
