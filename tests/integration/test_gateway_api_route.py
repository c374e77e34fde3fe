"""The operator's RequestMirror filter on the chart's HTTPRoute against Gateway API's real HTTPRoute
CRD (standard channel, v1.3.0 or later; tests/fixtures_cluster.py HTTPROUTE_CRD) served by the test
kube-apiserver (Kubernetes 1.20).

The CRD's structural schema checks the filter's field names, types and bounds, and applies its
defaults; an unknown field is pruned, not refused, so each route is read back and compared with
what was written. This server cannot apply a `default: ""` (tests/cluster/crds.py drops them), so
that the filter spells out every default of the schema is checked on the schema itself. The CRD's CEL rules (x-kubernetes-validations: not both percent and fraction,
numerator <= denominator, a Service backendRef has a port) need Kubernetes 1.25: 1.20 accepts the
CRD and drops them, so they are NOT checked here (the filter meets them by construction:
tests/unit/test_shadow_step.py).
"""
from __future__ import annotations

import uuid

import pytest
import yaml
from kubernetes import config
from kubernetes.client.rest import ApiException

from ops.rollout.kube import Kube
from ops.rollout.shadow import mirrored_rules, request_mirror
from tests.fixtures_chart import MATRIX, render_case
from tests.fixtures_cluster import HTTPROUTE_CRD, install_crds

# deselected where the CRD is absent (tests/conftest.py): CI's ../shared has none
pytestmark = [pytest.mark.apiserver, pytest.mark.chart, pytest.mark.gateway_api_crds]
STABLE, SHADOW = "don-don-predictor-rf-stable", "don-don-predictor-rf-shadow"


@pytest.fixture(scope="module")
def gateway_api(kube_apiserver) -> tuple[Kube, str]:
    """An API client to the API server with the real HTTPRoute CRD, and a fresh namespace."""
    install_crds(kube_apiserver, [HTTPROUTE_CRD])
    kube = Kube(config.new_client_from_config(config_file=str(kube_apiserver.kubeconfig)))
    namespace = f"gw-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace({"metadata": {"name": namespace}})
    return kube, namespace


@pytest.fixture(scope="module")
def chart_route(helm) -> dict:
    """The chart's HTTPRoute of model rf (Deployment engine with the Gateway API, a 30 % canary)."""
    render = render_case(next(c for c in MATRIX if c.name == "deployment-canary-gateway"))
    return render.named("HTTPRoute", "don-don-predictor-rf")


def crd() -> dict:
    return yaml.safe_load(HTTPROUTE_CRD.read_text())


def bundle_version() -> str:
    return crd()["metadata"]["annotations"].get("gateway.networking.k8s.io/bundle-version", "?")


def defaulted(schema: dict, written: dict, at: str = "") -> list[str]:
    """The fields a server would fill in `written` from the defaults of its `schema`."""
    out = []
    for name, prop in (schema.get("properties") or {}).items():
        if name not in written:
            out += [at + name] if "default" in prop else []
        elif prop.get("type") == "object" and isinstance(written[name], dict):
            out += defaulted(prop, written[name], f"{at}{name}.")
    return out


def test_the_filter_spells_out_every_default_of_the_schema():
    """Else a server fills them in, the filter read back differs from the one written, and the
    operator writes the route (and posts an Event) on every pass."""
    for version in crd()["spec"]["versions"]:
        rules = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rules"]
        schema = rules["items"]["properties"]["filters"]["items"]["properties"]["requestMirror"]
        assert {"percent", "fraction"} <= set(schema["properties"]), f"{version['name']} of {bundle_version()}"
        for percent in (100, 25, 12.5):
            assert defaulted(schema, request_mirror(SHADOW, percent)["requestMirror"]) == [], (
                version["name"], percent)
    # what the check above sees: the group and kind of a Service backendRef are defaults
    assert defaulted(schema, {"backendRef": {"name": SHADOW, "port": 80}}) == ["backendRef.group", "backendRef.kind"]


def created(kube: Kube, ns: str, route: dict) -> dict:
    name = f"route-{uuid.uuid4().hex[:6]}"
    body = {**route, "metadata": {"name": name}}
    kube.custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", ns, "httproutes", body)
    return kube.get_route(ns, name)


def mirror_filters(route: dict) -> list[dict]:
    return [f for f in route["spec"]["rules"][0].get("filters") or [] if f["type"] == "RequestMirror"]


@pytest.mark.parametrize("percent, field", [(100, None), (25, "percent"), (12.5, "fraction")])
def test_the_operators_mirror_filter_is_accepted_and_read_back_unchanged(gateway_api, chart_route,
                                                                         percent, field):
    kube, ns = gateway_api
    route = created(kube, ns, chart_route)  # the chart's route is accepted as rendered
    name = route["metadata"]["name"]
    # what Shadow._route_mirror writes
    rules = mirrored_rules(route, STABLE, SHADOW, percent)
    kube.patch_route(ns, name, {"spec": {"rules": rules}})
    back = kube.get_route(ns, name)
    version = bundle_version()
    # unchanged: nothing pruned (a wrong field name), nothing defaulted in (the operator would
    # rewrite the route on every pass)
    assert back["spec"]["rules"] == rules, f"HTTPRoute CRD {version}"
    assert mirror_filters(back) == [request_mirror(SHADOW, percent)]
    mirror = mirror_filters(back)[0]["requestMirror"]
    assert {"percent", "fraction"} & set(mirror) == ({field} if field else set()), f"HTTPRoute CRD {version}"
    if field == "fraction":
        assert mirror["fraction"]["numerator"] / mirror["fraction"]["denominator"] == percent / 100
    elif field == "percent":
        assert mirror["percent"] == percent
    # and out again
    removed = mirrored_rules(back, STABLE, SHADOW, None)
    kube.patch_route(ns, name, {"spec": {"rules": removed}})
    after = kube.get_route(ns, name)
    assert after["spec"]["rules"] == removed and not mirror_filters(after)


def test_the_schema_prunes_an_unknown_mirror_field_and_refuses_a_wrong_type(gateway_api, chart_route):
    """What makes the read-back above a check: a misspelt field is dropped without an error, a
    percent of the wrong type or out of bounds is refused."""
    kube, ns = gateway_api
    route = created(kube, ns, chart_route)
    name = route["metadata"]["name"]

    def with_mirror(**fields) -> dict:
        rules = mirrored_rules(route, STABLE, SHADOW, 100)
        for f in rules[0]["filters"]:
            f["requestMirror"].update(fields)
        return {"spec": {"rules": rules}}

    kube.patch_route(ns, name, with_mirror(percentage=25))
    assert "percentage" not in mirror_filters(kube.get_route(ns, name))[0]["requestMirror"]
    for wrong in ({"percent": "25"}, {"percent": 150}, {"fraction": {"denominator": 100}}):
        with pytest.raises(ApiException) as refused:
            kube.patch_route(ns, name, with_mirror(**wrong))
        assert refused.value.status == 422, wrong
