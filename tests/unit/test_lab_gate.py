"""The paired lab gate (don_core.lab_gate) on synthetic pairs with fixed seeds, the benchmark's
vectorised path against it, and a smoke run of benchmarks/gates.py on the real data."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from don_core import lab_gate
from don_core.lab_gate import FAIL, FIXED, HOLD, PASS, SEQUENTIAL

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gates.py"


def lots(n: int, seed: int, stable_noise=0.5, candidate_noise=0.5):
    """Truth like the real data (many lots near zero, a long tail) and two versions' predictions
    with the given log-scale noise."""
    rng = np.random.default_rng(seed)
    truth = np.expm1(rng.uniform(0, 11, n))
    noisy = lambda s: np.clip(np.expm1(np.log1p(truth) + rng.normal(0, s, n)), 0, None)  # noqa: E731
    return noisy(stable_noise), noisy(candidate_noise), truth


def test_clearly_good_candidate_passes():
    stable, candidate, truth = lots(200, seed=1, stable_noise=0.6, candidate_noise=0.3)
    result = lab_gate.judge(stable, candidate, truth)
    assert result.verdict == PASS, result.reason
    assert result.upper <= lab_gate.DEFAULT_MARGIN and result.pairs == 200
    assert "non-inferior" in result.reason


def test_clearly_bad_candidate_fails():
    stable, candidate, truth = lots(60, seed=2, stable_noise=0.3, candidate_noise=1.5)
    result = lab_gate.judge(stable, candidate, truth)
    assert result.verdict == FAIL, result.reason
    assert result.lower > lab_gate.DEFAULT_MARGIN and result.figures["meanExtraLog1pError"] > 0.5


def test_too_few_pairs_hold_however_bad():
    stable, candidate, truth = lots(29, seed=3, stable_noise=0.3, candidate_noise=3.0)
    result = lab_gate.judge(stable, candidate, truth, min_pairs=30)
    assert result.verdict == HOLD and "30 needed" in result.reason
    assert lab_gate.judge(stable, candidate, truth, min_pairs=20).verdict == FAIL
    empty = lab_gate.judge([], [], [])
    assert empty.verdict == HOLD and empty.pairs == 0


def test_false_accepts_weigh_on_contaminated_lots_only():
    truth = np.array([5000.0, 5000.0, 10.0, 10.0])
    stable = np.array([4000.0, 4000.0, 10.0, 10.0])
    candidate = np.array([900.0, 4000.0, 900.0, 10.0])  # accepts one contaminated lot
    plain = lab_gate.lot_scores(stable, candidate, truth, false_accept_weight=0.0)
    charged = lab_gate.lot_scores(stable, candidate, truth, false_accept_weight=1.0)
    assert np.allclose(charged - plain, [1.0, 0, 0, 0])
    # served decisions replace the ppb rule: here the stable accepted the first lot
    decided = lab_gate.lot_scores(stable, candidate, truth, false_accept_weight=1.0,
                                  stable_decisions=["accept", "lab", "accept", "accept"],
                                  candidate_decisions=["accept", "reject", "lab", "accept"])
    assert np.allclose(decided - plain, [0, 0, 0, 0])
    figures = lab_gate.judge(stable, candidate, truth, min_pairs=2).figures
    assert figures["contaminatedLots"] == 2 and figures["candidateFalseAccepts"] == 1
    assert figures["stableFalseAccepts"] == 0


def test_floor_counts_low_values_as_the_floor():
    truth, stable, candidate = np.array([0.0, 0.0, 5000.0]), np.array([0.0, 0.0, 5000.0]), \
        np.array([50.0, 150.0, 2500.0])
    plain = lab_gate.lot_scores(stable, candidate, truth, false_accept_weight=0.0, floor_ppb=0.0)
    floored = lab_gate.lot_scores(stable, candidate, truth, false_accept_weight=0.0,
                                  floor_ppb=100.0)
    assert np.allclose(plain, np.log1p([50.0, 150.0, 5000.0]) - [0, 0, np.log1p(2500.0)])
    assert np.allclose(floored, [0.0, np.log1p(150.0) - np.log1p(100.0), plain[2]])


@pytest.mark.parametrize("method", [FIXED, SEQUENTIAL])
def test_false_fail_rate_on_equal_candidates_stays_near_alpha(method):
    """Exchangeable versions (the same noise): one look at 100 pairs fails about alpha of them
    (fixed: the rate the bound promises; sequential: at most that, as it holds at every n)."""
    alpha, runs = 0.05, 1500
    fails = sum(lab_gate.judge(*lots(100, seed=1000 + i), margin=0.0, alpha=alpha,
                               false_accept_weight=0.0, method=method).verdict == FAIL
                for i in range(runs))
    rate = fails / runs
    if method == FIXED:
        assert 0.03 <= rate <= 0.07, rate
    else:
        assert rate <= alpha, rate


def test_sequential_bound_holds_when_looked_at_after_every_pair():
    """The operator looks after every new pair: the fixed bound's error then grows well past
    alpha, the sequential one's stays below it (both on the same 400 synthetic streams)."""
    gates = _benchmark()
    failed = {}
    for method in (FIXED, SEQUENTIAL):
        setting = dict(method=method, margin=0.0, false_accept_weight=0.0, horizon=100)
        hits = []
        for i in range(400):
            stable, candidate, truth = lots(200, seed=5000 + i)
            scores = lab_gate.lot_scores(stable, candidate, truth, false_accept_weight=0.0)
            _, by = gates.gate_paths(scores, np.arange(200)[None, :], setting, 0.05, 30)
            hits.append(by[0, -1])
        failed[method] = np.mean(hits)
    assert failed[SEQUENTIAL] <= 0.05 < failed[FIXED], failed


