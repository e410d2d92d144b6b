"""Finding videos: the files, folders and globs a user names, expanded to video files and frame folders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from uniformer_cli.data import storage
from uniformer_cli.data.video import VIDEO_EXTENSIONS, is_frame_folder
from uniformer_cli.errors import DatasetError, UniformerError
from uniformer_cli.files import glob_paths, write_reason
from uniformer_cli.records import Failure

GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class VideoSearch:
    """The videos some paths and patterns name, and the patterns that named nothing."""

    paths: list[Path | str]  # local paths, and storage URLs as given
    failures: list[Failure]


def _videos_in(folder: Path) -> list[Path]:
    """The folder itself when it is a frame folder, else the videos below it."""
    return [folder] if is_frame_folder(folder) else _videos_under(folder)


def _videos_under(folder: Path) -> list[Path]:
    """Video files and frame folders below `folder`, in sorted order; frame folders are not entered."""
    found = []
    for root, directories, files in os.walk(folder):
        directories.sort()
        here = Path(root)
        if here != folder and is_frame_folder(here):
            found.append(here)
            directories.clear()
            continue
        found.extend(here / name for name in sorted(files) if Path(name).suffix.lower() in VIDEO_EXTENSIONS)
    return found


def _unreadable(path: Path) -> str | None:
    """Why the system refuses to look at `path` at all (a name or path too long, a loop of links), in
    words; None when it exists or simply does not (globs and missing files are told apart later)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        return write_reason(error)
    return None


def _videos_at(url: str) -> tuple[list[Path | str], str]:
    """A video file at a storage URL as given (read when it is decoded), or the videos below a folder
    URL (one listing); and the reason when there are none."""
    if storage.suffix_of(url) in VIDEO_EXTENSIONS:
        return [url], ""
    try:
        below = storage.find_files(url)
    except DatasetError as error:
        return [], str(error)
    videos: list[Path | str] = [
        storage.join(url, name) for name in below if storage.suffix_of(name) in VIDEO_EXTENSIONS
    ]
    return videos, f"no videos found under {url}"


def expand_paths(patterns: Sequence[str | Path]) -> tuple[list[Path | str], list[Failure]]:
    """Files as given, folders searched recursively (video extensions and frame folders), globs
    (`**` included) expanded; storage URLs name a video file or a folder of them. Each pattern that yields
    nothing is a `Failure`. Duplicates are dropped."""
    found: list[Path | str] = []
    failures: list[Failure] = []
    for pattern in patterns:
        path = Path(pattern)
        matches: list[Path | str]
        if storage.is_url(pattern):
            matches, reason = _videos_at(str(pattern))
        elif (problem := _unreadable(path)) is not None:
            failures.append(Failure(str(pattern), f"cannot read {path}: {problem}"))
            continue
        elif path.is_dir():
            matches = list(_videos_in(path))
            reason = f"no videos or frame folders found under {path}"
        elif path.exists():
            matches, reason = [path], ""
        elif GLOB_CHARACTERS & set(str(pattern)):
            matches = []
            for match in glob_paths(str(pattern)):  # `**` ends on loops of links
                if match.is_dir():
                    matches.extend(_videos_in(match))
                elif match.suffix.lower() in VIDEO_EXTENSIONS:
                    matches.append(match)
            reason = f"no videos match {pattern}"
        else:
            matches, reason = [], f"no such file or folder: {path}"
        if not matches:
            failures.append(Failure(str(pattern), reason))
        found.extend(matches)
    return list(dict.fromkeys(found)), failures


def find_videos(patterns: Sequence[str | Path]) -> VideoSearch:
    """`expand_paths`, failing when it finds nothing at all: called before a model is loaded, so a
    mistyped path costs no download."""
    paths, failures = expand_paths(patterns)
    if not paths:
        raise UniformerError("; ".join(failure.error for failure in failures) or "no video given")
    return VideoSearch(paths, failures)
