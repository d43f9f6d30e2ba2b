"""The run folder: where a run lives, its config, metrics, label statistics and result (docs/CONTRACTS.md)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vlmrl.runs.atomic import append_jsonl, write_json, write_text

#: Keys every ``metrics.jsonl`` row carries (absent episode means are left out, not written as NaN).
CONTRACT_KEYS = (
    "step",
    "time",
    "env_reward_mean",
    "model_reward_mean",
    "ep_env_return_mean",
    "ep_model_return_mean",
    "episodes",
)
#: What makes a folder a run folder (written by some job).
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "result.json", "videos")
CHECKPOINT_SUFFIXES = (".zip", ".pt")
#: The file a failed job leaves in its run folder, holding the one-line error.
FAILED_FILE = "FAILED"
_CONFIG_FILES = ("config.yaml", "config.resume.yaml")


def latest_checkpoint(run_dir: str | Path, suffixes: tuple[str, ...] = CHECKPOINT_SUFFIXES) -> Path | None:
    """The ``checkpoints/step_<N><suffix>`` with the largest N (SB3 saves ``.zip``, torch agents ``.pt``)."""
    pattern = re.compile(r"step_(\d+)(" + "|".join(re.escape(s) for s in suffixes) + r")")
    found = [
        (int(m.group(1)), p) for p in (Path(run_dir) / "checkpoints").glob("step_*") if (m := pattern.fullmatch(p.name))
    ]
    return max(found)[1] if found else None


@dataclasses.dataclass
class LabelStats:
    """What a labelled run paid for and how good its labels were; ``labels/stats.json``, read by the report.

    Attributes:
        labeler: who labelled (``"teacher"``, ``"vlm:gpt-4o"``, ``"llm:SmolLM2-135M"``).
        queries: labels asked for.
        paid: answers obtained, not from the cache (endpoint calls that returned an answer); an unparseable
            answer was paid for and counts here and in ``failures``.
        cache_hits: answers served from the label cache (not paid again).
        valid: labels that carry information (not "can't tell", not failed).
        ties: valid preference labels that say "equally good" (target 0.5), trained as soft targets.
        judged: valid labels other than ties that had a ground truth to compare with.
        correct: judged labels that agree with the ground truth.
        failures: queries that produced no answer (transport errors, unparseable answers, budget refusals).
        budget: the spend budget in queries, if any.
        pending: queries submitted and not answered yet (asynchronous labelers).
        prompt_tokens: prompt tokens of this run's paid answers (the endpoint's ``usage``).
        completion_tokens: completion tokens of this run's paid answers.
        cost_usd: this run's spend, the tokens priced by the labeler's price table.
        inconsistent: pairs asked in both orders whose answers disagreed (dropped as -1).
        spend_total: what every run sharing the label cache paid under the labeler's budget key
            (``budget_key``, ``queries``, tokens, ``cost_usd``) and the budgets (``max_queries``, ``max_spend``).
        warnings: problems the run continued past (too few valid labels with ``on_few_labels=warn``).
        extra: labeler-specific detail (per-update history, server counters, examples), shown as is.
    """

    labeler: str = ""
    queries: int = 0
    paid: int = 0
    cache_hits: int = 0
    valid: int = 0
    ties: int = 0
    judged: int = 0
    correct: int = 0
    failures: int = 0
    budget: int | None = None
    pending: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    inconsistent: int = 0
    spend_total: dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """Agreement with the ground truth over judged labels (NaN when none could be judged)."""
        return self.correct / self.judged if self.judged else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record, with ``accuracy`` (null when nothing was judged)."""
        out = dataclasses.asdict(self)
        out["accuracy"] = None if not self.judged else self.accuracy
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelStats:
        """Read a record written by :meth:`to_dict`; unknown keys go to ``extra``."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        extra = dict(known.pop("extra", {}) or {})
        extra.update({k: v for k, v in data.items() if k not in names and k != "accuracy"})
        return cls(**known, extra=extra)


class EpisodeTracker:
    """Running per-env episode returns (env and model reward) from step-major ``(T, n_envs)`` arrays."""

    def __init__(self, window: int = 20):
        self.window = int(window)
        self.finished: list[tuple[float, float]] = []
        self._env: np.ndarray | None = None
        self._model: np.ndarray | None = None

    def add(self, env_rewards: np.ndarray, model_rewards: np.ndarray, dones: np.ndarray) -> None:
        """Accumulate one rollout; an episode is finished at each ``dones[t, e]``."""
        env_rewards, model_rewards, dones = np.asarray(env_rewards), np.asarray(model_rewards), np.asarray(dones)
        if self._env is None:
            self._env, self._model = np.zeros(env_rewards.shape[1]), np.zeros(env_rewards.shape[1])
        for t in range(env_rewards.shape[0]):
            self._env += env_rewards[t]
            self._model += model_rewards[t]
            for e in np.flatnonzero(dones[t]):
                self.finished.append((float(self._env[e]), float(self._model[e])))
                self._env[e] = self._model[e] = 0.0

    def means(self) -> dict[str, float]:
        """Mean env and model return of the last ``window`` finished episodes (empty before the first)."""
        recent = self.finished[-self.window :]
        if not recent:
            return {}
        return {
            "ep_env_return_mean": float(np.mean([r[0] for r in recent])),
            "ep_model_return_mean": float(np.mean([r[1] for r in recent])),
        }


class RunFolder:
    """One run's folder: ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``videos/``, ``labels/``, ``tb/``,
    ``result.json``. Every job writes through it, so every file has one writer and every write is atomic.
    """  # noqa: D205

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._t0 = time.time()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ---- finding folders -------------------------------------------------------------------------------------
    @classmethod
    def for_job(cls, cfg: DictConfig) -> RunFolder:
        """The folder a job writes: ``cfg.run_dir`` if set; with ``resume`` the newest run of ``cfg.name``
        that got as far as a checkpoint (else the newest started one); else a new timestamped folder.
        """  # noqa: D205
        if cfg.get("run_dir"):
            return cls(cfg.run_dir)
        base = Path(cfg.runs_root) / cfg.name
        if cfg.get("resume"):
            started = sorted(p for p in base.glob("*") if (p / "config.yaml").exists())
            checkpointed = [p for p in started if any((p / "checkpoints").glob("*"))]
            if checkpointed or started:
                return cls((checkpointed or started)[-1])
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path, n = base / stamp, 1
        while path.exists():
            path, n = base / f"{stamp}-{n}", n + 1
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """An existing run: the folder itself, or the newest run inside ``runs/<name>/`` when given the parent.

        Raises:
            FileNotFoundError: when the folder does not exist or holds no run.
        """
        p = Path(path).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"run folder {p} does not exist; pass run_dir=runs/<name>/<timestamp>")
        if any((p / m).exists() for m in RUN_MARKERS):
            return cls(p)
        children = sorted(c for c in p.iterdir() if c.is_dir() and any((c / m).exists() for m in RUN_MARKERS))
        if not children:
            raise FileNotFoundError(
                f"{p} holds no run (no config.yaml or metrics.jsonl in it or its subfolders); "
                "pass run_dir=runs/<name>/<timestamp>"
            )
        return cls(children[-1])

    # ---- layout ----------------------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``: agent checkpoints and, beside each, the reward source's state."""
        return self.path / "checkpoints"

    @property
    def videos(self) -> Path:
        """``videos/``: rollout videos."""
        return self.path / "videos"

    @property
    def labels(self) -> Path:
        """``labels/``: label statistics and the labels a run paid for."""
        return self.path / "labels"

    @property
    def tb(self) -> Path:
        """``tb/``: TensorBoard logs."""
        return self.path / "tb"

    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl``."""
        return self.path / "metrics.jsonl"

    @property
    def result_path(self) -> Path:
        """``result.json``."""
        return self.path / "result.json"

    @property
    def label_stats_path(self) -> Path:
        """``labels/stats.json``."""
        return self.labels / "stats.json"

    def checkpoint_path(self, step: int, suffix: str) -> Path:
        """``checkpoints/step_<step><suffix>``."""
        return self.checkpoints / f"step_{int(step)}{suffix}"

    def state_dir(self, checkpoint: Path) -> Path:
        """The reward source's state folder beside ``checkpoint`` (``checkpoints/step_<N>/``)."""
        return checkpoint.with_suffix("")

    def latest_checkpoint(self, suffixes: tuple[str, ...] = CHECKPOINT_SUFFIXES) -> Path | None:
        """The newest checkpoint of this run, or None."""
        return latest_checkpoint(self.path, suffixes)

    # ---- config ----------------------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """True once a job has saved its config here."""
        return (self.path / "config.yaml").exists()

    def save_config(self, cfg: DictConfig, resuming: bool = False) -> Path:
        """Write the resolved config (``config.resume.yaml`` when resuming, keeping the original)."""
        name = "config.resume.yaml" if resuming else "config.yaml"
        return write_text(self.path / name, OmegaConf.to_yaml(cfg, resolve=True))

    def load_config(self) -> DictConfig:
        """The config the run was started with."""
        path = self.path / "config.yaml"
        if not path.exists():
            raise FileNotFoundError(f"{self.path} is not a run folder (no config.yaml)")
        return OmegaConf.load(path)

    # ---- failure ---------------------------------------------------------------------------------------------
    @property
    def failed_path(self) -> Path:
        """``FAILED``: present while the last job in this folder ended with an error."""
        return self.path / FAILED_FILE

    def record_failure(self, error: BaseException, created: bool) -> Path | None:
        """Clean up after a job that raised: no empty run folder is left behind, a kept one says why it stopped.

        A folder this job created that holds nothing but its config is removed; any other folder gets ``FAILED``
        with the one-line error (a resumed run, or one that wrote checkpoints, metrics or logs, is kept).

        Returns:
            The ``FAILED`` file, or None when the folder was removed.
        """
        files = [p for p in self.path.rglob("*") if p.is_file()] if self.path.is_dir() else []
        if created and all(p.parent == self.path and p.name in _CONFIG_FILES for p in files):
            shutil.rmtree(self.path, ignore_errors=True)
            return None
        message = " ".join(str(error).split()) or "interrupted"
        return write_text(self.failed_path, f"{type(error).__name__}: {message}\n")

    def clear_failure(self) -> None:
        """Remove ``FAILED`` (a job is starting again in this folder)."""
        self.failed_path.unlink(missing_ok=True)

    # ---- metrics ---------------------------------------------------------------------------------------------
    def log_metrics(
        self,
        step: int,
        env_reward_mean: float,
        model_reward_mean: float,
        episodes: int,
        returns: dict[str, float] | None = None,
        **extra: float,
    ) -> dict[str, Any]:
        """Append one ``metrics.jsonl`` row with the contract keys, ``returns`` (an :class:`EpisodeTracker`'s
        ``means()``) and any extra numbers; returns the row.
        """  # noqa: D205
        row: dict[str, Any] = {
            "step": int(step),
            "time": round(time.time() - self._t0, 3),
            "env_reward_mean": float(env_reward_mean),
            "model_reward_mean": float(model_reward_mean),
            "episodes": int(episodes),
            **(returns or {}),
        }
        row.update({k: _number(v) for k, v in extra.items()})
        self.path.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.metrics_path, row)
        return row

    def read_metrics(self) -> tuple[list[dict], int]:
        """Rows of ``metrics.jsonl`` and the number of unreadable lines (e.g. one cut by a crash)."""
        rows, bad = [], 0
        if not self.metrics_path.exists():
            return rows, bad
        for line in self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
        return rows, bad

    # ---- labels ----------------------------------------------------------------------------------------------
    def write_label_stats(self, stats: LabelStats) -> Path:
        """Write ``labels/stats.json`` atomically."""
        return write_json(self.label_stats_path, stats.to_dict())

    def read_label_stats(self) -> LabelStats | None:
        """The run's label statistics, or None when it wrote none."""
        if not self.label_stats_path.exists():
            return None
        return LabelStats.from_dict(json.loads(self.label_stats_path.read_text(encoding="utf-8")))

    # ---- result ----------------------------------------------------------------------------------------------
    def write_result(self, result: dict[str, Any]) -> dict[str, Any]:
        """Write ``result.json`` (the job's final summary, with ``run_dir``); returns what was written."""
        result = {"run_dir": str(self.path), **result}
        write_json(self.result_path, result)
        return result

    def read_result(self) -> dict[str, Any] | None:
        """``result.json``, or None before the job finished."""
        if not self.result_path.exists():
            return None
        return json.loads(self.result_path.read_text(encoding="utf-8"))


def _number(value: Any) -> Any:
    if isinstance(value, bool | int | float | np.number):
        return float(value)
    return value
