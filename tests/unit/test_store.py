"""The model store contract: integer versions, atomic publish, immutability, verification,
concurrent publishers, on a filesystem path and on a real S3-compatible server (moto)."""
from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from don_core.artifact import (METADATA_FILE, ArtifactError, build_metadata, verify_version_dir)
from don_core.store import LocalStore, S3Store, StoreError, open_store


def artifact_dir(tmp_path: Path, payload: str = "model-bytes") -> Path:
    src = tmp_path / f"src-{payload}"
    (src / "saved_model" / "variables").mkdir(parents=True, exist_ok=True)
    (src / "model.joblib").write_text(payload)
    (src / "model.onnx").write_text("onnx-" + payload)
    (src / "golden.json").write_text("{}")
    (src / "saved_model" / "variables" / "v.index").write_text("nested")
    return src


def metadata(model: str = "don-rf") -> dict:
    return build_metadata(model=model, family="sklearn", training_data={"rows": 1},
                          hyperparameters={}, metrics={}, target_range_ppb=(0, 1))


def test_open_store_kinds(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store("s3://bucket/prefix"), S3Store)
    with pytest.raises(StoreError, match="only a filesystem path or s3"):
        open_store("gs://bucket")
    with pytest.raises(StoreError, match="no bucket"):
        open_store("s3://")


def test_publish_numbers_versions_and_lists_them(tmp_path):
    store = open_store(str(tmp_path / "store"))
    assert store.list_versions("don-rf") == [] and store.latest("don-rf") is None
    src = artifact_dir(tmp_path)
    assert store.publish("don-rf", src, metadata()) == 1
    assert store.publish("don-rf", src, metadata()) == 2
    assert store.list_versions("don-rf") == [1, 2]
    meta = store.read_metadata("don-rf", 2)
    assert meta["version"] == 2 and meta["model"] == "don-rf"
    assert set(meta["files"]) == {"model.joblib", "model.onnx", "golden.json",
                                  "saved_model/variables/v.index"}
    version_dir = tmp_path / "store" / "don-rf" / "2"
    assert verify_version_dir(version_dir)["version"] == 2
    # nothing but published versions in the model directory
    assert sorted(p.name for p in (tmp_path / "store" / "don-rf").iterdir()) == ["1", "2"]


def test_published_files_are_read_only(tmp_path):
    store = open_store(str(tmp_path / "store"))
    store.publish("don-rf", artifact_dir(tmp_path), metadata())
    published = tmp_path / "store" / "don-rf" / "1" / "model.joblib"
    assert not os.access(published, os.W_OK) or os.geteuid() == 0
    assert published.stat().st_mode & 0o222 == 0


def test_bad_model_names_are_refused(tmp_path):
    store = open_store(str(tmp_path))
    for name in ("", "Don", "../x", "a/b", "-x"):
        with pytest.raises(StoreError, match="model name"):
            store.publish(name, artifact_dir(tmp_path), metadata())


def test_verification_refuses_corrupt_missing_and_unlisted_files(tmp_path):
    store = open_store(str(tmp_path / "store"))
    store.publish("don-rf", artifact_dir(tmp_path), metadata())
    version = tmp_path / "store" / "don-rf" / "1"
    for path in version.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (version / "model.onnx").write_text("tampered")
    with pytest.raises(ArtifactError, match="model.onnx fails its sha256"):
        verify_version_dir(version)
    (version / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="model.onnx listed in metadata.json is missing"):
        verify_version_dir(version)
    (version / "model.onnx").write_text("onnx-model-bytes")
    verify_version_dir(version)
    (version / "extra.bin").write_text("x")
    with pytest.raises(ArtifactError, match="not listed"):
        verify_version_dir(version)
    (version / "extra.bin").unlink()
    with pytest.raises(ArtifactError, match="holds model 'don-rf', not 'don-tf'"):
        verify_version_dir(version, expected_model="don-tf")


def test_verification_refuses_other_feature_schema(tmp_path):
    store = open_store(str(tmp_path / "store"))
    store.publish("don-rf", artifact_dir(tmp_path), metadata())
    meta_path = tmp_path / "store" / "don-rf" / "1" / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["feature_schema"] = dict(meta["feature_schema"], n_features=224)
    meta_path.chmod(0o644)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="feature schema"):
        verify_version_dir(meta_path.parent)


def test_failed_publish_leaves_nothing_visible(tmp_path, monkeypatch):
    store = open_store(str(tmp_path / "store"))
    store.publish("don-rf", artifact_dir(tmp_path), metadata())

    def crash(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError):
        store.publish("don-rf", artifact_dir(tmp_path, "second"), metadata())
    monkeypatch.undo()
    assert store.list_versions("don-rf") == [1]
    assert sorted(p.name for p in (tmp_path / "store" / "don-rf").iterdir()) == ["1"]


