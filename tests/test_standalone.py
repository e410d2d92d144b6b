"""Exports that stand alone (issue 23, 2): the `preprocess.py` written beside an exported model computes the
package's own views of video files and frame folders with numpy and PyAV only, and the README's ten lines, run
in a fresh virtual environment without torch or this package, give `uniformer predict --json`'s scores."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from cli_runner import run_cli
from hub_server import LocalHub, serve_tiny_zoo_model
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic_video import numbered_frame, write_frame_folder, write_jpeg, write_video
from test_api import FAMILIES, VIDEO

from uniformer_cli.data import portable, transforms
from uniformer_cli.data.video import _FRAME_FILE as FRAME_FILE
from uniformer_cli.data.video import IMAGE_EXTENSIONS, frame_folder_files, open_video
from uniformer_cli.data.views import load_views
from uniformer_cli.engine.standalone import RULES, preprocess_source
from uniformer_cli.errors import VideoError
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.weights import resolve_model

VIEW_TOLERANCE = 2e-6  # numpy's resize against PyTorch's kernel: float32 rounding order (measured 5e-7)
SCORE_TOLERANCE = 1e-4  # the bound on the scores of the whole chain


def generated(protocol: ViewProtocol, folder: Path, name: str = "preprocess") -> ModuleType:
    """`preprocess.py` for `protocol`, written to `folder` and imported from there."""
    path = folder / f"{name}.py"
    path.write_text(preprocess_source(protocol, "tiny"))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The example clip (426x320, 300 frames), a portrait clip (top/bottom crops), a clip shorter than a
    dense clip (repeated frames), a clip smaller than the crop (upsampled), and two JPEG frame folders: Sth-V2's
    naming (`img_00001.jpg`) and Sth-V1's (`00001.jpg`, portrait, beside a thumbnail and other files that are
    no frames)."""
    folder = tmp_path_factory.mktemp("videos")
    sth_v1 = write_frame_folder(folder / "sth-v1", [numbered_frame(i, 90, 60) for i in range(11)], "{:05d}.jpg")
    write_jpeg(sth_v1 / "thumb_1.jpg", numbered_frame(50, 30, 20))
    (sth_v1 / "notes.txt").write_text("not a frame")
    return [
        VIDEO,
        write_video(folder / "portrait.mp4", 40, frame=lambda i: numbered_frame(i, 96, 54)),
        write_video(folder / "short.mp4", 5, frame=lambda i: numbered_frame(i, 72, 128)),
        write_video(folder / "small.mp4", 24, frame=lambda i: numbered_frame(i, 36, 44)),
        write_frame_folder(folder / "sth-v2", [numbered_frame(i, 72, 100) for i in range(30)]),
        sth_v1,
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_preprocess_computes_the_packages_views(family: str, videos: list[Path], tmp_path: Path) -> None:
    protocol = FAMILIES[family]
    module = generated(protocol, tmp_path)
    for video in videos:
        ours = module.views(str(video))
        expected = load_views(video, protocol, decoder="pyav").numpy()
        assert ours.dtype == np.float32 and ours.shape == expected.shape, video
        assert float(np.abs(ours - expected).max()) < VIEW_TOLERANCE, video
        assert module.frame_count(str(video)) == open_video(video).num_frames


def test_frames_of_mixed_sizes_are_refused_as_the_package_refuses_them(sth_module: ModuleType, tmp_path: Path) -> None:
    folder = write_frame_folder(tmp_path / "mixed", [numbered_frame(i, 40, 48) for i in range(8)])
    write_jpeg(folder / "img_00005.jpg", numbered_frame(4, 48, 40))
    with pytest.raises(VideoError, match="mixes image sizes"):
        load_views(folder, FAMILIES["segment-sth-bgr"])
    with pytest.raises(ValueError, match=r"not all one size \(\(40, 48\) and \(48, 40\)\)"):
        sth_module.views(str(folder))


def test_the_file_carries_the_packages_rules_and_nothing_of_the_package(tmp_path: Path) -> None:
    protocol = FAMILIES["three-crop"]
    text = preprocess_source(protocol, "tiny")
    for rule in RULES:  # the package's own code, as it stands
        assert inspect.getsource(rule) in text, rule.__name__
    assert not re.search(r"^\s*(from|import) (uniformer_cli|torch)\b", text, re.MULTILINE)
    module = generated(protocol, tmp_path)
    assert module.PROTOCOL._asdict() == protocol.as_dict()
    assert (module.MEAN, module.STD) == (transforms.MEAN, transforms.STD)
    assert (module.IMAGE_EXTENSIONS, module._FRAME_FILE) == (IMAGE_EXTENSIONS, FRAME_FILE)
    assert np.array_equal(module.LEVELS, transforms._LEVELS)  # the normalisation table, bit for bit
    np.save(tmp_path / "direct.npy", module.views(str(VIDEO)))
    subprocess.run(
        [sys.executable, str(tmp_path / "preprocess.py"), str(VIDEO), str(tmp_path / "views.npy")], check=True
    )
    assert np.array_equal(np.load(tmp_path / "views.npy"), np.load(tmp_path / "direct.npy"))


@pytest.fixture(scope="module")
def sth_module(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """`preprocess.py` of the Something-Something protocol (segment sampling, BGR, the first crop)."""
    return generated(FAMILIES["segment-sth-bgr"], tmp_path_factory.mktemp("sth"), "sth_preprocess")


FRAME_NAME = st.tuples(
    st.sampled_from(["", "img_", "frame-", "thumb_", "img_0"]),
    st.integers(0, 14),
    st.integers(1, 5),  # zero-padded to this many digits
    st.sampled_from([".jpg", ".JPG", ".jpeg", ".png", ".txt", ".jpg.part"]),
).map(lambda parts: f"{parts[0]}{parts[1]:0{parts[2]}d}{parts[3]}")


# A run of frames named by a template (a gap where `dropped` falls inside it), among other names.
FOLDER_NAMES = st.builds(
    lambda template, start, count, dropped, others: (
        {template.format(number) for number in range(start, start + count) if number != dropped} | others
    ),
    st.sampled_from(["img_{:05d}.jpg", "{:05d}.jpg", "frame{}.png", "{:03d}.JPEG"]),
    st.integers(0, 2),
    st.integers(0, 9),
    st.integers(0, 14),
    st.sets(FRAME_NAME, max_size=4),
)


@settings(max_examples=80, deadline=None)
@given(names=FOLDER_NAMES, folders=st.sets(st.sampled_from(["00009.jpg", "img_00002.jpg"])))
def test_the_file_finds_a_frame_folders_frames_as_the_package_does(
    sth_module: ModuleType, names: set[str], folders: set[str]
) -> None:
    """Which files of a folder are its frames, in which order, or why it is none (no numbered images, a
    number missing): the same answer from the written file as from the package's reader."""
    module = sth_module
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for file in names - folders:
            (folder / file).write_bytes(b"")
        for subfolder in folders:  # a folder named like a frame is no frame
            (folder / subfolder).mkdir(exist_ok=True)
        answers = []
        for reader, error in ((frame_folder_files, VideoError), (module.frame_folder_files, ValueError)):
            try:
                answers.append([path.name for path in reader(folder)])
            except error as refused:
                answers.append(str(refused).replace(name, "FOLDER"))
        assert answers[0] == answers[1]
        if isinstance(answers[0], list):
            assert module.frame_count(name) == len(answers[0])


@settings(max_examples=60, deadline=None)
@given(
    source=st.tuples(st.integers(1, 120), st.integers(1, 120)),
    target=st.tuples(st.integers(1, 120), st.integers(1, 120)),
    seed=st.integers(0, 2**16),
)
def test_numpy_resize_is_pytorchs_bilinear(source: tuple[int, int], target: tuple[int, int], seed: int) -> None:
    image = np.random.default_rng(seed).uniform(-2.0, 2.5, (*source, 3)).astype(np.float32)
    ours = portable.resize(image, *target)
    theirs = F.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None], size=target, mode="bilinear", align_corners=False
    )
    assert float(np.abs(ours - theirs[0].permute(1, 2, 0).numpy()).max()) < VIEW_TOLERANCE


