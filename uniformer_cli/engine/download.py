"""`uniformer download`: zoo checkpoints into the cache, converted, with where they came from."""

from __future__ import annotations

from uniformer_cli.errors import UniformerError
from uniformer_cli.weights import fetch_zoo_download
from uniformer_cli.zoo import find_entry


def download(names: list[str], *, revision: str | None = None, force: bool = False) -> list[dict[str, object]]:
    """One record per name (docs/OUTPUT.md): the converted file, the download, its source and sha256;
    a name that fails keeps its record with the `error`."""
    records: list[dict[str, object]] = []
    for name in names:
        record: dict[str, object] = dict.fromkeys(("model", "source", "weights", "download", "sha256"))
        record["model"] = name
        try:
            entry = find_entry(name)
            record["model"] = entry.name
            fetched = fetch_zoo_download(entry, revision, force=force)
        except UniformerError as error:
            record["error"] = str(error)
        else:
            record.update(
                source=fetched.source,
                weights=str(fetched.converted),
                download=str(fetched.download),
                sha256=fetched.sha256,
                error=None,
            )
        records.append(record)
    return records