def _publish_many(root: str, work: Path, payload: str, count: int, queue) -> None:
    store = open_store(root)
    src = artifact_dir(work, payload)
    queue.put([(store.publish("don-rf", src, metadata()), payload) for _ in range(count)])


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_concurrent_publishers_never_share_a_version(kind, tmp_path, request):
    if kind == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        root = f"s3://{bucket}/models"
    else:
        root = str(tmp_path / "store")
        (tmp_path / "store").mkdir()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_publish_many, args=(root, tmp_path, f"w{i}", 4, queue))
               for i in range(4)]
    for w in workers:
        w.start()
    results = [item for _ in workers for item in queue.get(timeout=120)]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    versions = [v for v, _ in results]
    assert sorted(versions) == list(range(1, 17)), versions
    store = open_store(root)
    assert store.list_versions("don-rf") == list(range(1, 17))
    # every version holds exactly what its publisher wrote
    for version, payload in results:
        fetched = store.fetch("don-rf", version, tmp_path / f"fetched-{version}")
        assert (fetched / "model.joblib").read_text() == payload


def test_s3_publish_fetch_and_invisible_partial_versions(s3_bucket, tmp_path):
    from don_core.store import s3_client
    root = f"s3://{s3_bucket}/team/models"
    store = open_store(root)
    assert store.publish("don-tf", artifact_dir(tmp_path), metadata("don-tf")) == 1
    assert store.uri("don-tf", 1) == f"s3://{s3_bucket}/team/models/don-tf/1"
    # a publisher that died after claiming 2 and uploading one file: invisible, number not reused
    client = s3_client()
    client.put_object(Bucket=s3_bucket, Key="team/models/don-tf/2/.claim", Body=b"{}")
    client.put_object(Bucket=s3_bucket, Key="team/models/don-tf/2/model.onnx", Body=b"half")
    assert store.list_versions("don-tf") == [1]
    assert store.publish("don-tf", artifact_dir(tmp_path, "next"), metadata("don-tf")) == 3
    assert store.list_versions("don-tf") == [1, 3]
    fetched = store.fetch("don-tf", 3, tmp_path / "v3")
    assert verify_version_dir(fetched)["version"] == 3
    assert (fetched / "saved_model" / "variables" / "v.index").read_text() == "nested"
    with pytest.raises(StoreError, match="not readable"):
        store.read_metadata("don-tf", 2)


