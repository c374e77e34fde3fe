"""helm lint --strict, and values.schema.json turning bad values away with a readable message."""
from __future__ import annotations

import pytest

from tests.fixtures_chart import CHART, run_helm

pytestmark = pytest.mark.chart


@pytest.mark.parametrize("args", [
    (),
    ("--set", "serving.engine=deployment", "--set", "models.rf.canary.version=2"),
    ("--set", "kserve.deploymentMode=Standard", "--set", "modelStore.type=s3",
     "--set", "modelStore.s3.existingSecret=s3", "--set", "operator.enabled=true",
     "--set", "tracing.collector.enabled=true"),
], ids=["defaults", "deployment-canary", "standard-s3-operator"])
def test_helm_lint_strict(helm, args):
    out = run_helm("lint", "--strict", str(CHART), *args, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("args, message", [
    (("--set", "serving.engine=knative"), "at '/serving/engine': value must be one of 'kserve', 'deployment'"),
    (("--set", "kserve.deploymentMode=RawDeployment"), "at '/kserve/deploymentMode': value must be one of"),
    (("--set", "modelStore.type=gcs"), "at '/modelStore/type': value must be one of 'pvc', 's3'"),
    (("--set", "models.rf.version=0"), "at '/models/rf/version': minimum: got 0, want 1"),
    (("--set", "models.tf.canary.version=2", "--set", "models.tf.canary.trafficPercent=100"),
     "at '/models/tf/canary/trafficPercent': maximum: got 100, want 99"),
    (("--set-string", "models.rf.version=latest"), "at '/models/rf/version'"),
    (("--set", "serving.engin=kserve"), "at '/serving': additional properties 'engin' not allowed"),
    (("--set", "serving.resources.limits=null"), "at '/serving/resources': missing property 'limits'"),
    (("--set", "operator.replicas=2"), "at '/operator/replicas': maximum: got 2, want 1"),
    (("--set", "modelStore.s3.endpoint=https://minio:9000"), "at '/modelStore/s3/endpoint'"),
    (("--set", "podSecurity.runAsUser=0"), "at '/podSecurity/runAsUser': minimum: got 0, want 1"),
    (("--set", "training.acceptRelabel=yes"), "at '/training/acceptRelabel': got string, want boolean"),
    (("--set", "training.referenceFraction=0.7"), "at '/training/referenceFraction': 'oneOf' failed"),
    (("--set-json", "training.referenceFraction=-1"), "at '/training/referenceFraction': 'oneOf' failed"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_schema_rejects_bad_values_with_a_readable_message(helm, args, message):
    out = run_helm("template", "don", str(CHART), *args, check=False)
    assert out.returncode != 0, f"{args} was accepted"
    assert "values don't meet the specifications of the schema" in out.stderr
    assert message in out.stderr, out.stderr


SHADOW_ON_KSERVE = ("--set", "operator.enabled=true", "--set", "recorder.enabled=true", "--set",
                    "recorder.token.value=t", "--set-json", 'operator.rollout.steps=["shadow",50,100]')


@pytest.mark.parametrize("args, message", [
    (("--set", "modelStore.type=s3"), "modelStore.type=s3 needs modelStore.s3.existingSecret"),
    (("--set", "apiToken.enabled=true"), "apiToken.enabled=true needs apiToken.existingSecret"),
    (("--set", "backup.enabled=true"), "backup.enabled=true needs backup.to"),
    (("--set", "modelStore.type=s3", "--set", "modelStore.s3.existingSecret=s3", "--set", "training.job.enabled=true"),
     "training.data must be s3://bucket/key (or synthetic[:ROWS]) when modelStore.type=s3"),
    (("--set", "backup.enabled=true", "--set", "backup.to=/mnt/backup"), "backup.to is a path: set backup.targetClaim"),
    (SHADOW_ON_KSERVE + ("--set", "operator.rollout.shadow.watch=72h"),
     "operator.rollout.shadow.watch needs serving.engine=deployment"),
    (SHADOW_ON_KSERVE[:-2] + ("--set", "operator.rollout.shadow.watch=72h"),  # the automatic steps
     "operator.rollout.shadow.watch needs serving.engine=deployment"),
])
def test_incomplete_values_fail_with_a_message(helm, args, message):
    out = run_helm("template", "don", str(CHART), *args, check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_a_shadow_step_renders_on_kserve_without_a_watch(helm):
    out = run_helm("template", "don", str(CHART), *SHADOW_ON_KSERVE, "--set", "operator.rollout.shadow.watch=0s")
    assert "steps: [\"shadow\",50,100]" in out.stdout and "mode: Knative" in out.stdout


def test_chart_admits_the_local_1_20_test_cluster(helm):
    out = run_helm("template", "don", str(CHART), "--kube-version", "1.20.2", "--set", "serving.engine=deployment")
    assert "kind: Deployment" in out.stdout
    too_old = run_helm("template", "don", str(CHART), "--kube-version", "1.19.0", check=False)
    assert too_old.returncode != 0 and "kubeVersion" in too_old.stderr
