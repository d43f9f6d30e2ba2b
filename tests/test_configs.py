"""Every YAML in every config group composes, and each of its keys means something.

A key of a ``_target_`` node must be a parameter of the target (nested ``labeler:`` and ``encoder:`` nodes too);
a key of a job's plain section (``collect:``, ``relabel:``) must be one the job's YAML declares.
"""

import inspect
import re

import pytest
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf, open_dict

from vlmrl.cli import CONF_DIR, GROUPS, UsageError, compose, group_options
from vlmrl.config import ConfigKeyError, accepted_keys, check_declared, check_targets

JOBS_WITH_GROUPS = ("train", "collect", "relabel", "evaluate_reward")
CASES = [(g, o) for g in GROUPS for o in group_options(g)]


def yaml_files(group):
    """Every YAML of a group, options and the shared bases in its subfolders (``_base/humanoid_vlmrm``)."""
    return sorted(str(p.relative_to(CONF_DIR / group).with_suffix("")) for p in (CONF_DIR / group).rglob("*.yaml"))


FILES = [(g, f) for g in GROUPS for f in yaml_files(g)]


def bind(node, where):
    if node is None or "_target_" not in node:
        return
    target = get_object(node._target_)
    kwargs = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}
    try:
        inspect.signature(target).bind_partial(**kwargs)
    except TypeError as err:
        pytest.fail(f"{where}: {node._target_} does not accept {sorted(kwargs)}: {err}")


@pytest.mark.parametrize("group,path", FILES, ids=[f"{g}/{f}" for g, f in FILES])
def test_every_yaml_composes_and_its_keys_are_parameters(group, path):
    cfg = compose("train", [f"{group}={path}"])  # compose checks the keys; check again, on its own
    check_targets(cfg)
    if group == "experiments" and "/" not in path:
        assert cfg.name != "default", f"experiments/{path}.yaml must set a run name"
    for g in ("envs", "agents", "labelers"):
        bind(cfg.get(g), f"{group}/{path} -> {g}")


@pytest.mark.parametrize("job", JOBS_WITH_GROUPS)
@pytest.mark.parametrize("option", group_options("experiments"))
def test_experiment_sections_hold_only_keys_the_job_declares(job, option):
    primary = compose(job, [])
    cfg = compose(job, [f"experiments={option}"])
    offline = "collect" in compose("train", [f"experiments={option}"])
    if job in ("train", "evaluate_reward") or offline:  # collect and relabel take the offline experiments
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    for key in cfg:
        if key in primary and key not in GROUPS:
            node, declared = cfg._get_node(key), primary._get_node(key)
            if OmegaConf.is_dict(node) and "_target_" not in node:
                check_declared(node, declared, key)


def test_experiment_top_level_keys_belong_to_some_job():
    known = set(GROUPS)
    for job in JOBS_WITH_GROUPS:
        known |= set(compose(job, []))
    for option in group_options("experiments"):
        text = (CONF_DIR / "experiments" / f"{option}.yaml").read_text()
        keys = set(OmegaConf.create(text)) - {"defaults"}
        assert keys <= known, f"experiments/{option}.yaml: {sorted(keys - known)} is read by no job"


def test_a_misspelled_nested_key_is_caught():
    """The check reaches nested target nodes (a labeler inside a reward source, an encoder inside an agent)."""
    for overrides, parent, typo in [
        (["labelers=teacher"], "labelers.labeler", "betaa"),
        (["labelers=oni"], "labelers.labeler", "modee"),
        (["agents=gflownet"], "agents.encoder", "model_nam"),
        (["experiments=push_offline"], "collect.expert", "noisee"),
        (["envs=push"], "envs", "widht"),
    ]:
        cfg = compose("train", overrides)
        node = OmegaConf.select(cfg, parent)
        with open_dict(node):
            node[typo] = 1
        with pytest.raises(ConfigKeyError, match=rf"unknown key {re.escape(parent)}\.{typo} for \S+; valid keys: "):
            check_targets(cfg)


def test_a_misspelled_plain_key_is_caught():
    cfg = compose("collect", ["experiments=push_offline"])
    with open_dict(cfg):
        cfg.collect.episods = 3
    with pytest.raises(ConfigKeyError, match=r"unknown key collect\.episods; valid keys: episodes, expert, "):
        check_declared(cfg, compose("collect", ["experiments=push_offline"]))


