"""Model cards: the README.md that `uniformer push` uploads beside a model on the Hub and that `uniformer
export` writes beside an exported file. Both describe the model the same way (architecture, classes,
test protocol); each adds how to run it where it goes.

The protocol is said in words here and computed by the package (`data/`): a Hub model runs through
`uniformer predict`, an exported one through the `preprocess.py` written beside it (`engine.standalone`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from huggingface_hub import EvalResult, ModelCardData

from uniformer_cli.data.transforms import MEAN, STD
from uniformer_cli.models.config import ModelConfig, family_of
from uniformer_cli.models.config_v2 import v2_backbone
from uniformer_cli.protocol import ViewProtocol
from uniformer_cli.version import __version__
from uniformer_cli.weights import LoadedModel
from uniformer_cli.weights.hub import HUB_MODEL_FILE
from uniformer_cli.zoo import LABEL_SET_NAMES, ZooEntry, label_set_of


@dataclass(frozen=True)
class Evaluation:
    """The figures of an `uniformer eval -o FILE.json` report that a model card quotes."""

    dataset: str  # the dataset reader's name (k400, sthv2, ..., folder, csv)
    split: str
    top1: float  # percentages
    top5: float
    mean_class: float
    videos: int  # the videos counted
    protocol_text: str


def label_set(loaded: LoadedModel) -> str | None:
    """The label set (zoo `LABEL_SETS`) of the model's classes, when they are one of them."""
    return loaded.entry.dataset if isinstance(loaded.entry, ZooEntry) else label_set_of(loaded.labels)


def family(loaded: LoadedModel) -> str | None:
    """The released family (`FAMILIES` key) of a UniFormer (v1) network; None for others."""
    return family_of(loaded.config) if isinstance(loaded.config, ModelConfig) else None


def architecture(loaded: LoadedModel) -> str:
    """One line: the family (or the widths of a custom network), the class count and their label set."""
    config = loaded.config
    released = family(loaded)
    if released:
        network = f"UniFormer-{released.upper()}"  # as the paper writes the families: UniFormer-S, -XXS
    elif isinstance(config, ModelConfig):
        network = f"UniFormer ({config.arch}, widths {list(config.embed_dim)})"
    else:
        network = v2_backbone(config)
    classes = f"{config.num_classes} classes"
    labels = label_set(loaded)
    if labels is not None:
        classes += f" ({LABEL_SET_NAMES[labels]})"
    elif loaded.labels is None:
        classes += " (no class names)"
    return f"{network}, {classes}"


def protocol_rows(protocol: ViewProtocol) -> list[tuple[str, str]]:
    """The test protocol in words, one (what, how) row each, in the order the frames go through it."""
    if protocol.sampling == "dense":
        span = protocol.frames * (protocol.stride or 1)
        temporal = (
            f"dense {protocol.frames}x{protocol.stride}: {protocol.frames} frames evenly spaced from the clip's "
            f"first frame to {span - 1} frames later (step {span - 1}/{protocol.frames - 1}, positions truncated)"
            if protocol.frames > 1
            else f"dense {protocol.frames}x{protocol.stride}: one frame"
        )
        placement = (
            "the centre clip"
            if protocol.clips == 1
            else f"{protocol.clips} clips, the first at frame 0, the others evenly after it"
        )
    else:
        temporal = f"{protocol.sampling}: the video cut into {protocol.frames} equal segments, one frame from each"
        if protocol.sampling == "sparse":
            temporal += ", clamped to the last frame"
        placement = "one clip" if protocol.clips == 1 else f"{protocol.clips} clips, shifted inside the segments"
    crops = {1: "one square crop, the " + ("centre" if protocol.single_crop == "centre" else "left (top) one")}
    crop = crops.get(protocol.crops, f"{protocol.crops} square crops along the long side")
    return [
        ("frames", f"{temporal}; frames are counted as decoded, whatever the frame rate"),
        ("views", f"{protocol.clips} x {protocol.crops} = {protocol.views}: {placement}, each {crop}"),
        ("values", f"uint8 -> float32 (x / 255 - {MEAN}) / {STD} on every channel, before resizing"),
        (
            "size",
            f"short side resized to {protocol.size} (bilinear, no antialiasing, half-pixel centres; the long side "
            "floored), crops of that side with their offsets rounded up",
        ),
        ("channels", "RGB" if protocol.channel_order == "rgb" else "BGR (the frames' channels reversed)"),
        ("score", "softmax of the mean of the views' logits"),
    ]