def test_s3_fetch_refuses_a_corrupted_object(s3_bucket, tmp_path):
    from don_core.store import s3_client
    store = open_store(f"s3://{s3_bucket}")
    store.publish("don-rf", artifact_dir(tmp_path), metadata())
    s3_client().put_object(Bucket=s3_bucket, Key="don-rf/1/model.joblib", Body=b"bit rot")
    with pytest.raises(ArtifactError, match="model.joblib fails its sha256"):
        store.fetch("don-rf", 1, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert [p for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_import_version_keeps_numbers_and_refuses_overwrite(tmp_path, s3_bucket):
    local = open_store(str(tmp_path / "store"))
    for _ in range(3):
        local.publish("don-rf", artifact_dir(tmp_path), metadata())
    remote = open_store(f"s3://{s3_bucket}/backup")
    remote.import_version("don-rf", 3, tmp_path / "store" / "don-rf" / "3")
    assert remote.list_versions("don-rf") == [3]
    assert remote.read_metadata("don-rf", 3) == local.read_metadata("don-rf", 3)
    with pytest.raises(StoreError, match="already exists"):
        remote.import_version("don-rf", 3, tmp_path / "store" / "don-rf" / "3")
    back = open_store(str(tmp_path / "restored"))
    back.import_version("don-rf", 3, remote.fetch("don-rf", 3, tmp_path / "dl"))
    with pytest.raises(StoreError, match="already exists"):
        back.import_version("don-rf", 3, tmp_path / "dl")
    with pytest.raises(StoreError, match="is version 3, not 4"):
        back.import_version("don-rf", 4, tmp_path / "dl")


# --- S3 faults: the real cause, naming endpoint, bucket and key (never an AttributeError) ---

@pytest.fixture
def stopped_s3(s3_env, monkeypatch):
    """An endpoint where a real moto server held a bucket with a published version, then stopped."""
    from don_core.store import s3_client
    from tests.conftest import running_moto
    with running_moto() as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        s3_client().create_bucket(Bucket="lab")
    return url


@pytest.fixture
def cutting_s3(s3_env, monkeypatch):
    """A loopback endpoint that accepts each connection and closes it without an answer (a proxy
    or load balancer cutting connections): botocore's errors then carry `response=None`."""
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    yield url
    stop.set()
    server.close()


@pytest.fixture
def closed_port_s3(s3_env, monkeypatch):
    from tests.net import free_port
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    return url


@pytest.mark.parametrize("fault, cause", [("stopped_s3", "Connection refused"),
                                          ("closed_port_s3", "Connection refused"),
                                          ("cutting_s3", "closed")])
def test_s3_faults_name_endpoint_object_and_cause(fault, cause, request, tmp_path, monkeypatch):
    endpoint = request.getfixturevalue(fault)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")     # one retry: the same path, less waiting
    store = open_store("s3://lab/models")
    src = artifact_dir(tmp_path)
    calls = {
        "list": (lambda: store.list_versions("don-rf"), "s3://lab/models/don-rf/"),
        "publish": (lambda: store.publish("don-rf", src, metadata()), "s3://lab/models/don-rf/"),
        "read": (lambda: store.read_metadata("don-rf", 1), "s3://lab/models/don-rf/1/metadata.json"),
        "check": (lambda: store.check_writable("don-rf"), "s3://lab/"),
        "gc": (lambda: store.collect_garbage("don-rf", 0, dry_run=True), "s3://lab/models/don-rf/"),
    }
    for name, (call, where) in calls.items():
        with pytest.raises(StoreError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message, (name, message)
        assert where in message and f"endpoint {endpoint}" in message, (name, message)
        assert cause in message, (name, message)
        assert "NoneType" not in message and "AttributeError" not in message, (name, message)


# --- gc: leftovers of crashed publishes go, live publishes are never touched ---

def _publish_stuck(root: str, work: Path, ready: str) -> None:
    """A publisher that hangs after staging its files (then the test kills it with SIGKILL)."""
    import time

    import don_core.store.local as store_module

    def hang(directory):
        Path(ready).write_text(str(directory))
        time.sleep(600)
    store_module._fsync_tree = hang
    open_store(root).publish("don-rf", artifact_dir(work, "stuck"), metadata())


def _wait_for(path: Path, timeout: float = 120) -> None:
    import time
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_local_gc_removes_a_killed_publish_never_a_live_one(tmp_path):
    import signal
    root = tmp_path / "store"
    store = open_store(str(root))
    store.publish("don-rf", artifact_dir(tmp_path), metadata())
    child = multiprocessing.get_context("spawn").Process(
        target=_publish_stuck, args=(str(root), tmp_path, str(tmp_path / "ready")))
    child.start()
    try:
        _wait_for(tmp_path / "ready")
        staging = Path((tmp_path / "ready").read_text())
        assert staging.name.startswith(".staging-") and (staging / METADATA_FILE).is_file()
        # live (its publisher holds the lock), however old gc is told leftovers must be
        assert store.collect_garbage("don-rf", 0, dry_run=False) == []
        assert staging.is_dir()
    finally:
        os.kill(child.pid, signal.SIGKILL)          # a crash: no cleanup runs
        child.join(timeout=30)
    assert staging.is_dir() and store.list_versions("don-rf") == [1]
    assert store.collect_garbage("don-rf", 3600, dry_run=False) == []      # too recent
    dry = store.collect_garbage("don-rf", 0, dry_run=True)
    assert len(dry) == 1 and dry[0].startswith(f"would remove staging directory {staging} (")
    assert staging.is_dir()
    done = store.collect_garbage("don-rf", 0, dry_run=False)
    assert len(done) == 1 and done[0].startswith(f"removed staging directory {staging} (")
    assert sorted(p.name for p in (root / "don-rf").iterdir()) == ["1"]
    verify_version_dir(root / "don-rf" / "1")


def test_local_gc_reports_nothing_for_a_publish_that_finished_under_it(tmp_path, monkeypatch):
    """The window the concurrent test below once hit on a loaded machine: a publish renames its
    staging directory into a version (no model-directory lock needed) and lets go of its lock
    between gc opening the staging path and locking it. gc then holds the VERSION's lock: it must
    see that the name is gone and report nothing (it reported a removal it never made)."""
    from don_core.store import local
    root = tmp_path / "store"
    staging = root / "don-rf" / ".staging-finished"
    staging.mkdir(parents=True)
    real_flock = local.fcntl.flock

    def finish_then_lock(fd, operation):
        if operation & local.fcntl.LOCK_NB and staging.exists():
            os.rename(staging, staging.parent / "1")  # the publish's rename, as gc locks
        return real_flock(fd, operation)

    monkeypatch.setattr(local.fcntl, "flock", finish_then_lock)
    assert open_store(str(root)).collect_garbage("don-rf", 0, dry_run=False) == []
    assert (root / "don-rf" / "1").is_dir()


def _run_gc_until(store, model: str, workers, older_than: float) -> list[str]:
    removed = []
    while any(w.is_alive() for w in workers):
        removed += store.collect_garbage(model, older_than, dry_run=False)
    return removed


def test_local_gc_during_concurrent_publishes_removes_nothing_live(tmp_path):
    root = tmp_path / "store"
    (root / "don-rf").mkdir(parents=True)
    store = open_store(str(root))
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_publish_many, args=(str(root), tmp_path, f"w{i}", 4, queue))
               for i in range(3)]
    for w in workers:
        w.start()
    # gc with no age margin at all, as fast as it can, the whole time
    removed = _run_gc_until(store, "don-rf", workers, older_than=0)
    results = [item for _ in workers for item in queue.get(timeout=120)]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    assert removed == []
    assert sorted(v for v, _ in results) == list(range(1, 13))
    for version, payload in results:
        assert verify_version_dir(root / "don-rf" / str(version))["version"] == version
        assert (root / "don-rf" / str(version) / "model.joblib").read_text() == payload


def test_s3_gc_removes_stale_partial_versions_never_a_live_publish(s3_bucket, tmp_path):
    import time

    from don_core.store import s3_client
    age = 8.0     # S3 has no locks: leftovers idle this long are dead; a live publish never is
    client = s3_client()
    store = open_store(f"s3://{s3_bucket}/models")
    store.publish("don-rf", artifact_dir(tmp_path), metadata())
    # what crashed publishers leave: a claim and one file; a bare claim (the highest number);
    # an incomplete multipart upload
    client.put_object(Bucket=s3_bucket, Key="models/don-rf/2/.claim", Body=b'{"token": "dead"}')
    client.put_object(Bucket=s3_bucket, Key="models/don-rf/2/model.onnx", Body=b"half")
    client.put_object(Bucket=s3_bucket, Key="models/don-rf/3/.claim", Body=b'{"token": "dead"}')
    client.create_multipart_upload(Bucket=s3_bucket, Key="models/don-rf/3/saved_model/big.bin")
    time.sleep(age + 0.5)
    dry = store.collect_garbage("don-rf", age, dry_run=True)
    assert [line.split(" (")[0] for line in dry] == [
        f"would remove partial version s3://{s3_bucket}/models/don-rf/2",
        f"would remove partial version s3://{s3_bucket}/models/don-rf/3",
        f"would abort incomplete upload s3://{s3_bucket}/models/don-rf/3/saved_model/big.bin"]
    assert len(list(store._objects("models/don-rf/"))) == 6 + 2 + 1       # untouched
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_publish_many, args=(store.root, tmp_path, f"w{i}", 3, queue))
               for i in range(2)]
    for w in workers:
        w.start()
    removed = _run_gc_until(store, "don-rf", workers, older_than=age)
    results = [item for _ in workers for item in queue.get(timeout=120)]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    # the dead ones went (3's reaped claim may go once it is no longer the highest number);
    # nothing of the live publishes 4..9 did
    assert {line.split(" (")[0] for line in removed} == {
        line.split(" (")[0].replace("would remove", "removed").replace("would abort", "aborted")
        for line in dry}, removed
    assert sorted(v for v, _ in results) == list(range(4, 10))
    assert store.list_versions("don-rf") == [1, *range(4, 10)]
    for version, payload in results:
        fetched = store.fetch("don-rf", version, tmp_path / f"v{version}")
        assert (fetched / "model.joblib").read_text() == payload
    left = [key for key, _ in store._objects("models/don-rf/") if key.split("/")[2] in ("2", "3")]
    assert set(left) <= {"models/don-rf/3/.claim"}, left
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_s3_publish_outliving_gc_fails_instead_of_publishing_missing_files(s3_bucket, tmp_path):
    """S3 has no locks: a publish slower than gc's age is taken for dead. It must then fail, not
    publish a version whose files gc deleted."""
    store = open_store(f"s3://{s3_bucket}/models")
    janitor = open_store(f"s3://{s3_bucket}/models")
    upload = store.client.upload_file
    calls = []

    def upload_then_gc_runs(*args, **kwargs):
        upload(*args, **kwargs)
        if not calls:                       # after the first file: the real gc, no age margin
            calls.append(janitor.collect_garbage("don-rf", 0, dry_run=False))
    store.client.upload_file = upload_then_gc_runs
    with pytest.raises(StoreError, match="abandoned: its claim was removed by gc"):
        store.publish("don-rf", artifact_dir(tmp_path), metadata())
    assert calls and calls[0][0].startswith(f"removed partial version s3://{s3_bucket}/models/don-rf/1")
    assert store.list_versions("don-rf") == []
    # the number stays taken: the next publish gets 2
    assert open_store(store.root).publish("don-rf", artifact_dir(tmp_path), metadata()) == 2
