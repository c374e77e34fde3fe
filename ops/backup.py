"""Copy published model versions between two stores (a PVC path and an s3:// bucket, either way).

Every copied version is verified twice: `fetch` checks each sha256 of the source into a scratch
directory, and `import_version` checks it again and publishes it atomically under the same number
(rename on a filesystem; metadata.json last on s3), so a partial version is never visible.
A version already in the destination is fetched back and verified: intact ones are skipped; a
damaged or different one is reported and left alone (versions are immutable).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from don_core.artifact import METADATA_FILE, ArtifactError
from don_core.reference import REFERENCE_FILE, fingerprint
from don_core.store import Store, StoreError, open_store


@dataclass
class CopyReport:
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def list_models(store: Store) -> list[str]:
    """Model names that have at least one published version."""
    return [name for name in store.models() if store.list_versions(name)]


def _same_version(a: dict, b: dict) -> bool:
    return a.get("files") == b.get("files") and a.get("model") == b.get("model")


def copy_store(source_root: str, dest_root: str, models: list[str] | None = None,
               say=print) -> CopyReport:
    source, dest = open_store(source_root), open_store(dest_root)
    report = CopyReport()
    with tempfile.TemporaryDirectory(prefix="don-backup-") as scratch:
        for model in models or list_models(source):
            _copy_reference(source, dest, model, report, say)
            present = set(dest.list_versions(model))
            for version in source.list_versions(model):
                label = f"{model}/{version}"
                work = Path(scratch) / f"{model}-{version}"
                try:
                    if version in present:
                        _check_present(source, dest, model, version, work)
                        report.skipped.append(label)
                        say(f"skip   {label}: already in {dest_root} and intact")
                        continue
                    source.fetch(model, version, work / "src")
                    dest.import_version(model, version, work / "src")
                    report.copied.append(label)
                    say(f"copied {label}: {source.uri(model, version)} -> {dest.uri(model, version)}")
                except (StoreError, ArtifactError, OSError) as exc:
                    report.failed.append(label)
                    say(f"FAILED {label}: {exc}")
                finally:
                    shutil.rmtree(work, ignore_errors=True)
    return report


def _copy_reference(source: Store, dest: Store, model: str, report: CopyReport, say) -> None:
    """The model's reference set travels with its versions; like them it is never replaced."""
    label = f"{model}/{REFERENCE_FILE}"
    try:
        doc = source.read_reference(model)
        if doc is None:
            return
        if dest.create_reference(model, doc):
            report.copied.append(label)
            say(f"copied {label}: {source.reference_uri(model)} -> {dest.reference_uri(model)}")
            return
        if fingerprint(dest.read_reference(model)) != fingerprint(doc):
            raise StoreError(f"{dest.reference_uri(model)} differs from "
                             f"{source.reference_uri(model)}; a reference set is never replaced")
        report.skipped.append(label)
        say(f"skip   {label}: already in the destination and identical")
    except (StoreError, ValueError, OSError) as exc:
        report.failed.append(label)
        say(f"FAILED {label}: {exc}")


def _check_present(source: Store, dest: Store, model: str, version: int, work: Path) -> None:
    """Raise unless the destination's copy verifies and holds the same files as the source."""
    dest.fetch(model, version, work / "dest")  # verifies every sha256
    theirs = json.loads((work / "dest" / METADATA_FILE).read_text())
    if not _same_version(theirs, source.read_metadata(model, version)):
        raise StoreError(f"{model} version {version} differs between source and destination; "
                         "versions are immutable, so neither is changed")


def fetch_version(store_root: str, model: str, version: str, dest: str) -> tuple[int, Path]:
    """A verified copy of one version into `dest` (which may be an existing empty directory,
    such as an emptyDir mount); metadata.json arrives last. `version` may be 'latest'."""
    store = open_store(store_root)
    if version == "latest":
        number = store.latest(model)
        if number is None:
            raise StoreError(f"{model} has no published version in {store_root}")
    else:
        number = int(version)
        published = store.list_versions(model)
        if number not in published:
            raise StoreError(f"{model} version {number} is not published in {store_root} "
                             f"(published: {', '.join(map(str, published)) or 'none'})")
    target = Path(dest)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        store.fetch(model, number, target)
        return number, target
    if not target.is_dir() or any(p for p in target.iterdir() if not p.name.startswith(".")):
        raise StoreError(f"{target} exists and is not an empty directory")
    staging = target / f".fetch-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        store.fetch(model, number, staging)
        entries = sorted(staging.iterdir(), key=lambda p: p.name == METADATA_FILE)
        for entry in entries:  # same filesystem: renames; metadata.json last
            os.rename(entry, target / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return number, target
