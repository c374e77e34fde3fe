"""Install CustomResourceDefinitions from YAML files into a ControlPlane (or any cluster we hold
certificates for) and wait until they are Established.

The KServe InferenceService CRD in ``../shared/kserve-crds/`` is about 2 MB of YAML but only ~0.64 MB
of JSON (its schema carries no ``description`` fields), so Kubernetes 1.20 stores it as is once etcd
accepts requests above its 1.5 MiB default (``ControlPlane`` raises ``--max-request-bytes``). If a
server still answers 413 / "too large", we retry with ``description`` fields stripped: the schema
itself (types, required fields, enums) stays the real one.

Our Kubernetes 1.20 (built with Go >= 1.16: kubernetes/kubernetes#99804, fixed in 1.21) checks an
empty string against a schema as null, so it rejects ``default: ""`` in a CRD schema ("default:
Invalid value: \"null\": in body must be of type string"; controller-gen >= 0.16 emits it for every
``LocalObjectReference.name``) and ``""`` in a custom resource's string field. On exactly that
error we retry without the empty-string defaults (omitting the default of an optional string is
what older controller-gen versions generated) and with ``nullable: true`` on the string fields
whose own schema admits ``""`` (no minLength, an enum or pattern that takes it): the server then
stores ``""`` as written, as a fixed one does (Gateway API's ``group: ""`` is its core group), and
still refuses ``""`` where the schema does. No other schema constraint changes.
"""
from __future__ import annotations

import re
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


def _admits_empty(node: dict) -> bool:
    if int(node.get("minLength") or 0) > 0 or ("enum" in node and "" not in node["enum"]):
        return False
    try:  # CRD patterns are RE2 (Go); those that Python cannot read are left as they are
        return "pattern" not in node or re.search(node["pattern"], "") is not None
    except re.error:
        return False


def allow_empty_strings(node: Any, may_be_null: bool = True, keys: tuple = ()) -> Any:
    """`nullable: true` on each string field whose schema admits "" (see the module's docstring).
    Only the structural part is walked (properties, items, additionalProperties: anyOf and the
    like must not carry it), and a structural schema forbids it on the items of a list with
    x-kubernetes-list-type and on their x-kubernetes-list-map-keys."""
    if isinstance(node, list):  # the `versions` list of a CRD
        return [allow_empty_strings(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for key, value in node.items():
        if key == "items" and isinstance(value, dict):
            listed = "x-kubernetes-list-type" in node
            out[key] = allow_empty_strings(value, not listed, tuple(node.get("x-kubernetes-list-map-keys") or ()))
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: allow_empty_strings(prop, name not in keys) for name, prop in value.items()}
        elif key in ("additionalProperties", "openAPIV3Schema", "schema", "spec", "versions"):
            out[key] = allow_empty_strings(value)
    if may_be_null and out.get("type") == "string" and _admits_empty(out):
        out["nullable"] = True
    return out


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
            body = allow_empty_strings(drop_empty_string_defaults(body))
            notes.append("empty-string defaults dropped, empty strings allowed")
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
