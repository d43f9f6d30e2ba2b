"""kill -9 at a random point, restart, compare with an uninterrupted run: one kill of collect, one of serve.

The long run (train, relabel, collect and serve, >= 40 kills) is ``benchmarks/kill_suite.py``; these use its cases.
"""

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_suite.py"


@pytest.fixture(scope="module")
def kill_suite():
    if not Path(sys.executable).with_name("vlmrl").exists():
        pytest.skip("the vlmrl entry point is not installed beside this interpreter")
    spec = importlib.util.spec_from_file_location("kill_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


SMALL = {"collect": {"episodes": 24, "part_episodes": 4, "steps": 20}, "serve": {"pace": 0.1}, "train_sac": {}}


@pytest.mark.parametrize("job", ["collect", "serve", "train_sac"])
def test_a_killed_job_restarts_to_the_uninterrupted_result(kill_suite, tmp_path, job):
    case = kill_suite.CASES[job](tmp_path, **SMALL[job])
    # up to 6 trials: on a loaded machine a trial can finish before its kill point (seen: 3 in a row for collect)
    trials, reference_problems = kill_suite.run_case(case, np.random.default_rng(7), kills=1, max_trials=6)
    assert not reference_problems
    assert sum(len(t.kills) for t in trials) == 1, [t.describe() for t in trials]
    assert all(t.survived for t in trials), [t.describe() for t in trials]


def test_descendants_sees_grandchildren_and_alive_ignores_the_dead(kill_suite):
    sleeper = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    parent = subprocess.Popen([sys.executable, "-c", sleeper + "; time.sleep(60)"])
    below: set[int] = set()
    try:
        deadline = time.monotonic() + 20
        while not below and time.monotonic() < deadline:
            below = kill_suite.descendants(parent.pid)
            time.sleep(0.05)
        assert len(below) == 1 and all(kill_suite.alive(p) for p in below)
    finally:
        for p in below:
            subprocess.run(["kill", "-9", str(p)], check=False)
        parent.kill()
        parent.wait()
    assert not kill_suite.alive(parent.pid)


def test_the_checks_see_a_changed_array_and_a_step_logged_twice_before_the_checkpoint(kill_suite, tmp_path):
    ref = {"rewards": np.arange(4, dtype=np.float32), "frames": np.zeros((2, 3), np.uint8)}
    assert kill_suite.compare_arrays(ref, {k: v.copy() for k, v in ref.items()}, "raw") == []
    changed = {"rewards": np.nextafter(ref["rewards"], np.float32(9)), "frames": ref["frames"]}  # one ulp up
    assert kill_suite.compare_arrays(ref, changed, "raw") == ["raw[rewards]: 4 of 4 values differ"]

    case = kill_suite.TrainCase(tmp_path)
    rows = [{"step": s, "time": 0.0, "env_reward_mean": 0.5} for s in (128, 256, 384)]
    kill = kill_suite.Kill(run=1, at=1.0, snapshot={"checkpoint": 128, "metrics": [128, 256]})
    resumed = rows[:2] + [{"step": 256, "time": 9.0, "env_reward_mean": 0.1}, rows[2]]  # 256 logged again: allowed
    assert case._check_metrics(rows, resumed, [kill], first=128) == []
    twice = rows[:1] + rows  # 128 was checkpointed before the kill: logging it again means a step was duplicated
    assert "more often" in case._check_metrics(rows, twice, [kill], first=128)[0]
    lost = rows[:1] + rows[2:]
    assert "metrics steps" in case._check_metrics(rows, lost, [kill], first=128)[0]
