"""Named float arrays with JSON metadata, as the files `features` and `explain --save-map` write:

- `OUT.safetensors`: every array as a tensor of its name, the metadata as safetensors metadata (each value
  a JSON text);
- `OUT.npy`: the first array; each further array NAME in `OUT.NAME.npy`; the metadata as one JSON object
  in `OUT.json`, written last (it names what the arrays hold).

Every file is written atomically. A `final` write that `output` cannot take goes, all files together, to
the temporary folder instead, and the `WriteError` names them (`files.write_all_with_fallback`); another
write's failure (a checkpoint) is a `WriteError`. Several files cannot be replaced together (a run killed
between the `.npy` and its index would leave them torn apart): a checkpoint of an `.npy` output goes to one
file, `checkpoint_path` (`OUT.partial.safetensors`), which the final write removes.
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


def checkpoint_path(output: Path) -> Path:
    """Where a checkpoint (a write that is not `final`) of `output` goes: the output itself when it is one
    file (`.safetensors`), else `OUT.partial.safetensors` (module doc)."""
    return output if output.suffix == ".safetensors" else output.with_name(f"{output.stem}.partial.safetensors")


def write_arrays(
    output: Path, arrays: Mapping[str, torch.Tensor], metadata: Mapping[str, object], what: str, *, final: bool = True
) -> list[Path]:
    """Write `arrays` and `metadata` to `output` (`.safetensors` or `.npy`, module doc), or a checkpoint of
    them (not `final`) to `checkpoint_path(output)`; the files written (where `output` could take them)."""
    if not final and checkpoint_path(output) != output:
        return write_arrays(checkpoint_path(output), arrays, metadata, what, final=False)
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
        if checkpoint_path(output) != output:  # the checkpoint it replaces
            checkpoint_path(output).unlink(missing_ok=True)
    else:
        for path, write in writes:
            write_or_fail(path, write, what)
    return [path for path, _ in writes]


def _array_writer(values: np.ndarray) -> Callable[[Path], None]:
    def write(temporary: Path) -> None:
        with temporary.open("wb") as handle:
            np.save(handle, values)

    return write
