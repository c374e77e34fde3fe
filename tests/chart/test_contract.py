"""The chart's templates cannot import don_core.contract: what they write is checked against it
here, in every case of the render matrix (storage URIs, the version env and label the operator
reads and rewrites, the track label, the header the helm test reads)."""
from __future__ import annotations

import pytest

from don_core import contract
from tests.fixtures_chart import MATRIX

pytestmark = pytest.mark.chart
CASES = [c.name for c in MATRIX]


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def _predictors(render) -> list[tuple[str, dict, dict]]:
    """(where, predictor, its model container) for every InferenceService predictor and canary,
    including those the operator creates from a ModelRollout's spec.inferenceService."""
    found = []
    isvcs = render.of_kind("InferenceService") + [
        dict(r["spec"]["inferenceService"], metadata={"name": r["metadata"]["name"]})
        for r in render.of_kind("ModelRollout") if r["spec"].get("inferenceService")]
    for isvc in isvcs:
        spec = isvc["spec"]
        parts = [("predictor", spec["predictor"])] + [(f"canary[{i}]", c["predictor"])
                                                      for i, c in enumerate(spec.get("canary") or [])]
        for where, predictor in parts:
            found.append((f"{isvc['metadata']['name']}.{where}", predictor, predictor["model"]))
    return found


@pytest.mark.parametrize("case", CASES)
def test_served_version_is_one_fact_in_contract_form(renders, case):
    """storageUri `<root>/<model>/<N>`, the version env and the version label name the same N."""
    render = renders[case]
    predictors = _predictors(render)
    deployments = [d for d in render.of_kind("Deployment")
                   if any(contract.MODEL_VERSION_ENV in _env(c)
                          for c in d["spec"]["template"]["spec"]["containers"])]
    assert predictors or deployments, f"{case}: no model server rendered"
    for where, predictor, container in predictors:
        _, model, version = contract.parse_storage_uri(container["storageUri"])
        assert _env(container)[contract.MODEL_VERSION_ENV] == str(version), where
        assert predictor["labels"][contract.MODEL_VERSION_LABEL] == str(version), where
    for deployment in deployments:
        template = deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        container = next(c for c in template["spec"]["containers"] if contract.MODEL_VERSION_ENV in _env(c))
        version = _env(container)[contract.MODEL_VERSION_ENV]
        assert version.isdigit() and labels[contract.MODEL_VERSION_LABEL] == version, deployment["metadata"]["name"]
        assert labels[contract.TRACK_LABEL] in ("stable", "canary")
        assert deployment["spec"]["selector"]["matchLabels"][contract.TRACK_LABEL] == labels[contract.TRACK_LABEL]


def test_helm_test_reads_the_contracts_version_header(renders):
    hooks = [d for d in renders["defaults"].docs if "helm.sh/hook" in (d["metadata"].get("annotations") or {})]
    assert hooks and any(contract.VERSION_HEADER in str(d) for d in hooks)
