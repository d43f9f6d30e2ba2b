import subprocess
import sys
from pathlib import Path

import pytest

from vlmrl.cli import CommandLine, group_options, main, parse_args

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err):
    assert err.startswith("vlmrl: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_bare_word_is_an_experiment(capsys):
    assert parse_args(["train", "humanoid_kneel", "seed=3"]) == CommandLine(
        "train", ["experiments=humanoid_kneel", "seed=3"], show=False, help=False
    )
    assert parse_args(["train", "~agents.policy_kwargs", "--cfg"]).overrides == ["~agents.policy_kwargs"]
    code, out, _ = run(capsys, "train", "humanoid_kneel", "agents.total_timesteps=77", "--cfg")
    assert code == 0 and "total_timesteps: 77" in out and "a humanoid robot kneeling" in out


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["train", "experiments=nope"], "unknown experiments 'nope'; choose one of: "),
        (["train", "nope"], "unknown experiments 'nope'; choose one of: "),
        (["train", "labelers=nope"], "unknown labelers 'nope'; choose one of: "),
        (["train", "agents.no_such_key=1"], "unknown key agents.no_such_key for "),
        (["train", "+seed=1"], "Could not append to config. An item is already at 'seed'."),
        (["trian"], "unknown job 'trian'; choose one of: "),
        (["train", "--bogus"], "unknown option '--bogus'"),
    ],
)
def test_bad_command_lines_get_one_clear_line(capsys, argv, expect):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert expect in one_line(err)
    if "choose one of" in expect and "job" not in expect:
        assert "humanoid_kneel" in err or "clip" in err


# (job, arguments that pick the node, misspelled key, a valid key the message must name), one per group
TYPOS = {
    "envs": ("train", ["envs=push"], "envs.widht", "width"),
    "agents": ("train", ["agents=ppo"], "agents.total_timestep", "total_timesteps"),
    "agents-nested": ("train", ["agents=gflownet"], "agents.encoder.model_nam", "model_name"),
    "labelers": ("train", ["humanoid_kneel"], "labelers.alphaa", "alpha"),
    "labelers-nested": ("train", ["labelers=teacher"], "labelers.labeler.betaa", "beta"),
    "experiments": ("collect", ["push_offline"], "collect.episods", "episodes"),
    "experiments-nested": ("train", ["push_teacher"], "labelers.labeler.epss", "eps"),
    "top-level": ("train", ["humanoid_kneel"], "seeed", "seed"),
}


@pytest.mark.parametrize("plus", ["", "+"], ids=["set", "add"])
@pytest.mark.parametrize("case", list(TYPOS))
def test_a_misspelled_key_fails_with_one_line_naming_the_valid_keys(capsys, case, plus):
    job, pick, key, valid = TYPOS[case]
    # --cfg: were the key let through, this prints the config (exit 0) instead of starting a run
    code, out, err = run(capsys, job, *pick, f"{plus}{key}=1", "--cfg")
    line = one_line(err)
    assert code == 2 and not out
    assert f"unknown key {key}" in line and "valid keys: " in line
    assert valid in line.split("valid keys: ", 1)[1].split(", ")


def test_every_group_has_a_typo_case():
    assert {case.split("-")[0] for case in TYPOS} >= {"envs", "agents", "labelers", "experiments"}
    for _, pick, _, _ in TYPOS.values():
        for arg in pick:
            assert "=" in arg or arg in group_options("experiments")


def test_a_parameter_missing_from_the_yaml_is_added_with_plus(capsys):
    code, _, err = run(capsys, "train", "labelers=teacher", "labelers.labeler.name=mine", "--cfg")
    assert code == 2 and "add it with +labelers.labeler.name=" in one_line(err)
    code, out, _ = run(capsys, "train", "labelers=teacher", "+labelers.labeler.name=mine", "--cfg")
    assert code == 0 and "name: mine" in out


