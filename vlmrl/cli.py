"""``vlmrl <job> [overrides]``: compose the job's Hydra config and run ``vlmrl.jobs.<job>.main(cfg)``."""

from __future__ import annotations

import importlib
import json
import logging
import os
import pkgutil
import re
import sys
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from vlmrl.config import ConfigKeyError, check_declared, check_plain_value, check_targets, explain_struct_error

CONF_DIR = Path(__file__).resolve().parent / "conf"
GROUPS = ("envs", "agents", "labelers", "experiments")
USAGE = "usage: vlmrl <job> [experiment] [key=value ...] [--cfg] [--help]"
HELP_FLAGS = ("-h", "--help")


class UsageError(Exception):
    """A user mistake in the command line; printed as one line, no traceback."""


class CommandLine(NamedTuple):
    """A parsed command line: the job, its Hydra overrides, and the --cfg / --help flags."""

    job: str
    overrides: list[str]
    show: bool = False
    help: bool = False


def available_jobs() -> list[str]:
    """Job names (``vlmrl/jobs/<name>.py`` with ``_`` shown as ``-``)."""
    import vlmrl.jobs

    return sorted(
        m.name.replace("_", "-") for m in pkgutil.iter_modules(vlmrl.jobs.__path__) if not m.name.startswith("_")
    )


def group_options(group: str) -> list[str]:
    """The YAML files of one config group, without extension (shared bases in subfolders, ``_base/``, are not)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def config_name(job: str) -> str:
    """The primary config of ``job``: ``conf/<job>.yaml``, or ``train.yaml`` for jobs without one."""
    return job if (CONF_DIR / f"{job}.yaml").exists() else "train"


def _override_key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def _explain(err: Exception, job: str, overrides: list[str]) -> str:
    """One line naming what was wrong and the valid choices."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    for ov in overrides:
        key, _, value = ov.lstrip("+~").partition("=")
        if key in GROUPS and value and value != "null" and value not in group_options(key):
            return f"unknown {key} {value!r}; choose one of: {', '.join(group_options(key))}"
    struct = re.match(r"Could not override '([^']+)'", msg)
    if struct:
        key = struct.group(1)
        try:
            cfg = _hydra_compose(job, [ov for ov in overrides if _override_key(ov) != key])
        except Exception:
            return f"{msg} (list the config with --cfg)"
        try:
            return explain_struct_error(key, cfg)
        except ConfigKeyError as bad_target:
            return str(bad_target)
    if "Could not append" in msg:
        return f"{msg} (set an existing key without +)"
    return msg


def _hydra_compose(job: str, overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None, job_name=job):
        return hydra_compose(config_name=config_name(job), overrides=overrides, return_hydra_config=return_hydra_config)


def compose(job: str, overrides: list[str], return_hydra_config: bool = False, check: bool = True) -> DictConfig:
    """Compose the config of ``job`` from its primary config and the overrides, and check its keys.

    Every ``_target_`` node may hold only keywords its target takes (:func:`vlmrl.config.check_targets`), and a
    ``+key=value`` outside them only a key the job's YAML declares (:func:`vlmrl.config.check_declared`).
    ``check=False`` skips both (they import every target's module).

    Raises:
        UsageError: an unknown group option, key or a value of the wrong kind, in one line.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = _hydra_compose(job, overrides, return_hydra_config)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UsageError(_explain(err, job, overrides)) from None
    if not check:
        return cfg
    try:
        for key in cfg:
            if key != "hydra":
                check_targets(cfg._get_node(key), str(key))
        _check_added_keys(job, overrides, cfg)
        _check_plain_values(job, overrides, cfg)
    except ConfigKeyError as err:
        raise UsageError(str(err)) from None
    return cfg


def _check_added_keys(job: str, overrides: list[str], cfg: DictConfig) -> None:
    """Keys added with ``+`` to a plain section (not a ``_target_`` node) must be declared by the job's YAML."""
    added = [
        ov
        for ov in overrides
        if ov.startswith("+")
        and "/" not in _override_key(ov)
        and _override_key(ov) not in GROUPS
        and not _override_key(ov).startswith("hydra.")
    ]
    if not added:
        return
    try:
        declared = _hydra_compose(job, [ov for ov in overrides if ov not in added])
    except Exception:
        return
    check_declared(cfg, declared, ignore=("hydra",))


