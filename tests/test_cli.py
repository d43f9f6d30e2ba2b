import subprocess
import sys
from pathlib import Path

import pytest

from vlmrl.cli import main, parse_args

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bare_word_is_an_experiment(capsys):
    assert parse_args(["train", "humanoid_kneel", "seed=3"]) == (
        "train",
        ["experiments=humanoid_kneel", "seed=3"],
        False,
    )
    code, out, _ = run(capsys, "train", "humanoid_kneel", "agents.total_timesteps=77", "--cfg")
    assert code == 0 and "total_timesteps: 77" in out and "a humanoid robot kneeling" in out


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["train", "experiments=nope"], "unknown experiments 'nope'; choose one of: "),
        (["train", "nope"], "unknown experiments 'nope'; choose one of: "),
        (["train", "labelers=nope"], "unknown labelers 'nope'; choose one of: "),
        (["train", "agents.no_such_key=1"], "Could not override 'agents.no_such_key'"),
        (["trian"], "unknown job 'trian'; choose one of: "),
        (["train", "--bogus"], "unknown option '--bogus'"),
    ],
)
def test_bad_command_lines_get_one_clear_line(capsys, argv, expect):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("vlmrl: ") and expect in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    if "choose one of" in expect and "job" not in expect:
        assert "humanoid_kneel" in err or "clip" in err


def test_bad_value_is_reported_without_a_stack(capsys, tmp_path):
    code, _, err = run(
        capsys, "train", "humanoid_kneel", "labelers.model=vlmrl-tiny", "labelers.alpha=3", f"runs_root={tmp_path}"
    )
    assert code == 1 and "alpha must be in [0, 1]" in err and "Traceback" not in err


def test_console_script_help_lists_jobs_and_groups():
    out = subprocess.run([sys.executable, "-m", "vlmrl.cli", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    for word in ("train", "rollout", "experiments:", "humanoid_kneel"):
        assert word in out.stderr