def test_a_value_of_the_wrong_kind_gets_one_line(capsys):
    code, _, err = run(capsys, "train", "agents.total_timesteps=abc", "--cfg")
    assert code == 2
    assert "bad value agents.total_timesteps='abc'" in one_line(err) and "takes int" in err


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["train", "humanoid_kneel", "agents.total_timesteps=abc"], "bad value agents.total_timesteps='abc'"),
        (["train", "humanoid_kneel", "seed=abc"], "bad value seed='abc': seed takes int (default 0)"),
        (["train", "humanoid_kneel", "resume=maybe"], "bad value resume='maybe': resume takes bool (default false)"),
        (
            ["collect", "push_offline", "collect.episodes=2.5"],
            "bad value collect.episodes=2.5: collect.episodes takes int",
        ),
        (["relabel", "relabel.pairs=many"], "bad value relabel.pairs='many'"),
        (["rollout", "checkpoint=x", "episodes=abc"], "bad value episodes='abc': episodes takes int (default 2)"),
    ],
)
def test_a_bad_value_on_the_command_line_prints_one_line_and_writes_nothing(capsys, tmp_path, argv, expect):
    code, _, err = run(capsys, *argv, f"runs_root={tmp_path}" if argv[0] == "train" else "seed=0")
    assert code == 2 and expect in one_line(err)
    assert not list(tmp_path.iterdir())


def test_plain_values_of_the_right_kind_are_taken(capsys):
    code, out, _ = run(
        capsys, "collect", "push_offline", "collect.episodes=1e3", "seed=7", "collect.frames=false", "--cfg"
    )
    assert code == 0 and "episodes: 1000" in out and "seed: 7" in out and "frames: false" in out
    code, out, _ = run(capsys, "train", "humanoid_kneel", "run_dir=/tmp/x", "--cfg")  # null default: anything goes
    assert code == 0 and "run_dir: /tmp/x" in out


def test_rollout_without_a_checkpoint_prints_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "rollout")
    assert code == 1 and "no checkpoint given: pass checkpoint=runs/<name>/<timestamp>" in one_line(err)
    code, _, err = run(capsys, "rollout", f"checkpoint={tmp_path / 'nope'}")
    assert code == 1 and "does not exist" in one_line(err)
    (tmp_path / "run").mkdir()
    code, _, err = run(capsys, "rollout", f"checkpoint={tmp_path / 'run'}")
    assert code == 1 and "holds no run" in one_line(err)


def test_bad_value_is_reported_without_a_stack(capsys, tmp_path):
    code, _, err = run(
        capsys, "train", "humanoid_kneel", "labelers.model=vlmrl-tiny", "labelers.alpha=3", f"runs_root={tmp_path}"
    )
    assert code == 1 and "alpha must be in [0, 1]" in one_line(err)


def test_a_required_parameter_removed_is_reported_without_a_stack(capsys, tmp_path):
    code, _, err = run(capsys, "train", "agents=iql", "labelers=none", "~agents.dataset", f"runs_root={tmp_path}")
    assert code == 1 and "TypeError" in err and "'dataset'" in one_line(err)


def test_help_lists_jobs_and_groups(capsys):
    for flag in ("--help", "-h", "help"):
        code, out, _ = run(capsys, flag)
        assert code == 0
        for word in ("usage: vlmrl", "train", "rollout", "experiments:", "humanoid_kneel", "teacher"):
            assert word in out
    code, _, err = run(capsys)
    assert code == 2 and "--help" in err


def test_job_help_lists_groups_options_and_keys_with_defaults(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0
    assert "envs=humanoid" in out and "labelers=clip" in out and "experiments=null" in out
    assert "push" in out and "nethack_oni_default" in out  # the options to choose from
    assert "seed=0" in out and "runs_root=runs" in out and "run name; experiments set it" in out
    assert "_base" not in out

    code, out, _ = run(capsys, "collect", "push_offline", "--help")
    assert code == 0 and "experiments=push_offline" in out and "collect.episodes=300" in out
    assert "collect.out=data/${name}/raw.h5" in out

    code, out, _ = run(capsys, "report", "--help")
    assert code == 0 and "run_dir=???" in out and "[experiment]" not in out and "envs=" not in out


def test_console_script_help_exits_zero():
    out = subprocess.run([sys.executable, "-m", "vlmrl.cli", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    for word in ("train", "rollout", "experiments:", "humanoid_kneel"):
        assert word in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "vlmrl.cli", "train", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0 and "agents=ppo" in out.stdout
