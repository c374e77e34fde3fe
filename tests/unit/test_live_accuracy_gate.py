"""The optional live-accuracy gate of ModelRollout analysis (ops/rollout/live_accuracy.py)."""
import yaml

from ops.recorder import accuracy
from don_core.contract import LIVE_ACCURACY_DEFAULTS
from ops.rollout import analysis, live_accuracy
from ops.rollout.spec import LiveAccuracySpec
from tests.unit.test_operator_logic import crd_spec_schema


def _entry(version, truth, pred, window="7d"):
    return {"model": "don", "version": version, "window": window, **accuracy.figures(truth, pred)}


def test_crd_defaults_match_the_gate_defaults():
    props = crd_spec_schema()["properties"]["analysis"]["properties"]["liveAccuracy"]["properties"]
    assert {k: v["default"] for k, v in props.items() if "default" in v} == LIVE_ACCURACY_DEFAULTS
    assert yaml.safe_dump(props)  # plain data


def test_gate_fails_a_canary_that_accepts_more_contaminated_lots():
    truth = [2000.0] * 10 + [100.0] * 10
    good = [2500.0] * 9 + [500.0] + [100.0] * 10     # accepts 1 of 10 contaminated
    bad = [2500.0] * 6 + [500.0] * 4 + [100.0] * 10  # accepts 4 of 10
    report = {"results": [_entry(1, truth, good), _entry(2, truth, bad), _entry(2, truth[:2], bad[:2], "1d")]}
    settings = {"recorderUrl": "http://r", "minMatched": 20}
    check = live_accuracy.judge(LiveAccuracySpec.parse(settings), report, "don", 1, 2)
    assert check["result"] == analysis.FAIL and abs(check["value"] - 0.3) < 1e-9
    looser = LiveAccuracySpec.parse({**settings, "maxFalseAcceptIncrease": 0.31})
    assert live_accuracy.judge(looser, report, "don", 1, 2)["result"] == analysis.PASS
    # Too few matched samples: not applied yet (lab results come days later), not a hold.
    early = live_accuracy.judge(LiveAccuracySpec.parse({**settings, "minMatched": 21}), report, "don", 1, 2)
    assert early["result"] == analysis.PASS and "not applied yet" in early["note"]
    # Merged into a judged analysis, a failing live check fails the verdict.
    passed = {"verdict": analysis.PASS, "checks": [], "summary": "", "canary": {}, "stable": {}}
    merged = analysis.add_checks(passed, [check])
    assert merged["verdict"] == analysis.FAIL and "liveFalseAcceptIncrease" in merged["summary"]


def test_unreadable_recorder_is_inconclusive():
    check = live_accuracy.check(LiveAccuracySpec.parse({"recorderUrl": "http://127.0.0.1:9"}), "don", 1, 2, timeout=2)
    assert check["result"] == analysis.INCONCLUSIVE and "recorder unreadable" in check["note"]
