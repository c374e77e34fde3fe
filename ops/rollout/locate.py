"""Where the analysis reads a version's golden set and the model's reference set: the store root
and model name of the candidate, from the spec and the rollout's status."""
from __future__ import annotations

import os

from don_core.contract import parse_storage_uri
from ops.rollout.golden import GoldenError
from ops.rollout.spec import RolloutSpec


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
    raise GoldenError(f"cannot read the model store of {from_uri}: set "
                      "spec.store.root or DON_STORE in the operator's environment")


def candidate_set(spec: RolloutSpec, status: dict) -> tuple[str, str, int]:
    """(store root, model, version) of the candidate; GoldenError naming what is missing."""
    try:
        root, model, version = parse_storage_uri(status.get("candidateStorageUri"))
    except ValueError as exc:
        raise GoldenError(str(exc)) from None
    store = spec.raw["store"]
    return (store_root(store.get("root"), root), store.get("model") or model,
            int(status.get("candidateVersion") or version))