def _check_plain_values(job: str, overrides: list[str], cfg: DictConfig) -> None:
    """A value set on a plain key (no ``_target_`` on the way down) must have the kind of the YAML's default."""
    plain = [
        ov for ov in overrides if not ov.startswith(("+", "~")) and "=" in ov and _is_plain_key(cfg, _override_key(ov))
    ]
    if not plain:
        return
    try:
        reference = _hydra_compose(job, [ov for ov in overrides if ov not in plain])
    except Exception:
        return
    for ov in plain:
        check_plain_value(_override_key(ov), cfg, reference)


def _is_plain_key(cfg: DictConfig, key: str) -> bool:
    """True when no section on the way to ``key`` is a ``_target_`` node (those are checked against signatures)."""
    if key in GROUPS or key.startswith("hydra."):
        return False
    node: object = cfg
    for part in key.split(".")[:-1]:
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
        if isinstance(node, DictConfig) and not node._is_none() and "_target_" in node:
            return False
    return isinstance(node, DictConfig)


def parse_args(argv: list[str]) -> CommandLine:
    """Split ``argv`` into job, Hydra overrides and the --cfg/--help flags; a bare word is an experiment name."""
    if not argv:
        raise UsageError(f"{USAGE}; `vlmrl --help` lists the jobs and config groups")
    job, rest = argv[0].replace("-", "_"), argv[1:]
    if job.replace("_", "-") not in available_jobs():
        raise UsageError(f"unknown job {argv[0]!r}; choose one of: {', '.join(available_jobs())}")
    show = help_ = False
    overrides = []
    for arg in rest:
        if arg == "--cfg":
            show = True
            continue
        if arg in HELP_FLAGS:
            help_ = True
            continue
        if arg.startswith("-"):
            raise UsageError(f"unknown option {arg!r}; {USAGE}")
        if "=" not in arg and not arg.startswith("~"):
            if arg not in group_options("experiments"):
                raise UsageError(
                    f"unknown experiments {arg!r}; choose one of: {', '.join(group_options('experiments'))}"
                )
            arg = f"experiments={arg}"
        overrides.append(arg)
    return CommandLine(job, overrides, show, help_)


def general_help() -> str:
    """``vlmrl --help``: the jobs, the config groups and their options."""
    lines = [
        USAGE,
        f"  jobs: {', '.join(available_jobs())}",
        *(f"  {g}: {', '.join(group_options(g))}" for g in GROUPS),
        "`vlmrl <job> --help` lists a job's groups and keys; --cfg prints the composed config.",
        "key=value sets a key, +key=value adds one; a key no target or job takes is refused, naming the valid keys.",
    ]
    return "\n".join(lines)


def job_help(job: str, overrides: list[str]) -> str:
    """``vlmrl <job> --help``: the job's config groups (chosen option, all options) and keys with their defaults."""
    cfg = compose(job, overrides, return_hydra_config=True, check=False)
    choices = {g: "null" if c is None else c for g, c in cfg.hydra.runtime.choices.items()}
    path = CONF_DIR / f"{config_name(job)}.yaml"
    text = path.read_text()
    comments = _yaml_comments(text)
    about = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        about.append(line[2:].rstrip() if line.startswith("# ") else line[1:].rstrip())
    groups = [g for g in GROUPS if g in choices]
    name = job.replace("_", "-")
    lines = [f"usage: vlmrl {name} {'[experiment] ' if groups else ''}[key=value ...] [--cfg] [--help]", *about]
    if groups:
        lines.append("config groups (group=option), now and to choose from:")
        width = max(len(f"{g}={choices[g]}") for g in groups) + 2
        for g in groups:
            lines.append(f"  {f'{g}={choices[g]}':<{width}}{', '.join(group_options(g))}")
    lines.append("keys (key=value), with their values now:")
    rows = list(_key_rows(cfg, (*groups, "hydra"), ""))
    width = min(max((len(f"{k}={v}") for k, v in rows), default=0), 40) + 2
    for key, value in rows:
        note = comments.get(key, "")
        cell = f"{key}={value}"
        lines.append(f"  {cell:<{width}}{note}".rstrip() if len(cell) < width else f"  {cell}  {note}".rstrip())
    if groups:
        lines.append(
            f"`vlmrl {name} --cfg` shows every key of the chosen options "
            "(set them as group.key=value; +group.key=value adds a parameter their _target_ takes)."
        )
    return "\n".join(lines)


