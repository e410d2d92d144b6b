"""`preprocess.py`, the file `uniformer export` writes beside a model: the model's test protocol with numpy
and PyAV alone, `views(video_path) -> float32 [V, 3, T, H, W]` for a video file or a frame folder.

It is generated, never kept by hand: `data/portable.py` (numpy decoding, resizing and cropping, tested
against the package's own views) with its marked import block replaced by the source of the package's
rules themselves (`RULES`: the frame indices of every sampling, the resize size, the crop offsets, which
crop a one-crop test takes, and which files of a frame folder are its frames in which order, with the
constants those read) and the model's protocol written in as `PROTOCOL`.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import asdict

from uniformer_cli.data import geometry, portable, sampling, video
from uniformer_cli.errors import UniformerError
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.version import __version__

# The package's functions whose source the file carries, in dependency order.
RULES = (
    sampling._check,
    sampling._linspace_clip,
    sampling.dense_indices,
    sampling._segment_bounds,
    sampling.segment_indices,
    sampling.sparse_indices,
    sampling.test_indices,
    sampling.clip_indices,
    geometry.short_side_size,
    geometry.crop_offset,
    geometry.crop_indices,
    video._frame_file_numbers,
    video.frame_folder_files,
)
_RULES_BLOCK = re.compile(r"^# --- the package's rules:.*?^# --- end of the package's rules -+\n", re.M | re.S)
_PROTOCOL_LINE = re.compile(r"^PROTOCOL: Protocol \| None = None\n", re.M)
_DOCSTRING = re.compile(r'\A""".*?"""\n', re.S)


def preprocess_source(protocol: ViewProtocol, model: str) -> str:
    """The text of `preprocess.py` for `model` (its name in the file's docstring) at `protocol`."""
    template = inspect.getsource(portable)
    rules = "\n\n".join(inspect.getsource(function) for function in RULES)
    block = (
        "# The package's rules, copied from uniformer_cli.data.sampling, uniformer_cli.data.geometry and\n"
        "# uniformer_cli.data.video.\n"
        "import math\nimport re\n\n\n"
        "class UniformerError(ValueError):\n"
        '    """A video or protocol the rules cannot serve."""\n\n\n'
        "VideoError = UniformerError\n"
        f"MEAN = {geometry.MEAN!r}\nSTD = {geometry.STD!r}\n"
        f"IMAGE_EXTENSIONS = frozenset({sorted(video.IMAGE_EXTENSIONS)!r})\n"
        f"_FRAME_FILE = re.compile({video._FRAME_FILE.pattern!r})\n\n\n{rules}\n"
    )
    fields = ", ".join(f"{name}={value!r}" for name, value in asdict(protocol).items())
    text, replaced = _RULES_BLOCK.subn(lambda _: block, template)
    text, assigned = _PROTOCOL_LINE.subn(lambda _: f"PROTOCOL = Protocol({fields})\n", text)
    text, documented = _DOCSTRING.subn(lambda _: _docstring(protocol, model), text)
    if (replaced, assigned, documented) != (1, 1, 1):  # the template changed shape: a bug, said plainly
        raise UniformerError("cannot write preprocess.py: data/portable.py no longer has its marked blocks")
    return text


def _docstring(protocol: ViewProtocol, model: str) -> str:
    return (
        f'"""The test protocol of {model}: a video file or frame folder -> the model\'s input views, float32 '
        f"[{protocol.views}, 3, {protocol.frames}, {protocol.size}, {protocol.size}].\n\n"
        f"Protocol: {protocol.describe()} (PROTOCOL below; README.md says it in words). Written by uniformer\n"
        f"{__version__} from its own code; needs only numpy and PyAV (pip install numpy av).\n\n"
        "    from preprocess import views\n"
        "    clips = views(\"clip.mp4\")  # the model's input; score = softmax(mean of the views' logits)\n"
        '    clips = views("frames/")  # a folder of numbered JPEG/PNG frames (img_00001.jpg, ...)\n\n'
        "or `python preprocess.py clip.mp4 views.npy`.\n"
        '"""\n'
    )
