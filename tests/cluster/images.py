"""Build the project's container images without Docker and import them into containerd.

No registry and no Docker engine here, so an image is assembled from plain layer tarballs:

1. base: ``debootstrap --variant=minbase --include=python3-minimal bookworm`` (cached by suite);
2. deps: the image's Python dependencies (its pyproject extras) installed with ``pip --target``
   into ``/opt/don/lib`` (cached by a hash of the requirement list);
3. app: the project wheel (``pip wheel .``) installed without dependencies (rebuilt every time).

The layers are streamed as a docker-archive straight into ``ctr -n k8s.io images import -``; images
sharing a layer store it once. Pods use ``imagePullPolicy: Never``. Images run as uid 1000 and work
with a read-only root filesystem (``PYTHONDONTWRITEBYTECODE``, ``HOME=/tmp``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from don_core.artifact import file_sha256

from . import binaries

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
# python3-minimal alone lacks most of the standard library (http, email, ...): add the rest.
BASE_PACKAGES = "python3-minimal,libpython3.11-stdlib"
SITE = "/opt/don/lib"
# The chart's default tag is its appVersion, which follows the project version.
IMAGE_TAG = (os.environ.get("DON_IMAGE_TAG")
             or tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


@dataclass(frozen=True)
class ImageSpec:
    name: str  # repository, e.g. don-predictor/model-server
    extras: tuple[str, ...]
    entrypoint: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.name}:{IMAGE_TAG}"


# The training and serving images share one dependency layer (TensorFlow alone is 1.3 GB; storing and
# importing it twice would double the cold e2e time on 2 cores). The kind path builds the slim
# per-component images from the Dockerfiles instead.
IMAGES = (
    ImageSpec("don-predictor/training-job", ("train", "serve"), ("python3", "-m", "training_job")),
    ImageSpec("don-predictor/model-server", ("train", "serve"), ("python3", "-m", "model_server")),
    ImageSpec("don-predictor/operator", ("ops",), ("python3", "-m", "ops")),  # as ops/Dockerfile
)


def _images_dir() -> Path:
    d = binaries.cache_root() / "images"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _tar_dir(src: Path, dest: Path) -> str:
    """Deterministic-enough layer tarball of a directory; returns its sha256 (the layer diff_id)."""
    partial = dest.with_suffix(".partial")
    subprocess.run(["tar", "--numeric-owner", "--sort=name", "--mtime=@0", "-C", str(src), "-cf",
                    str(partial), "."], check=True)
    digest = file_sha256(partial)
    (dest.parent / (dest.name + ".sha256")).write_text(digest)
    partial.replace(dest)
    return digest


def _layer_digest(layer: Path) -> str:
    return (layer.parent / (layer.name + ".sha256")).read_text().strip()


def base_layer(log=binaries._default_log) -> Path:
    layer = _images_dir() / f"base-{SUITE}-minbase-python3-stdlib.tar"
    if layer.exists():
        return layer
    with binaries.file_lock(_images_dir() / "base.lock", log, "the base rootfs"):
        if layer.exists():
            return layer
        binaries.apt_install(["debootstrap"], log)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=_images_dir()) as tmp:
            root = Path(tmp) / "rootfs"
            proc = subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE,
                                   str(root), "http://deb.debian.org/debian"], capture_output=True, text=True)
            if proc.returncode != 0:
                raise binaries.BuildError(f"debootstrap failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log", "usr/share/doc",
                         "usr/share/man", "usr/share/locale"):
                shutil.rmtree(root / junk, ignore_errors=True)
            (root / "etc/passwd").open("a").write("don:x:1000:1000:don:/tmp:/usr/sbin/nologin\n")
            (root / "etc/group").open("a").write("don:x:1000:\n")
            _tar_dir(root, layer)
        log(f"base rootfs layer built in {time.monotonic() - started:.0f} s: {layer}")
    return layer


def _requirements(extras: tuple[str, ...]) -> list[str]:
    # DON_IMAGE_PYPROJECT: try a dependency change in the images before it lands in pyproject.toml.
    pyproject = Path(os.environ.get("DON_IMAGE_PYPROJECT") or REPO / "pyproject.toml")
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    return sorted(set(reqs))


def _pip_target(args: list[str], target: Path, log, what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-warn-script-location", "--target", str(target), *args]
    log(f"pip install {what} into an image layer")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise binaries.BuildError(f"pip install {what} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")


def deps_layer(extras: tuple[str, ...], log=binaries._default_log) -> Path:
    reqs = _requirements(extras)
    key = hashlib.sha256(json.dumps([sys.version_info[:2], reqs]).encode()).hexdigest()[:16]
    layer = _images_dir() / f"deps-{'-'.join(extras)}-{key}.tar"
    if layer.exists():
        return layer
    with binaries.file_lock(_images_dir() / f"deps-{key}.lock", log, f"the {extras} dependency layer"):
        if layer.exists():
            return layer
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="deps-", dir=_images_dir()) as tmp:
            root = Path(tmp) / "root"
            _pip_target(reqs, root / SITE.lstrip("/"), log, f"{len(reqs)} requirements ({', '.join(extras)})")
            shutil.rmtree(root / SITE.lstrip("/") / "bin", ignore_errors=True)  # host-python shebangs
            _tar_dir(root, layer)
        log(f"dependency layer {layer.name} built in {time.monotonic() - started:.0f} s")
    return layer


def app_layer(workdir: Path, log=binaries._default_log) -> Path:
    """The project itself, from the current working tree (``pip wheel . --no-deps``)."""
    wheels = workdir / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "-w", str(wheels), str(REPO)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise binaries.BuildError(f"pip wheel . failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    (wheel,) = wheels.glob("don_predictor-*.whl")
    root = workdir / "app"
    _pip_target(["--no-deps", str(wheel)], root / SITE.lstrip("/"), log, wheel.name)
    shutil.rmtree(root / SITE.lstrip("/") / "bin", ignore_errors=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "python").symlink_to("python3")  # manifests may say `python`
    layer = workdir / "app.tar"
    _tar_dir(root, layer)
    return layer


def _config(spec: ImageSpec, diff_ids: list[str]) -> bytes:
    return json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {
            "User": "1000:1000", "WorkingDir": "/tmp", "Entrypoint": list(spec.entrypoint),
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    f"PYTHONPATH={SITE}", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/tmp"],
            "Labels": {"org.opencontainers.image.source": "don-predictor (tests/cluster/images.py)"},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created_by": "tests/cluster/images.py"}],
    }, sort_keys=True).encode()


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    import io
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def import_images(ctr: list[str], specs: tuple[ImageSpec, ...] = IMAGES, log=binaries._default_log,
                  extra: list[tuple[str, list[Path], dict]] | None = None) -> list[str]:
    """Build every image and stream one docker-archive holding all of them into ``ctr images import``."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="app-", dir=_images_dir()) as tmp:
        images: list[tuple[str, list[Path], bytes]] = []
        if specs:
            base = base_layer(log)
            app = app_layer(Path(tmp), log)
        for spec in specs:
            layers = [base, deps_layer(spec.extras, log), app]
            digests = [_layer_digest(layer) for layer in layers]
            images.append((spec.ref, layers, _config(spec, digests)))
        for ref, layers, config in extra or []:
            images.append((ref, layers, json.dumps(config).encode()))
        manifest, seen = [], set()
        proc = subprocess.Popen([*ctr, "images", "import", "-"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        with tarfile.open(fileobj=proc.stdin, mode="w|") as archive:
            for ref, layers, config in images:
                config_name = hashlib.sha256(config).hexdigest() + ".json"
                _add_bytes(archive, config_name, config)
                names = []
                for layer in layers:
                    name = f"{_layer_digest(layer)}/layer.tar"
                    if name not in seen:
                        archive.add(str(layer), arcname=name)
                        seen.add(name)
                    names.append(name)
                manifest.append({"Config": config_name, "RepoTags": [ref], "Layers": names})
            _add_bytes(archive, "manifest.json", json.dumps(manifest).encode())
        proc.stdin.close()
        out = proc.stdout.read().decode(errors="replace")
        if proc.wait() != 0:
            raise binaries.BuildError(f"ctr images import failed:\n{out[-3000:]}")
    refs = [ref for ref, _, _ in images]
    log(f"imported {', '.join(refs)} in {time.monotonic() - started:.0f} s")
    return refs


def layer_from_dir(src: Path, name: str) -> Path:
    layer = _images_dir() / f"{name}.tar"
    _tar_dir(src, layer)
    return layer


def layer_digest(layer: Path) -> str:
    return _layer_digest(layer)
