"""Job fingerprints: a resumed job continues only the job it was, never one with other settings.

A fingerprint is the flat ``{dotted.key: value}`` view of every setting that shapes a job's output (the composed
config minus :data:`NOT_SHAPING` and the job's own exceptions, plus anything else the job names, such as a hash
of its input data). Resumable jobs store it in their work or run folder and compare on the next start; a
difference is refused with one line naming the keys and the fix.

    >>> old = {"collect.part_episodes": 20, "envs.max_episode_steps": 40, "seed": 0}
    >>> new = {"collect.part_episodes": 10, "envs.max_episode_steps": 40, "seed": 0}
    >>> differences(old, new)
    ['collect.part_episodes: 20 -> 10']
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vlmrl.runs.atomic import write_json

#: Settings that never change what a job writes: where it writes, whether it resumes, how fast or how loudly it
#: runs, and how a labeler reaches its endpoint. Patterns match dotted keys (``*`` spans dots) and their sections.
NOT_SHAPING = (
    "hydra",
    "name",
    "run_dir",
    "runs_root",
    "resume",
    "device",
    "*.device",
    "*.progress_bar",
    "*.verbose",
    "*.num_threads",
    "*.torch_threads",
    "*.label_cache",
    "*.max_workers",
    "*.requests_per_second",
    "*.burst",
    "*.timeout",
    "*.max_retries",
    "*.backoff_base",
    "*.api_key_env",
    # The spend budget is durable and shared by every run on the cache: raising it continues the same job.
    "*.max_queries",
    "*.max_spend",
    "*.on_few_labels",
)
#: The file a work folder keeps its job's fingerprint in.
FINGERPRINT_FILE = "fingerprint.json"
_SHOWN = 4  # differences named in full in the message; the rest are counted


class DifferentJob(ValueError):
    """A resumed job's settings differ from those its folder was started with; the message is one line."""


def job_fingerprint(
    cfg: DictConfig | Mapping[str, Any], ignore: Iterable[str] = (), extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The flat ``{dotted.key: value}`` settings of ``cfg`` (resolved) that shape the output, with ``extra``.

    Args:
        cfg: the composed job config (or a plain mapping); interpolations are resolved first.
        ignore: patterns of keys that do not shape this job's output, on top of :data:`NOT_SHAPING`.
        extra: more settings to fingerprint as given (input-data hashes, library arguments), flattened too.
    """
    if isinstance(cfg, DictConfig | ListConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    patterns = (*NOT_SHAPING, *ignore)
    flat = {k: v for k, v in _flatten(dict(cfg), "") if not _ignored(k, patterns)}
    flat.update(dict(_flatten(dict(extra or {}), "")))
    return json.loads(json.dumps(flat, default=str))  # the values as they read back from the file


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every key whose value differs (``(unset)`` for a key only one side has)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _UNSET), new.get(key, _UNSET)
        if a != b:
            out.append(f"{key}: {_show(a)} -> {_show(b)}")
    return out


def refuse_if_different(old: Mapping[str, Any], new: Mapping[str, Any], what: str, fix: str) -> None:
    """Raise :class:`DifferentJob` when the two fingerprints differ.

    Args:
        old: the fingerprint the folder was started with.
        new: the fingerprint of the job now.
        what: the start of the message, e.g. ``"runs/x holds parts of a different collection"``.
        fix: what to do instead, e.g. ``"pass collect.fresh=true to start afresh"``.
    """
    diff = differences(old, new)
    if not diff:
        return
    shown = "; ".join(diff[:_SHOWN]) + (f"; and {len(diff) - _SHOWN} more" if len(diff) > _SHOWN else "")
    keys = ", ".join(d.split(":", 1)[0] for d in diff)
    raise DifferentJob(f"{what}: {keys} {'differs' if len(diff) == 1 else 'differ'} ({shown}); {fix}")


def check_fingerprint(
    folder: str | Path, fingerprint: Mapping[str, Any], what: str, fix: str, *, has_output: bool
) -> Path:
    """Refuse to continue ``folder``'s output under another fingerprint; then store ``fingerprint`` there.

    Args:
        folder: the job's work or run folder.
        fingerprint: the job's settings now (:func:`job_fingerprint`).
        what: the start of the message, e.g. ``"data/raw.h5.work/parts holds parts of a different collection"``.
        fix: what to do instead.
        has_output: ``folder`` already holds output the job would continue from. Without any there is nothing
            to protect (a job that failed before writing any may be rerun with other settings); with some and
            no stored fingerprint its settings are unknown, which is refused too.

    Returns:
        The fingerprint file (``<folder>/fingerprint.json``).

    Raises:
        DifferentJob: ``folder`` holds output of a job with other settings; one line naming the keys and ``fix``.
    """
    path = Path(folder) / FINGERPRINT_FILE
    if has_output:
        if not path.exists():
            raise DifferentJob(f"{what}: its settings are unknown (no {FINGERPRINT_FILE}); {fix}")
        refuse_if_different(json.loads(path.read_text(encoding="utf-8")), fingerprint, what, fix)
    write_json(path, dict(fingerprint))
    return path


_UNSET = object()


def _flatten(node: Any, prefix: str) -> Iterable[tuple[str, Any]]:
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list | tuple) and node:
        for i, value in enumerate(node):
            yield from _flatten(value, f"{prefix}[{i}]")
    elif prefix:  # a leaf, or an empty section (kept: ``{}`` and ``[]`` differ from unset)
        yield prefix, node


def _ignored(key: str, patterns: tuple[str, ...]) -> bool:
    """True when ``key`` or one of its sections (``a`` and ``a.b`` for ``a.b.c``) matches a pattern."""
    parts = key.replace("[", ".[").split(".")
    sections = [".".join(parts[: i + 1]).replace(".[", "[") for i in range(len(parts))]
    globs = [p.replace("[", "[[]") for p in patterns]  # ``[0]`` is a list index here, not a character class
    return any(fnmatch.fnmatchcase(s, g) for s in sections for g in globs)


def _show(value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
