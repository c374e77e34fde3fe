"""The store in s3://bucket/prefix: a version number claimed with a conditional put, files
uploaded, metadata.json last."""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

from don_core.artifact import (METADATA_FILE, dump_metadata, read_metadata, utc_now,
                               verify_version_dir)
from don_core.contract import storage_uri
from don_core.reference import REFERENCE_FILE
from don_core.store.base import (_MAX_PUBLISH_ATTEMPTS, _MODEL_NAME, Store, StoreError, _age,
                                  check_model_name)
from don_core.store.s3_client import (s3_client, s3_code, s3_error_types, s3_failure, s3_reason,
                                      s3_status)

CLAIM_FILE = ".claim"           # s3: the conditional put that takes a version number


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
                                 f"{s3_reason(exc)}") from None
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
            raise StoreError(f"{self.reference_uri(model)}: {s3_reason(exc)}") from None

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
