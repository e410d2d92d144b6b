"""Named float arrays with JSON metadata, as the files `features` and `explain --save-map` write:

- `OUT.safetensors`: every array as a tensor of its name, the metadata as safetensors metadata (each value
  a JSON text);
- `OUT.npy`: the first array; each further array NAME in `OUT.NAME.npy`; the metadata as one JSON object
  in `OUT.json`, written last (it names what the arrays hold).

Every file is written atomically. A `final` write that `output` cannot take goes, all files together, to
the temporary folder instead, and the `WriteError` names them (`files.write_all_with_fallback`); another
write's failure (a checkpoint) is a `WriteError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from uniformer_cli.files import write_all_with_fallback, write_or_fail
from uniformer_cli.jsonio import dump_json
from uniformer_cli.weights.store import save_safetensors

FORMATS = (".safetensors", ".npy")


def index_path(output: Path) -> Path:
    """The JSON metadata written next to an `.npy` output."""
    return output.with_suffix(".json")


def write_arrays(
    output: Path, arrays: Mapping[str, torch.Tensor], metadata: Mapping[str, object], what: str, *, final: bool = True
) -> list[Path]:
    """Write `arrays` and `metadata` to `output` (`.safetensors` or `.npy`, module doc); the files written
    (where `output` could take them)."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in arrays.items()}
    writes: list[tuple[Path, Callable[[Path], object]]]
    if output.suffix == ".safetensors":
        strings = {key: dump_json(value) for key, value in metadata.items()}
        writes = [(output, lambda temporary: save_safetensors(tensors, temporary, strings))]
    else:
        writes = [
            (output if position == 0 else output.with_suffix(f".{name}.npy"), _array_writer(tensor.numpy()))
            for position, (name, tensor) in enumerate(tensors.items())
        ]
        text = dump_json(dict(metadata), indent=1)
        writes.append((index_path(output), lambda temporary: temporary.write_text(text, encoding="utf-8")))
    if final:
        write_all_with_fallback(writes, what)
    else:
        for path, write in writes:
            write_or_fail(path, write, what)
    return [path for path, _ in writes]


def _array_writer(values: np.ndarray) -> Callable[[Path], None]:
    def write(temporary: Path) -> None:
        with temporary.open("wb") as handle:
            np.save(handle, values)

    return write
