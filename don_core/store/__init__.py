"""The versioned model store: `<root>/<model>/<N>/`, on a filesystem path (PVC) or in s3://.

Versions are positive integers, immutable once published, and appear atomically:
- filesystem: files are staged in a hidden directory inside the model directory, then renamed onto
  `<N>`; rename onto an existing (non-empty) version fails, so two publishers never share a number.
- s3: a version number is claimed with a conditional put (`If-None-Match: *`) of `<N>/.claim`;
  files are uploaded, and `metadata.json` goes last. A version without metadata.json is invisible.
Beside the versions, `<root>/<model>/reference.json` holds the model's reference set (see
don_core/reference.py): created once, with a write that fails rather than replace an existing file
(a hard link on a filesystem, `If-None-Match: *` on s3), and never changed afterwards.
Endpoint, region and credentials for s3 come from the standard AWS environment variables
(`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...; `S3_ENDPOINT` as KServe spells it).

The package: `base` (the abstract Store, StoreError), `local` (filesystem), `s3` (S3), `s3_client`
(the client and its error mapping); everything public is importable from `don_core.store`.
"""
from __future__ import annotations

from don_core.artifact import ArtifactError
from don_core.store.base import DEFAULT_GC_AGE_S, Store, StoreError, check_model_name, parse_age
from don_core.store.local import STAGING_PREFIX, LocalStore
from don_core.store.s3 import CLAIM_FILE, S3Store
from don_core.store.s3_client import s3_client, s3_code, s3_error_types, s3_failure, s3_status


def open_store(root: str) -> "Store":
    """A store for `root`: `s3://bucket[/prefix]` or a filesystem path."""
    root = str(root)
    if root.startswith("s3://"):
        return S3Store(root)
    if "://" in root:
        raise StoreError(f"store root {root!r}: only a filesystem path or s3://bucket/prefix")
    return LocalStore(root)


__all__ = ["ArtifactError", "CLAIM_FILE", "DEFAULT_GC_AGE_S", "LocalStore", "S3Store",
           "STAGING_PREFIX", "Store", "StoreError", "check_model_name", "open_store", "parse_age",
           "s3_client", "s3_code", "s3_error_types", "s3_failure", "s3_status"]
