"""manifests/ is the chart rendered with defaults, kept in sync, and accepted by kubectl and a real
API server."""
from __future__ import annotations

import json
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
             ("deployment.apps/don-don-predictor-rf-canary", "cronjob.batch/don-don-predictor-backup",
              "poddisruptionbudget.policy/don-don-predictor-rf", "modelrollout.rollouts.don-predictor.io/don-don-predictor-rf",
              "clusterrole.rbac.authorization.k8s.io/don-don-predictor-operator")),
            (canary("rf", 2, 25),
             ("deployment.apps/don-don-predictor-rf-canary", "deployment.apps/don-don-predictor-rf",
              "horizontalpodautoscaler.autoscaling/don-don-predictor-tf"))):
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


@pytest.mark.chart
@pytest.mark.apiserver
def test_two_releases_install_into_one_namespace(helm, kubectl, chart_apiserver):
    """Object names carry the release (`fullname`): two `helm install`s into one namespace on the
    real API server both succeed (Helm refuses to adopt an object another release owns), and each
    release's Services select only its own pods."""
    namespace = "don-two-releases"
    out = kubectl_run(kubectl, chart_apiserver, "create", "namespace", namespace)
    assert out.returncode == 0, out.stderr
    # One release per engine: KServe's objects (its CRDs are installed) and the plain Deployments
    # with a manual canary, the operator, training, backup and the otel collector.
    releases = {
        "alpha": (),
        "beta": ("--set", "serving.engine=deployment", "--set", "operator.enabled=true",
                 "--set", "training.job.enabled=true", "--set", "training.cronJob.enabled=true",
                 "--set", "tracing.collector.enabled=true", "--set", "backup.enabled=true",
                 "--set", "backup.to=/mnt/backup", "--set", "backup.targetClaim=don-backup",
                 "--set", "apiToken.enabled=true", "--set", "apiToken.value=t0ken"),
    }
    for release, values in releases.items():
        out = subprocess.run([helm, "install", release, str(CHART), "--namespace", namespace, *values],
                             capture_output=True, text=True, timeout=180, env=chart_apiserver.env())
        assert out.returncode == 0, f"helm install {release}: {out.stderr}"
    out = kubectl_run(kubectl, chart_apiserver, "get", "all,inferenceservices,servingruntimes,modelrollouts,pvc,"
                      "networkpolicies,secrets,serviceaccounts", "-n", namespace, "-o", "json")
    assert out.returncode == 0, out.stderr
    objects = json.loads(out.stdout)["items"]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for kind, name in (("InferenceService", "alpha-don-predictor-rf"), ("ServingRuntime", "alpha-don-predictor-model-server"),
                       ("PersistentVolumeClaim", "alpha-don-predictor-model-store"),
                       ("PersistentVolumeClaim", "beta-don-predictor-model-store"),
                       ("Deployment", "beta-don-predictor-rf-canary"), ("Service", "beta-don-predictor-rf-stable"),
                       ("ModelRollout", "beta-don-predictor-tf"), ("Secret", "beta-don-predictor-api-token")):
        assert (kind, name) in names, f"{kind} {name} missing: {sorted(names)}"
    for obj in objects:
        release = obj["metadata"].get("annotations", {}).get("meta.helm.sh/release-name")
        if release:
            assert obj["metadata"]["name"].startswith(f"{release}-"), (obj["kind"], obj["metadata"]["name"])
    for obj in objects:
        if obj["kind"] == "Service":
            release = obj["metadata"]["annotations"]["meta.helm.sh/release-name"]
            assert obj["spec"]["selector"]["app.kubernetes.io/instance"] == release
    rollout = next(o for o in objects if o["kind"] == "ModelRollout" and o["metadata"]["name"].endswith("-rf"))
    assert rollout["spec"]["target"] == "beta-don-predictor-rf" and rollout["spec"]["endpoints"]["modelName"] == "don-rf"
    out = subprocess.run([helm, "list", "--namespace", namespace, "-o", "json"], capture_output=True, text=True,
                         timeout=60, env=chart_apiserver.env())
    assert sorted((r["name"], r["status"]) for r in json.loads(out.stdout)) == [("alpha", "deployed"),
                                                                                ("beta", "deployed")]
