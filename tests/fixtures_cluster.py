"""pytest fixtures for the cluster tests (registered in tests/conftest.py).

``kube_apiserver``: a real etcd + kube-apiserver (Kubernetes 1.20 built from Debian's source package,
see tests/cluster/binaries.py) on free loopback ports for the whole session; ``.kubeconfig``, ``.url``,
``.request(method, path, body)``, ``.env()``. ``install_crds(cluster, paths)`` installs CRDs from YAML.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cluster import binaries
from tests.cluster.control_plane import ControlPlane
from tests.cluster.crds import install_crds  # noqa: F401  (re-exported for tests)
from tests.conftest import unavailable
from tests.progress import say

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared").resolve()
KSERVE_CRD_DIR = SHARED / "kserve-crds"
# Gateway API's HTTPRoute CRD as upstream generates it (config/crd/standard/, v1.3.0 or later: the
# first standard channel with RequestMirror's percent/fraction). Reference data like the KServe
# CRDs, never copied into the repository: $DON_GATEWAY_API_CRDS names its folder, else ../shared.
GATEWAY_API_CRD_DIR = Path(os.environ.get("DON_GATEWAY_API_CRDS") or SHARED / "gateway-api-crds")
HTTPROUTE_CRD = GATEWAY_API_CRD_DIR / "gateway.networking.k8s.io_httproutes.yaml"


@pytest.fixture(scope="session")
def kube_binaries() -> Path:
    """The cached server binaries; builds them on first use (about 6 minutes cold)."""
    try:
        return binaries.kubernetes_binaries(log=say)
    except (binaries.BuildError, OSError) as exc:
        unavailable(f"Kubernetes server binaries cannot be built on this machine: {exc}")


@pytest.fixture(scope="session")
def kube_apiserver(kube_binaries):
    try:
        binaries.etcd_binary(log=say)
    except (binaries.BuildError, OSError) as exc:
        unavailable(f"etcd cannot be installed on this machine: {exc}")
    with ControlPlane(log=say) as cp:
        yield cp


@pytest.fixture(scope="session")
def kserve_isvc_crd(kube_apiserver) -> str:
    """Installs the real KServe InferenceService CRD into ``kube_apiserver``; returns its name."""
    path = KSERVE_CRD_DIR / "serving.kserve.io_inferenceservices.yaml"
    if not path.is_file():
        unavailable(f"KServe CRD schemas are absent from {KSERVE_CRD_DIR}")
    (name,) = install_crds(kube_apiserver, [path])
    return name


# --- end-to-end clusters ------------------------------------------------------------------------
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

E2E_TARGET = os.environ.get("DON_E2E_TARGET", "local")  # local | kind
E2E_STATE_DIR = Path(os.environ.get("DON_E2E_CLUSTER_DIR", "/tmp/don-e2e-cluster"))
E2E_REPORT: dict = {"cluster": None, "timings": {}, "tests": []}


@dataclass
class E2ECluster:
    """What the e2e tests need to know about the cluster they run on."""
    name: str                      # "local" or "kind"
    description: str
    kubeconfig: Path
    engine: str                    # chart serving.engine: deployment (local) | kserve (kind)
    volumes: Path | None           # host directory backing hostPath PVs (local only)
    pull_policy: str
    has_kserve_controller: bool
    kserve_mode: str = ""
    timings: dict = field(default_factory=dict)
    api: object = None             # ControlPlane of the local cluster (raw API calls, CRD installs)


@pytest.fixture(scope="session")
def e2e_cluster():
    """The cluster the e2e suite runs on: the registry-built local one (default) or kind."""
    if E2E_TARGET == "kind":
        kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
        mode = os.environ.get("DON_KSERVE_MODE", "Standard")
        cluster = E2ECluster("kind", f"kind cluster (current context of {kubeconfig}), KServe {mode} mode",
                             kubeconfig, "kserve", None, "IfNotPresent", True, mode)
        E2E_REPORT["cluster"] = cluster.description
        yield cluster
        return
    from tests.cluster import network
    from tests.cluster.local_cluster import LocalCluster

    if os.environ.get("DON_E2E_REUSE") == "1" and (E2E_STATE_DIR / "cluster.json").exists():
        # Development loop: a cluster started with `DON_CLUSTER_DIR=... python -m tests.cluster up`
        # (and `... images`) is used as is and left running.
        cluster = LocalCluster.attach(E2E_STATE_DIR)
        E2E_REPORT["cluster"] = f"reused local cluster in {E2E_STATE_DIR}"
        yield E2ECluster("local", E2E_REPORT["cluster"], cluster.kubeconfig, "deployment", cluster.volumes,
                         "Never", False, api=cluster.cp)
        return
    if os.geteuid() != 0:
        unavailable("the local cluster needs root (network links, mounts, containerd); run as root or on kind")
    if network.link_exists(network.NODE_BRIDGE):
        pytest.fail(f"another local cluster is running (link {network.NODE_BRIDGE} exists): "
                    "stop it with `python -m tests.cluster down` first")
    try:
        binaries.kubernetes_binaries(log=say)
    except (binaries.BuildError, OSError) as exc:
        unavailable(f"Kubernetes server binaries cannot be built on this machine: {exc}")
    cluster = LocalCluster(E2E_STATE_DIR, log=say)  # cold: the build and the images take minutes
    timings = {}
    try:
        started = time.monotonic()
        cluster.up()
        timings["cluster up"] = time.monotonic() - started
        started = time.monotonic()
        refs = cluster.import_project_images()
        timings["images build+import"] = time.monotonic() - started
        description = (f"local one-node Kubernetes {binaries.KUBERNETES_DEBIAN_VERSION} (Debian source, "
                       f"registry-built), containerd, bridge CNI; images {', '.join(refs)} built from "
                       "their Dockerfiles")
        E2E_REPORT["cluster"] = description
        E2E_REPORT["timings"] = timings
        yield E2ECluster("local", description, cluster.kubeconfig, "deployment", cluster.volumes, "Never",
                         False, timings=timings, api=cluster.cp)
    finally:
        started = time.monotonic()
        cluster.down(quiet=True)
        timings["cluster down"] = time.monotonic() - started
        if os.environ.get("DON_E2E_KEEP_STATE") != "1":
            shutil.rmtree(E2E_STATE_DIR, ignore_errors=True)


def pytest_runtest_logreport(report):
    if "e2e" not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = report.longrepr[2]
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = (crash.message if crash else str(report.longrepr)).strip().replace("\n", " ")[:300]
        E2E_REPORT["tests"].append((report.nodeid, report.outcome, round(report.duration, 1), reason))


def pytest_terminal_summary(terminalreporter):
    """`make e2e` report: what ran, on which cluster, and what was skipped and why."""
    if not E2E_REPORT["tests"]:
        return
    write = terminalreporter.write_line
    terminalreporter.section("e2e report")
    write(f"cluster: {E2E_REPORT['cluster'] or 'none started'}")
    for what, seconds in E2E_REPORT["timings"].items():
        write(f"  {what}: {seconds:.1f} s")
    for note in E2E_REPORT.get("notes", []):
        write(f"  {note}")
    for nodeid, outcome, seconds, reason in E2E_REPORT["tests"]:
        write(f"{outcome.upper():8} {seconds:7.1f} s  {nodeid}" + (f"\n           -> {reason}" if reason else ""))
    path = os.environ.get("DON_E2E_REPORT")
    if path:
        Path(path).write_text(json.dumps(E2E_REPORT, indent=1))
