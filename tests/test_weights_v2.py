"""UniFormerV2 checkpoints: the official PySlowFast and MMAction2 layouts, architecture from shapes,
`convert` (with --frames / --labels), and zoo downloads from the Hub and from MMAction2 URLs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from hub_server import LocalHub, tiny_v2_checkpoint, tiny_v2_entry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parity import PARITY, V2_FIXTURES, V2_MMACTION, v2_input, v2_official_state

from uniformer_cli.errors import CheckpointError, UniformerError
from uniformer_cli.models import create_model
from uniformer_cli.models.config_v2 import V2_FAMILIES
from uniformer_cli.models.uniformerv2 import UniFormerV2
from uniformer_cli.weights import load_weights, remote
from uniformer_cli.weights.checkpoint import read_checkpoint
from uniformer_cli.weights.checkpoint_v2 import infer_v2_config, is_v2_state_dict, v2_model_keys
from uniformer_cli.weights.loader import load_model, resolve_model
from uniformer_cli.zoo import find_entry, get_entry, k710_rows, load_labels
from uniformer_cli.zoo.v2 import V2_ZOO

TOLERANCE = 1e-4  # relative to the largest official logit, as tests/test_uniformerv2.py


def logits_of(model: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(clips)


def official(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(PARITY / f"{name}_logits.npy"))


def close(logits: torch.Tensor, reference: torch.Tensor) -> bool:
    return float((logits - reference).abs().max() / reference.abs().max()) < TOLERANCE


@pytest.mark.parametrize(
    ("file", "name", "layout"),
    [
        ("v2_sth_official.pth", "v2_sth", "pyslowfast"),
        ("v2_single_pyslowfast.pyth", "v2_single", "pyslowfast"),
        ("v2_mmaction_mmaction.pth", "v2_mmaction", "mmaction"),
    ],
)
def test_every_layout_converts_to_the_official_logits(
    file: str, name: str, layout: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "converted.safetensors"
    code, out, _ = run_cli(capsys, "convert", PARITY / file, destination, "--head-dim", "16", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["backbone"] == "v2" and summary["head_dim"] == 16 and summary["num_classes"] == 10
    assert ("MMAction2" in summary["layout"]) == (layout == "mmaction")
    loaded = resolve_model(destination)
    assert isinstance(loaded.model, UniFormerV2) and loaded.name == str(destination)
    expected = V2_MMACTION if name == "v2_mmaction" else V2_FIXTURES[name]
    assert loaded.config == expected
    assert close(logits_of(loaded.model, v2_input(name)), official(name))


def test_official_files_load_directly_with_the_right_architecture() -> None:
    for name, config in V2_FIXTURES.items():
        loaded = resolve_model(PARITY / f"{name}_official.pth", head_dim=16)
        assert isinstance(loaded.model, UniFormerV2)
        if name == "v2_single":
            # Its decoder reads blocks 0 and 2: a plain state_dict cannot tell (the PySlowFast file's cfg
            # does), and the released rule, the last blocks, is assumed.
            assert loaded.config == config.replace(return_layers=(1, 2))
            continue
        assert loaded.config == config
        assert close(logits_of(loaded.model, v2_input(name)), official(name))
    raw = read_checkpoint(PARITY / "v2_mmaction_mmaction.pth")
    assert raw.v2_layout == "mmaction" and raw.layout == "state_dict"
    assert "transformer.proj.2.weight" in raw.state_dict and "transformer.norm.weight" not in raw.state_dict


def released_shapes() -> dict[str, dict[str, object]]:
    return json.loads((PARITY / "v2_released_keys.json").read_text())


@pytest.mark.parametrize("kind", ["b16", "l14", "l14-336", "l14-336-frozen", "b16-sth", "l14-sth", "mmaction-b16"])
def test_released_architectures_are_read_from_their_shapes(kind: str) -> None:
    released = released_shapes()[kind]
    state = {key: torch.empty(shape, device="meta") for key, shape in released["keys"]}  # type: ignore[union-attr]
    assert is_v2_state_dict(state)
    keys, layout = v2_model_keys(state)
    assert layout == ("mmaction" if kind == "mmaction-b16" else "pyslowfast")
    config = infer_v2_config(keys)
    family = {"b16": "v2-b16", "l14": "v2-l14", "l14-336": "v2-l14-336"}[
        kind.removeprefix("mmaction-").split("-sth")[0].removesuffix("-frozen")
    ]
    base = V2_FAMILIES[family]
    assert (config.patch_size, config.resolution, config.width, config.layers) == (
        base.patch_size, base.resolution, base.width, base.layers
    )  # fmt: skip
    assert config.frozen == kind.endswith("frozen")
    assert config.temporal_downsample == (config.local_mhra == "double") == kind.endswith("sth")
    assert len(config.return_layers) == (base.layers * 2 // 3 if kind.endswith("sth") else 4)
    assert config.num_classes == released["num_classes"]


def test_every_zoo_entry_is_a_released_architecture() -> None:
    """Each entry's network has the key/shape list the official code gives its configuration (the lists
    of v2_released_keys.json, with the entry's class count)."""
    released = released_shapes()
    for entry in V2_ZOO.values():
        kind = entry.family.removeprefix("v2-") + ("-sth" if entry.sth else "-frozen" if entry.frozen else "")
        reference = [(key.removeprefix("backbone."), shape) for key, shape in released[kind]["keys"]]  # type: ignore[union-attr]
        reference = [
            (key, [entry.num_classes, *shape[1:]] if key.startswith("transformer.proj.2.") else shape)
            for key, shape in reference
        ]
        with torch.device("meta"):
            model = create_model(entry.config)
        assert [(key, list(value.shape)) for key, value in model.state_dict().items()] == reference, entry.name


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: s.pop("conv1.weight"), "no conv1.weight"),
        (lambda s: s.update({"conv1.weight": torch.zeros(64, 3, 2, 16, 16)}), "2 frames deep"),
        (lambda s: s.update({"positional_embedding": torch.zeros(11, 64)}), "square grid"),
        (lambda s: [s.pop(k) for k in list(s) if k.startswith("transformer.dpe.2.")], "position encodings"),
        (lambda s: [s.pop(k) for k in list(s) if k.startswith("transformer.dpe.0.")], "dpe indices"),
        (lambda s: [s.pop(k) for k in list(s) if k.startswith("transformer.resblocks.2.lmhra")], "some blocks"),
        (
            lambda s: s.update(
                {"conv1.weight": torch.zeros(60, 3, 3, 16, 16), "positional_embedding": torch.zeros(10, 60)}
            ),
            "width 60 is not a multiple of the head width 16",
        ),
    ],
)
def test_malformed_checkpoints_fail_with_one_line(damage: object, message: str) -> None:
    state = v2_official_state("v2_sth")
    damage(state)  # type: ignore[operator]
    with pytest.raises(CheckpointError, match=message):
        infer_v2_config(state, head_dim=16)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_state_dicts_never_escape_as_another_error(data: st.DataObject) -> None:
    """Whatever keys are missing or reshaped, reading and loading a UniFormerV2 state_dict either works or
    raises one `UniformerError` (the CLI's one error line)."""
    state = v2_official_state("v2_single")
    keys = sorted(state)
    for key in data.draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        if data.draw(st.booleans()):
            del state[key]
        else:
            shape = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=5))
            state[key] = torch.zeros(shape)
    try:
        config = infer_v2_config(state, head_dim=16)
        with torch.device("meta"):
            expected = create_model(config).state_dict()
        from uniformer_cli.weights.checkpoint import check_fits

        check_fits(expected, state, "damaged", "model")
    except UniformerError:
        pass