def protocol_table(protocol: ViewProtocol) -> str:
    rows = "\n".join(f"| {what} | {how} |" for what, how in protocol_rows(protocol))
    return f"| step | rule |\n| --- | --- |\n{rows}"


def classes_section(labels: Sequence[str] | None, num_classes: int) -> str:
    """The class names by output row, folded (a card on the Hub shows them on demand)."""
    if labels is None:
        return f"The file carries no class names: its {num_classes} outputs are classes 0 to {num_classes - 1}."
    items = "\n".join(f"| {index} | {_cell(name)} |" for index, name in enumerate(labels))
    extra = (
        f"\n\nOutputs {len(labels)} to {num_classes - 1} belong to no class (the head has more rows than classes)."
        if len(labels) < num_classes
        else ""
    )
    return (
        f"<details>\n<summary>{len(labels)} classes, by output row</summary>\n\n| row | class |\n| --- | --- |\n"
        f"{items}\n\n</details>{extra}"
    )


def _cell(text: str) -> str:
    """`text` as it reads in a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def evaluation_table(evaluation: Evaluation) -> str:
    return (
        "| dataset | split | videos | top-1 | top-5 | mean class |\n| --- | --- | --- | --- | --- | --- |\n"
        f"| {_cell(evaluation.dataset)} | {_cell(evaluation.split)} | {evaluation.videos} | {evaluation.top1:.2f} | "
        f"{evaluation.top5:.2f} | {evaluation.mean_class:.2f} |\n\n"
        f"Measured by `uniformer eval` with the protocol {_cell(evaluation.protocol_text)}."
    )


def footer() -> str:
    return f"Written by `uniformer` {__version__}."


def export_card(
    loaded: LoadedModel, protocol: ViewProtocol, model_file: str, format: str, metadata: dict[str, str]
) -> str:
    """The README.md beside an exported model: what the files are, how to run them in ten lines (the
    engine the file was made for, `preprocess.py` for the input), the protocol, the classes."""
    batch = f"[batch, 3, {protocol.frames}, {protocol.size}, {protocol.size}]"
    classes = loaded.config.num_classes
    if format == "onnx":
        engine, install = "onnxruntime", "onnxruntime"
        load = (
            f'session = onnxruntime.InferenceSession("{model_file}")\n'
            'labels = json.loads(session.get_modelmeta().custom_metadata_map["labels"])\n'
            'logits = session.run(["logits"], {"video": views("clip.mp4")})[0]'
        )
        where = "ONNX `metadata_props`"
    else:
        engine, install = "openvino", "openvino"
        load = (
            "core = openvino.Core()\n"
            f'model = core.read_model("{model_file}")\n'
            'labels = json.loads(model.get_rt_info(["uniformer", "labels"]).astype(str))\n'
            'compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # not bf16\n'
            'logits = compiled(views("clip.mp4"))[0]'
        )
        where = "OpenVINO `rt_info`, under `uniformer`"
    if "labels" not in metadata:  # no class names: the rows are the classes
        load = "\n".join(
            f"labels = [f'class {{i}}' for i in range({classes})]" if "labels = " in line else line
            for line in load.splitlines()
        )
    code = (
        f"import json\n\nimport numpy as np\nimport {engine}\n\nfrom preprocess import views\n\n{load}\n"
        "mean = logits.mean(0)[: len(labels)]  # the views' mean; rows past the class names are no class\n"
        "scores = np.exp(mean - mean.max()) / np.exp(mean - mean.max()).sum()\n"
        "ranked = [(labels[i], float(scores[i])) for i in np.argsort(-scores)[:5]]"
    )
    sections = [
        f"# {loaded.name}",
        f"{architecture(loaded)}, exported by `uniformer export` to {'ONNX' if format == 'onnx' else 'OpenVINO IR'}: "
        "it runs without PyTorch and without the `uniformer` package.",
        "## Files",
        "| file | what it is |\n| --- | --- |\n"
        f"| `{model_file}` | the network: input `video`, float32 {batch} (a batch of views, any batch size), output "
        f"`logits`, float32 [batch, {classes}]; as metadata ({where}): {', '.join(f'`{key}`' for key in metadata)} |\n"
        f"| `preprocess.py` | `views(video_path)`: a video file or a frame folder -> the model's input for it, float32 "
        f"[{protocol.views}, 3, {protocol.frames}, {protocol.size}, {protocol.size}], the test protocol below with "
        "numpy and PyAV only |",
        "## Run",
        f"```bash\npip install numpy av {install}\n```",
        f"```python\n{code}\n```",
        "`ranked` holds the five best classes and their scores, the numbers `uniformer predict --json` gives.",
        '`views` also takes a frame folder, as `uniformer predict` does: `views("frames/")` for a folder of '
        "numbered JPEG or PNG frames (`img_00001.jpg`, `img_00002.jpg`, ... or `00001.jpg`, ...), read in number "
        "order from the first number on; other files beside them are ignored, and a missing number is an error.",
        "## Test protocol",
        "What `preprocess.py` computes (written from the package's own code when the model was exported):",
        protocol_table(protocol),
        "## Classes",
        classes_section(loaded.labels, classes),
        footer(),
    ]
    return "\n\n".join(sections) + "\n"


def hub_card(
    loaded: LoadedModel, protocol: ViewProtocol, repo_id: str, evaluation: Evaluation | None, license: str
) -> str:
    """The README.md of a Hub model repository: the Hub's metadata header (library, tags, datasets, licence,
    and the evaluation as `model-index`, written by huggingface_hub's `ModelCardData`), then the model,
    how to run it, its protocol, its evaluation and its classes."""
    trained_on = label_set(loaded)
    released = family(loaded)
    tags = ["uniformer", "video-classification", "action-recognition", "pytorch", "safetensors"]
    if released:
        tags.append(f"uniformer-{released}")
    results = []
    if evaluation is not None:
        dataset_name = LABEL_SET_NAMES.get(evaluation.dataset, evaluation.dataset)
        for name, value in (
            ("top-1 accuracy", evaluation.top1),
            ("top-5 accuracy", evaluation.top5),
            ("mean class accuracy", evaluation.mean_class),
        ):
            results.append(
                EvalResult(
                    task_type="video-classification",
                    task_name="Video Classification",
                    dataset_type=evaluation.dataset,
                    dataset_name=dataset_name,
                    dataset_split=evaluation.split,
                    metric_type="accuracy",
                    metric_name=name,
                    metric_value=round(value, 2),
                )
            )
    metadata = ModelCardData(
        license=license,
        library_name="uniformer",
        pipeline_tag="video-classification",
        tags=tags,
        datasets=[trained_on] if trained_on else None,
        metrics=["accuracy"] if results else None,
        model_name=repo_id.split("/")[-1] if results else None,
        eval_results=results or None,
    )
    sections = [
        f"# {repo_id}",
        f"{architecture(loaded)}: a video classifier of the UniFormer family, in a safetensors file "
        f"(`{HUB_MODEL_FILE}`) that carries its architecture, class names and test protocol.",
        "## Use",
        f"```bash\nuniformer predict clip.mp4 --model {repo_id}\n```",
        f'```python\nimport uniformer_cli\n\npredictor = uniformer_cli.load_predictor("{repo_id}")\n'
        'ranked = predictor("clip.mp4", top_k=5)  # [{"label": ..., "score": ..., "index": ...}, ...]\n```',
        "With the `uniformer` package installed; the file downloads once into the Hugging Face cache "
        "(`--revision`, `HF_HUB_OFFLINE=1` as for any Hub file).",
        "## Test protocol",
        "How a video becomes the model's input; `uniformer predict` applies it as it stands.",
        protocol_table(protocol),
    ]
    if evaluation is not None:
        sections += ["## Evaluation", evaluation_table(evaluation)]
    sections += ["## Classes", classes_section(loaded.labels, loaded.config.num_classes), footer()]
    return f"---\n{metadata.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
