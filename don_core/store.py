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
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from don_core.artifact import (METADATA_FILE, ArtifactError, dump_metadata, fsync_dir, hash_tree,
                               read_metadata, verify_version_dir)
from don_core.reference import REFERENCE_FILE, ReferenceError, check_reference, dump_reference

_MODEL_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_MAX_PUBLISH_ATTEMPTS = 100


class StoreError(Exception):
    """A store operation that cannot be done; the message says why."""


def check_model_name(model: str) -> str:
    if not _MODEL_NAME.match(model or ""):
        raise StoreError(f"model name {model!r} must be 1-63 lowercase letters, digits, '.', '_' "
                         "or '-', starting and ending with a letter or digit")
    return model


def open_store(root: str) -> "Store":
    """A store for `root`: `s3://bucket[/prefix]` or a filesystem path."""
    root = str(root)
    if root.startswith("s3://"):
        return S3Store(root)
    if "://" in root:
        raise StoreError(f"store root {root!r}: only a filesystem path or s3://bucket/prefix")
    return LocalStore(root)


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


class LocalStore(Store):
    def __init__(self, root: str):
        self.root = str(root)
        self.path = Path(root)

    def uri(self, model: str, version: int) -> str:
        return str(self.path / model / str(version))

    def list_versions(self, model: str) -> list[int]:
        model_dir = self.path / check_model_name(model)
        if not model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in model_dir.iterdir()
                      if p.name.isdigit() and (p / METADATA_FILE).is_file())

    def read_metadata(self, model: str, version: int) -> dict:
        version_dir = self.path / check_model_name(model) / str(version)
        if not version_dir.is_dir():
            raise StoreError(f"{model} version {version} does not exist in {self.root}")
        return read_metadata(version_dir)

    def fetch(self, model: str, version: int, dest: Path) -> Path:
        source = self.path / check_model_name(model) / str(version)
        verify_version_dir(source, expected_model=model)
        shutil.copytree(source, dest)
        return Path(dest)

    def _install(self, model, src_dir, version, metadata):
        model_dir = self.path / model
        model_dir.mkdir(parents=True, exist_ok=True)
        # Staged inside the model directory so that the final rename stays on one filesystem.
        staging = model_dir / f".staging-{uuid.uuid4().hex}"
        try:
            shutil.copytree(src_dir, staging, ignore=shutil.ignore_patterns(METADATA_FILE))
            for _attempt in range(_MAX_PUBLISH_ATTEMPTS):
                number = version if version is not None else (self._highest(model_dir) + 1)
                (staging / METADATA_FILE).write_bytes(dump_metadata(dict(metadata, version=number)))
                _fsync_tree(staging)
                target = model_dir / str(number)
                if target.exists():
                    if version is not None:
                        raise StoreError(f"{model} version {version} already exists in {self.root}")
                    continue
                try:
                    os.rename(staging, target)
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    if version is not None:
                        raise StoreError(f"{model} version {version} already exists in "
                                         f"{self.root}") from None
                    continue  # another publisher took this number first
                fsync_dir(model_dir)
                _make_read_only(target)
                return number
            raise StoreError(f"could not find a free version number for {model} "
                             f"after {_MAX_PUBLISH_ATTEMPTS} attempts")
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def reference_uri(self, model: str) -> str:
        return str(self.path / model / REFERENCE_FILE)

    def _read_reference_bytes(self, model):
        try:
            return (self.path / model / REFERENCE_FILE).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.reference_uri(model)}: {exc.strerror or exc}") from None

    def _create_reference_bytes(self, model, body):
        model_dir = self.path / model
        model_dir.mkdir(parents=True, exist_ok=True)
        staged = model_dir / f".reference-{uuid.uuid4().hex}"
        try:
            staged.write_bytes(body)
            staged.chmod(0o444)
            with open(staged, "rb") as fh:
                os.fsync(fh.fileno())
            try:  # link(2) fails when the name exists: a complete file appears, or nothing
                os.link(staged, model_dir / REFERENCE_FILE)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise
                return _create_exclusive(model_dir / REFERENCE_FILE, body)  # no hard links here
            fsync_dir(model_dir)
            return True
        finally:
            staged.unlink(missing_ok=True)

    @staticmethod
    def _highest(model_dir: Path) -> int:
        numbers = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
        return max(numbers, default=0)


