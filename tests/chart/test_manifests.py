"""manifests/ is the chart rendered with defaults, kept in sync, and accepted by kubectl and a real
API server."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from scripts import render_manifests
from tests.fixtures_chart import CHART, K120, canary, run_helm

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"


@pytest.mark.chart
def test_manifests_are_up_to_date(helm):
    problems = render_manifests.stale(render_manifests.render(), MANIFESTS)
    assert not problems, (f"manifests/ is out of date ({', '.join(problems)}): "
                          "run `python -m scripts.render_manifests`")


@pytest.mark.chart
def test_staleness_is_detected(helm, tmp_path):
    rendered = render_manifests.render()
    for name, text in rendered.items():
        (tmp_path / name).write_text(text)
    assert render_manifests.stale(rendered, tmp_path) == []
    first = sorted(rendered)[-1]
    (tmp_path / first).write_text(rendered[first] + "# edited by hand\n")
    (tmp_path / "99-extra.yaml").write_text("{}\n")
    assert render_manifests.stale(rendered, tmp_path) == sorted([first, "99-extra.yaml"])


@pytest.mark.chart
def test_manifests_hold_the_default_install():
    kinds = "\n".join(p.read_text() for p in sorted(MANIFESTS.glob("*.yaml")))
    assert kinds.count("kind: InferenceService") == 2
    assert "kind: ServingRuntime" in kinds and "kind: CustomResourceDefinition" in kinds
    assert "helm.sh/hook" not in kinds, "helm test hooks are not part of the plain manifests"


def kubectl_run(kubectl: str, cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([kubectl, *args], input=stdin, capture_output=True, text=True, timeout=180,
                          env=cluster.env())


@pytest.mark.chart
@pytest.mark.apiserver
def test_kubectl_client_dry_run_accepts_every_manifest(kubectl, chart_apiserver):
    """`kubectl apply --dry-run=client` needs an API server for discovery (REST mappings) and to
    look up live objects; with validation on, kubectl also checks against the server's OpenAPI."""
    out = kubectl_run(kubectl, chart_apiserver, "apply", "--dry-run=client", "-f", str(MANIFESTS))
    assert out.returncode == 0, out.stderr
    objects = sum(1 for p in MANIFESTS.glob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d)
    assert out.stdout.count("(dry run)") == objects, out.stdout


@pytest.mark.chart
@pytest.mark.apiserver
def test_local_cluster_render_passes_server_side_dry_run(helm, kubectl, chart_apiserver):
    """The render for the 1.20 test cluster (deployment engine, old API versions) against the real
    1.20 API server's validation."""
    namespace = "don-chart-test"
    out = kubectl_run(kubectl, chart_apiserver, "create", "namespace", namespace)
    assert out.returncode == 0, out.stderr
    # What kube-controller-manager would do (this control plane runs none): the helm test pod
    # uses the namespace's default ServiceAccount.
    out = kubectl_run(kubectl, chart_apiserver, "create", "serviceaccount", "default", "-n", namespace)
    assert out.returncode == 0, out.stderr
    # The chart's own CRDs first, as `helm install` does (the operator's ModelRollouts need them).
    out = kubectl_run(kubectl, chart_apiserver, "apply", "-f", str(CHART / "crds"))
    assert out.returncode == 0, out.stderr
    common = ("--set", "serving.engine=deployment", "--set", "training.job.enabled=true",
              "--set", "training.cronJob.enabled=true", "--set", "backup.enabled=true",
              "--set", "backup.to=/mnt/backup", "--set", "backup.targetClaim=don-backup")
    # With the operator, traffic is its own (ModelRollouts, no HPA); without it, manual canaries.
    for values, expected in (
            (("--set", "operator.enabled=true"),
             ("deployment.apps/don-rf-canary", "cronjob.batch/don-don-predictor-backup",
              "poddisruptionbudget.policy/don-rf", "modelrollout.rollouts.don-predictor.io/don-rf",
              "clusterrole.rbac.authorization.k8s.io/don-don-predictor-operator")),
            (canary("rf", 2, 25),
             ("deployment.apps/don-rf-canary", "deployment.apps/don-rf",
              "horizontalpodautoscaler.autoscaling/don-tf"))):
        rendered = run_helm("template", "don", str(CHART), "--namespace", namespace, *K120,
                            *common, *values).stdout
        out = kubectl_run(kubectl, chart_apiserver, "apply", "--dry-run=server", "-n", namespace,
                          "-f", "-", stdin=rendered)
        assert out.returncode == 0, out.stderr
        for name in expected:
            assert f"{name} created (server dry run)" in out.stdout, out.stdout


@pytest.mark.chart
@pytest.mark.apiserver
def test_chart_crds_install_on_the_api_server(kubectl, chart_apiserver):
    """`helm install` creates crds/ first; the real API server must accept them as they are."""
    out = kubectl_run(kubectl, chart_apiserver, "apply", "--dry-run=server", "-f", str(CHART / "crds"))
    assert out.returncode == 0, out.stderr
