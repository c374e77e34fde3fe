"""Write the ModelRollout defaults of don_core/contract.py (ROLLOUT_DEFAULTS, with
LIVE_ACCURACY_DEFAULTS under analysis.liveAccuracy), the only hand-written copy, into the files
that cannot import it: the `default:` of each spec property of the CRD and the chart's
`operator.rollout` values.

    python -m scripts.gen_rollout_defaults           # rewrite them
    python -m scripts.gen_rollout_defaults --check   # exit 1 naming each stale file

The chart's `steps` is left empty (automatic) and the contract's steps go to its `canarySteps`
(VALUES_RENAMED). It fills every property that is in both the contract and the file (a CRD property without a
`default:` gets one; a contract value the file has no property for is left alone), so a field added
to both by hand needs one rerun. Lines are edited in place: comments, order and quoting stay.
The CRD's copy in manifests/ follows with `python -m scripts.render_manifests`.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import re
import sys
from pathlib import Path

import yaml

from don_core.contract import LIVE_ACCURACY_DEFAULTS, ROLLOUT_DEFAULTS

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "charts" / "don-predictor" / "crds" / "modelrollouts.yaml"
VALUES = REPO / "charts" / "don-predictor" / "values.yaml"
# Where the spec's properties start in the CRD, and the rollout defaults in values.yaml.
CRD_SPEC = ("openAPIV3Schema", "properties", "spec", "properties")
VALUES_ROLLOUT = ("operator", "rollout")
# values.yaml keys under operator.rollout that hold a contract value of another name: the chart's
# steps are empty (automatic: templates/_rollout.tpl puts the shadow step before canarySteps when
# the recorder is on), so the contract's steps go to canarySteps; None: written by hand.
VALUES_RENAMED = {"canarySteps": "steps", "steps": None}

_KEY = re.compile(r"^(?P<indent> *)(?P<dash>- )?(?P<key>[A-Za-z0-9_$.-]+):(?P<rest>.*)$")


def contract_defaults() -> dict:
    defaults = copy.deepcopy(ROLLOUT_DEFAULTS)
    defaults.setdefault("analysis", {})["liveAccuracy"] = dict(LIVE_ACCURACY_DEFAULTS)
    return defaults


def _lookup(tree: dict, path: tuple[str, ...]):
    """The contract's value at `path`; KeyError when it has none."""
    for key in path:
        if not isinstance(tree, dict):
            raise KeyError(key)
        tree = tree[key]
    return tree


def yaml_value(value) -> str:
    """`value` as flow YAML (fits a block line and a flow mapping alike)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    plain = re.fullmatch(r"[A-Za-z0-9_./-]+", value) and yaml.safe_load(value) == value
    return value if plain else json.dumps(value)


def _walk(lines: list[str]):
    """(line index, indent, key path) of every `key:` line, from indentation alone."""
    stack: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        match = _KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"]) + (2 if match["dash"] else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        yield i, indent, tuple(key for _, key in stack)


def _split_top(text: str, separator: str) -> list[str]:
    """`text` split at `separator` outside brackets and quotes (a quote opens a scalar only at
    its start: the apostrophe in `the stable's requests` is text)."""
    parts, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'" and text[:i].rstrip()[-1:] in ("", ",", "{", "[", ":"):
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i])
            start = i + len(separator)
    return parts + [text[start:]]


def _set_scalar(line: str, value) -> str:
    """`key: value  # comment` with the value replaced; the comment keeps its column."""
    key, rest = line.split(":", 1)
    body, *comment = _split_top(rest, " #")
    new = f"{key}: {yaml_value(value)}"
    if not comment:
        return new
    column = len(key) + 1 + len(body.rstrip())
    return new + " " * max(1, column - len(new) + len(body) - len(body.rstrip()) + 1) + "#" + " #".join(comment)


def _set_flow_default(line: str, value) -> str:
    """`key: {type: ..., default: X}` with default set to `value` (added when missing)."""
    head, inner = line.split("{", 1)
    inner, tail = inner.rsplit("}", 1)
    items = [item.strip() for item in _split_top(inner, ",")]
    items = [item for item in items if not item.startswith("default:")] + [f"default: {yaml_value(value)}"]
    return f"{head}{{{', '.join(items)}}}{tail}"


def crd_text(text: str, defaults: dict | None = None) -> str:
    """The CRD with each spec property's `default:` set to the contract's."""
    defaults = contract_defaults() if defaults is None else defaults
    lines = text.split("\n")
    entries = list(_walk(lines))
    inserts: dict[int, str] = {}
    for n, (i, indent, path) in enumerate(entries):
        where = _spec_path(path)
        if where is None:
            continue
        try:
            value = _lookup(defaults, where)
        except KeyError:
            continue
        if isinstance(value, dict):
            continue   # an object: its properties carry the defaults
        if "{" in lines[i] and lines[i].rstrip().endswith("}"):
            lines[i] = _set_flow_default(lines[i], value)
            continue
        block = list(itertools.takewhile(lambda entry, top=indent: entry[1] > top, entries[n + 1:]))
        if not block:
            continue
        child = block[0][1]
        own = [j for j, ind, key_path in block if ind == child and key_path[-1] == "default"]
        if own:
            lines[own[0]] = _set_scalar(lines[own[0]], value)
        else:   # a new property: its default first
            inserts[block[0][0]] = " " * child + f"default: {yaml_value(value)}"
    for at in sorted(inserts, reverse=True):
        lines.insert(at, inserts[at])
    return "\n".join(lines)


def _spec_path(path: tuple[str, ...]) -> tuple[str, ...] | None:
    """A spec property's path in the contract (k1, k2, ...) from its CRD path
    (... openAPIV3Schema properties spec properties k1 properties k2 ...); None elsewhere."""
    for start in range(len(path) - len(CRD_SPEC) + 1):
        if path[start:start + len(CRD_SPEC)] == CRD_SPEC:
            tail = path[start + len(CRD_SPEC):]
            if len(tail) % 2 and all(key == "properties" for key in tail[1::2]):
                return tail[0::2]
    return None


def values_text(text: str, defaults: dict | None = None) -> str:
    """values.yaml with each value under operator.rollout set to the contract's."""
    defaults = contract_defaults() if defaults is None else defaults
    lines = text.split("\n")
    for i, _, path in _walk(lines):
        if path[:len(VALUES_ROLLOUT)] != VALUES_ROLLOUT or len(path) == len(VALUES_ROLLOUT):
            continue
        where = path[len(VALUES_ROLLOUT):]
        if len(where) == 1 and where[0] in VALUES_RENAMED:
            if VALUES_RENAMED[where[0]] is None:
                continue
            where = (VALUES_RENAMED[where[0]],)
        try:
            value = _lookup(defaults, where)
        except KeyError:
            continue
        if not isinstance(value, dict):
            lines[i] = _set_scalar(lines[i], value)
    return "\n".join(lines)


def generated() -> dict[Path, str]:
    return {CRD: crd_text(CRD.read_text()), VALUES: values_text(VALUES.read_text())}


def stale() -> list[Path]:
    return [path for path, text in generated().items() if path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    if args.check:
        for path in stale():
            print(f"{path.relative_to(REPO)} is out of date: python -m scripts.gen_rollout_defaults")
        return 1 if stale() else 0
    for path, text in generated().items():
        if path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
