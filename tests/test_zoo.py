"""The model zoo, its label files and `uniformer models`."""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from typing import get_args

import pytest
from cli_runner import run_cli

from uniformer_cli.errors import UniformerError
from uniformer_cli.zoo import (
    ALIASES,
    DRIVE_IDS,
    LABEL_SETS,
    MMACTION2_URLS,
    ZOO,
    ZooEntry,
    best_entry,
    find_entry,
    get_entry,
    load_labels,
)
from uniformer_cli.zoo.sources import SOURCE_NAMES, Source
from uniformer_cli.zoo.v2 import V2_ALIASES, V2_LABEL_SET_SIZES, V2_ZOO

# Public class counts of the datasets, written out here rather than read from the zoo.
EXPECTED_COUNTS = {"k400": 400, "k600": 600, "sthv1": 174, "sthv2": 174, "ucf101": 101, "hmdb51": 51}
LIGHT_FAMILIES = {"xxs", "xs"}
JSON_FIELDS = {
    "model",
    "aliases",
    "arch",
    "dataset",
    "num_classes",
    "protocol",
    "hub_repo",
    "hub_file",
    "paper_top1",
    "paper_gflops",
    "paper_gflops_per_view",
}


def models_output(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """stdout of a successful `uniformer models ARGS`."""
    code, out, _ = run_cli(capsys, "models", *args)
    assert code == 0
    return out


# --- label files ------------------------------------------------------------------------------------


def test_label_sets_cover_every_dataset() -> None:
    assert set(LABEL_SETS) == set(EXPECTED_COUNTS)


@pytest.mark.parametrize("label_set", sorted(EXPECTED_COUNTS))
def test_label_set_loads_with_its_count_of_unique_names(label_set: str) -> None:
    names = load_labels(label_set)
    assert len(names) == EXPECTED_COUNTS[label_set]
    assert len(set(names)) == len(names)
    assert all(name == name.strip() and name for name in names)


@pytest.mark.parametrize("label_set", sorted(EXPECTED_COUNTS))
def test_label_file_is_one_name_per_line_with_final_newline(label_set: str) -> None:
    raw = resources.files("uniformer_cli.zoo").joinpath("labels", f"{label_set}.txt").read_bytes()
    text = raw.decode("utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "\r" not in text and "\t" not in text
    assert text.split("\n")[:-1] == load_labels(label_set)


def test_kinetics_400_keeps_the_official_order() -> None:
    names = load_labels("k400")
    assert names[:3] == ["riding a bike", "marching", "dodgeball"]
    assert names[-1] == "playing badminton"
    assert names[341] == "abseiling"
    assert "passing American football (in game)" in names
    assert names != sorted(names)


def test_kinetics_600_uses_spaces_and_its_own_index_order() -> None:
    names = load_labels("k600")
    assert names[0] == "feeding fish"
    assert not any("_" in name for name in names)
    assert names != sorted(names)
    # The "common" classes: 360 are K400 names verbatim, 7 more differ only in punctuation.
    assert len(set(names) & set(load_labels("k400"))) == 360
    assert "hurling sport" in names


def test_something_something_templates_are_in_ascii_order_and_agree() -> None:
    v1, v2 = load_labels("sthv1"), load_labels("sthv2")
    # V1 is in plain string order; V2 in the order of the published labels.json, which is the templates
    # sorted with their brackets removed (so "[Something] falling ..." sits among the "S"s).
    assert v1 == sorted(v1)
    assert v2 == sorted(v2, key=lambda name: name.replace("[", "").replace("]", ""))
    assert v2 != sorted(v2)
    assert not any("[" in name for name in v1)
    assert all("[" in name for name in v2)
    unbracketed = {name.replace("[", "").replace("]", "") for name in v2}
    assert {name[0].upper() + name[1:] for name in unbracketed} == set(v1)


def test_ucf101_uses_the_case_insensitive_class_order() -> None:
    names = load_labels("ucf101")
    assert names[34:36] == ["Hammering", "HammerThrow"]
    assert names[46:48] == ["JumpingJack", "JumpRope"]
    assert names == sorted(names, key=str.lower)
    assert names != sorted(names)
    assert (names[0], names[-1]) == ("ApplyEyeMakeup", "YoYo")


def test_hmdb51_is_alphabetical() -> None:
    names = load_labels("hmdb51")
    assert names == sorted(names)
    assert (names[0], names[-1]) == ("brush_hair", "wave")


def test_unknown_label_set_fails_clearly() -> None:
    with pytest.raises(UniformerError, match="unknown label set 'k999'"):
        load_labels("k999")


# --- zoo entries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", list(ZOO.values()), ids=list(ZOO))
def test_entry_is_consistent(entry: ZooEntry) -> None:
    assert entry.dataset in EXPECTED_COUNTS
    assert entry.num_classes == EXPECTED_COUNTS[entry.dataset] == len(entry.labels())
    assert entry.config.num_classes >= entry.num_classes
    assert entry.protocol.crops in (1, 3) and entry.protocol.clips >= 1
    assert entry.protocol.views == entry.protocol.clips * entry.protocol.crops
    assert math.isclose(entry.gflops, entry.gflops_per_view * entry.protocol.views, rel_tol=0.01)
    assert entry.dataset in entry.name
    if entry.protocol.sampling == "dense":
        assert entry.protocol.stride is not None and entry.protocol.stride > 0
        assert entry.family not in LIGHT_FAMILIES
        assert f"{entry.protocol.frames}x{entry.protocol.stride}" in entry.name
    else:
        assert entry.protocol.stride is None
    if entry.protocol.sampling == "segment":
        assert entry.dataset in ("sthv1", "sthv2")
        assert entry.protocol.channel_order == "bgr"
    if entry.protocol.sampling == "sparse":
        assert entry.family in LIGHT_FAMILIES
        assert entry.protocol.views == 1
    if entry.family not in LIGHT_FAMILIES:
        assert entry.protocol.size == 224


@pytest.mark.parametrize("entry", [e for e in ZOO.values() if e.on_hub], ids=[n for n, e in ZOO.items() if e.on_hub])
def test_hub_file_matches_its_entry(entry: ZooEntry) -> None:
    assert entry.hub_repo and entry.hub_file
    assert entry.hub_file.endswith(".pth")
    assert entry.dataset in entry.hub_file
    assert str(entry.protocol.frames) in entry.hub_file


def test_drive_only_entries_have_no_hub_fields() -> None:
    for entry in ZOO.values():
        if not entry.on_hub:
            assert entry.hub_file is None and entry.hub_bytes is None


def test_names_are_unique_across_zoo_names_official_names_and_aliases() -> None:
    official = [entry.official_name for entry in ZOO.values()]
    assert len(set(official)) == len(official)
    assert not set(official) & set(ZOO)
    assert not set(ALIASES) & (set(ZOO) | set(official))
    assert all(name == name.lower() for name in [*ZOO, *official, *ALIASES])


def test_each_alias_names_the_best_downloadable_entry_of_its_family_and_dataset() -> None:
    downloadable = [entry for entry in ZOO.values() if entry.on_hub]
    assert set(ALIASES) == {f"{entry.family}-{entry.dataset}" for entry in downloadable}
    for alias, target in ALIASES.items():
        entry = ZOO[target]
        assert entry.on_hub
        assert alias == f"{entry.family}-{entry.dataset}"
        rivals = [e for e in downloadable if (e.family, e.dataset) == (entry.family, entry.dataset)]
        assert entry.top1 == max(e.top1 for e in rivals)


def test_get_entry_accepts_zoo_names_official_names_and_aliases() -> None:
    for name, entry in ZOO.items():
        assert get_entry(name) is entry
        assert get_entry(f"  {name.upper()} ") is entry
        assert get_entry(entry.official_name) is entry
    for alias, target in ALIASES.items():
        assert get_entry(alias) is ZOO[target]


def test_get_entry_fails_clearly_on_unknown_names() -> None:
    with pytest.raises(UniformerError, match=r"unknown model 'b-k40'.*Did you mean: b-k400"):
        get_entry("b-k40")
    with pytest.raises(UniformerError, match="uniformer models"):
        get_entry("resnet50")


# --- `uniformer models` ------------------------------------------------------------------------------


def test_models_json_lists_every_entry_with_the_documented_fields(capsys: pytest.CaptureFixture[str]) -> None:
    all_rows = json.loads(models_output(capsys, "--json"))
    assert [row["model"] for row in all_rows] == [*ZOO, *V2_ZOO]
    rows = all_rows[: len(ZOO)]
    for row in all_rows:
        assert set(row) >= JSON_FIELDS
    for row in all_rows[len(ZOO) :]:
        assert row["protocol"] == V2_ZOO[row["model"]].protocol.as_dict()
    for row in rows:
        entry = ZOO[row["model"]]
        assert row["arch"] == entry.family
        assert row["num_classes"] == len(entry.labels())
        assert row["protocol"] == entry.protocol.as_dict()
        assert (row["hub_repo"], row["hub_file"]) == (entry.hub_repo, entry.hub_file)
        assert (row["paper_top1"], row["paper_gflops"]) == (entry.top1, entry.gflops)
        assert all(ALIASES[alias] == entry.name for alias in row["aliases"])
    assert sorted(alias for row in rows for alias in row["aliases"]) == sorted(ALIASES)


@pytest.mark.parametrize("columns", [60, 80, 100, 160])
def test_models_table_shows_every_name_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(variable, raising=False)
    output = models_output(capsys)
    assert max(len(line) for line in output.splitlines()) <= columns
    words = set(output.replace(",", " ").split())
    assert set(ZOO) <= words
    assert set(ALIASES) <= words


@pytest.mark.parametrize("columns", ["40", "80", "200"])
def test_models_always_shows_where_the_weights_come_from(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], columns: str
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "source" in out
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.split() and line.split()[0] in ZOO}
    assert rows["s16x8-k400"] == "Hub" and rows["s16x4-k400"] == "MMAction2"
    assert rows["s8x8-k400"] == "Drive" and rows["s32x4-k400"] == "none"


def test_best_entry_prefers_downloadable_then_top1() -> None:
    for dataset in LABEL_SETS:
        best = best_entry(dataset)
        assert best is not None
        rivals = [entry for entry in ZOO.values() if entry.dataset == dataset]
        assert all((best.on_hub, best.top1) >= (entry.on_hub, entry.top1) for entry in rivals)
    hidden = [entry for entry in ZOO.values() if entry.dataset == "k400" and not entry.on_hub]
    assert best_entry("k400") not in hidden
    assert best_entry("k400", "b") is not None and best_entry("k400", "b").family == "b"
    assert best_entry("k400", "no-such-family") is None


def test_every_released_checkpoint_has_a_download_source() -> None:
    assert set(DRIVE_IDS) | set(MMACTION2_URLS) <= set(ZOO)
    assert [entry.name for entry in ZOO.values() if not entry.sources] == ["s32x4-k400"]
    assert all(re.fullmatch(r"[-\w]{33}", file_id) for file_id in DRIVE_IDS.values())
    assert len(set(DRIVE_IDS.values())) == len(DRIVE_IDS)
    assert all(re.search(r"_\d{8}-[0-9a-f]{8}\.pth$", url) for url in MMACTION2_URLS.values())
    assert ZOO["s16x4-k400"].sources == ("mmaction2", "drive")
    assert ZOO["s16x8-k400"].sources == ("hub", "drive")


# --- UniFormerV2 -------------------------------------------------------------------------------------

# Public class counts again, written out: MMAction2's Kinetics files, its Kinetics-710 list and Moments in Time.
V2_EXPECTED_COUNTS = {"k400-mmaction": 400, "k600-mmaction": 600, "k700": 700, "k710": 710, "mit": 339}


@pytest.mark.parametrize("label_set", sorted(V2_EXPECTED_COUNTS))
def test_v2_label_files_have_their_counts_of_unique_names(label_set: str) -> None:
    assert V2_LABEL_SET_SIZES == V2_EXPECTED_COUNTS
    names = load_labels(label_set)
    assert len(names) == len(set(names)) == V2_EXPECTED_COUNTS[label_set]
    raw = resources.files("uniformer_cli.zoo").joinpath("labels", f"{label_set}.txt").read_text("utf-8")
    assert raw.endswith("\n") and not raw.endswith("\n\n") and raw.split("\n")[:-1] == names


def test_mmaction_kinetics_orders_are_the_alphabetical_official_names() -> None:
    """MMAction2's Kinetics-400 file holds the official class names (ours, k400.txt) in plain string
    order; its K600 and K700 files are sorted too."""
    assert load_labels("k400-mmaction") == sorted(load_labels("k400"))
    for label_set in ("k600-mmaction", "k700"):
        assert load_labels(label_set) == sorted(load_labels(label_set))


def test_kinetics_710_starts_with_kinetics_400() -> None:
    """The official fine-tuning code takes a K710 head's first 400 rows for Kinetics-400 (slowfast/models/
    uniformerv2.py); MMAction2's K710 list agrees: its first 400 names are K400's in K400's order, 13
    of them under their later Kinetics-700 names."""
    k710, k400 = load_labels("k710"), load_labels("k400-mmaction")
    renamed = [(old, new) for old, new in zip(k400, k710[:400], strict=True) if old != new]
    assert len(renamed) == 13
    assert ("balloon blowing", "inflating balloons") in renamed and ("dying hair", "dyeing hair") in renamed
    assert set(k710) >= set(load_labels("k700")) - {"throwing ball (not baseball or American football)"}


def test_v2_entries_follow_the_official_protocols_and_designs() -> None:
    for entry in V2_ZOO.values():
        config, protocol = entry.config, entry.protocol
        assert config.num_classes == {"anet": 200, "hacs": 200, "mit": 339, "sthv1": 174, "sthv2": 174}.get(
            entry.dataset, int(entry.dataset.removeprefix("k")) if entry.dataset.startswith("k") else -1
        )
        if entry.dataset.startswith("sth"):
            # exp/sthv*/*/run.sh: 1 clip x 3 crops; the sth loader's segments over BGR JPEG frames.
            assert (protocol.sampling, protocol.clips, protocol.crops, protocol.channel_order) == (
                "segment",
                1,
                3,
                "bgr",
            )
            assert config.local_mhra == "double" and config.temporal_downsample
        else:
            assert (protocol.sampling, protocol.channel_order, config.local_mhra) == ("sparse", "rgb", "off")
            assert len(config.return_layers) == 4 and not config.temporal_downsample
        assert protocol.size == config.resolution == (336 if entry.family == "v2-l14-336" else 224)
        assert config.frozen == entry.frozen == ("frozen" in entry.name)
        if entry.frozen:
            assert (protocol.clips, protocol.crops) == (3, 1)  # exp/*/frozen_*/run.sh
        if entry.dataset in ("anet", "hacs"):
            assert (protocol.clips, protocol.crops) == (10, 3)
        assert f"x{protocol.frames}" in entry.name and entry.experiment.split("/")[0] == {"mit": "mit"}.get(
            entry.dataset, entry.dataset
        )


def test_v2_sources_are_pinned_and_name_their_label_order() -> None:
    for entry in V2_ZOO.values():
        assert entry.drive_id is None and entry.hub_bytes is None
        if not entry.sources:
            assert entry.label_set is None and entry.hub_file is None and entry.mmaction2_url is None
            continue
        if entry.sources == ("mmaction2",):
            url = entry.mmaction2_url
            assert url is not None and entry.hub_file is None
            assert url.startswith("https://download.openmmlab.com/mmaction/v1.0/recognition/uniformerv2/")
            assert re.search(r"_\d{8}-[0-9a-f]{8}\.pth$", url)  # the sha256 prefix `weights.remote` checks
            assert entry.label_set in ("k400-mmaction", "k600-mmaction", "k700", "k710", "mit")
        else:
            assert entry.sources == ("hub",) and entry.mmaction2_url is None and not entry.retrained
            assert (entry.hub_repo, entry.hub_revision) == (
                "Andy1621/uniformerv2",
                "d9872b5afdc8e56fd18afadc66f1f5e07f156ee5",
            )
            assert entry.label_set in ("k400", "mit")
            assert entry.hub_file == f"{entry.official_name.replace('k400_k710', 'k400+k710')}.pyth"
    urls = [entry.mmaction2_url for entry in V2_ZOO.values() if entry.mmaction2_url]
    assert len(urls) == 21 and len({url[-12:] for url in urls}) == len(urls)  # no two entries share one file
    assert sum(entry.on_hub for entry in V2_ZOO.values()) == 2


def test_v2_names_and_aliases_resolve() -> None:
    names = [*ZOO, *ALIASES, *V2_ZOO, *V2_ALIASES]
    assert len(names) == len(set(names))
    official = [entry.official_name for entry in V2_ZOO.values()]
    assert len(official) == len(set(official)) == 49  # the official model zoo page's checkpoints
    for alias, target in V2_ALIASES.items():
        assert find_entry(alias) is V2_ZOO[target] and V2_ZOO[target].sources
    for entry in V2_ZOO.values():
        assert find_entry(entry.official_name) is entry and find_entry(entry.name.upper()) is entry


def test_every_source_has_one_name_for_tables_and_one_for_sentences() -> None:
    assert list(SOURCE_NAMES) == list(get_args(Source))
    labels = [name.label for name in SOURCE_NAMES.values()]
    assert len(set(labels)) == len(labels) and all(" " not in label for label in labels)  # one word per table cell
