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

import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from don_core.artifact import (METADATA_FILE, ArtifactError, dump_metadata, fsync_dir, hash_tree,
                               read_metadata, utc_now, verify_version_dir)
from don_core.contract import storage_uri
from don_core.reference import REFERENCE_FILE, ReferenceError, check_reference, dump_reference

_MODEL_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_MAX_PUBLISH_ATTEMPTS = 100
CLAIM_FILE = ".claim"           # s3: the conditional put that takes a version number
STAGING_PREFIX = ".staging-"    # filesystem: a version being written
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


class LocalStore(Store):
    def __init__(self, root: str):
        self.root = str(root)
        self.path = Path(root)

    def uri(self, model: str, version: int) -> str:
        return storage_uri(str(self.path), model, version)

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

    def _read_version_bytes(self, model, version, name):
        try:
            return (self.path / check_model_name(model) / str(version) / name).read_bytes()
        except OSError as exc:
            raise StoreError(f"{model} version {version}: cannot read {name} ({exc})") from None

    def fetch(self, model: str, version: int, dest: Path) -> Path:
        source = self.path / check_model_name(model) / str(version)
        verify_version_dir(source, expected_model=model)
        shutil.copytree(source, dest)
        return Path(dest)

    def models(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_dir() and _MODEL_NAME.match(p.name))

    def check_writable(self, model: str) -> None:
        target = self.path / check_model_name(model)
        existing = target
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent   # the nearest directory publish would create into
        try:
            if not existing.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(existing))
            fd, probe = tempfile.mkstemp(prefix=".don-write-check-", dir=existing)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and exc.filename != self.root else ""
            raise StoreError(f"store {self.root} cannot be written: "
                             f"{exc.strerror or exc}{where}") from None

    def _install(self, model, src_dir, version, metadata):
        model_dir = self.path / model
        model_dir.mkdir(parents=True, exist_ok=True)
        # Staged inside the model directory so that the final rename stays on one filesystem;
        # locked while this process lives, so `gc` can tell a live publish from a crashed one.
        with _flock(model_dir, fcntl.LOCK_SH):
            staging = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
            staging.mkdir()
            lock = _flock(staging, fcntl.LOCK_EX).__enter__()
        try:
            shutil.copytree(src_dir, staging, ignore=shutil.ignore_patterns(METADATA_FILE),
                            dirs_exist_ok=True)
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
            lock.__exit__(None, None, None)

    def collect_garbage(self, model: str, older_than_s: float, dry_run: bool) -> list[str]:
        """Staging directories of publishers that died. A live publisher holds a lock on its
        staging directory (released by the kernel when the process dies, kill -9 included), and
        creates and locks it under a shared lock of the model directory that gc takes exclusively,
        so gc never sees a live one unlocked."""
        model_dir = self.path / check_model_name(model)
        if not model_dir.is_dir():
            return []
        done = []
        with _flock(model_dir, fcntl.LOCK_EX):
            for staging in sorted(model_dir.glob(f"{STAGING_PREFIX}*")):
                idle = time.time() - _newest_mtime(staging)
                if idle < older_than_s:
                    continue
                try:
                    with _flock(staging, fcntl.LOCK_EX | fcntl.LOCK_NB):
                        files = sum(1 for p in staging.rglob("*") if p.is_file())
                        done.append(f"{'would remove' if dry_run else 'removed'} staging directory "
                                    f"{staging} ({files} file{'s' if files != 1 else ''}, idle "
                                    f"{_age(idle)})")
                        if not dry_run:
                            shutil.rmtree(staging)
                except (BlockingIOError, FileNotFoundError):
                    continue  # a live publish (locked), or it just finished (renamed)
        return done

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


class _flock:
    """flock(2) on a directory, as a context manager; the kernel drops it when the process dies."""

    def __init__(self, path: Path, operation: int):
        self.path, self.operation, self.fd = path, operation, None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self.fd, self.operation)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc_info):
        if self.fd is not None:
            os.close(self.fd)   # closing the descriptor releases the lock
            self.fd = None