def test_kwargs_that_are_passed_on_count_and_swallowed_ones_do_not():
    push = accepted_keys(get_target("envs", "push"))  # make_push(**kwargs) -> PushEnv(**kwargs)
    assert not push.open and {"width", "start", "max_episode_steps"} <= set(push.params)
    teacher = accepted_keys("vlmrl.labelers.teacher.SimulatedTeacher")  # **_ swallows: only the named ones
    assert not teacher.open and "beta" in teacher.params and "bta" not in teacher.params
    numberline = accepted_keys("vlmrl.envs.text_games.NumberLineEnv")  # super().__init__(**kwargs)
    assert not numberline.open and {"max_number", "frame_size", "max_actions"} <= set(numberline.params)


def get_target(group, option):
    return str(compose("train", [f"{group}={option}"])[group]._target_)


def test_a_value_of_the_wrong_kind_is_caught():
    with pytest.raises(UsageError, match=r"bad value agents\.total_timesteps='abc': \S+PPOAgent takes int"):
        compose("train", ["agents.total_timesteps=abc"])
    assert compose("train", ["agents.total_timesteps=1e6"]).agents.total_timesteps == 1e6  # an integral float is fine
    with pytest.raises(UsageError, match="bad value agents.n_envs=2.5"):
        compose("train", ["agents.n_envs=2.5"])


def test_an_unimportable_target_is_named():
    with pytest.raises(UsageError, match=r"_target_ vlmrl\.rewards\.clipp\.CLIPReward cannot be imported"):
        compose("train", ["labelers._target_=vlmrl.rewards.clipp.CLIPReward"])


def test_shared_bases_are_not_options():
    for group in GROUPS:
        assert all("/" not in o and not o.startswith("_") for o in group_options(group))
    assert {"_base/humanoid_vlmrm", "_base/nethack_oni", "_base/offline"} <= set(yaml_files("experiments"))
    assert "_base/online_preference" in yaml_files("labelers")


@pytest.mark.parametrize("learner", ["ppo", "sac"])
def test_humanoid_experiments_differ_only_in_name_and_goal(learner):
    options = [o for o in group_options("experiments") if o.startswith("humanoid_") and o != "humanoid_offline"]
    humanoid = [o for o in options if o.endswith("_sac") == (learner == "sac")]
    assert len(humanoid) == 5
    flat = [OmegaConf.to_container(compose("train", [f"experiments={o}"]), resolve=True) for o in humanoid]
    for cfg in flat:
        del cfg["name"], cfg["labelers"]["goal_prompts"]
    assert all(cfg == flat[0] for cfg in flat)
    assert flat[0]["agents"]["_target_"].endswith("SACAgent" if learner == "sac" else "PPOAgent")
    ppo_twin = {o.removesuffix("_sac") for o in humanoid}  # every SAC task has its PPO twin with the same goal
    assert ppo_twin <= set(options)


@pytest.mark.parametrize("option", [o for o in group_options("experiments") if o.endswith("_offline")])
def test_offline_data_paths_follow_the_experiment_name(option):
    def paths(job, *extra):
        cfg = compose(job, [f"experiments={option}", *extra])
        return cfg.name, cfg.collect.out, cfg.relabel.dataset, cfg.relabel.out, cfg.agents.dataset

    for job in ("train", "collect"):
        name, raw, dataset, relabeled, agent_data = paths(job)
        assert (raw, dataset) == (f"data/{name}/raw.h5",) * 2
        assert (relabeled, agent_data) == (f"data/{name}/relabeled.h5",) * 2
        assert paths(job, "name=other")[1:] == ("data/other/raw.h5",) * 2 + ("data/other/relabeled.h5",) * 2


def test_every_group_has_options_and_the_wheel_ships_them():
    for g in GROUPS:
        assert group_options(g), f"config group {g}/ is empty"
        assert (CONF_DIR / g).is_dir()


@pytest.mark.parametrize("option", ["humanoid", "push", "cloth_fold"])
def test_envs_instantiate_and_step(option):
    cfg = compose("train", [f"envs={option}"])
    env = instantiate(cfg.envs)
    try:
        env.reset(seed=0)
        _, _, _, _, info = env.step(env.action_space.sample())
        assert "frame" in info or "message" in info
    finally:
        env.close()
