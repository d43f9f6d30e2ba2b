"""``vlmrl <job> [overrides]``: compose the job's Hydra config and run ``vlmrl.jobs.<job>.main(cfg)``."""

from __future__ import annotations

import importlib
import json
import logging
import os
import pkgutil
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent / "conf"
GROUPS = ("envs", "agents", "labelers", "experiments")
USAGE = "usage: vlmrl <job> [experiment] [key=value ...] [--cfg]"


class UsageError(Exception):
    """A user mistake in the command line; printed as one line, no traceback."""


def available_jobs() -> list[str]:
    """Job names (``vlmrl/jobs/<name>.py`` with ``_`` shown as ``-``)."""
    import vlmrl.jobs

    return sorted(
        m.name.replace("_", "-") for m in pkgutil.iter_modules(vlmrl.jobs.__path__) if not m.name.startswith("_")
    )


def group_options(group: str) -> list[str]:
    """The YAML files of one config group, without extension."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _explain(err: Exception, overrides: list[str]) -> str:
    """One line naming what was wrong and the valid choices."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    for ov in overrides:
        key, _, value = ov.lstrip("+~").partition("=")
        if key in GROUPS and value and value != "null" and value not in group_options(key):
            return f"unknown {key} {value!r}; choose one of: {', '.join(group_options(key))}"
    if "Could not override" in msg or "Key '" in msg or "not in struct" in msg:
        return f"{msg} (list the config with --cfg; add a new key with +key=value)"
    return msg


def compose(job: str, overrides: list[str]) -> DictConfig:
    """Compose the config of ``job`` from ``conf/<job>.yaml`` (or ``train.yaml``) and the overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    name = job if (CONF_DIR / f"{job}.yaml").exists() else "train"
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None, job_name=job):
            return hydra_compose(config_name=name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UsageError(_explain(err, overrides)) from None


def parse_args(argv: list[str]) -> tuple[str, list[str], bool]:
    """Split ``argv`` into job, Hydra overrides and the --cfg flag; a bare word is an experiment name."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        raise UsageError(
            f"{USAGE}\n  jobs: {', '.join(available_jobs())}\n"
            + "\n".join(f"  {g}: {', '.join(group_options(g))}" for g in GROUPS)
        )
    job, rest = argv[0].replace("-", "_"), argv[1:]
    if job.replace("_", "-") not in available_jobs():
        raise UsageError(f"unknown job {argv[0]!r}; choose one of: {', '.join(available_jobs())}")
    show = "--cfg" in rest
    overrides = []
    for arg in rest:
        if arg == "--cfg":
            continue
        if arg.startswith("-"):
            raise UsageError(f"unknown option {arg!r}; {USAGE}")
        if "=" not in arg:
            if arg not in group_options("experiments"):
                raise UsageError(
                    f"unknown experiments {arg!r}; choose one of: {', '.join(group_options('experiments'))}"
                )
            arg = f"experiments={arg}"
        overrides.append(arg)
    return job, overrides, show


def _user_facing(err: BaseException) -> BaseException | None:
    """The user-facing error behind ``err`` (config values, files, weights), or None for a real bug."""
    from hydra.errors import InstantiationException

    from vlmrl.rewards.clip import CLIPWeightsUnavailable

    seen = err
    while isinstance(seen, InstantiationException) and seen.__cause__ is not None:
        seen = seen.__cause__
    if isinstance(seen, CLIPWeightsUnavailable | FileNotFoundError | InstantiationException | ValueError):
        return seen
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vlmrl`` command."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        job, overrides, show = parse_args(argv)
        cfg = compose(job, overrides)
        if show:
            print(OmegaConf.to_yaml(cfg, resolve=True))
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
        print(f"vlmrl: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
