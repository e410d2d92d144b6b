"""`uniformer data pack` and packed datasets read back: byte-exact videos, the index, training order and
every kind of damaged index or shard."""

from __future__ import annotations

import itertools
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli
from eval_data import colour, flat_frames, flat_video
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic_video import numbered_frame, write_video

from uniformer_cli.data import shards
from uniformer_cli.data.datasets import open_sample, read_dataset, read_packed
from uniformer_cli.data.video import open_video
from uniformer_cli.engine.packing import PackRequest, pack, parse_size
from uniformer_cli.engine.train_data import GlobalBatchSampler
from uniformer_cli.errors import DatasetError, UniformerError

CLASSES = ["cat", "dog", "eel"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders: 4 train and 2 val videos per class (numbered frames, so decoding can be compared),
    one frame folder, one broken file."""
    root = tmp_path_factory.mktemp("dataset")
    for split, count in (("train", 4), ("val", 2)):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for number in range(count):
                offset = 17 * label + number
                write_video(
                    root / split / name / f"{name}_{number}.mp4",
                    10 + number,
                    frame=lambda i, o=offset: numbered_frame(i + o, 40, 48),
                    gop=4,
                )
    flat_frames(root / "val" / "dog" / "frames_1", colour(0.5), 6, "img_{:05d}.jpg")
    (root / "val" / "eel" / "broken.mp4").write_bytes(b"not a video" * 30)
    return root


@pytest.fixture(scope="module")
def packed(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    destination = tmp_path_factory.mktemp("packed") / "shards"
    pack(PackRequest(dataset, destination, shard_bytes=20_000))
    return destination


def test_the_index_lists_every_readable_video_in_shards_of_the_size_asked(dataset: Path, packed: Path) -> None:
    index = json.loads((packed / shards.INDEX).read_text())
    assert index["format"] == shards.FORMAT and index["classes"] == CLASSES
    train, val = index["splits"]["train"], index["splits"]["val"]
    assert train["samples"] == 12 and train["counts"] == [4, 4, 4]
    assert val["samples"] == 7 and val["counts"] == [2, 3, 2]  # the broken video left out, the frame folder in
    for split in (train, val):
        assert len(split["shards"]) > 1
        for entry in split["shards"]:
            file = packed / entry["name"]
            content = entry["offsets"][-1] + entry["sizes"][-1]
            assert content <= 20_000 or len(entry["offsets"]) == 1
            with tarfile.open(file) as archive:  # a plain tar any tool reads
                names = archive.getnames()
            assert len(names) == 2 * len(entry["offsets"]) + (5 if "frames_1" in str(entry["videos"]) else 0)


def test_packed_videos_are_the_original_bytes_with_their_metadata(dataset: Path, packed: Path) -> None:
    for split in ("train", "val"):
        listed = read_dataset("folder", dataset, split=split).samples
        original = {sample.path.relative_to(dataset).as_posix(): sample for sample in listed}
        for sample in read_packed(packed, split).samples:
            assert sample.member is not None
            content = shards.read_member(sample.member)
            source = original[sample.path.as_posix()]
            assert sample.label == source.label == content.meta["label"]
            assert content.meta["label_name"] == CLASSES[sample.label]
            if source.path.is_dir():
                frames = sorted(source.path.iterdir())
                assert content.frames == tuple(frame.read_bytes() for frame in frames)
            else:
                assert content.video == source.path.read_bytes()
                assert content.meta["video_id"] == source.path.stem
                with open_video(source.path) as video:
                    assert content.meta["frames"] == video.num_frames
                    assert content.meta["duration"] == pytest.approx(video.duration)


def test_packed_samples_decode_to_the_original_frames(dataset: Path, packed: Path) -> None:
    for sample in read_packed(packed, "val").samples:
        with open_sample(sample, "pyav") as video, open_video(dataset / sample.path, "pyav") as reference:
            everything = list(range(reference.num_frames))
            assert video.num_frames == reference.num_frames
            assert np.array_equal(video.read(everything), reference.read(everything))


def test_validation_keeps_list_order_and_training_is_shuffled(dataset: Path, packed: Path) -> None:
    val = [sample.path for sample in read_packed(packed, "val").samples]
    listed = [sample.path.relative_to(dataset) for sample in read_dataset("folder", dataset, split="val").samples]
    assert val == [path for path in listed if path.name != "broken.mp4"]
    train = [sample.path for sample in read_packed(packed, "train").samples]
    source = [sample.path.relative_to(dataset) for sample in read_dataset("folder", dataset, split="train").samples]
    assert sorted(train) == sorted(source) and train != source


def test_packing_twice_gives_identical_shards(dataset: Path, packed: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    pack(PackRequest(dataset, again, shard_bytes=20_000))
    for file in packed.iterdir():
        assert (again / file.name).read_bytes() == file.read_bytes(), file.name


def test_shard_patterns_select_shards(packed: Path) -> None:
    everything = read_packed(packed, "train")
    first_two = read_packed(str(packed / "train-{000000..000001}.tar"))
    assert first_two.split == "train"
    assert [s.path for s in first_two.samples] == [s.path for s in everything.samples[: len(first_two.samples)]]
    assert len(first_two.samples) < len(everything.samples)
    one = read_packed(packed / "val-000001.tar")
    assert one.split == "val" and one.samples
    with pytest.raises(DatasetError, match="not a shard of"):
        read_packed(str(packed / "train-{000000..000099}.tar"))
    with pytest.raises(DatasetError, match="all of one split"):
        read_packed(str(packed / "shard-x.tar"))
    with pytest.raises(DatasetError, match="name the split"):
        read_packed(packed)
    with pytest.raises(DatasetError, match="no test split"):
        read_packed(packed, "test")


def test_packed_labels_follow_the_model_classes_by_name(packed: Path) -> None:
    reordered = ["Eel", "cat", "dog", "fox"]
    split = read_packed(packed, "val", classes=reordered)
    for sample in split.samples:
        assert sample.member is not None
        assert reordered[sample.label].lower() == shards.read_member(sample.member).meta["label_name"]
    with pytest.raises(DatasetError, match="are not classes of the model"):
        read_packed(packed, "val", classes=["cat", "dog"])


def test_resize_reencodes_to_the_short_side_and_keeps_every_frame(dataset: Path, tmp_path: Path) -> None:
    report = pack(PackRequest(dataset, tmp_path / "small", splits=("train",), resize=16, workers=1))
    assert report.splits["train"]["samples"] == 12 and report.splits["train"]["failures"] == 0
    for sample in read_packed(tmp_path / "small", "train").samples:
        with open_sample(sample) as video, open_video(dataset / sample.path) as original:
            assert (video.height, video.width) == (16, 20)  # 40x48 -> short side 16, even width
            assert video.num_frames == original.num_frames and video.fps == pytest.approx(original.fps)


def test_a_frame_folder_cannot_be_resized(dataset: Path, tmp_path: Path) -> None:
    report = pack(PackRequest(dataset, tmp_path / "small", splits=("val",), resize=16))
    errors = [video.error for video in report.videos if video.error]
    assert len(errors) == 2 and any("not frame folders" in error for error in errors)


def test_epoch_order_visits_every_sample_once_shard_by_shard() -> None:
    sizes = [70, 5, 130, 64]
    bounds = np.cumsum([0, *sizes])
    first = shards.epoch_order(sizes, seed=3, epoch=0)
    assert sorted(first.tolist()) == list(range(sum(sizes)))
    # Each shard's samples come as one run, each block of 64 of them together.
    shard_of = np.searchsorted(bounds, first, side="right") - 1
    runs = [shard_of[0]] + [b for a, b in itertools.pairwise(shard_of) if a != b]
    assert sorted(runs) == list(range(len(sizes)))
    assert np.array_equal(first, shards.epoch_order(sizes, seed=3, epoch=0))
    assert not np.array_equal(first, shards.epoch_order(sizes, seed=3, epoch=1))
    assert not np.array_equal(first, shards.epoch_order(sizes, seed=4, epoch=0))


@pytest.mark.parametrize(("world", "accumulation"), [(1, 1), (2, 1), (3, 2)])
def test_ranks_split_each_epoch_of_a_packed_order_and_resume_exactly(world: int, accumulation: int) -> None:
    sizes = [9, 30, 17]

    def order(seed: int, epoch: int) -> np.ndarray:
        return shards.epoch_order(sizes, seed, epoch, block=8)

    samplers = [
        GlobalBatchSampler(56, 2, accumulation=accumulation, world_size=world, rank=rank, seed=5, order=order)
        for rank in range(world)
    ]
    for sampler in samplers:
        sampler.set_position(epoch=2)
    seen = [index for sampler in samplers for batch in sampler for _, index in batch]
    steps = samplers[0].steps_per_epoch
    assert len(seen) == len(set(seen)) == steps * 2 * accumulation * world  # once each, the last batch dropped
    assert set(seen) <= set(order(5, 2)[: steps * samplers[0].global_batch].tolist())
    resumed = samplers[0]
    whole = list(resumed)
    resumed.set_position(epoch=2, start_step=1)
    assert list(resumed) == whole[accumulation:]


def test_shard_sizes_parse() -> None:
    assert parse_size("1GB") == 10**9
    assert parse_size("500 MB") == 500 * 10**6
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("123456") == 123456
    for text in ("", "1XB", "-5MB", "0", "2TB", "1e9"):
        with pytest.raises(UniformerError, match="size"):
            parse_size(text)


def test_a_damaged_shard_is_one_clear_line_per_sample(packed: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in packed.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    shard = copy / "val-000000.tar"
    data = bytearray(shard.read_bytes())
    data[600:1500] = bytes(900)  # the first sample's members, headers included
    shard.write_bytes(bytes(data))
    samples = read_packed(copy, "val").samples
    with pytest.raises(UniformerError) as caught, open_sample(samples[0]) as video:
        video.read([0])
    assert "\n" not in str(caught.value)
    with open_sample(samples[1]) as video:  # the next sample is intact
        video.read([0])
    shard.write_bytes(bytes(data[:700]))  # cut short: the later samples are gone
    with pytest.raises(DatasetError, match=r"not a packed sample|holds no single video"):
        shards.read_member(samples[1].member)  # type: ignore[arg-type]


index_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**13) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(
    shard=st.fixed_dictionaries(
        {},
        optional={
            key: index_values
            for key in ("name", "first", "offsets", "sizes", "labels", "videos", "num_frames", "extra")
        },
    ),
    split=st.sampled_from(["train", "val"]),
)
def test_a_malformed_index_is_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, shard: dict, split: str
) -> None:
    folder = tmp_path_factory.mktemp("index")
    index = {
        "format": shards.FORMAT,
        "version": shards.VERSION,
        "classes": CLASSES,
        "splits": {split: {"shards": [shard]}},
    }
    (folder / shards.INDEX).write_text(json.dumps(index))
    try:
        packed = read_packed(folder, split)
    except DatasetError as error:
        assert "\n" not in str(error)
        return
    assert all(0 <= sample.label < len(CLASSES) for sample in packed.samples)  # what passes is consistent


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "not a uniformer shard index"),
        (json.dumps({"format": shards.FORMAT, "version": 99}), "index version 99"),
        (json.dumps({"format": shards.FORMAT, "version": 1, "classes": [], "splits": {}}), "non-empty list"),
    ],
)
def test_a_wrong_index_file_is_refused(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / shards.INDEX).write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_packed(tmp_path, "val")
    with pytest.raises(DatasetError, match=r"holds no index\.json"):
        read_packed(tmp_path / "elsewhere", "val")


# --- the command ---------------------------------------------------------------------------------------


def test_pack_command_reports_every_video_and_exits_3_for_left_out_ones(
    capsys: pytest.CaptureFixture[str], dataset: Path, tmp_path: Path
) -> None:
    code, out, err = run_cli(capsys, "data", "pack", dataset, tmp_path / "out", "--shard-size", "30KB", "--json")
    assert code == 3, err
    document = json.loads(out)
    assert document["splits"]["val"]["failures"] == 1 and document["videos"] == 19
    records = {record["video"]: record for record in document["records"]}
    assert records["val/eel/broken.mp4"]["error"] and records["val/eel/broken.mp4"]["shard"] is None
    assert all(record["shard"] for name, record in records.items() if name != "val/eel/broken.mp4")
    code, _, err = run_cli(capsys, "data", "pack", dataset, tmp_path / "out")
    assert code == 1 and "already holds a packed dataset" in err
    code, _, err = run_cli(capsys, "data", "pack", dataset, tmp_path / "out2", "--shard-size", "lots")
    assert code == 1 and "cannot read the size" in err
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(capsys, "data", "pack", dataset, tmp_path / "file")
    assert code == 1 and "is a file" in err


def test_pack_needs_one_readable_video_per_split(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for split in ("train", "val"):
        (tmp_path / "src" / split / "a").mkdir(parents=True)
        (tmp_path / "src" / split / "a" / "x.mp4").write_bytes(b"junk" * 40)
    code, _, err = run_cli(capsys, "data", "pack", tmp_path / "src", tmp_path / "dst")
    assert code == 1 and "nothing packed" in err
    assert not list((tmp_path / "dst").glob("*.tar"))


def test_flat_videos_of_a_second_layout_pack_too(tmp_path: Path) -> None:
    root = tmp_path / "csvset"
    root.mkdir()
    for number in range(3):
        flat_video(root / f"v{number}.webm", colour(-1.0 + number))
    (root / "val.csv").write_text("v0.webm,a\nv1.webm,b\nv2.webm,a\n")
    report = pack(PackRequest(root, tmp_path / "out", dataset="csv", splits=("val",), list_file=root / "val.csv"))
    assert report.splits["val"]["samples"] == 3
    packed = read_packed(tmp_path / "out", "val")
    assert packed.classes == ["a", "b"] and [s.label for s in packed.samples] == [0, 1, 0]
    assert shards.read_member(packed.samples[0].member).extension == ".webm"  # type: ignore[arg-type]
