"""The contract constants (don_core/contract.py) against the places that cannot import them (both
copies of the ModelRollout CRD) and against the code that must agree with them."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from don_core import contract
from don_core.store import LocalStore, S3Store

REPO = Path(__file__).resolve().parents[2]
CRD_COPIES = {"chart": REPO / "charts" / "don-predictor" / "crds" / "modelrollouts.yaml",
              "manifests": REPO / "manifests" / "10-crds.yaml"}


def _crd_spec(path: Path) -> dict:
    crds = [d for d in yaml.safe_load_all(path.read_text())
            if d and d.get("kind") == "CustomResourceDefinition"
            and d["metadata"]["name"] == "modelrollouts.rollouts.don-predictor.io"]
    assert len(crds) == 1, path
    return crds[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _defaults(props: dict) -> dict:
    return {key: value["default"] for key, value in props.items() if "default" in value}


@pytest.mark.parametrize("copy", sorted(CRD_COPIES))
def test_crd_defaults_are_the_contracts(copy):
    """Every default of the CRD (chart copy and the rendered manifests/ copy) is the contract's,
    and every contract default is in the CRD."""
    props = _crd_spec(CRD_COPIES[copy])["properties"]
    for key, value in contract.ROLLOUT_DEFAULTS.items():
        if isinstance(value, dict):
            assert _defaults(props[key]["properties"]) == value, (copy, key)
        else:
            assert props[key]["default"] == value, (copy, key)
    assert set(_defaults(props)) <= set(contract.ROLLOUT_DEFAULTS), copy
    live = props["analysis"]["properties"]["liveAccuracy"]["properties"]
    assert _defaults(live) == contract.LIVE_ACCURACY_DEFAULTS, copy


@pytest.mark.parametrize("root", ["/srv/store", "/srv/store/", "s3://models", "s3://models/team/a",
                                  "pvc://don-model-store", "store"])
def test_storage_uri_round_trip(root):
    uri = contract.storage_uri(root, "don-rf", 12)
    assert uri == f"{root.rstrip('/')}/don-rf/12"
    assert contract.parse_storage_uri(uri) == (root.rstrip("/"), "don-rf", 12)
    assert contract.parse_storage_uri(uri + "/") == (root.rstrip("/"), "don-rf", 12)


@pytest.mark.parametrize("uri", ["", "don-rf", "/srv/store/don-rf", "/srv/store/don-rf/latest",
                                 "s3://models/don-rf/1.5", "/don-rf/1"])
def test_storage_uri_parse_names_what_is_wrong(uri):
    with pytest.raises(ValueError, match="does not end in <model>/<version>"):
        contract.parse_storage_uri(uri)


def test_stores_publish_at_the_contracts_uri(tmp_path):
    """The store writes where the contract says a version is (the operator and the chart build
    the same URIs from root, model and version)."""
    local = LocalStore(str(tmp_path / "s"))
    assert contract.parse_storage_uri(local.uri("don-rf", 3)) == (str(tmp_path / "s"), "don-rf", 3)
    for root, bucket_root in (("s3://models", "s3://models"), ("s3://models/team/", "s3://models/team")):
        assert S3Store(root).uri("don-tf", 7) == contract.storage_uri(bucket_root, "don-tf", 7)


def test_server_metrics_carry_the_contracts_names():
    """The operator's Direct source and the alerts query these names; the server exports them."""
    import model_server.metrics  # noqa: F401  (registers the server's metrics)

    names = {metric.name: metric for metric in REGISTRY.collect()}
    requests = names[contract.REQUESTS_METRIC]
    latency = names[contract.LATENCY_METRIC]
    assert requests.type == "counter" and latency.type == "histogram"
    from model_server.metrics import LATENCY, REQUESTS
    assert REQUESTS._labelnames == (contract.MODEL_LABEL, contract.VERSION_LABEL,
                                    contract.PROTOCOL_LABEL, contract.OUTCOME_LABEL)
    assert LATENCY._labelnames == (contract.MODEL_LABEL, contract.VERSION_LABEL, contract.PROTOCOL_LABEL)
    assert contract.ROLLOUT_DEFAULTS["metrics"] == {
        "source": "Direct", "requestsMetric": contract.REQUESTS_METRIC + "_total",
        "latencyMetric": contract.LATENCY_METRIC}


def test_one_onnx_tolerance_for_training_and_serving():
    """Training checks its ONNX copy with the rule the server applies before trusting it."""
    import inspect

    from don_core.export_check import agreement
    from model_server.__main__ import build_parser
    from model_server.model import ServeOptions

    defaults = inspect.signature(agreement).parameters
    assert (defaults["rtol"].default, defaults["atol"].default) == (contract.ONNX_RTOL, contract.ONNX_ATOL_PPB)
    options = ServeOptions()
    assert (options.onnx_rtol, options.onnx_atol) == (contract.ONNX_RTOL, contract.ONNX_ATOL_PPB)
    assert options.max_batch_rows == contract.MAX_BATCH_ROWS
    args = build_parser().parse_args([])
    assert (args.onnx_rtol, args.onnx_atol) == (contract.ONNX_RTOL, contract.ONNX_ATOL_PPB)
    assert args.max_batch_rows == contract.MAX_BATCH_ROWS
