"""`python requirements.py PYPROJECT EXTRA [EXTRA ...]`: the core dependencies and those of the
extras, one per line, sorted.

The Dockerfiles install this list before they copy the sources (in a stage of its own), so an
image's dependency layer is keyed by its own requirements, not by every edit of pyproject.toml.
Standard library only: it runs on the bare base image."""
from __future__ import annotations

import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"{pyproject}: no extra {', '.join(unknown)}")
    return sorted(set(project.get("dependencies", [])).union(*(optional[e] for e in extras)))


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
