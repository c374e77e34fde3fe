"""The chart's ModelRollout steps (templates/_rollout.tpl): empty `operator.rollout.steps` is the
automatic choice — the shadow step first when the release runs the recorder (the lab gate pairs
its records with the lab's results; the chart points labGate.recorderUrl at it), the canary steps
alone without it, on every engine; an explicit list is used as given. The canary numbers are
don_core.contract.ROLLOUT_DEFAULTS' (values.yaml's canarySteps, written by
scripts/gen_rollout_defaults.py)."""
from __future__ import annotations

import pytest
import yaml

from don_core.contract import ROLLOUT_DEFAULTS, SHADOW_STEP
from ops.rollout.spec import parse_spec
from tests.fixtures_chart import CHART, KSERVE, K130, Case, render_case, run_helm

pytestmark = pytest.mark.chart

OPERATOR = ("--set", "operator.enabled=true")
RECORDER = ("--set", "recorder.enabled=true", "--set", "recorder.token.value=tok")
ENGINES = {"deployment": K130 + ("--set", "serving.engine=deployment"),
           "kserve": KSERVE + K130 + ("--set", "kserve.deploymentMode=Standard")}
CANARY = ROLLOUT_DEFAULTS["steps"]
RECORDER_URL = "http://don-don-predictor-recorder.don.svc.cluster.local:8080"


def _rollouts(name: str, *args: str) -> list[dict]:
    rollouts = render_case(Case(name, OPERATOR + args)).of_kind("ModelRollout")
    assert rollouts, f"{name}: no ModelRollout rendered"
    return rollouts


def _crd_validator():
    import jsonschema
    crd = yaml.safe_load((CHART / "crds" / "modelrollouts.yaml").read_text())
    return jsonschema.Draft7Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_with_the_recorder_the_rollouts_begin_with_the_shadow_step(engine):
    validator = _crd_validator()
    for rollout in _rollouts(f"shadow-first-{engine}", *ENGINES[engine], *RECORDER):
        spec = rollout["spec"]
        assert spec["steps"] == [SHADOW_STEP, *CANARY], spec["steps"]
        assert spec["labGate"]["recorderUrl"] == RECORDER_URL
        assert spec["shadow"]["onNoLabels"] == "RollBack"   # no lab results: the stable stays
        assert not list(validator.iter_errors(rollout)), list(validator.iter_errors(rollout))
        if engine == "deployment":   # the operator takes it as it is
            parsed = parse_spec(spec)
            assert parsed.shadow is not None and list(parsed.steps) == CANARY


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_without_the_recorder_the_rollouts_run_the_canary_steps_alone(engine):
    for rollout in _rollouts(f"canary-only-{engine}", *ENGINES[engine]):
        spec = rollout["spec"]
        assert spec["steps"] == CANARY and "recorderUrl" not in spec["labGate"], spec
        assert parse_spec(spec).shadow is None


def test_the_recorder_url_follows_records_url_on_a_cluster_without_dns():
    [*_, rollout] = _rollouts("records-url", *ENGINES["deployment"], *RECORDER,
                              "--set", "recorder.recordsUrl=http://10.0.0.7:8080/")
    assert rollout["spec"]["labGate"]["recorderUrl"] == "http://10.0.0.7:8080"


def test_explicit_steps_are_used_as_given():
    for rollout in _rollouts("explicit-no-shadow", *ENGINES["deployment"], *RECORDER,
                             "--set-json", "operator.rollout.steps=[10,100]"):
        assert rollout["spec"]["steps"] == [10, 100]
    for rollout in _rollouts("explicit-shadow", *ENGINES["deployment"], *RECORDER,
                             "--set-json", 'operator.rollout.steps=["shadow",50,100]'):
        assert rollout["spec"]["steps"] == [SHADOW_STEP, 50, 100]
    # the automatic choice takes other canary steps too
    for rollout in _rollouts("auto-other-canary", *ENGINES["deployment"], *RECORDER,
                             "--set-json", "operator.rollout.canarySteps=[50,100]"):
        assert rollout["spec"]["steps"] == [SHADOW_STEP, 50, 100]


def test_an_explicit_shadow_step_without_the_recorder_is_refused():
    failed = run_helm("template", "don", str(CHART), *OPERATOR, *ENGINES["deployment"],
                      "--set-json", 'operator.rollout.steps=["shadow",50,100]', check=False)
    assert failed.returncode != 0
    assert "operator.rollout.steps begins with the shadow step" in failed.stderr
    assert "set recorder.enabled=true" in failed.stderr


def test_the_schema_refuses_a_shadow_among_the_canary_steps():
    failed = run_helm("template", "don", str(CHART), *OPERATOR, *RECORDER,
                      "--set-json", 'operator.rollout.canarySteps=["shadow",100]', check=False)
    assert failed.returncode != 0 and "canarySteps" in failed.stderr, failed.stderr
