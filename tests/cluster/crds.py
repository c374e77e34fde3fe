"""Install CustomResourceDefinitions from YAML files into a ControlPlane (or any cluster we hold
certificates for) and wait until they are Established.

The KServe InferenceService CRD in ``../shared/kserve-crds/`` is about 2 MB of YAML but only ~0.64 MB
of JSON (its schema carries no ``description`` fields), so Kubernetes 1.20 stores it as is once etcd
accepts requests above its 1.5 MiB default (``ControlPlane`` raises ``--max-request-bytes``). If a
server still answers 413 / "too large", we retry with ``description`` fields stripped: the schema
itself (types, required fields, enums) stays the real one.

Kubernetes 1.20 also rejects ``default: ""`` in a CRD schema (it decodes the empty-string default as
null: "default: Invalid value: \"null\": in body must be of type string"); controller-gen >= 0.16
emits it for every ``LocalObjectReference.name``. On exactly that error we retry without the
empty-string defaults: no other schema constraint changes, and omitting the default of an optional
string is what older controller-gen versions generated anyway.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

import yaml

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def strip_descriptions(node: Any) -> Any:
    """Drop documentation strings from an OpenAPI schema; keeps a property named `description`."""
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items()
                if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def drop_empty_string_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: drop_empty_string_defaults(v) for k, v in node.items()
                if not (k == "default" and v == "" and node.get("type") == "string")}
    if isinstance(node, list):
        return [drop_empty_string_defaults(v) for v in node]
    return node


def _empty_default_rejected(status: int, body: dict) -> bool:
    return status == 422 and 'default: Invalid value: "null"' in str(body.get("message", ""))


def load_crds(paths: Iterable[Path]) -> list[dict]:
    crds = []
    for path in paths:
        # libyaml's loader: KServe's InferenceService CRD (2 MB) takes 3.9 s of CPU in pure Python, 1.3 s here
        for doc in yaml.load_all(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    return crds


def _too_large(status: int, body: dict) -> bool:
    message = str(body.get("message", "")).lower()
    return status == 413 or "too large" in message or "exceeds" in message


def apply_crd(cluster, crd: dict) -> str:
    """Create or replace one CRD; returns 'created', 'replaced', or the same with '(descriptions stripped)'."""
    name = crd["metadata"]["name"]
    notes: list[str] = []
    body = crd
    for _ in range(3):
        status, resp = cluster.request("POST", CRD_PATH, body)
        action = "created"
        if status == 409:
            status, current = cluster.request("GET", f"{CRD_PATH}/{name}")
            if status != 200:
                raise RuntimeError(f"CRD {name}: GET after conflict failed: {current}")
            replacement = {**body, "metadata": {**body["metadata"],
                                                "resourceVersion": current["metadata"]["resourceVersion"]}}
            status, resp = cluster.request("PUT", f"{CRD_PATH}/{name}", replacement)
            action = "replaced"
        if status in (200, 201):
            return action + (f" ({', '.join(notes)})" if notes else "")
        if _too_large(status, resp) and "descriptions stripped" not in notes:
            body = strip_descriptions(body)
            notes.append("descriptions stripped")
            continue
        if _empty_default_rejected(status, resp) and "empty-string defaults dropped" not in notes:
            body = drop_empty_string_defaults(body)
            notes.append("empty-string defaults dropped")
            continue
        break
    raise RuntimeError(f"CRD {name}: API server answered {status}: {str(resp.get('message', resp))[:2000]}")


def wait_established(cluster, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, crd = cluster.request("GET", f"{CRD_PATH}/{name}")
        conditions = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
        if status == 200 and conditions.get("Established") == "True":
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRD {name} not Established after {timeout:.0f} s")


def install_crds(cluster, paths: Iterable[Path]) -> dict[str, str]:
    """Install every CRD in the given YAML files; returns {crd name: action}."""
    results = {}
    for crd in load_crds(paths):
        results[crd["metadata"]["name"]] = apply_crd(cluster, crd)
    for name in results:
        wait_established(cluster, name)
    return results
