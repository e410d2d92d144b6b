"""Option types shared by several subcommands, so each flag is spelled, documented and checked once.

Choice options are refused while the command line is parsed (exit status 2, with the valid values) and
show their values in `--help`; tests/test_output.py holds each list to the code that owns the concept.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

if TYPE_CHECKING:
    from uniformer_cli.engine.request import InferenceRequest

import typer

from uniformer_cli.cli import output as _output
from uniformer_cli.cli.click_api import MissingParameter
from uniformer_cli.data.datasets import DATASETS
from uniformer_cli.data.video import DECODERS
from uniformer_cli.models.config_v2 import ARCHITECTURES
from uniformer_cli.protocol import CHANNEL_ORDERS, CROP_COUNTS, SAMPLINGS, ProtocolOverrides
from uniformer_cli.settings import DEVICE_CHOICES, ENGINES, PRECISIONS


class Choice(str, Enum):
    """A choice option's values. Commands get plain values, never members (see `plain_choices`)."""

    @property
    def plain(self) -> str | int:
        return self.value


def plain_choices(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so that its choice options arrive as plain strings (or ints), whatever Typer
    release parsed them: an Enum member saved in a training config could not be read back by
    `torch.load(weights_only=True)`. Typer reads the wrapped function's signature."""

    @functools.wraps(command)
    def with_plain_values(*args: Any, **kwargs: Any) -> Any:
        values = {name: value.plain if isinstance(value, Choice) else value for name, value in kwargs.items()}
        return command(*args, **values)

    return with_plain_values


def fields_from(cls: type[Any], values: Mapping[str, Any], **derived: Any) -> dict[str, Any]:
    """The fields of dataclass `cls` that a command has parameters for, taken from them by name (pass
    `locals()`): each option is spelled once, in the command's signature, never copied keyword by keyword.
    `derived` gives the fields the command computes (and overrides same-named parameters); other fields
    keep their defaults. Each command's tests check that its parameters and `cls` agree."""
    taken = {field.name: values[field.name] for field in dataclasses.fields(cls) if field.name in values}
    return taken | derived


def require_root(root: str | None, list_file: str | None, data: str | None = None) -> None:
    """A dataset split needs --root (or --list, whose folder is then the root) unless it is a packed
    dataset (--data): missing, it is a bad command line (exit status 2), found before anything loads."""
    if data is None and root is None and list_file is None:
        raise MissingParameter(
            "The folder that holds the dataset is needed (or --list FILE, whose folder is then the root).",
            param_hint="'--root' / '-r'",
            param_type="option",
        )


def inference_request(values: Mapping[str, Any]) -> InferenceRequest:
    """The `engine.request.InferenceRequest` of a command that runs a model, from its parameters by name
    (pass `locals()`, as for `fields_from`): the model and device flags, the protocol flags, `--compile`
    (parameter `compile_model`) and `--engine` (`engine_name`), where the command has them."""
    from uniformer_cli.engine.request import InferenceRequest  # engine modules load with the command, not with --help

    renamed = {field: values[parameter] for parameter, field in RENAMED.items() if parameter in values}
    protocol = ProtocolOverrides(**fields_from(ProtocolOverrides, values))
    return InferenceRequest(**fields_from(InferenceRequest, values, protocol=protocol, **renamed))


# Parameters whose names would shadow a builtin or a module in the commands, and the request field each sets.
RENAMED = {"compile_model": "compile", "engine_name": "engine"}


def derived_choice(name: str, values: Iterable[str | int]) -> Any:
    """A choice option's values, taken from the tuple of the code that owns the concept (never a copy kept
    in step by hand). Whole-number values reach the command as ints."""
    values = tuple(values)
    base = _IntChoice if all(isinstance(value, int) for value in values) else Choice
    return base(name, {str(value): str(value) for value in values})  # type: ignore[call-overload]


class _IntChoice(Choice):
    @property
    def plain(self) -> int:
        return int(self.value)


Device = derived_choice("Device", DEVICE_CHOICES)  # auto: CUDA, then MPS, then CPU
Decoder = derived_choice("Decoder", DECODERS)
Sampling = derived_choice("Sampling", SAMPLINGS)
ChannelOrder = derived_choice("ChannelOrder", CHANNEL_ORDERS)
Dataset = derived_choice("Dataset", DATASETS)  # the dataset readers (eval, train, features)
Crops = derived_choice("Crops", CROP_COUNTS)
Precision = derived_choice("Precision", PRECISIONS)
Engine = derived_choice("Engine", ENGINES)
Arch = derived_choice("Arch", ARCHITECTURES)  # the released architectures of both families


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="NAME",
        help="Zoo name or alias (see `uniformer models`), e.g. b-k400, s16x8-k400, or a Hub model repository"
        " NAMESPACE/NAME holding a converted uniformer file (`uniformer push`).",
        show_default=False,
    ),
]
WeightsOption = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        metavar="FILE",
        help="A .safetensors or official .pth file instead of a zoo download: a path, or a URL (s3://, gs://,"
        " https://, hf://) fetched once into the cache.",
        show_default=False,
    ),
]
RevisionOption = Annotated[
    str | None,
    typer.Option(
        "--revision",
        metavar="REVISION",
        help="Hub revision (branch, tag or commit) of the zoo file or Hub model. \\[default: main]",
        show_default=False,
    ),
]
# Choice options. `plain_choices` hands the commands plain values, so that is what the type checker sees in
# their bodies; Typer reads the Enum annotations.
if TYPE_CHECKING:
    DeviceOption = str
    DecoderOption = str
    CropsOption = int | None
    SamplingOption = str | None
    ChannelOrderOption = str | None
    PrecisionOption = str
    EngineOption = str