def _create_exclusive(path: Path, body: bytes) -> bool:
    """O_EXCL create: never replaces, though a reader may briefly see a short file (it then
    fails its check and says so)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(path.parent)
    return True


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(directory)


def _make_read_only(directory: Path) -> None:
    # Immutability on a filesystem: published files lose their write bits.
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(0o444)


class S3Store(Store):
    def __init__(self, root: str):
        self.root = root.rstrip("/")
        bucket, _, prefix = root[len("s3://"):].partition("/")
        if not bucket:
            raise StoreError(f"store root {root!r} names no bucket")
        self.bucket = bucket
        self.prefix = (prefix.strip("/") + "/") if prefix.strip("/") else ""
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client()
        return self._client

    def _key(self, model: str, version: int | None = None, name: str = "") -> str:
        key = f"{self.prefix}{model}/"
        if version is not None:
            key += f"{version}/{name}"
        return key

    def uri(self, model: str, version: int) -> str:
        return f"s3://{self.bucket}/{self._key(model, version)}".rstrip("/")

    def _keys(self, prefix: str):
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except self._client_error() as exc:
            raise StoreError(f"cannot list s3://{self.bucket}/{prefix}: {_s3_reason(exc)}") from None

    def _numbers(self, model: str, with_metadata: bool) -> set[int]:
        base = self._key(check_model_name(model))
        found = set()
        for key in self._keys(base):
            head, _, tail = key[len(base):].partition("/")
            if head.isdigit() and (tail == METADATA_FILE or not with_metadata):
                found.add(int(head))
        return found

    def list_versions(self, model: str) -> list[int]:
        return sorted(self._numbers(model, with_metadata=True))

    def read_metadata(self, model: str, version: int) -> dict:
        key = self._key(check_model_name(model), version, METADATA_FILE)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self._client_error() as exc:
            raise StoreError(f"{model} version {version} is not readable in {self.root}: "
                             f"{_s3_reason(exc)}") from None
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / METADATA_FILE).write_bytes(body)
            return read_metadata(Path(tmp))

    def fetch(self, model: str, version: int, dest: Path) -> Path:
        dest = Path(dest)
        metadata = self.read_metadata(model, version)
        staging = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
        try:
            for rel in list(metadata["files"]) + [METADATA_FILE]:
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, self._key(model, version, rel), str(target))
            verify_version_dir(staging, expected_model=model)
            os.rename(staging, dest)
        except self._client_error() as exc:
            raise StoreError(f"cannot download {self.uri(model, version)}: {_s3_reason(exc)}") \
                from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return dest

    def reference_uri(self, model: str) -> str:
        return f"s3://{self.bucket}/{self._key(model)}{REFERENCE_FILE}"

    def _read_reference_bytes(self, model):
        try:
            return self.client.get_object(Bucket=self.bucket,
                                          Key=self._key(model) + REFERENCE_FILE)["Body"].read()
        except self._client_error() as exc:
            if _s3_code(exc) in ("NoSuchKey", "404"):
                return None
            raise StoreError(f"{self.reference_uri(model)}: {_s3_reason(exc)}") from None

    def _create_reference_bytes(self, model, body):
        return self._put_if_absent(self._key(model) + REFERENCE_FILE, body,
                                   ContentType="application/json")

    def _put_if_absent(self, key: str, body: bytes, **extra) -> bool:
        """A conditional put (`If-None-Match: *`): False when the object already exists."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*",
                                   **extra)
            return True
        except self._client_error() as exc:
            if _s3_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or \
                    getattr(exc, "response", {}).get("ResponseMetadata", {}).get(
                        "HTTPStatusCode") in (409, 412):
                return False
            raise StoreError(f"cannot write s3://{self.bucket}/{key}: {_s3_reason(exc)}") \
                from None

    def _claim(self, model: str, number: int) -> bool:
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
        return self._put_if_absent(self._key(model, number, ".claim"), body)

    def _install(self, model, src_dir, version, metadata):
        for _attempt in range(_MAX_PUBLISH_ATTEMPTS):
            number = version if version is not None else \
                max(self._numbers(model, with_metadata=False), default=0) + 1
            if self._claim(model, number):
                break
            if version is not None:
                raise StoreError(f"{model} version {version} already exists in {self.root}")
        else:
            raise StoreError(f"could not claim a version number for {model} in {self.root}")
        uploaded = []
        try:
            for rel in metadata["files"]:
                key = self._key(model, number, rel)
                self.client.upload_file(str(Path(src_dir) / rel), self.bucket, key)
                uploaded.append(key)
            # metadata.json last: its presence is what publishes the version.
            self.client.put_object(Bucket=self.bucket, Key=self._key(model, number, METADATA_FILE),
                                   Body=dump_metadata(dict(metadata, version=number)),
                                   ContentType="application/json")
        except BaseException as exc:
            for key in uploaded:  # best effort; the claim stays so the number is never reused
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=key)
                except Exception:
                    pass
            if isinstance(exc, self._client_error()):
                raise StoreError(f"upload to {self.uri(model, number)} failed: "
                                 f"{_s3_reason(exc)}") from None
            raise
        return number

    @staticmethod
    def _client_error():
        from botocore.exceptions import BotoCoreError, ClientError
        return (ClientError, BotoCoreError)


def s3_client():
    """boto3 S3 client configured only from the standard environment (a Secret supplies it)."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or \
        os.environ.get("S3_ENDPOINT")
    if endpoint and "://" not in endpoint:
        https = os.environ.get("S3_USE_HTTPS", "1") not in ("0", "false")
        endpoint = ("https://" if https else "http://") + endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Path-style addressing for S3-compatible servers (MinIO, Ceph, moto) behind an endpoint.
    config = Config(s3={"addressing_style": "path"} if endpoint else {},
                    retries={"max_attempts": 5, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region, config=config)


def _s3_code(exc) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _s3_reason(exc) -> str:
    error = getattr(exc, "response", {}).get("Error", {})
    if error:
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip(": ")
    return str(exc)


__all__ = ["ArtifactError", "LocalStore", "S3Store", "Store", "StoreError", "check_model_name",
           "open_store", "s3_client"]