def _key_rows(cfg: DictConfig, skip: tuple[str, ...], prefix: str):
    """(dotted key, value as written) for the plain keys of ``cfg``; plain sections are flattened."""
    for key in cfg:
        if key in skip:
            continue
        node = cfg._get_node(key)
        name = f"{prefix}{key}"
        if isinstance(node, DictConfig) and not node._is_none() and "_target_" not in node and len(node):
            yield from _key_rows(node, (), f"{name}.")
        elif isinstance(node, DictConfig | ListConfig) and not node._is_none():
            yield name, json.dumps(OmegaConf.to_container(node, resolve=False), default=str)
        else:
            value = node._value()
            yield name, "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _yaml_comments(text: str) -> dict[str, str]:
    """Dotted key -> the comment on its line, for ``key: value  # comment`` lines of a YAML file."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        m = re.match(r"^(\s*)([A-Za-z_]\w*):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([*(k for _, k in stack), key])
        stack.append((indent, key))
        if " #" in rest:
            comments[dotted] = rest.split(" #", 1)[1].strip()
    return comments


def _user_facing(err: BaseException) -> BaseException | None:
    """The user-facing error behind ``err`` (config values, files, weights), or None for a real bug."""
    from hydra.errors import InstantiationException

    from vlmrl.rewards.clip import CLIPWeightsUnavailable

    seen = err
    while isinstance(seen, InstantiationException) and seen.__cause__ is not None:
        seen = seen.__cause__
    if isinstance(seen, CLIPWeightsUnavailable | FileNotFoundError | InstantiationException | ValueError):
        return seen
    if isinstance(seen, TypeError) and seen is not err and _raised_by_the_call(seen):
        return seen  # the target refused its arguments (a required one missing, a wrong kind), not a bug inside it
    return None


def _raised_by_the_call(err: BaseException) -> bool:
    """True when ``err`` came from Hydra calling a target or from the target's own body (a check on its arguments).

    A TypeError from deeper down (a library the target calls) is more likely a bug and keeps its traceback.
    """
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    if not frames or not str(frames[0].f_globals.get("__name__", "")).startswith("hydra."):
        return False
    return len(frames) <= 2


def _quiet_imports() -> None:
    """Keep third-party import chatter off the terminal, so that an error stays the one line printed.

    The legacy ``gym`` package (a d3rlpy dependency, imported by stable-baselines3 when present; vlmrl uses
    gymnasium) prints a deprecation banner from ``gym_notices`` on import; PyOpenGL logs at INFO that it runs
    unaccelerated.
    """
    logging.getLogger("OpenGL").setLevel(logging.WARNING)
    try:
        from gym_notices import notices
    except ImportError:
        return
    notices.notices.clear()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vlmrl`` command."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if argv and argv[0] in (*HELP_FLAGS, "help"):
            print(general_help())
            return 0
        job, overrides, show, help_ = parse_args(argv)
        if help_:
            print(job_help(job, overrides))
            return 0
        _quiet_imports()
        cfg = compose(job, overrides)
        if show:
            print(_to_yaml(cfg))
            return 0
        module = importlib.import_module(f"vlmrl.jobs.{job}")
        result = module.main(cfg)
    except UsageError as err:
        print(f"vlmrl: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        # Errors that name their own fix (bad values, missing files or weights) read better without a stack.
        cause = _user_facing(err)
        if cause is None or os.environ.get("VLMRL_DEBUG"):
            raise
        print(f"vlmrl: {type(cause).__name__}: {_one_line(cause)}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


def _to_yaml(cfg: DictConfig) -> str:
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_yaml(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise UsageError(str(err).strip().splitlines()[0]) from None


if __name__ == "__main__":
    sys.exit(main())
