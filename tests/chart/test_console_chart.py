"""The optional web console in the chart: read-only RBAC to ModelRollouts unless rollout control is
on, the same pod and container security as the rest, the API token from its Secret, deny-by-default
network rules. The matrix cases with the console on (tests/fixtures_chart.py) also go through every
generic render check (Kubernetes schemas, restricted pod security, labels, NetworkPolicy coverage)."""
from __future__ import annotations

import pytest

from tests.fixtures_chart import API_TOKEN, Case, render_case

pytestmark = pytest.mark.chart


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_console_is_off_by_default(renders):
    assert not [d for d in renders["defaults"].docs if d["metadata"]["name"].endswith("-console")]


def test_read_only_rbac_unless_rollout_control(renders):
    read_only = renders["kube-1.20-deployment"].named("Role", "don-don-predictor-console")
    assert read_only["rules"] == [{"apiGroups": ["rollouts.don-predictor.io"], "resources": ["modelrollouts"],
                                   "verbs": ["get", "list", "watch"]}]
    control = renders["deployment-s3-everything"].named("Role", "don-don-predictor-console")
    assert control["rules"][0]["verbs"] == ["get", "list", "watch", "patch"]
    binding = renders["deployment-s3-everything"].named("RoleBinding", "don-don-predictor-console")
    assert binding["subjects"][0]["name"] == "don-don-predictor-console"


@pytest.mark.parametrize("case", ["deployment-s3-everything", "knative-s3-everything", "kube-1.20-deployment"])
def test_console_pod_talks_to_every_model_with_the_token_and_the_same_security(renders, case):
    render = renders[case]
    deployment = render.named("Deployment", "don-don-predictor-console")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = _env(container)
    servers = dict(item.split("=", 1) for item in env["DON_CONSOLE_SERVERS"].split(","))
    assert {k for k in servers if "@" not in k} == {"don-rf", "don-tf"}
    assert all(u.startswith("http://") for u in servers.values())
    assert env["DON_CONSOLE_CONTROL"] == ("true" if "everything" in case else "false")
    assert pod["serviceAccountName"] == "don-don-predictor-console"
    # the same pod and container security context as the operator's
    operator = render.named("Deployment", "don-don-predictor-operator")["spec"]["template"]["spec"]
    assert pod["securityContext"] == operator["securityContext"]
    assert container["securityContext"] == operator["containers"][0]["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    if "everything" in case:
        # the API token: a file from the Secret, never a value in the pod spec
        assert env["DON_API_TOKEN_FILE"] == "/var/run/secrets/don/token"
        assert API_TOKEN not in str(deployment)
        assert any(v.get("secret") for v in pod["volumes"] if v["name"] == "api-token")
        assert env["DON_CONSOLE_STORE"].startswith("s3://") and "AWS_SECRET_ACCESS_KEY" in env
    else:
        assert env["DON_CONSOLE_STORE"] == "/mnt/store"
        [store] = [m for m in container["volumeMounts"] if m["name"] == "store"]
        assert store["readOnly"] is True
        assert env["DON_CONSOLE_RECORDER"].startswith("http://don-don-predictor-recorder.")
    service = render.named("Service", "don-don-predictor-console")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_network_rules_admit_the_console_where_it_needs_and_nowhere_else(renders):
    render = renders["kube-1.20-deployment"]
    labels = render.named("Deployment", "don-don-predictor-console")["spec"]["template"]["metadata"]["labels"]
    assert labels["don-predictor.io/client"] == "true"               # the predictors admit it
    assert labels["don-predictor.io/recorder-client"] == "true"      # the recorder admits it
    policy = render.named("NetworkPolicy", "don-don-predictor-console")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["spec"]["ingress"]
    assert ingress["from"][0]["podSelector"]["matchLabels"] == {"don-predictor.io/console-client": "true"}
    assert ingress["ports"] == [{"port": 8501, "protocol": "TCP"}]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert {53, 443, 6443, 8080} <= egress_ports


def _servers(render) -> list[tuple[str, str]]:
    [container] = render.named("Deployment", "don-don-predictor-console")["spec"]["template"]["spec"]["containers"]
    return [tuple(item.split("=", 1)) for item in _env(container)["DON_CONSOLE_SERVERS"].split(",")]


def test_console_is_given_each_models_stable_and_canary_tracks(renders):
    """The Predict page offers the tracks that answer: the chart passes the per-track Services the
    deployment engine renders (and the rollout operator's analysis calls); Knative gets the
    model's address only (its tag routes exist only during a canary)."""
    render = renders["kube-1.20-deployment"]
    assert _servers(render) == [
        ("don-rf", "http://don-don-predictor-rf.don.svc.cluster.local"),
        ("don-rf@stable", "http://don-don-predictor-rf-stable.don.svc.cluster.local"),
        ("don-rf@canary", "http://don-don-predictor-rf-canary.don.svc.cluster.local"),
        ("don-tf", "http://don-don-predictor-tf.don.svc.cluster.local"),
        ("don-tf@stable", "http://don-don-predictor-tf-stable.don.svc.cluster.local"),
        ("don-tf@canary", "http://don-don-predictor-tf-canary.don.svc.cluster.local")]
    services = {s["metadata"]["name"]: s for s in render.of_kind("Service")}
    for key, url in _servers(render):
        name = url.split("//")[1].split(".")[0]
        assert name in services, f"{key}: no Service {name}"
        if "@" in key:
            assert services[name]["spec"]["selector"]["don-predictor.io/track"] == key.split("@")[1]
    assert [k for k, _ in _servers(renders["knative-s3-everything"])] == ["don-rf", "don-tf"]
    standard = render_case(Case("standard-console", ("--set", "serving.engine=kserve", "--set",
                                                     "kserve.deploymentMode=Standard", "--set",
                                                     "console.enabled=true")))
    assert dict(_servers(standard))["don-rf@canary"] == \
        "http://don-don-predictor-rf-predictor-canary.don.svc.cluster.local"
    assert dict(_servers(standard))["don-rf@stable"] == dict(_servers(standard))["don-rf"]


def test_lab_results_upload_mounts_the_recorders_token_only_when_asked(renders):
    """The console's lab results upload writes to the recorder: its token is mounted only with
    console.labResultsUpload (whoever uploads lab results can sway a lab gate)."""
    args = ("--set", "console.enabled=true", "--set", "recorder.enabled=true", "--set", "recorder.token.value=t0k3n",
            "--set", "serving.engine=deployment")
    for upload in (False, True):
        render = render_case(Case(f"console-upload-{upload}", args + (
            "--set", f"console.labResultsUpload={str(upload).lower()}")))
        pod = render.named("Deployment", "don-don-predictor-console")["spec"]["template"]["spec"]
        env = _env(pod["containers"][0])
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert ("DON_CONSOLE_RECORDER_TOKEN_FILE" in env) is upload
        assert ("don-don-predictor-recorder-token" in secrets) is upload
        if upload:
            mount = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "records-token"]
            assert mount and mount[0]["readOnly"] is True
            assert env["DON_CONSOLE_RECORDER_TOKEN_FILE"].startswith(mount[0]["mountPath"])