def test_convert_records_frames_and_narrows_a_k710_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Kinetics-710 head given `--labels k700` keeps MMAction2's K700 rows in K700 order: the narrowed
    model's logits are those rows of the full model's."""
    torch.manual_seed(0)
    config = V2_FIXTURES["v2_b16"].replace(num_classes=710)
    model = create_model(config).eval()
    source = tmp_path / "k710.pyth"
    torch.save({"model_state": {f"backbone.{k}": v for k, v in model.state_dict().items()}}, source)
    destination = tmp_path / "k700.safetensors"
    code, out, _ = run_cli(
        capsys, "convert", source, destination, "--head-dim", "16", "--labels", "k700", "--frames", "4", "--json"
    )
    assert code == 0 and json.loads(out)["num_classes"] == 700
    stored = load_weights(destination)
    assert stored.labels == load_labels("k700")
    assert stored.protocol is not None and stored.protocol["frames"] == 4 and stored.protocol["sampling"] == "sparse"
    assert stored.protocol["size"] == 48
    narrowed = resolve_model(destination).model
    clips = v2_input("v2_b16")
    assert torch.allclose(logits_of(narrowed, clips), logits_of(model, clips)[:, k710_rows("k700")], atol=1e-6)
    # The rows are the K700 classes by name (MMAction2's map; one class has another K710 name).
    k710 = load_labels("k710")
    assert sum(k710[row] == name for row, name in zip(k710_rows("k700"), load_labels("k700"), strict=True)) == 699


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--labels", "k123"], "unknown label set"),
        (["--labels", "k600-mmaction"], "10 classes; label set k600-mmaction names 600"),
        (["--model", "v2-b16x8-k400"], "zoo entry v2-b16x8-k400 is a UniFormerV2-B/16"),
        (["--model", "s16x8-k400"], "UniFormerV2 model, which zoo entry s16x8-k400 is not"),
        (["--model", "v2-b16x8-k400", "--frames", "8"], "drop --frames"),
    ],
)
def test_convert_refuses_what_does_not_fit(
    options: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "convert", PARITY / "v2_sth_official.pth", tmp_path / "x.safetensors", *options)
    assert code == 1 and err.count("error:") == 1 and message in err and "Traceback" not in err


def test_zoo_names_of_both_families_resolve(capsys: pytest.CaptureFixture[str]) -> None:
    # The ImageNet start of a UniFormer run needs a v1 entry.
    with pytest.raises(UniformerError, match=r"v2-b16x8-k400 is a UniFormerV2 model; a UniFormer \(v1\) one is"):
        get_entry("v2-b16x8-k400")
    assert find_entry("k400_k710_uniformerv2_b16_8x224.pyth").name == "v2-b16x8-k400-k710"
    assert find_entry("V2-B-K400") is V2_ZOO["v2-b16x8-k400-k710"]


def test_an_mmaction_url_entry_downloads_once_checks_its_digest_and_converts(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MMAction2's copies of UniFormerV2 download as the UniFormer ones do (`weights.remote`): checked
    against the sha256 prefix of their name, pinned at the first download, converted once."""
    path, reference = tiny_v2_checkpoint(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    local_hub.add_file("mm/uniformerv2", f"tiny-{digest[:8]}.pth", path)
    url = f"{local_hub.server.url}/mm/uniformerv2/resolve/main/tiny-{digest[:8]}.pth"
    name = tiny_v2_entry(monkeypatch, mmaction2_url=url)
    model = load_model(name)
    assert model.labels == load_labels("k400-mmaction") and model.protocol.frames == 8  # type: ignore[union-attr]
    clips = v2_input("v2_b16")
    assert torch.equal(logits_of(model, clips), logits_of(reference, clips))
    assert local_hub.count("GET", f"tiny-{digest[:8]}.pth") == 2  # `remote`'s reachability probe, the transfer
    load_model(name)  # the converted copy is reused: no second download
    assert local_hub.count("GET", f"tiny-{digest[:8]}.pth") == 2
    pins = json.loads((local_hub.home / "uniformer" / "downloads" / remote.PINS_FILE).read_text())
    assert pins == {url: digest}
    code, out, _ = run_cli(capsys, "download", name, "--json")
    assert code == 0
    (record,) = json.loads(out)
    assert (record["model"], record["source"], record["sha256"], record["error"]) == (name, "mmaction2", digest, None)
    local_hub.set_offline()
    assert isinstance(load_model(name), torch.nn.Module)


def test_an_url_download_that_is_not_the_pinned_file_is_refused(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path, _ = tiny_v2_checkpoint(tmp_path)
    local_hub.add_file("mm/uniformerv2", "tiny-00000000.pth", path)
    url = f"{local_hub.server.url}/mm/uniformerv2/resolve/main/tiny-00000000.pth"
    name = tiny_v2_entry(monkeypatch, mmaction2_url=url)
    with pytest.raises(CheckpointError, match="does not begin with 00000000"):
        load_model(name)
    assert not list((local_hub.home / "uniformer" / "downloads").rglob("tiny-*"))
    missing = tiny_v2_entry(monkeypatch, mmaction2_url=url.replace("tiny-", "gone-"))
    with pytest.raises(CheckpointError, match="HTTP 404"):
        load_model(missing)
    local_hub.set_offline()
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        load_model(missing)


def test_a_hub_entry_downloads_the_pinned_revision(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path, reference = tiny_v2_checkpoint(tmp_path)
    from uniformer_cli.zoo.v2 import V2_HUB_REPO, V2_HUB_REVISION

    local_hub.add_file(V2_HUB_REPO, "tiny.pyth", path, revision=V2_HUB_REVISION)
    local_hub.add_file(V2_HUB_REPO, "tiny.pyth", b"another file on main", revision="main")
    name = tiny_v2_entry(monkeypatch, hub_file="tiny.pyth")
    model = load_model(name)
    assert model.labels == load_labels("k400")  # type: ignore[union-attr]
    clips = v2_input("v2_b16")
    assert torch.equal(logits_of(model, clips), logits_of(reference, clips))
    with pytest.raises(UniformerError, match="pinned"):
        resolve_model(name, revision="main")


def test_entries_without_a_copy_say_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckpointError, match=r"no copy of these weights is published any more .* --weights"):
        load_model("v2-b16x16-sthv2")
    assert V2_ZOO["v2-l14x64-336-k400-k710"].official_url.startswith("https://pjlab-gvm-data")
