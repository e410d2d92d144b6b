"""`uniformer download`: zoo checkpoints and Hub models into the cache, with where they came from."""

from __future__ import annotations

from uniformer_cli.errors import UniformerError
from uniformer_cli.events import Progress, ProgressCallback, notify
from uniformer_cli.weights import fetch_zoo_download
from uniformer_cli.weights.loader import fetch_hub_model, named_entry


def download(
    names: list[str],
    *,
    revision: str | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> list[dict[str, object]]:
    """One record per name (docs/OUTPUT.md): the file that loads, the download it came from, its source and
    sha256; a name that fails keeps its record with the `error`. A zoo entry's download is converted once;
    a Hub model repository (`namespace/name`) holds its converted file already. `progress` hears of each
    model, and of the bytes of each Google Drive / MMAction2 transfer."""
    records: list[dict[str, object]] = []
    for number, name in enumerate(names):
        notify(progress, Progress("downloading", number, len(names), {"model": name}))
        record: dict[str, object] = dict.fromkeys(("model", "source", "weights", "download", "sha256"))
        record["model"] = name
        try:
            entry = named_entry(name)
            if entry is None:
                found = fetch_hub_model(name, revision)
                record.update(source="hub", weights=str(found.path), download=str(found.path), sha256=found.sha256)
            else:
                record["model"] = entry.name
                fetched = fetch_zoo_download(entry, revision, force=force, progress=progress)
                record.update(
                    source=fetched.source,
                    weights=str(fetched.converted),
                    download=str(fetched.download),
                    sha256=fetched.sha256,
                )
        except UniformerError as error:
            record["error"] = str(error)
        else:
            record["error"] = None
        records.append(record)
    notify(progress, Progress("downloading", len(names), len(names)))
    return records