def _newest_mtime(directory: Path) -> float:
    try:
        times = [directory.stat().st_mtime]
        times += [p.stat().st_mtime for p in directory.rglob("*")]
    except FileNotFoundError:
        return time.time()   # being renamed or removed right now: not idle
    return max(times)


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
        return storage_uri(f"s3://{self.bucket}/{self.prefix}", model, version)

    def _objects(self, prefix: str):
        """(key, last-modified) of every object under `prefix`."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"], item["LastModified"]
        except self._client_error() as exc:
            raise self._failure("cannot list", prefix, exc) from None

    def _numbers(self, model: str, with_metadata: bool) -> set[int]:
        base = self._key(check_model_name(model))
        found = set()
        for key, _ in self._objects(base):
            head, _, tail = key[len(base):].partition("/")
            if head.isdigit() and (tail == METADATA_FILE or not with_metadata):
                found.add(int(head))
        return found

    def list_versions(self, model: str) -> list[int]:
        return sorted(self._numbers(model, with_metadata=True))

    def models(self) -> list[str]:
        names = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")
            for page in pages:
                names += [p["Prefix"][len(self.prefix):].rstrip("/")
                          for p in page.get("CommonPrefixes", [])]
        except self._client_error() as exc:
            raise self._failure("cannot list", self.prefix, exc) from None
        return sorted(name for name in names if _MODEL_NAME.match(name))

    def check_writable(self, model: str) -> None:
        check_model_name(model)
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._client_error() as exc:
            if s3_status(exc) == 404:
                raise StoreError(f"store {self.root}: bucket {self.bucket!r} does not exist"
                                 f" (endpoint {self.client.meta.endpoint_url})") from None
            raise self._failure("cannot reach store", "", exc) from None

    def read_metadata(self, model: str, version: int) -> dict:
        key = self._key(check_model_name(model), version, METADATA_FILE)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self._client_error() as exc:
            if s3_status(exc) == 404:
                raise StoreError(f"{model} version {version} is not readable in {self.root}: "
                                 f"{_s3_reason(exc)}") from None
            raise self._failure(f"{model} version {version} is not readable:", key, exc) from None
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / METADATA_FILE).write_bytes(body)
            return read_metadata(Path(tmp))

    def _read_version_bytes(self, model, version, name):
        key = self._key(check_model_name(model), version, name)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self._client_error() as exc:
            raise self._failure(f"{model} version {version}: cannot read", key, exc) from None

    def fetch(self, model: str, version: int, dest: Path) -> Path:
        dest = Path(dest)
        metadata = self.read_metadata(model, version)
        staging = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
        try:
            for rel in list(metadata["files"]) + [METADATA_FILE]:
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                key = self._key(model, version, rel)
                try:
                    self.client.download_file(self.bucket, key, str(target))
                except self._client_error() as exc:
                    raise self._failure("cannot download", key, exc) from None
            verify_version_dir(staging, expected_model=model)
            os.rename(staging, dest)
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
            if s3_code(exc) in ("NoSuchKey", "404") or s3_status(exc) == 404:
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
            if s3_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or \
                    s3_status(exc) in (409, 412):
                return False
            raise self._failure("cannot write", key, exc) from None

    def _claim(self, model: str, number: int, token: str) -> bool:
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "token": token}).encode()
        return self._put_if_absent(self._key(model, number, CLAIM_FILE), body)

    def _still_claimed(self, model: str, number: int, token: str) -> bool:
        """False once `gc` judged this publish abandoned and removed or reaped its claim."""
        try:
            body = self.client.get_object(Bucket=self.bucket,
                                          Key=self._key(model, number, CLAIM_FILE))["Body"].read()
        except self._client_error() as exc:
            if s3_status(exc) == 404:
                return False
            raise
        try:
            return json.loads(body).get("token") == token
        except ValueError:
            return False

    def _install(self, model, src_dir, version, metadata):
        token = uuid.uuid4().hex
        for _attempt in range(_MAX_PUBLISH_ATTEMPTS):
            number = version if version is not None else \
                max(self._numbers(model, with_metadata=False), default=0) + 1
            if self._claim(model, number, token):
                break
            if version is not None:
                raise StoreError(f"{model} version {version} already exists in {self.root}")
        else:
            raise StoreError(f"could not claim a version number for {model} in {self.root}")
        uploaded = []
        key = self._key(model, number)
        try:
            for rel in metadata["files"]:
                key = self._key(model, number, rel)
                self.client.upload_file(str(Path(src_dir) / rel), self.bucket, key)
                uploaded.append(key)
            if not self._still_claimed(model, number, token):
                raise StoreError(f"publish of {self.uri(model, number)} abandoned: its claim was "
                                 "removed by gc (the publish outlived gc's --older-than)")
            # metadata.json last: its presence is what publishes the version.
            key = self._key(model, number, METADATA_FILE)
            self.client.put_object(Bucket=self.bucket, Key=key,
                                   Body=dump_metadata(dict(metadata, version=number)),
                                   ContentType="application/json")
        except BaseException as exc:
            for done in uploaded:  # best effort; the claim stays so the number is never reused
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=done)
                except Exception:
                    pass
            if isinstance(exc, self._client_error()):
                raise self._failure("upload failed:", key, exc) from None
            raise
        return number

    def collect_garbage(self, model: str, older_than_s: float, dry_run: bool) -> list[str]:
        """Remove what crashed publishes left: partial versions (no metadata.json) and
        incomplete multipart uploads whose newest object is older than `older_than_s`.

        S3 has no locks, so age is the only proof a publisher is gone: keep `older_than_s` far
        above the longest publish. A publisher that outlives it finds its claim gone and fails
        instead of publishing a version with missing files. The claim of the highest number is
        kept (reaped) so that number is never handed out again.
        """
        base = self._key(check_model_name(model))
        now = _dt.datetime.now(_dt.timezone.utc)
        groups: dict[int, list[tuple[str, _dt.datetime]]] = {}
        for key, modified in self._objects(base):
            head, _, _ = key[len(base):].partition("/")
            if head.isdigit():
                groups.setdefault(int(head), []).append((key, modified))
        highest = max(groups, default=0)
        done, live = [], set()
        for number, objects in sorted(groups.items()):
            keys = {k[len(base) + len(str(number)) + 1:]: k for k, _ in objects}
            if METADATA_FILE in keys:
                continue                      # published: never touched
            age = (now - max(m for _, m in objects)).total_seconds()
            claim = keys.get(CLAIM_FILE)
            if age < older_than_s:
                live.add(str(number))
                continue
            if set(keys) == {CLAIM_FILE} and number == highest and self._reaped(claim):
                continue                      # already cleaned; the claim keeps the number
            doomed = [k for name, k in keys.items() if not (name == CLAIM_FILE and number == highest)]
            done.append(f"{'would remove' if dry_run else 'removed'} partial version "
                        f"{self.uri(model, number)} ({len(objects)} object"
                        f"{'s' if len(objects) > 1 else ''}, idle {_age(age)})")
            if dry_run:
                continue
            if claim and number == highest:   # keep the number taken, but not by the dead publisher
                self._put(claim, json.dumps({"reaped": utc_now()}).encode())
            for key in doomed:
                self._delete(key)
        done += self._abort_stale_uploads(base, now, older_than_s, dry_run, live)
        return done

    def _reaped(self, claim_key: str) -> bool:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=claim_key)["Body"].read()
            return "reaped" in json.loads(body)
        except (ValueError, *self._client_error()):
            return False

    def _abort_stale_uploads(self, base: str, now, older_than_s: float, dry_run: bool,
                             live: set[str]) -> list[str]:
        done = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=base)
            for page in pages:
                for upload in page.get("Uploads", []):
                    age = (now - upload["Initiated"]).total_seconds()
                    if age < older_than_s or upload["Key"][len(base):].partition("/")[0] in live:
                        continue    # young, or part of a version still being written
                    done.append(f"{'would abort' if dry_run else 'aborted'} incomplete upload "
                                f"s3://{self.bucket}/{upload['Key']} (started {_age(age)} ago)")
                    if not dry_run:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
        except self._client_error() as exc:
            raise self._failure("cannot clean up uploads under", base, exc) from None
        return done

    def _put(self, key: str, body: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        except self._client_error() as exc:
            raise self._failure("cannot write", key, exc) from None

    def _delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except self._client_error() as exc:
            raise self._failure("cannot delete", key, exc) from None

    @staticmethod
    def _client_error():
        return s3_error_types()

    def _failure(self, action: str, key: str, exc: BaseException) -> StoreError:
        return StoreError(s3_failure(action, f"s3://{self.bucket}/{key}", exc, self.client))


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
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)   # the standard variable, honoured
    config = Config(s3={"addressing_style": "path"} if endpoint else {},
                    retries={"max_attempts": attempts, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region, config=config)


def s3_error_types() -> tuple[type[BaseException], ...]:
    """Everything boto3 raises for a failed S3 call: service answers, connection-level faults
    (refused, reset, timed out, DNS, TLS, credentials) and the transfer manager's wrappers."""
    from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError
    return (ClientError, BotoCoreError, S3UploadFailedError, S3TransferFailedError)


