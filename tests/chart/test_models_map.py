"""`models` is a map the templates iterate over: a third model is a values change only. The matrix
cases `third-model-*` (tests/fixtures_chart.py) also go through every generic render check
(Kubernetes and KServe schemas, restricted pod security, labels, NetworkPolicy coverage)."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.chart.test_render import selects
from tests.fixtures_chart import CHART, THIRD_MODEL, render_notes, run_helm

pytestmark = pytest.mark.chart


def test_no_template_names_the_models():
    for path in sorted((CHART / "templates").rglob("*")):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r'list\s+"rf"|Values\.models\.(rf|tf)\b', text), \
                f"{path.name} names the default models instead of iterating over .Values.models"


def test_third_model_gets_its_own_workloads_services_and_route(renders):
    render = renders["third-model-deployment-gateway"]
    for name in ("don-don-predictor-gbr", "don-don-predictor-gbr-canary"):
        deployment = render.named("Deployment", name)
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert "--model_name=don-gbr" in container["args"]
    assert render.named("Deployment", "don-don-predictor-gbr-canary")["metadata"]["labels"]["don-predictor.io/model-version"] == "2"
    for name in ("don-don-predictor-gbr", "don-don-predictor-gbr-stable", "don-don-predictor-gbr-canary"):
        assert render.named("Service", name)["spec"]["selector"]["don-predictor.io/model"] == "don-gbr"
    route = render.named("HTTPRoute", "don-don-predictor-gbr")
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"don-don-predictor-gbr-stable": 70, "don-don-predictor-gbr-canary": 30}
    assert {h["spec"]["scaleTargetRef"]["name"] for h in render.of_kind("HorizontalPodAutoscaler")} >= \
        {"don-don-predictor-gbr", "don-don-predictor-gbr-canary"}
    render.named("PodDisruptionBudget", "don-don-predictor-gbr")
    # The predictors' NetworkPolicy admits the new model's pods like the others'.
    pods = render.named("Deployment", "don-don-predictor-gbr")["spec"]["template"]["metadata"]["labels"]
    policies = [p["metadata"]["name"] for p in render.of_kind("NetworkPolicy")
                if selects(p["spec"]["podSelector"], pods) and not p["metadata"]["name"].endswith("-default-deny")]
    assert policies and all(p.endswith("-predictor") for p in policies), policies
    # The defaults are still there, untouched by the addition.
    assert {d["metadata"]["name"] for d in render.of_kind("Deployment")} >= {"don-don-predictor-rf", "don-don-predictor-tf"}


def test_third_model_rollout_training_and_helm_test(renders, tmp_path):
    render = renders["third-model-knative-operator"]
    rollout = render.named("ModelRollout", "don-don-predictor-gbr")
    assert rollout["spec"]["candidate"] == {"version": 3}
    assert rollout["spec"]["endpoints"]["modelName"] == "don-gbr"
    predictor = rollout["spec"]["inferenceService"]["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "pvc://don-don-predictor-model-store/don-gbr/3"
    assert predictor["model"]["modelFormat"]["name"] == "don-sklearn"
    assert {r["metadata"]["name"] for r in render.of_kind("ModelRollout")} == \
        {"don-don-predictor-rf", "don-don-predictor-tf", "don-don-predictor-gbr"}
    # training follows `models`: the new entry is trained without naming it in training.models
    jobs = {j["metadata"]["labels"]["don-predictor.io/model"] for j in render.of_kind("Job")}
    assert jobs == {"don-rf", "don-tf", "don-gbr"}
    [pod] = render.of_kind("Pod")
    targets = json.loads({e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}["DON_MODELS"])
    assert set(targets) == {"don-rf", "don-tf", "don-gbr"}
    notes = render_notes(tmp_path, *THIRD_MODEL)
    assert "don-gbr (sklearn): v1" in notes


def test_training_models_picks_the_models_to_train(helm):
    out = run_helm("template", "don", str(CHART), "--set", "training.job.enabled=true",
                   "--set", "training.models={tf}")
    jobs = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Job"]
    assert [j["metadata"]["labels"]["don-predictor.io/model"] for j in jobs] == ["don-tf"]


def test_training_a_key_that_is_not_a_model_is_refused(helm):
    out = run_helm("template", "don", str(CHART), "--set", "training.job.enabled=true",
                   "--set", "training.models={rf,gbr}", check=False)
    assert out.returncode != 0
    assert 'training.models names "gbr", which is not a key of models (rf, tf)' in out.stderr


@pytest.mark.parametrize("key", ["RF", "rf_2", "a-much-too-long-model-key"])
def test_model_keys_must_be_short_dns_labels(helm, key):
    out = run_helm("template", "don", str(CHART), "--set", f"models.{key}.name=don-x",
                   "--set", f"models.{key}.family=sklearn", "--set", f"models.{key}.version=1",
                   "--set", f"models.{key}.canary.trafficPercent=10", check=False)
    assert out.returncode != 0 and f"invalid propertyName '{key}'" in out.stderr, out.stderr


def test_object_names_fit_what_kserve_and_knative_derive(helm):
    """The longest release name and model key: a model's objects and the Services stay DNS labels, and an
    InferenceService name leaves room for Knative's `latest-<name>-predictor` (63 characters)."""
    release, key = "r" * 53, "k" * 15
    out = run_helm("template", release, str(CHART), "--set", f"models.{key}.name=don-long",
                   "--set", f"models.{key}.family=sklearn", "--set", f"models.{key}.version=1",
                   "--set", f"models.{key}.canary.trafficPercent=10")
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    isvcs = [d["metadata"]["name"] for d in docs if d["kind"] == "InferenceService"]
    assert len(isvcs) == 3 and all(len(f"latest-{n}-predictor") <= 63 for n in isvcs), isvcs
    assert f"{'r' * 30}-{key}" in isvcs
    models = [d["metadata"]["name"] for d in docs
              if d["kind"] == "Service" or "don-predictor.io/model" in d["metadata"].get("labels", {})]
    assert models and all(len(name) <= 63 for name in models), models
