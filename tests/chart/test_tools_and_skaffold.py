"""Real helm/kubectl from the package registries, and skaffold.yaml's structure (no skaffold here)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts import k8s_tools

pytestmark = pytest.mark.chart
REPO = Path(__file__).resolve().parents[2]


def test_helm_is_the_pinned_v3(helm):
    out = subprocess.run([helm, "version", "--short"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(f"v{k8s_tools.HELM_VERSION}")
    assert Path(helm).parent.name == f"helm-{k8s_tools.HELM_VERSION}"


def test_kubectl_runs(kubectl):
    out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, check=True)
    assert '"gitVersion": "v1.' in out.stdout


@pytest.mark.parametrize("tool", ["helm", "kubectl"])
def test_cli_prints_the_path(tool):
    out = subprocess.run([sys.executable, "-m", "scripts.k8s_tools", tool], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).is_file()


def test_cli_rejects_an_unknown_tool():
    out = subprocess.run([sys.executable, "-m", "scripts.k8s_tools", "kind"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr


def test_override_must_be_executable(monkeypatch, tmp_path):
    monkeypatch.setenv("DON_HELM", str(tmp_path / "missing"))
    with pytest.raises(k8s_tools.ToolError, match="DON_HELM"):
        k8s_tools.helm_path()


def test_skaffold_builds_three_images_and_deploys_the_chart():
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    assert config["apiVersion"].startswith("skaffold/v4") and config["kind"] == "Config"
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == {"don-predictor/python-base", "don-predictor/training-job", "don-predictor/model-server",
                              "don-predictor/operator"}
    for artifact in artifacts.values():
        assert artifact["context"] == "."
        dockerfile = REPO / artifact["docker"]["dockerfile"]
        assert dockerfile.is_file(), f"skaffold.yaml names {dockerfile}, which does not exist"
        # an image FROM the shared base is built after it, with it as its BASE_IMAGE
        if "ARG BASE_IMAGE=" in dockerfile.read_text():
            assert artifact["requires"] == [{"image": "don-predictor/python-base", "alias": "BASE_IMAGE"}]
    [release] = config["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"] / "Chart.yaml").is_file()
    # Every image is wired into the chart value that names it.
    wired = release["setValueTemplates"]
    for image, key in (("model_server", "modelServer"), ("training_job", "trainingJob"), ("operator", "operator")):
        assert wired[f"images.{key}.repository"] == f"{{{{.IMAGE_REPO_don_predictor_{image}}}}}"
    values = yaml.safe_load((REPO / release["chartPath"] / "values.yaml").read_text())
    for key in ("modelServer", "trainingJob", "operator"):
        assert key in values["images"]
    [kind] = [p for p in config["profiles"] if p["name"] == "kind"]
    assert kind["build"]["local"]["push"] is False
    patched = {p["path"].rsplit("/", 1)[-1]: p["value"] for p in kind["patches"]}
    assert patched["images.pullPolicy"] == "IfNotPresent"
    assert patched["serving.engine"] in values_enum("serving", "engine")


def values_enum(*path: str) -> list[str]:
    import json
    schema = json.loads((REPO / "charts" / "don-predictor" / "values.schema.json").read_text())
    for key in path:
        schema = schema["properties"][key]
    return schema["enum"]
