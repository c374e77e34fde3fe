"""The store on a filesystem path (a PVC): versions staged in a hidden directory and renamed
onto `<N>`, under flock(2)."""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from don_core.artifact import (METADATA_FILE, dump_metadata, fsync_dir, read_metadata,
                               verify_version_dir)
from don_core.contract import storage_uri
from don_core.reference import REFERENCE_FILE
from don_core.store.base import (_MAX_PUBLISH_ATTEMPTS, _MODEL_NAME, Store, StoreError, _age,
                                  check_model_name)

STAGING_PREFIX = ".staging-"    # filesystem: a version being written


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
                    with _flock(staging, fcntl.LOCK_EX | fcntl.LOCK_NB) as held:
                        # Renames need no lock of the model directory: between the listing and
                        # the lock a publish may have finished, its directory now a version whose
                        # lock it has let go. Only what is still named .staging-* is a leftover.
                        if _inode(os.fstat(held.fd)) != _inode(os.stat(staging)):
                            continue
                        files = sum(1 for p in staging.rglob("*") if p.is_file())
                        if not dry_run:
                            shutil.rmtree(staging)
                        done.append(f"{'would remove' if dry_run else 'removed'} staging directory "
                                    f"{staging} ({files} file{'s' if files != 1 else ''}, idle "
                                    f"{_age(idle)})")
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


def _inode(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


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