def test_benchmark_paths_agree_with_judge():
    """benchmarks/gates.py scores every prefix of a lot order at once: each prefix's one-look
    verdict must be the one judge gives on those lots."""
    gates = _benchmark()
    stable, candidate, truth = lots(80, seed=7, stable_noise=0.4, candidate_noise=0.7)
    order = np.random.default_rng(8).permutation(80)[None, :]
    for method in (FIXED, SEQUENTIAL):
        setting = dict(method=method, margin=0.02, false_accept_weight=0.5, horizon=50)
        scores = lab_gate.lot_scores(stable, candidate, truth, false_accept_weight=0.5)
        fail, _ = gates.gate_paths(scores, order, setting, 0.05, 30)
        for t in range(25, 81):
            rows = order[0, :t]
            verdict = lab_gate.judge(stable[rows], candidate[rows], truth[rows], margin=0.02,
                                     false_accept_weight=0.5, method=method, horizon=50).verdict
            assert fail[0, t - 1] == (verdict == FAIL), (method, t, verdict)


def test_benchmark_baseline_uses_plain_log1p_errors():
    """The Wilcoxon baseline is the issue's: plain |log1p error|, whatever the gate's floor. A
    candidate worse only on clean lots (below the floor) fails it and passes the gate."""
    gates = _benchmark()
    rng = np.random.default_rng(9)
    truth = rng.uniform(0, 50, 60)
    stable, candidate = truth.copy(), truth + rng.uniform(100, 250, 60)
    order = np.arange(60)[None, :]
    assert gates.baseline_fail(stable, candidate, truth, order, 60).all()
    assert lab_gate.judge(stable, candidate, truth).verdict == PASS


@pytest.mark.parametrize("kwargs, message", [
    (dict(stable=[1, 2], candidate=[1, 2, 3], truth=[1, 2]), "length mismatch"),
    (dict(stable=[1, float("nan")], candidate=[1, 2], truth=[1, 2]), "stable: NaN"),
    (dict(stable=[1, 2], candidate=[1, 2], truth=[1, -5]), "truth: negative ppb -5"),
    (dict(stable=[1, 2], candidate=[[1, 2]], truth=[1, 2]), "candidate: expected one value"),
    (dict(stable=["a", 2], candidate=[1, 2], truth=[1, 2]), "stable: not numbers"),
    (dict(margin=-0.1), "margin"),
    (dict(alpha=0.0), "alpha"),
    (dict(min_pairs=1), "min_pairs"),
    (dict(method="bayes"), "unknown method"),
    (dict(false_accept_weight=float("inf")), "false_accept_weight"),
    (dict(floor_ppb=-1.0), "floor_ppb"),
    (dict(stable_decisions=["accept", "lab"]), "both stable and candidate"),
    (dict(stable_decisions=["accept", "lab"], candidate_decisions=["accept", "maybe"]),
     "unknown decision 'maybe'"),
    (dict(stable_decisions=["accept"], candidate_decisions=["accept", "lab"]),
     "stable decisions: expected 2 values"),
])
def test_bad_input_raises_value_error_naming_it(kwargs, message):
    args = dict(stable=[1.0, 2.0], candidate=[1.0, 2.0], truth=[1.0, 2.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        lab_gate.judge(args.pop("stable"), args.pop("candidate"), args.pop("truth"), **args)


@pytest.mark.slow
def test_benchmark_quick_run_writes_its_tables(real_data_path, tmp_path):
    out = tmp_path / "gates.md"
    result = subprocess.run([sys.executable, str(SCRIPT), "--data", str(real_data_path), "--quick",
                             "--markdown", str(out)], capture_output=True, text=True, cwd=REPO,
                            timeout=1800, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text()
    for kind in ("good retrain", "quarter rows", "30% shuffled", "targets x2", "all shuffled"):
        assert f"| {kind} |" in text
    assert "--reference-fraction" in text and "(chosen)" in text
    assert text.strip() in result.stdout


def test_benchmark_refuses_bad_arguments_in_one_line(tmp_path):
    data = tmp_path / "absent.csv"
    result = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data)],
                            capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert result.returncode == 0 and "not found: skipped" in result.stdout
    data.write_text("x\n")
    result = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data), "--draws", "0"],
                            capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert result.returncode == 2 and "--draws must be at least 1" in result.stderr


def _benchmark():
    spec = importlib.util.spec_from_file_location("bench_gates", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
