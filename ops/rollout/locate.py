"""Where the analysis reads a version's golden set and the model's reference set: the store root
and model name of the candidate, from the spec and the rollout's status."""
from __future__ import annotations

import os

from don_core.contract import parse_storage_uri
from don_core.store import StoreError, open_store
from ops.rollout.golden import GoldenError
from ops.rollout.spec import RolloutSpec
from ops.rollout.status import RolloutStatus


def store_root(explicit: str | None, from_uri: str) -> str:
    """Where the golden and reference sets are read: spec.store.root, else the candidate
    storageUri's own root when the operator can open it (s3:// or a path), else $DON_STORE (e.g.
    the model PVC mounted read-only into the operator pod; KServe's pvc:// URIs name a claim, not
    a path)."""
    if explicit:
        return explicit
    if from_uri.startswith("s3://") or from_uri.startswith("/"):
        return from_uri
    if os.environ.get("DON_STORE"):
        return os.environ["DON_STORE"]
    where = f" of {from_uri}" if from_uri else ""
    raise GoldenError(f"cannot read the model store{where}: set spec.store.root or DON_STORE in "
                      "the operator's environment")


def location(spec: RolloutSpec, uri: str | None) -> tuple[str, str]:
    """(store root, model) of the model's versions: spec.store first, else the InferenceService's
    storageUri `uri` (<root>/<model>/<N>; None in Deployment mode, whose objects name versions
    only), else the target (Deployment mode) or the served model name; GoldenError when no root
    can be opened."""
    store = spec.store
    root, model = "", None
    if uri:
        try:
            root, model, _ = parse_storage_uri(uri)
        except ValueError as exc:
            if not store.root:
                raise GoldenError(str(exc)) from None
    model = store.model or model or (spec.target if spec.mode == "Deployment" else spec.model_name)
    return store_root(store.root, root), model


def candidate_set(spec: RolloutSpec, status: RolloutStatus) -> tuple[str, str, int]:
    """(store root, model, version) of the rollout's candidate; GoldenError naming what is
    missing."""
    if status.candidate_version is None:
        raise GoldenError("the rollout's status names no candidate version")
    return (*location(spec, status.candidate_storage_uri), status.candidate_version)


def not_in_store(spec: RolloutSpec, uri: str | None, version: int) -> str | None:
    """Why `version` cannot be delivered yet because it is not published (None when it is, or when
    the operator cannot see the store: the serving check then stands alone)."""
    try:
        root, model = location(spec, uri)
        versions = open_store(root).list_versions(model)
    except (GoldenError, StoreError, OSError, ValueError):
        return None
    if int(version) in versions:
        return None
    return f"version {version} of {model} is not in the store {root} yet"