def s3_failure(action: str, uri: str, exc: BaseException, client=None) -> str:
    """One line for a failed S3 call: what, where (object and endpoint) and the real cause."""
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
    return f"{action} {uri}{f' (endpoint {endpoint})' if endpoint else ''}: {_s3_reason(exc)}"


def s3_status(exc: BaseException) -> int | None:
    """HTTP status of a service answer; None for a connection-level fault (no answer at all)."""
    response = getattr(exc, "response", None)
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode") \
        if isinstance(response, dict) else None


def s3_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return (response.get("Error") or {}).get("Code", "") if isinstance(response, dict) else ""


def _s3_reason(exc: BaseException) -> str:
    # Connection-level botocore errors carry `response=None` (or none at all): never index it.
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    if error:
        status = s3_status(exc)
        reason = f"{error.get('Code') or 'error'}: {error.get('Message') or ''}".strip(": ")
        return reason + (f" (HTTP {status})" if status else "")
    # botocore's text ends with the full request URL; the caller names the object and endpoint.
    reason = re.sub(r':?\s*"[a-z]+://[^"]*"\.?$', "", str(exc).splitlines()[0] if str(exc) else "")
    root = _root_cause(exc)
    if root and root not in reason:
        reason = f"{reason} ({root})" if reason else root
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


def _root_cause(exc: BaseException) -> str:
    """The innermost cause: the socket error's text (e.g. 'Connection refused') where there is one."""
    seen, inner = set(), exc
    while (inner.__cause__ or inner.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        inner = inner.__cause__ or inner.__context__
    if inner is exc:
        return ""
    if isinstance(inner, OSError) and inner.errno:
        return os.strerror(inner.errno)
    return str(inner).splitlines()[0] if str(inner) else type(inner).__name__


__all__ = ["ArtifactError", "DEFAULT_GC_AGE_S", "LocalStore", "S3Store", "Store", "StoreError",
           "check_model_name", "open_store", "parse_age", "s3_client", "s3_error_types",
           "s3_failure"]