else:
    DeviceOption = Annotated[
        Device,
        typer.Option(
            "--device",
            "-d",
            case_sensitive=False,
            help="auto: CUDA, then MPS, then CPU (pick a GPU with CUDA_VISIBLE_DEVICES).",
        ),
    ]
    DecoderOption = Annotated[
        Decoder,
        typer.Option(
            "--decoder",
            case_sensitive=False,
            help="Video decoder: auto picks the fastest installed one for the job (README: Video decoders).",
        ),
    ]
    CropsOption = Annotated[
        Crops | None,
        typer.Option(
            "--crops",
            help="Spatial crops per clip: 1 (one square crop) or 3 (along the long side)."
            " \\[default: the model's protocol]",
            show_default=False,
        ),
    ]
    SamplingOption = Annotated[
        Sampling | None,
        typer.Option(
            "--sampling",
            case_sensitive=False,
            help="dense (--stride apart), segment (one frame per segment) or sparse. \\[default: the model's; "
            "dense when only --stride is given]",
            show_default=False,
        ),
    ]
    ChannelOrderOption = Annotated[
        ChannelOrder | None,
        typer.Option(
            "--channel-order",
            case_sensitive=False,
            help="rgb, or bgr for models trained on BGR frames. \\[default: the model's, else rgb]",
            show_default=False,
        ),
    ]
    PrecisionOption = Annotated[
        Precision,
        typer.Option(
            "--precision",
            case_sensitive=False,
            help="fp32: exact float32; bf16: bfloat16, on CPUs with AVX512-BF16 or AMX and on GPUs, top-5 as fp32"
            " on our checks; auto: fp32 on CPU, the device's half-precision autocast on CUDA/MPS. Speed per CPU:"
            " benchmarks/README.md.",
        ),
    ]
    EngineOption = Annotated[
        Engine,
        typer.Option(
            "--engine",
            case_sensitive=False,
            # The bracket is escaped for rich, which would read [openvino] as markup.
            help="What runs the model: auto chooses for this machine; torch; or openvino (CPU only, needs"
            " pip install 'uniformer\\[openvino]'; converted once and cached under $HF_HOME/uniformer/openvino)."
            " Speed per CPU: benchmarks/README.md.",
        ),
    ]


# Upper bounds of the count options, shown in each one's help as its range (docs/OUTPUT.md): far above any
# real use (the released protocols and recipes), low enough that no value allocates or runs without end.
# The protocol's own counts (--frames, --stride, --clips, --crops, --size) are bounded by `protocol.LIMITS`.
MAX_BATCH = 1024  # views (or videos) per forward pass
MAX_WORKERS = 256
MAX_TOP_K = 1000
MAX_COUNT = 10**9  # counts that cost no memory: --limit, --max-steps, --log-every, --save-every
MAX_EPOCHS = 10_000
MAX_REPEATS = 16
MAX_PASSES = 10_000  # flops --warmup and --runs
MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit

ClipsOption = Annotated[
    int | None,
    typer.Option(
        "--clips", min=1, help="Temporal clips per video. \\[default: the model's protocol]", show_default=False
    ),
]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, max=MAX_BATCH, help="Views per forward pass.")
]
WorkersOption = Annotated[
    int,
    typer.Option("--workers", "-j", min=0, max=MAX_WORKERS, help="DataLoader worker processes that decode videos."),
]
SplitOption = Annotated[str, typer.Option("--split", help="train, val or test; UCF101/HMDB51 folds as val2, val3.")]
PackedDataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="A packed dataset (`uniformer data pack`) instead of --root: its folder, index.json or shards"
        " 'DST/val-{000000..000009}.tar'; local or a URL (s3://, gs://, https://, hf://).",
        show_default=False,
    ),
]
ListFileOption = Annotated[
    str | None,
    typer.Option(
        "--list", help="List file to read instead of the dataset's default (a path or a URL).", show_default=False
    ),
]
RootOption = Annotated[
    str | None,
    typer.Option(
        "--root",
        "-r",
        help="The dataset's folder: videos or frame folders, and the lists. A URL (s3://, gs://, https://, hf://)"
        " is listed once and its videos read one at a time.",
        show_default=False,
    ),
]
CompileFlag = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the inference model: a slow first call, then faster; pays off over many videos.",
    ),
]


HeadDimOption = Annotated[
    int | None,
    typer.Option(
        "--head-dim",
        min=1,
        help="Attention head width for a custom checkpoint (S/B 64, XXS 28, XS 32). \\[default: the family's]",
        show_default=False,
    ),
]
FramesOption = Annotated[
    int | None,
    typer.Option("--frames", min=1, help="Frames per clip. \\[default: the model's protocol]", show_default=False),
]
StrideOption = Annotated[
    int | None,
    typer.Option(
        "--stride", min=1, help="Dense sampling rate, frames apart. \\[default: the model's]", show_default=False
    ),
]
SizeOption = Annotated[
    int | None,
    typer.Option("--size", min=32, help="Crop side in pixels. \\[default: the model's, else 224]", show_default=False),
]


FORCE_HELP = (
    "Replace files that already exist. Without it, a product that takes long to make (features, exports,"
    " explanations, converted weights) never overwrites one; result files (-o of predict, eval, flops, models)"
    " are always replaced, atomically."
)
ForceFlag = Annotated[bool, typer.Option("--force", "-f", help=FORCE_HELP)]

# `--json` belongs to the output layer; re-exported for the commands that take it from here.
JsonFlag = _output.JsonFlag
