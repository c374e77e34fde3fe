"""Backup / restore / fetch between a local store (PVC path) and a real moto S3 server on loopback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from don_core.artifact import verify_version_dir
from don_core.store import open_store, s3_client
from ops.backup import copy_store, fetch_version

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.s3


@pytest.fixture
def bucket(s3_bucket) -> str:
    """The conftest's fresh moto bucket as a store root (AWS_* variables already point at moto)."""
    return f"s3://{s3_bucket}"


def ops_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=REPO, capture_output=True,
                          text=True, env=dict(os.environ), timeout=120)


def test_backup_to_s3_then_restore_round_trip(tiny_store, bucket, tmp_path):
    done = ops_cli("backup", "--from", str(tiny_store), "--to", bucket)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 copied, 0 skipped, 0 failed" in done.stdout
    store = open_store(bucket)
    assert store.list_versions("don-rf") == [1, 2] and store.list_versions("don-tf") == [1]

    again = ops_cli("backup", "--from", str(tiny_store), "--to", bucket)
    assert again.returncode == 0 and "0 copied, 3 skipped, 0 failed" in again.stdout

    restored = tmp_path / "restored"
    back = ops_cli("restore", "--from", bucket, "--to", str(restored))
    assert back.returncode == 0, back.stdout + back.stderr
    for model, version in (("don-rf", 1), ("don-rf", 2), ("don-tf", 1)):
        original = verify_version_dir(tiny_store / model / str(version))
        copy = verify_version_dir(restored / model / str(version))
        assert copy["files"] == original["files"] and copy["version"] == version


def test_damaged_source_version_is_refused_and_never_visible(tiny_store, bucket):
    damaged = tiny_store / "don-rf" / "2" / "golden.json"
    damaged.chmod(0o644)
    damaged.write_text('{"ids": [], "instances": [], "targets_ppb": []}')
    report = copy_store(str(tiny_store), bucket, say=lambda _: None)
    assert report.failed == ["don-rf/2"]
    assert sorted(report.copied) == ["don-rf/1", "don-tf/1"]
    assert open_store(bucket).list_versions("don-rf") == [1]  # no partial version 2


def test_damaged_destination_copy_is_reported_not_overwritten(tiny_store, bucket):
    assert copy_store(str(tiny_store), bucket, say=lambda _: None).ok
    bucket_name = bucket[len("s3://"):]
    s3_client().put_object(Bucket=bucket_name, Key="don-rf/1/model.joblib", Body=b"tampered")
    lines = []
    report = copy_store(str(tiny_store), bucket, say=lines.append)
    assert report.failed == ["don-rf/1"] and sorted(report.skipped) == ["don-rf/2", "don-tf/1"]
    assert any("sha256" in line for line in lines), lines


def test_fetch_into_an_empty_mount_directory(tiny_store, bucket, tmp_path):
    assert copy_store(str(tiny_store), bucket, say=lambda _: None).ok
    mount = tmp_path / "mnt-models"
    mount.mkdir()  # like an emptyDir volume: exists, empty
    done = ops_cli("fetch", "--store", bucket, "--model", "don-rf", "--version", "latest",
                   "--dest", str(mount))
    assert done.returncode == 0, done.stderr
    assert "version 2" in done.stdout
    assert verify_version_dir(mount)["version"] == 2
    assert not [p for p in mount.iterdir() if p.name.startswith(".")]
    # a non-empty destination is refused rather than mixed with another version
    refused = ops_cli("fetch", "--store", bucket, "--model", "don-rf", "--version", "1",
                      "--dest", str(mount))
    assert refused.returncode == 1 and "not an empty directory" in refused.stderr


def test_fetch_of_a_missing_version_names_it(tiny_store):
    with pytest.raises(Exception, match="version 9"):
        fetch_version(str(tiny_store), "don-rf", "9", str(tiny_store.parent / "x"))


def test_reference_set_travels_with_the_versions_and_is_never_replaced(tmp_path, bucket):
    from tests.fixtures_operator import publish_tiny_version
    source = tmp_path / "pvc"
    source.mkdir()
    for seed in (1, 2):
        publish_tiny_version(source, "don-rf", seed, reference=True)
    lines = []
    report = copy_store(str(source), bucket, say=lines.append)
    assert report.ok and sorted(report.copied) == ["don-rf/1", "don-rf/2", "don-rf/reference.json"]
    original = open_store(str(source)).read_reference("don-rf")
    assert open_store(bucket).read_reference("don-rf") == original
    again = copy_store(str(source), bucket, say=lines.append)
    assert again.ok and "don-rf/reference.json" in again.skipped

    # a destination holding another set for the model: reported, left as it was
    other = tmp_path / "other"
    other.mkdir()
    publish_tiny_version(other, "don-rf", 7, reference=True)
    doc = open_store(str(other)).read_reference("don-rf")
    doc["created"] = "another run"
    (other / "don-rf" / "reference.json").chmod(0o644)
    (other / "don-rf" / "reference.json").write_text(__import__("json").dumps(doc))
    lines.clear()
    clash = copy_store(str(other), bucket, say=lines.append)
    assert "don-rf/reference.json" in clash.failed
    assert any("never replaced" in line for line in lines), lines
    assert open_store(bucket).read_reference("don-rf") == original
