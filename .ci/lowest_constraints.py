"""Print pip constraints that pin every `name>=X` requirement of pyproject.toml to `name==X`, so CI can
run the tests on the oldest versions the package claims to support.

torch is left out (CI only has the 2.13 CPU wheel) and so are ruff and mypy (linting and type checking run
once, on the latest releases).
"""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

SKIPPED = {"torch", "ruff", "mypy"}
FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def main() -> None:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    requirements = [*project["dependencies"], *(requirement for group in extras for requirement in group)]
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = FLOOR.match(requirement)
        if match and match[1].lower() not in SKIPPED:
            pins[match[1].lower()] = match[2]
    print("\n".join(f"{name}=={version}" for name, version in sorted(pins.items())))


if __name__ == "__main__":
    main()
