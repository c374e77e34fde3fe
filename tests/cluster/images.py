"""Build the project's images from their Dockerfiles with Docker, and import them into containerd.

What the local cluster and the e2e suite run is what users build (`docker build -f <component>/Dockerfile .`):

1. docker: Debian's ``docker.io`` (installed when missing); our own ``dockerd --bridge=none
   --iptables=false`` on ``/run/don-docker.sock`` with its data root (the layer and pip caches) under
   ``~/.cache/don-predictor/docker``, started on first use and left running for the next build.
2. base: no registry here, so the public ``python:3.11-slim-bookworm`` (build argument
   ``PYTHON_IMAGE``) is a local image: a ``debootstrap`` rootfs of Debian's Python 3.11 imported as
   ``don-predictor/base:<suite>-<key of its package list>``. The shared ``don-predictor/python-base``
   (docker/python-base/Dockerfile) is built FROM it, and the training-job, operator and console
   images FROM that (build argument ``BASE_IMAGE``); the model server FROM the Debian base.
3. build: BuildKit with the host network; this machine's pip configuration and CA bundle are build
   secrets (mounted for the ``pip install`` steps, never stored in a layer). Layers are cached by
   content: a second build without changes takes seconds, a code change rebuilds only the small
   project layer.
4. import: ``docker save`` | ``ctr -n k8s.io images import -``; pods use ``imagePullPolicy: Never``.
"""
from __future__ import annotations

