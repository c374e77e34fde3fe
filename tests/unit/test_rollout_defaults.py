"""The ModelRollout defaults are written from don_core.contract into the CRD and the chart's values
(scripts/gen_rollout_defaults.py): the files are current, and the generator fills what it must."""
from __future__ import annotations

import yaml

from scripts import gen_rollout_defaults as gen


def test_crd_and_values_are_generated_from_the_contract():
    assert gen.stale() == [], "run python -m scripts.gen_rollout_defaults"


def _spec_props(text: str) -> dict:
    return yaml.safe_load(text)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


def test_a_changed_or_new_default_is_written_and_the_layout_kept():
    crd, values = gen.CRD.read_text(), gen.VALUES.read_text()
    defaults = gen.contract_defaults()
    defaults["analysis"]["minSuccessRate"] = 0.95          # a flow mapping
    defaults["steps"] = [5, 100]                           # a block mapping's default: line
    defaults["action"] = "Abort"                           # a property that has no default yet
    defaults["analysis"]["liveAccuracy"]["window"] = "30d"
    defaults["notInTheCrd"] = 3                            # a field the CRD lacks yet: left alone
    defaults["shadow"]["percent"] = 50                     # a flow mapping whose text has an apostrophe
    written = gen.crd_text(crd, defaults)
    props = _spec_props(written)
    assert props["shadow"]["properties"]["percent"]["default"] == 50
    assert all(line.count("default:") <= 1 for line in written.splitlines()), "a default written twice"
    assert props["analysis"]["properties"]["minSuccessRate"]["default"] == 0.95
    assert props["steps"]["default"] == [5, 100] and props["action"]["default"] == "Abort"
    assert props["analysis"]["properties"]["liveAccuracy"]["properties"]["window"]["default"] == "30d"
    assert "notInTheCrd" not in props
    changed = gen.values_text(values, defaults)
    rollout = yaml.safe_load(changed)["operator"]["rollout"]
    assert rollout["analysis"]["minSuccessRate"] == 0.95 and rollout["canarySteps"] == [5, 100]
    assert rollout["steps"] == []                          # the chart's automatic steps stay empty
    assert "action" not in rollout                         # values keep their own set of keys
    [before] = [line for line in values.splitlines() if line.lstrip().startswith("canarySteps:")]
    [after] = [line for line in changed.splitlines() if line.lstrip().startswith("canarySteps: [5, 100] ")]
    assert after.index("# candidate traffic percent") == before.index("#")  # the comment keeps its column
    assert len(changed.splitlines()) == len(values.splitlines())
