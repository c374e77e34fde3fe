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