import configparser
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import binaries

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
# The Debian counterpart of python:3.11-slim-bookworm: `python`, venv/ensurepip, the whole stdlib.
BASE_PACKAGES = "python3-minimal,libpython3.11-stdlib,python3-venv,python-is-python3"
DOCKER = "/usr/bin/docker"  # Debian's client, matching its daemon (BuildKit without buildx)
DOCKER_SOCKET = "/run/don-docker.sock"
INPUTS_LABEL = "io.don-predictor.build-inputs"
# `docker build --progress plain` announces each step as "#N [stage i/n] INSTRUCTION".
STEP_LINE = re.compile(r"^#\d+ (\[[^\]]+\] .*)$")
PROGRESS_SECONDS = 55
# The chart's default tag is its appVersion, which follows the project version.
IMAGE_TAG = (os.environ.get("DON_IMAGE_TAG")
             or tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


@dataclass(frozen=True)
class ImageSpec:
    name: str  # repository, e.g. don-predictor/model-server
    dockerfile: str  # relative to the repository root (the build context)
    target: str | None = None
    tag_suffix: str = ""
    # The build argument naming the FROM image: BASE_IMAGE (don-predictor/python-base) or PYTHON_IMAGE.
    base_arg: str = "BASE_IMAGE"
    # False: the build reads nothing of the repository (an empty context; the key is the Dockerfile's).
    context: bool = True

    @property
    def ref(self) -> str:
        return f"{self.name}:{IMAGE_TAG}{self.tag_suffix}"


PYTHON_BASE = ImageSpec("don-predictor/python-base", "docker/python-base/Dockerfile", base_arg="PYTHON_IMAGE",
                        context=False)
TRAINING = ImageSpec("don-predictor/training-job", "training_job/Dockerfile")
SERVING = ImageSpec("don-predictor/model-server", "model_server/Dockerfile", "lean", base_arg="PYTHON_IMAGE")
SERVING_FULL = ImageSpec("don-predictor/model-server", "model_server/Dockerfile", "full", "-full",
                         base_arg="PYTHON_IMAGE")
OPERATOR = ImageSpec("don-predictor/operator", "ops/Dockerfile")
CONSOLE = ImageSpec("don-predictor/console", "console/Dockerfile")
# What the local cluster runs (the chart's images; the full serving image is built on demand).
IMAGES = (TRAINING, SERVING, OPERATOR, CONSOLE)
BY_NAME = {"python-base": PYTHON_BASE, "training-job": TRAINING, "model-server": SERVING,
           "model-server-full": SERVING_FULL, "operator": OPERATOR, "console": CONSOLE}


def _cache_dir() -> Path:
    d = binaries.cache_root() / "docker"
    d.mkdir(parents=True, exist_ok=True)
    return d


def docker_env() -> dict:
    return {**os.environ, "DOCKER_HOST": f"unix://{DOCKER_SOCKET}", "DOCKER_BUILDKIT": "1"}


def docker(*args: str, log=binaries._default_log, step: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    return binaries._run([DOCKER, *args], log, step or f"docker {args[0]}", env=docker_env(), **kwargs)


def _daemon_up() -> bool:
    return subprocess.run([DOCKER, "version"], env=docker_env(), capture_output=True).returncode == 0


def ensure_docker(log=binaries._default_log) -> None:
    """Install Debian's docker.io if needed and start our dockerd once (it stays up: the cache)."""
    if Path(DOCKER).exists() and _daemon_up():
        return
    binaries.apt_install(["docker.io"], log)
    with binaries.file_lock(_cache_dir() / "dockerd.lock", log, "dockerd"):
        if _daemon_up():
            return
        data = _cache_dir() / "root"
        log(f"starting dockerd on {DOCKER_SOCKET} (data root {data})")
        with open(_cache_dir() / "dockerd.log", "ab") as out:
            # No bridge, no iptables rules: builds use the host network, nothing is published.
            subprocess.Popen(["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false",
                              "--data-root", str(data), "--exec-root", "/run/don-docker",
                              "--pidfile", "/run/don-docker.pid", "-H", f"unix://{DOCKER_SOCKET}"],
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        deadline = time.monotonic() + 60
        while not _daemon_up():
            if time.monotonic() > deadline:
                tail = (_cache_dir() / "dockerd.log").read_text(errors="replace")[-3000:]
                raise binaries.BuildError(f"dockerd did not come up within 60 s:\n{tail}")
            time.sleep(0.5)


def _image_exists(ref: str) -> bool:
    return subprocess.run([DOCKER, "image", "inspect", ref], env=docker_env(), capture_output=True).returncode == 0


def base_image(log=binaries._default_log) -> str:
    """The local stand-in for python:3.11-slim-bookworm, built from Debian packages once."""
    key = hashlib.sha256(f"{SUITE} {BASE_PACKAGES}".encode()).hexdigest()[:12]
    ref = f"don-predictor/base:{SUITE}-{key}"
    if _image_exists(ref):
        return ref
    with binaries.file_lock(_cache_dir() / "base.lock", log, "the base image"):
        if _image_exists(ref):
            return ref
        binaries.apt_install(["debootstrap"], log)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=_cache_dir()) as tmp:
            root = Path(tmp) / "rootfs"
            binaries._run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE, str(root),
                           "http://deb.debian.org/debian"], log, "debootstrap")
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log", "usr/share/doc",
                         "usr/share/man", "usr/share/locale"):
                shutil.rmtree(root / junk, ignore_errors=True)
                (root / junk).mkdir(parents=True)
            tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            # No ENV: Docker gives an image without PATH the standard one, which the Dockerfiles extend.
            docker("import", "--change", 'CMD ["python3"]', "-", ref, log=log, stdin=tar.stdout)
            if tar.wait() != 0:
                raise binaries.BuildError("tar of the base rootfs failed")
        log(f"base image {ref} built in {time.monotonic() - started:.0f} s")
    return ref


