"""What every store does (the abstract `Store`), its error and the checks and figures both
kinds share."""
from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from pathlib import Path

from don_core.artifact import METADATA_FILE, hash_tree, verify_version_dir
from don_core.reference import ReferenceError, check_reference, dump_reference

_MODEL_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_MAX_PUBLISH_ATTEMPTS = 100
# Leftovers of crashed publishes younger than this are left alone by `gc` (a publish takes
# seconds to minutes; an hour is far above that).
DEFAULT_GC_AGE_S = 3600


class StoreError(Exception):
    """A store operation that cannot be done; the message says why."""


def check_model_name(model: str) -> str:
    if not _MODEL_NAME.match(model or ""):
        raise StoreError(f"model name {model!r} must be 1-63 lowercase letters, digits, '.', '_' "
                         "or '-', starting and ending with a letter or digit")
    return model


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def parse_age(text: str) -> float:
    """'90', '90s', '30m', '2h', '1d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not match:
        raise ValueError(f"age {text!r}: expected a number with an optional unit s, m, h or d "
                         "(e.g. 90s, 30m, 2h, 1d)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


class Store(ABC):
    root: str

    @abstractmethod
    def list_versions(self, model: str) -> list[int]:
        """Published versions, ascending."""

    @abstractmethod
    def read_metadata(self, model: str, version: int) -> dict: ...

    @abstractmethod
    def uri(self, model: str, version: int) -> str: ...

    @abstractmethod
    def _read_version_bytes(self, model: str, version: int, name: str) -> bytes: ...

    def read_file(self, model: str, version: int, name: str) -> bytes:
        """One file of a published version (e.g. evaluation.json), checked against its sha256 in
        metadata.json, without fetching the whole version. StoreError when it is not listed."""
        metadata = self.read_metadata(model, version)
        digest = metadata["files"].get(name)
        if digest is None:
            raise StoreError(f"{model} version {version} has no {name}")
        body = self._read_version_bytes(model, version, name)
        if hashlib.sha256(body).hexdigest() != digest:
            raise StoreError(f"{model} version {version}: {name} fails its sha256 check")
        return body

    @abstractmethod
    def fetch(self, model: str, version: int, dest: Path) -> Path:
        """A verified local copy of a version at `dest` (which must not exist yet)."""

    @abstractmethod
    def _install(self, model: str, staged: Path, version: int | None) -> int:
        """Make a staged, complete version directory visible as `version` (None: next free)."""

    def publish(self, model: str, src_dir: Path, metadata: dict) -> int:
        """Publish the artifact files in `src_dir` as a new version; returns its number.

        `metadata` is everything but `version` and `files`, which the store fills in.
        """
        check_model_name(model)
        src_dir = Path(src_dir)
        if (src_dir / METADATA_FILE).exists():
            raise StoreError(f"{src_dir} already holds a metadata.json")
        files = hash_tree(src_dir)
        if not files:
            raise StoreError(f"{src_dir} holds no files to publish")
        return self._install(model, src_dir, None, dict(metadata, model=model, files=files))

    def import_version(self, model: str, version: int, version_dir: Path) -> None:
        """Copy an already published, verified version in under the same number (backup/restore)."""
        metadata = verify_version_dir(version_dir, expected_model=model)
        if metadata["version"] != version:
            raise StoreError(f"{version_dir} is version {metadata['version']}, not {version}")
        self._install(model, Path(version_dir), version, metadata)

    @abstractmethod
    def models(self) -> list[str]:
        """Names of the models that have anything in the store."""

    @abstractmethod
    def check_writable(self, model: str) -> None:
        """Raise StoreError naming the store if a publish of `model` could not be written;
        cheap, so that a job fails before hours of fitting, not after."""

    @abstractmethod
    def collect_garbage(self, model: str, older_than_s: float, dry_run: bool) -> list[str]:
        """Remove (or with dry_run only list) leftovers of crashed publishes of `model` idle for
        at least `older_than_s`; never a live publish. Returns one line per leftover."""

    def latest(self, model: str) -> int | None:
        versions = self.list_versions(model)
        return versions[-1] if versions else None

    # ---- the reference set: one per model, written once -------------------------------------
    @abstractmethod
    def reference_uri(self, model: str) -> str: ...

    @abstractmethod
    def _read_reference_bytes(self, model: str) -> bytes | None:
        """The stored bytes, or None when the model has no reference set yet."""

    @abstractmethod
    def _create_reference_bytes(self, model: str, body: bytes) -> bool:
        """Write unless the file exists (atomically, never replacing); False when it existed."""

    def read_reference(self, model: str) -> dict | None:
        """The checked reference set of `model`, or None when none was created yet."""
        body = self._read_reference_bytes(check_model_name(model))
        if body is None:
            return None
        try:
            return check_reference(json.loads(body), model)
        except (ValueError, ReferenceError) as exc:
            raise StoreError(f"{self.reference_uri(model)}: {exc}") from None

    def create_reference(self, model: str, doc: dict) -> bool:
        """Store `doc` as the reference set of `model` unless one exists: True when written by
        this call, False when another already was (it is left untouched)."""
        check_reference(doc, check_model_name(model))
        return self._create_reference_bytes(model, dump_reference(doc))
