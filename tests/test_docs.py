"""The project's documentation stands alone: every reference in the code and the docs resolves inside the
repository (section numbers of docs/MODEL.md and docs/PROTOCOLS.md, Markdown links and their anchors,
and the repository paths the docs name)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC_DOCUMENTS = ("MODEL.md", "PROTOCOLS.md")
SKIPPED_DIRECTORIES = {"__pycache__", "build", "dist", "node_modules"}

# "MODEL.md 8", "PROTOCOLS.md 3.2, 3.3", "PROTOCOLS.md 1 and 4", "PROTOCOLS.md 7.1-7.2", "MODEL.md 4, 7 and 8".
SECTION = r"\d+(?:\.\d+)?"
SECTION_REFERENCE = re.compile(
    rf"\b({'|'.join(re.escape(name) for name in SPEC_DOCUMENTS)})((?:(?:,\s*|\s+and\s+|\s+|-){SECTION})+)"
)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
NUMBERED_HEADING = re.compile(rf"^({SECTION})\.?\s")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`]*`")
# A file name in capitals such as README.md or TRAINING.md, as code and prose refer to documents.
DOCUMENT_NAME = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[A-Z][A-Z0-9_]*\.md)\b")
REPOSITORY_PATH = re.compile(r"`((?:uniformer_cli|tests|benchmarks|weights|examples|docs)/[^`\s]*)`")


def project_files(suffix: str) -> list[Path]:
    """The project's own files (no virtual environments, caches, build outputs or egg-info)."""

    def wanted(path: Path) -> bool:
        parts = path.relative_to(ROOT).parts[:-1]
        return not any(p.startswith(".") or p in SKIPPED_DIRECTORIES or p.endswith(".egg-info") for p in parts)

    return sorted(path for path in ROOT.rglob(f"*{suffix}") if wanted(path))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(document: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", document.read_text(), flags=re.MULTILINE | re.DOTALL)
    return [match.group(2) for line in text.splitlines() if (match := HEADING.match(line))]


def anchors(document: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(document):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def section_numbers(document: Path) -> set[str]:
    return {match.group(1) for heading in headings(document) if (match := NUMBERED_HEADING.match(heading))}


def section_references() -> list[tuple[str, str, str]]:
    """(where, document, section) for every "MODEL.md N" / "PROTOCOLS.md N.M" in the code and the docs."""
    found = []
    for path in [*project_files(".py"), *project_files(".md")]:
        text = path.read_text()
        for match in SECTION_REFERENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            for number in re.findall(SECTION, match.group(2)):
                found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1), number))
    return found


def test_the_spec_documents_are_numbered_sections() -> None:
    for name in SPEC_DOCUMENTS:
        numbers = section_numbers(ROOT / "docs" / name)
        assert {"1", "2", "3", "4", "5", "6", "7", "8", "9"} <= numbers, name
        assert "1.1" in numbers or "2.1" in numbers, name


def test_every_section_reference_resolves() -> None:
    references = section_references()
    # The code cites the documents throughout; a scan that finds few means the pattern broke.
    assert len({where for where, *_ in references}) > 60
    assert {document for _, document, _ in references} == set(SPEC_DOCUMENTS)
    numbers = {name: section_numbers(ROOT / "docs" / name) for name in SPEC_DOCUMENTS}
    assert [reference for reference in references if reference[2] not in numbers[reference[1]]] == []


def test_the_resolver_rejects_what_does_not_exist() -> None:
    protocols, model = SPEC_DOCUMENTS[1], SPEC_DOCUMENTS[0]  # not spelled out: the repository scan would see them
    text = f"see {protocols} 3.1, 3.9 and 12 or {model} 4.3-4.7"
    cited = [(m.group(1), re.findall(SECTION, m.group(2))) for m in SECTION_REFERENCE.finditer(text)]
    assert cited == [("PROTOCOLS.md", ["3.1", "3.9", "12"]), ("MODEL.md", ["4.3", "4.7"])]
    protocols = section_numbers(ROOT / "docs" / "PROTOCOLS.md")
    assert "3.1" in protocols
    assert "3.9" not in protocols
    assert "12" not in protocols
    assert (
        slug("3.1 Dense sampling (Kinetics-400/600, UCF101, HMDB51)")
        == "31-dense-sampling-kinetics-400600-ucf101-hmdb51"
    )


def test_code_names_only_documents_that_exist_in_the_repository() -> None:
    """No comment points at notes kept outside the repository, as the first version's comments did."""
    names = {path.name for path in project_files(".md")}
    missing = []
    for path in project_files(".py"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for reference in DOCUMENT_NAME.findall(line):
                target = (path.parent / reference, ROOT / reference)
                if Path(reference).name not in names or ("/" in reference and not any(t.exists() for t in target)):
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {reference}")
    assert missing == []


@pytest.mark.parametrize("document", project_files(".md"), ids=lambda path: str(path.relative_to(ROOT)))
def test_markdown_links_paths_and_document_names_resolve(document: Path) -> None:
    text = document.read_text()
    names = {path.name for path in project_files(".md")}
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... are outside the repository
            continue
        file_part, _, anchor = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists():
            broken.append(f"link {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"link {target}: no such heading")
    for path in REPOSITORY_PATH.findall(text):
        if not list(ROOT.glob(path.rstrip("/"))):
            broken.append(f"path {path}: not in the repository")
    prose = INLINE_CODE.sub("", re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL))
    prose = LINK.sub("", prose)
    broken += [
        f"document {name}: not in the repository"
        for name in DOCUMENT_NAME.findall(prose)
        if Path(name).name not in names
    ]
    assert broken == []