def pip_build_config(dest: Path) -> dict[str, Path]:
    """This machine's pip configuration (files and PIP_* variables, as `pip config list` merges them)
    as build secrets: `pip.conf`, with the CA bundle it names as `pip-cert`. Values that are host
    paths (local wheel directories, constraint files) cannot be reached from a build and are left out."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    config, secrets = configparser.ConfigParser(interpolation=None), {}
    config["global"] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        option, value = key.split(".", 1)[-1], value.strip().strip("'\"")
        if option == "cert":
            if Path(value).is_file():
                shutil.copyfile(value, dest / "pip-cert")
                secrets["pip-cert"] = dest / "pip-cert"
                config["global"]["cert"] = "/run/secrets/pip-cert"
            continue
        kept = [v for v in value.split() if not v.startswith(("/", "file:", "~"))]
        if kept and option not in ("constraint", "requirement", "find-links", "config-file"):
            config["global"][option] = " ".join(kept)
    with open(dest / "pip.conf", "w") as fh:
        config.write(fh)
    secrets["pip.conf"] = dest / "pip.conf"
    return secrets


def _build_with_progress(cmd: list[str], log, what: str) -> None:
    """Run `docker build --progress plain`, logging each step it starts and, while one step runs
    long (a cold dependency install takes minutes), a line at least once a minute."""
    log(f"docker build {what}")
    proc = subprocess.Popen(cmd, env=docker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    tail: list[str] = []
    seen: set[str] = set()
    state = {"step": "starting", "last": time.monotonic(), "started": time.monotonic()}
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(5):
            if time.monotonic() - state["last"] >= PROGRESS_SECONDS:
                state["last"] = time.monotonic()
                log(f"  {what}: still at {state['step']} ({time.monotonic() - state['started']:.0f} s so far)")

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        for line in proc.stdout:
            tail = (tail + [line])[-60:]
            step = STEP_LINE.match(line)
            if step:
                text = " ".join(re.sub(r"--mount=\S+", "", step.group(1)).split())[:160]
                state["step"] = text
                if text not in seen:  # BuildKit repeats a step's header when parallel steps interleave
                    seen.add(text)
                    state["last"] = time.monotonic()
                    log(f"  {what}: {text}")
    finally:
        done.set()
    if proc.wait() != 0:
        raise binaries.BuildError(f"docker build {what} failed (exit {proc.returncode}):\n{''.join(tail)[-4000:]}")


def _inputs_key(spec: ImageSpec, base: str) -> str:
    """A hash of what the build reads: the Dockerfile, target, base and every file the build context
    admits (.dockerignore's `!` entries). An image labelled with it is current: Docker's own cache
    check re-hashes the copied venvs (minutes for the 2 GB training image on a busy machine)."""
    digest = hashlib.sha256(f"{spec.dockerfile} {spec.target} {base}".encode())
    digest.update((REPO / spec.dockerfile).read_bytes())
    if not spec.context:
        return digest.hexdigest()[:16]
    allowed = [line[1:].strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!") and not any(c in line for c in "*?[")]
    for entry in sorted(allowed):
        root = REPO / entry
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(f"\0{path.relative_to(REPO).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _image_id(ref: str) -> str | None:
    proc = subprocess.run([DOCKER, "image", "inspect", "--format", "{{.Id}}", ref], env=docker_env(),
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _current_image(ref: str, key: str) -> str | None:
    proc = subprocess.run([DOCKER, "image", "inspect", "--format",
                           f'{{{{.Id}}}} {{{{index .Config.Labels "{INPUTS_LABEL}"}}}}', ref],
                          env=docker_env(), capture_output=True, text=True)
    image_id, _, found = proc.stdout.strip().partition(" ")
    return image_id if proc.returncode == 0 and found == key else None


def build(spec: ImageSpec, log=binaries._default_log) -> str:
    """`docker build` of one Dockerfile, unless the image of exactly these inputs exists; returns its id."""
    ensure_docker(log)
    if spec.base_arg == "PYTHON_IMAGE":
        base = base_key = base_image(log)
    else:  # the key follows the shared base's image id: a rebuilt base rebuilds its images
        base, base_key = PYTHON_BASE.ref, build(PYTHON_BASE, log)
    key = _inputs_key(spec, base_key)
    image_id = _current_image(spec.ref, key)
    if image_id:
        log(f"{spec.ref} is current (inputs {key}): not rebuilt")
        return image_id
    previous = _image_id(spec.ref)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pip-", dir=_cache_dir()) as tmp:
        secrets = pip_build_config(Path(tmp))
        context = REPO if spec.context else Path(tmp) / "empty"
        context.mkdir(exist_ok=True)
        cmd = ["build", "--network", "host", "-f", str(REPO / spec.dockerfile), "--build-arg",
               f"{spec.base_arg}={base}", "-t", spec.ref, "--label", f"{INPUTS_LABEL}={key}",
               "--iidfile", str(Path(tmp) / "iid")]
        if spec.target:
            cmd += ["--target", spec.target]
        for name, path in secrets.items():
            cmd += ["--secret", f"id={name},src={path}"]
        _build_with_progress([DOCKER, *cmd, "--progress", "plain", str(context)], log, spec.ref)
        image_id = (Path(tmp) / "iid").read_text().strip()
    log(f"built {spec.ref} ({image_id[7:19]}) in {time.monotonic() - started:.1f} s")
    if previous and previous != image_id:
        # The image this tag named before, now untagged: its own layers would pile up in the cache
        # (layers the new image shares stay). Refused while another tag names it; that is fine.
        subprocess.run([DOCKER, "image", "rm", previous], env=docker_env(), capture_output=True)
    return image_id


# BuildKit keeps every intermediate stage (a model-server venv copy, each code change's wheel) until
# its garbage collector trims it to a share of the disk; the cache is pruned to this size instead,
# least recently used first (what the current images were built from stays: a warm build stays warm).
BUILD_CACHE_KEEP = os.environ.get("DON_BUILD_CACHE_KEEP", "10GB")


def build_images(specs: tuple[ImageSpec, ...] = IMAGES, log=binaries._default_log) -> list[str]:
    ensure_docker(log)  # before the first `docker image inspect`: a fresh machine has no client yet
    before = {spec.ref: _image_id(spec.ref) for spec in specs}
    for spec in specs:
        build(spec, log)
    if any(_image_id(spec.ref) != before[spec.ref] for spec in specs):
        started = time.monotonic()
        docker("builder", "prune", "--force", "--keep-storage", BUILD_CACHE_KEEP, log=log,
               step="docker builder prune")
        log(f"build cache pruned to {BUILD_CACHE_KEEP} in {time.monotonic() - started:.0f} s")
    return [spec.ref for spec in specs]


def import_images(ctr: list[str], specs: tuple[ImageSpec, ...] = IMAGES, log=binaries._default_log) -> list[str]:
    """Build the images and stream them (`docker save`, shared layers once) into `ctr images import`."""
    refs = build_images(specs, log)
    started = time.monotonic()
    save = subprocess.Popen([DOCKER, "save", *refs], env=docker_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc = subprocess.run([*ctr, "images", "import", "-"], stdin=save.stdout, capture_output=True, text=True)
    save.stdout.close()
    save_err = save.stderr.read().decode(errors="replace")
    if save.wait() != 0 or proc.returncode != 0:
        raise binaries.BuildError(f"docker save | ctr images import failed:\n{save_err[-2000:]}"
                                  f"{(proc.stdout + proc.stderr)[-2000:]}")
    log(f"imported {', '.join(refs)} in {time.monotonic() - started:.0f} s")
    return refs


def import_rootfs(ctr: list[str], ref: str, root: Path, config: dict, log=binaries._default_log) -> None:
    """A one-layer image from a directory (the pause image), straight into containerd."""
    import io
    import json

    with tempfile.TemporaryDirectory(prefix="rootfs-") as tmp:
        layer = Path(tmp) / "layer.tar"
        binaries._run(["tar", "--numeric-owner", "--sort=name", "--mtime=@0", "-C", str(root), "-cf", str(layer),
                       "."], log, "tar")
        digest = hashlib.sha256(layer.read_bytes()).hexdigest()
        config = {**config, "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}"]}}
        archive_path = Path(tmp) / "image.tar"
        with tarfile.open(archive_path, "w") as archive:
            for name, data in (("config.json", json.dumps(config).encode()),
                               ("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": [ref],
                                                              "Layers": [f"{digest}/layer.tar"]}]).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            archive.add(str(layer), arcname=f"{digest}/layer.tar")
        binaries._run([*ctr, "images", "import", str(archive_path)], log, f"ctr images import {ref}")


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.cluster.images [NAME ...]`: build the named images (default: the cluster's)."""
    names = argv if argv is not None else sys.argv[1:]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"unknown image(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}", file=sys.stderr)
        return 2
    specs = tuple(BY_NAME[n] for n in names) or IMAGES
    print("\n".join(build_images(specs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
