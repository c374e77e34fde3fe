"""`python -m ops rollout` on a real kube-apiserver: start, status, steer and a refusal, through
ops/rollout/client.py (the calls the console's Rollouts page makes too)."""
from __future__ import annotations

import pytest

from ops.__main__ import main
from ops.rollout.client import ACTIONS
from tests.fixtures_cluster import install_crds
from tests.fixtures_chart import CHART

pytestmark = pytest.mark.apiserver


def test_start_status_steer_and_a_refusal(kube_apiserver, capsys):
    install_crds(kube_apiserver, [CHART / "crds" / "modelrollouts.yaml"])
    base = ["rollout", "--kubeconfig", str(kube_apiserver.kubeconfig), "-n", "default"]

    def cli(*args: str) -> tuple[int, str]:
        code = main([*base, *args])
        return code, capsys.readouterr().out

    assert cli("start", "--target", "don-rf", "--version", "2", "--steps", "10,100") == \
        (0, "modelrollout don-rf-v2 created in default\n")
    code, out = cli("status")
    assert code == 0 and out.splitlines()[1].split()[:5] == ["don-rf-v2", "don-rf", "Standard", "Pending", "-"]
    collection = "/apis/rollouts.don-predictor.io/v1alpha1/namespaces/default/modelrollouts"
    for action in ACTIONS:
        assert cli(action, "don-rf-v2") == (0, f"modelrollout don-rf-v2: {action} requested\n")
        _, current = kube_apiserver.request("GET", f"{collection}/don-rf-v2")
        assert {k: current["spec"][k] for k in ACTIONS[action]["spec"]} == ACTIONS[action]["spec"]
    code, out = cli("status", "don-rf-v2")
    assert code == 0 and out.startswith("NAME") and "candidate: -" in out
    code, out = cli("pause", "don-tf-v9")
    assert code == 1 and out.startswith("error: 404 ") and "not found" in out