# --- the export, run where neither torch nor this package is ------------------------------------------------


CLEAN_CHECK = "import importlib.util as u; assert u.find_spec('torch') is None and u.find_spec('uniformer_cli') is None"
# Runs the README's Python block in the export folder on the input named on its command line (in place of
# the block's "clip.mp4") and prints every class's score.
DRIVER = """
import json, pathlib, re, sys
readme = pathlib.Path("README.md").read_text()
code = re.search(r"```python\\n(.*?)```", readme, re.S).group(1).replace('"clip.mp4"', repr(sys.argv[1]))
scope = {}
exec(code, scope)
print(json.dumps({"scores": scope["scores"].tolist(), "ranked": scope["ranked"]}))
"""


def clean_environment(folder: Path) -> Path:
    """A new virtual environment with numpy, PyAV and onnxruntime (this machine's versions, from its pip
    cache or package index), and neither torch nor this package: its python."""
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in ("numpy", "av", "onnxruntime")]
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True, capture_output=True)
    subprocess.run([str(python), "-s", "-c", CLEAN_CHECK], check=True, cwd=folder, env=outside_environment())
    return python


def outside_environment() -> dict[str, str]:
    """This process's environment without the variables that point Python at other packages."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}


def readme_scores(python: Path | str, folder: Path, source: Path = VIDEO, name: str = "clip.mp4") -> dict[str, object]:
    """The README's lines run on `source` (a video or a frame folder), put in the export folder as `name`."""
    (folder / name).symlink_to(source)
    (folder / "run_readme.py").write_text(DRIVER)
    done = subprocess.run(
        [str(python), "-s", "run_readme.py", name],
        cwd=folder,
        env=outside_environment(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def predict_scores(capsys: pytest.CaptureFixture[str], model: str, source: Path = VIDEO) -> list[float]:
    code, out, err = run_cli(capsys, "predict", source, "--model", model, "--top-k", "400", "--json")
    assert code == 0, err
    [record] = json.loads(out)
    scores = [0.0] * 400
    for ranked in record["top_k"]:
        scores[ranked["index"]] = ranked["score"]
    return scores


@pytest.mark.slow
def test_exports_run_without_torch_and_give_predicts_scores(
    capsys: pytest.CaptureFixture[str], local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    python = clean_environment(tmp_path / "venv")
    # Sth-V1's naming and frame size (100 pixels high); a frame folder is read with this family's protocol.
    frames = write_frame_folder(tmp_path / "sth-v1", [numbered_frame(i, 100, 132) for i in range(37)], "{:05d}.jpg")
    for index, (family, protocol) in enumerate(FAMILIES.items()):
        served = serve_tiny_zoo_model(local_hub, monkeypatch, tmp_path, name=f"tiny-{family}", protocol=protocol)
        folder = tmp_path / family
        if index == 0:  # a file named with its zoo entry: the metadata names the entry, not the file
            weights = resolve_model(served.entry.name, device="cpu").path  # the converted file in the cache
            args = [weights, "--model", served.entry.name, "-o", folder / "model.onnx"]
        else:
            args = [served.entry.name, "-o", folder / "model.onnx"]
        code, out, err = run_cli(capsys, "export", *args, "--json")
        assert code == 0, err
        record = json.loads(out)
        assert record["file"] == str(folder / "model.onnx")
        assert sorted(path.name for path in folder.iterdir()) == ["README.md", "model.onnx", "preprocess.py"]
        metadata = {entry.key: entry.value for entry in onnx.load(str(folder / "model.onnx")).metadata_props}
        assert metadata["model"] == served.entry.name
        inputs = [(VIDEO, "clip.mp4")] + ([(frames, "frames")] if family == "segment-sth-bgr" else [])
        for source, name in inputs:
            got = readme_scores(python, folder, source, name)
            expected = predict_scores(capsys, served.entry.name, source)
            assert np.abs(np.array(got["scores"]) - np.array(expected)).max() < SCORE_TOLERANCE, (family, name)
            best = int(np.argmax(expected))
            assert got["ranked"][0] == [served.entry.labels()[best], pytest.approx(expected[best], abs=SCORE_TOLERANCE)]
