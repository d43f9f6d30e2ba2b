"""Does every resumable job survive ``kill -9``? Train, relabel, collect and serve killed at random points.

Each case runs its job as a subprocess (``vlmrl <job> ...`` with tiny budgets, in a temporary folder) once
uninterrupted (the reference), then in trials: the job is started, killed with SIGKILL at a point drawn from a
seeded generator (a fifth of the points in the reference's start-up, the rest uniform over its working phase,
counted from the run's first line of work), started again with the same command (``resume=true`` for train),
possibly killed again, and finally left to finish. What is checked after each trial:

- ``collect``: every dataset array, the metadata and the summary equal the reference's; no parts left over.
- ``relabel`` (VLM labels from the in-process stub VLM): the relabeled rewards, the labels file, the label
  cache's row count and its recorded spend equal the reference's; the stub's answered stage-1 calls exceed the
  reference's by at most the queries in flight at each kill (``max_workers``).
- ``train`` (PPO, VLM labels from the stub, a spend budget that binds): SB3 cannot continue bit for bit from a
  mid-rollout kill (the envs restart from their seed, the RNG streams are not checkpointed), so what is asserted
  is the documented guarantee: the resumed run ends at the reference's step count with the reference's set of
  checkpoints, all loadable, each with its reward state; everything saved before the first kill (checkpoints and
  metrics rows) is bitwise the reference's; no metrics step is lost, and only steps logged after the last
  checkpoint at a kill appear twice; the spend budget holds (stub answers <= budget + in flight at each kill;
  the spend recorded in ``labels/stats.json`` <= budget and short of the stub's count by at most that).
- ``train_sac``: the same for SAC (``push_rlvlmf_sac``), whose checkpoints carry the replay buffer.
- ``serve`` (``vlmrl serve`` against the in-process stub LLM; killed with ``kill -9 <pid>`` as a user would,
  not its group): every acknowledged submission ends up labelled once in the store with the reference's label,
  no message is paid for twice beyond one batch in flight per kill, and no child process outlives the server.

Prints a table (job, kills tried, survived, notes), then key=value lines ending in ``ratio=``:

    python benchmarks/kill_suite.py --seed 0 --kills-per-job 11      # >= 40 kills, ~15 min on 2 loaded cores
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

VLMRL = str(Path(sys.executable).with_name("vlmrl"))
JOB_ENV = {"MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SMALL_PUSH = ["envs.width=32", "envs.height=32"]


# ---------------------------------------------------------------------------------------------------- processes
def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Job:
    """One run of a job command in its own session (process group), output appended to ``log``."""

    def __init__(self, cmd: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None):
        self.cmd, self.log = cmd, log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self.offset = self._out.tell()  # where this run's output starts in the log
        self._out.write(f"\n$ {' '.join(cmd)}\n".encode())
        self._out.flush()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **JOB_ENV, **(env or {})},
            start_new_session=True,
        )

    @property
    def elapsed(self) -> float:
        """Seconds since the job started."""
        return time.monotonic() - self.t0

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or ``None`` if still running after ``timeout`` seconds."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._out.close()
        return rc

    def output(self) -> str:
        """What this run has written so far."""
        with open(self.log, "rb") as fh:
            fh.seek(self.offset)
            return fh.read().decode(errors="replace")

    def kill(self, group: bool = True) -> set[int]:
        """SIGKILL the job (its whole process group, or the main process only); returns its descendants then."""
        below = descendants(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._out.close()
        return below

    def cleanup(self) -> None:
        """Kill whatever is left of the job's process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def tail(path: Path, n: int = 6) -> str:
    """The last ``n`` non-empty lines of a log, joined with `` | ``."""
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = [x for x in text.splitlines() if x.strip() and "HTTP Request:" not in x]
    return " | ".join(x.strip()[:200] for x in lines[-n:])


# ---------------------------------------------------------------------------------------------------- results
@dataclass
class Kill:
    """One delivered SIGKILL: when, in which run of the trial, and what the case noted at that moment."""

    run: int
    at: float
    snapshot: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trial:
    """A trial: its kills, the problems found after the final run, and where it ran."""

    job: str
    index: int
    folder: Path
    kills: list[Kill] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def survived(self) -> bool:
        """True when no check failed."""
        return not self.problems

    def describe(self) -> str:
        """Job, trial, kill times and what differed: the reproduction of a failure."""
        times = ", ".join(f"run {k.run} at {k.at:.2f}s" for k in self.kills)
        return f"{self.job} trial {self.index} (kills: {times or 'none'}; folder {self.folder}): " + "; ".join(
            self.problems
        )


# ---------------------------------------------------------------------------------------------------- cases
class KillCase(abc.ABC):
    """One job under test: its command, its reference run, what to note at a kill and what to check after.

    Args:
        root: the folder every run of this case lives under.
    """

    name = "job"
    group_kill = True  # SIGKILL the process group (batch jobs) rather than the main process only
    timeout = 300.0  # seconds any one run may take
    ready = ""  # regex of the log line that shows the job past its start-up (imports, config)

    def __init__(self, root: Path):
        self.root = Path(root) / self.name
        self.root.mkdir(parents=True, exist_ok=True)
        self.reference: Path | None = None
        self.duration = 0.0
        self.ready_at = 0.0
        self.done_at = 0.0

    def setup(self) -> None:
        """Build what every run shares (datasets, stub endpoints)."""

    def close(self) -> None:
        """Stop what :meth:`setup` started."""

    @abc.abstractmethod
    def command(self, folder: Path) -> list[str]:
        """The job's command line writing into ``folder`` (the same for the first run and every restart)."""

    def before_trial(self, folder: Path) -> None:
        """Called once before a trial's first run (counters, client threads)."""

    def at_kill(self, folder: Path) -> dict[str, Any]:
        """What the checks need to know about the moment of a kill (last checkpoint, metrics steps ...)."""
        return {}

    @abc.abstractmethod
    def check(self, folder: Path, kills: list[Kill]) -> list[str]:
        """Problems of a finished trial in ``folder`` compared with the reference (empty: survived)."""

    # ---- driving -----------------------------------------------------------------------------------------
    def run_reference(self) -> list[str]:
        """Run the job once uninterrupted; returns problems (a reference that fails makes the case fail)."""
        folder = self.root / "reference"
        folder.mkdir(parents=True, exist_ok=True)
        self.before_trial(folder)
        job = Job(self.command(folder), folder, folder / "job.log")
        pattern, rc = re.compile(self.ready, re.M), None
        while rc is None and job.elapsed < self.timeout:
            rc = job.wait(0.05)
            if not self.ready_at and pattern.search((folder / "job.log").read_text(errors="replace")):
                self.ready_at = job.elapsed
            done = self.done_file(folder)
            if not self.done_at and done is not None and done.exists():
                self.done_at = job.elapsed
        self.duration = job.elapsed
        self.done_at = self.done_at or self.duration
        if rc is None:
            job.kill()
            return [f"reference run took over {self.timeout:.0f}s"]
        problems = self.finish_trial(folder, [])
        if rc != 0:
            problems.append(f"reference run exited {rc}: {tail(folder / 'job.log')}")
        self.reference = folder
        self.after_reference(folder)
        return problems

    def after_reference(self, folder: Path) -> None:
        """Record what later trials compare against (counters of the reference run)."""

    def finish_trial(self, folder: Path, kills: list[Kill]) -> list[str]:
        """Called after a trial's final run, before :meth:`check` (stops clients); returns problems."""
        return []

    def done_file(self, folder: Path) -> Path | None:
        """A file whose appearance ends the phase worth killing in (the rest only writes reports)."""
        return None

    startup_share = 0.2  # share of the kills aimed at start-up (imports, config, opening files)

    def wait_kill_point(self, job: Job, rng: np.random.Generator) -> bool:
        """Wait until a random point of this run; False when the run ended before it.

        With probability :attr:`startup_share` the point is uniform in the reference's start-up; otherwise it is
        uniform over the reference's working phase, counted from the moment this run prints its :attr:`ready`
        line (start-up times vary a lot on a loaded machine; resumed runs skip work already done).
        """
        startup, offset = rng.random() < self.startup_share, float(rng.random())
        if startup:
            return job.wait(offset * self.ready_at) is None
        pattern = re.compile(self.ready, re.M)
        while not pattern.search(job.output()):
            if job.wait(0.05) is not None or job.elapsed > self.timeout:
                return False
        done = min(self.done_at or self.duration, self.duration)
        span = max(0.1, done - self.ready_at) + 0.25 * (self.duration - done)
        return job.wait(offset * span) is None

    def trial(self, index: int, rng: np.random.Generator, kills: int) -> Trial:
        """Kill the job up to ``kills`` times at random points, let the last run finish, then check."""
        folder = self.root / f"trial_{index:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        result = Trial(self.name, index, folder)
        self.before_trial(folder)
        log = folder / "job.log"
        runs = 0
        while True:
            runs += 1
            job = Job(self.command(folder), folder, log)
            if len(result.kills) < kills:
                rc = None if self.wait_kill_point(job, rng) else job.wait(self.timeout)
                if rc is None:
                    at = job.elapsed
                    job.kill(group=self.group_kill)
                    result.kills.append(Kill(runs, at, self.at_kill(folder)))
                    problems = self.after_kill(folder, job)
                    result.problems += [f"after the kill of run {runs} at {at:.2f}s: {p}" for p in problems]
                    continue
            else:
                rc = job.wait(self.timeout)
            if rc is None:
                job.kill()
                result.problems.append(f"run {runs} took over {self.timeout:.0f}s: {tail(log)}")
            elif rc != 0:
                result.problems.append(f"run {runs} exited {rc}: {tail(log)}")
            break
        result.problems += self.finish_trial(folder, result.kills)
        if not result.problems:
            result.problems += self.check(folder, result.kills)
        return result

    def after_kill(self, folder: Path, job: Job) -> list[str]:
        """Checks right after a kill (leftover processes); returns problems."""
        return []


def dataset_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a saved dataset (infos prefixed ``infos/``), read through vlmrl's own loader."""
    from vlmrl.data.storage import load_dataset

    d = load_dataset(path)
    arrays = {k: getattr(d, k) for k in ("observations", "actions", "rewards", "terminals", "timeouts", "frames")}
    arrays.update({f"infos/{k}": v for k, v in d.infos.items()})
    arrays["metadata"] = np.frombuffer(json.dumps(d.metadata, sort_keys=True, default=str).encode(), np.uint8)
    return {k: v for k, v in arrays.items() if v is not None}


def compare_arrays(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], what: str) -> list[str]:
    """Problems where two dicts of arrays differ in keys, dtype, shape or bytes."""
    problems = []
    if set(ref) != set(got):
        problems.append(f"{what}: keys differ ({sorted(set(ref) ^ set(got))})")
    for k in sorted(set(ref) & set(got)):
        a, b = np.asarray(ref[k]), np.asarray(got[k])
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"{what}[{k}]: {b.dtype}{b.shape} instead of {a.dtype}{a.shape}")
        elif a.tobytes() != b.tobytes():
            bad = int(np.sum(a != b)) if a.dtype != object else -1
            problems.append(f"{what}[{k}]: {bad} of {a.size} values differ")
    return problems


class CollectCase(KillCase):
    """``vlmrl collect``: the dataset of a killed and restarted collection is byte for byte the reference's."""

    name = "collect"
    ready = r"^collect: \d+/"

    def __init__(self, root: Path, episodes: int = 64, part_episodes: int = 8, steps: int = 30):
        super().__init__(root)
        self.episodes, self.part_episodes, self.steps = episodes, part_episodes, steps

    def command(self, folder: Path) -> list[str]:
        """A push_offline collection of short episodes saved in parts (episodes are cheap: many of them)."""
        return [VLMRL, "collect", "experiments=push_offline", "labelers=none", f"collect.out={folder / 'raw.npz'}",
                f"collect.episodes={self.episodes}", f"collect.part_episodes={self.part_episodes}",
                f"envs.max_episode_steps={self.steps}", *SMALL_PUSH]  # fmt: skip

    def at_kill(self, folder: Path) -> dict[str, Any]:
        """How many parts were on disk."""
        return {"parts": len(list((folder / "raw.npz.work").glob("parts/part_*.npz")))}

    def check(self, folder: Path, kills: list[Kill]) -> list[str]:
        """Arrays, metadata and summary equal; the parts folder removed."""
        problems = compare_arrays(dataset_arrays(self.reference / "raw.npz"), dataset_arrays(folder / "raw.npz"), "raw")
        ref_summary = json.loads((self.reference / "raw.summary.json").read_text())
        summary = json.loads((folder / "raw.summary.json").read_text())
        ref_summary.pop("out"), summary.pop("out")
        if summary != ref_summary:
            problems.append(f"summary differs: {summary} vs {ref_summary}")
        if (folder / "raw.npz.work").exists():
            problems.append("raw.npz.work/ left behind after the collection finished")
        return problems


class StubVLM:
    """The stub VLM endpoint served from this process, so its counters can be read between runs."""

    def __init__(self, latency: float):
        from vlmrl.testing.stub_vlm import StubVLMServer

        self.server = StubVLMServer(port=0, latency=latency)
        self.server.start()

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL."""
        return self.server.base_url

    def stage1(self) -> int:
        """Stage-1 calls answered so far: paid queries (one per labelled pair)."""
        return int(self.server.counts["stage1"])

    def close(self) -> None:
        """Stop serving."""
        self.server.stop()


class RelabelCase(KillCase):
    """``vlmrl relabel`` with VLM labels: same rewards and labels; nothing paid twice beyond the queries in flight."""

    name = "relabel"
    ready = r"HTTP Request: POST|^relabel: "

    def __init__(self, root: Path, pairs: int = 40, max_workers: int = 2, latency: float = 0.06):
        super().__init__(root)
        self.pairs, self.max_workers, self.latency = pairs, max_workers, latency
        self.stub: StubVLM | None = None
        self._start = 0
        self.reference_paid = 0

    def setup(self) -> None:
        """Collect the dataset every run relabels and start the stub VLM."""
        self.stub = StubVLM(self.latency)
        self.dataset = self.root / "dataset" / "raw.npz"
        self.dataset.parent.mkdir(parents=True, exist_ok=True)
        cmd = [VLMRL, "collect", "experiments=push_offline", "labelers=none", f"collect.out={self.dataset}",
               "collect.episodes=12", "collect.part_episodes=4", "envs.max_episode_steps=8", *SMALL_PUSH]  # fmt: skip
        job = Job(cmd, self.dataset.parent, self.dataset.parent / "job.log")
        if job.wait(self.timeout) != 0:
            raise RuntimeError(f"could not collect the relabel dataset: {tail(self.dataset.parent / 'job.log')}")

    def close(self) -> None:
        """Stop the stub."""
        if self.stub is not None:
            self.stub.close()

    def command(self, folder: Path) -> list[str]:
        """Relabel with the rlvlmf labeler against the stub, the label cache and outputs in ``folder``."""
        return [VLMRL, "relabel", "experiments=push_offline", "labelers=rlvlmf", "labelers.labeler.task=push",
                f"labelers.labeler.base_url={self.stub.base_url}", f"labelers.label_cache={folder / 'labels.sqlite'}",
                f"labelers.labeler.max_workers={self.max_workers}", "labelers.labeler.requests_per_second=null",
                f"labelers.labeler.max_queries={2 * self.pairs}", "labelers.labeler.timeout=10",
                f"relabel.dataset={self.dataset}", f"relabel.out={folder / 'relabeled.npz'}",
                f"relabel.pairs={self.pairs}", "labelers.max_epochs=2", "labelers.image_size=16",
                "labelers.ensemble_size=1"]  # fmt: skip

    def before_trial(self, folder: Path) -> None:
        """Remember the stub's counter."""
        self._start = self.stub.stage1()

    def after_reference(self, folder: Path) -> None:
        """The reference's paid queries."""
        self.reference_paid = self.stub.stage1() - self._start

    def at_kill(self, folder: Path) -> dict[str, Any]:
        """Paid so far in this trial and labels cached."""
        return {"paid": self.stub.stage1() - self._start, "cached": cache_rows(folder / "labels.sqlite")}

    def check(self, folder: Path, kills: list[Kill]) -> list[str]:
        """Relabeled arrays, labels and cache size equal the reference's; re-paid <= in flight per kill."""
        ref = self.reference
        problems = compare_arrays(
            dataset_arrays(ref / "relabeled.npz"), dataset_arrays(folder / "relabeled.npz"), "relabeled"
        )
        with np.load(ref / "relabeled.labels.npz") as a, np.load(folder / "relabeled.labels.npz") as b:
            problems += compare_arrays(dict(a), dict(b), "labels")
        ref_rows, rows = cache_rows(ref / "labels.sqlite"), cache_rows(folder / "labels.sqlite")
        if rows != ref_rows:
            problems.append(f"label cache holds {rows} labels, the reference's {ref_rows}")
        ref_spend, spend = recorded_spend(ref / "labels.sqlite"), recorded_spend(folder / "labels.sqlite")
        if spend != ref_spend:
            problems.append(f"label cache records {spend} paid queries, the reference's {ref_spend}")
        paid = self.stub.stage1() - self._start
        allowed = self.reference_paid + len(kills) * self.max_workers
        if paid > allowed:
            problems.append(
                f"paid {paid} queries, more than the reference's {self.reference_paid} + {self.max_workers} in flight"
                f" x {len(kills)} kills (paid by kill: {[k.snapshot.get('paid') for k in kills]})"
            )
        return problems


def cache_rows(path: Path) -> int:
    """Labels stored in a label cache file (0 when there is none)."""
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM labels").fetchone()[0])
    finally:
        db.close()


def recorded_spend(path: Path) -> int | None:
    """Paid queries recorded in a label cache's spend table (``None`` when it keeps no spend record)."""
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'spend'").fetchone():
            return None
        return int(db.execute("SELECT COALESCE(SUM(queries), 0) FROM spend").fetchone()[0])
    finally:
        db.close()


def checkpoint_params(path: Path) -> tuple[dict[str, Any], int]:
    """``(policy tensors, num_timesteps)`` of an SB3 checkpoint zip (raises when it is not loadable)."""
    import torch

    with zipfile.ZipFile(path) as z:
        params = torch.load(io.BytesIO(z.read("policy.pth")), map_location="cpu", weights_only=True)
        data = json.loads(z.read("data"))
    return params, int(data["num_timesteps"])


def same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Bitwise equality of two state dicts."""
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def checkpoint_steps(folder: Path) -> list[int]:
    """Steps of the complete ``checkpoints/step_N.zip`` files of a run folder."""
    return sorted(int(m.group(1)) for p in (folder / "checkpoints").glob("step_*.zip")
                  if (m := re.fullmatch(r"step_(\d+)\.zip", p.name)))  # fmt: skip


def metrics_rows(folder: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (a torn last line is skipped)."""
    path = folder / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


class TrainCase(KillCase):
    """``vlmrl train push_rlvlmf`` (PPO, VLM preference labels from the stub, a binding spend budget), resumed.

    Bitwise equality with the uninterrupted run is not what SB3 offers after a resume (see the module
    docstring); this case asserts what a checkpoint guarantees.
    """

    name = "train"
    ready = r"preference update \d+ "

    def __init__(self, root: Path, budget: int = 35, max_workers: int = 2, latency: float = 0.02):
        super().__init__(root)
        self.budget, self.max_workers, self.latency = budget, max_workers, latency
        self.stub: StubVLM | None = None
        self._start = 0

    def setup(self) -> None:
        """Start the stub VLM."""
        self.stub = StubVLM(self.latency)

    def close(self) -> None:
        """Stop the stub."""
        if self.stub is not None:
            self.stub.close()

    def command(self, folder: Path) -> list[str]:
        """768 PPO steps, a checkpoint and a label update every rollout (128 steps): 60 labels wanted, 35 paid."""
        return [VLMRL, "train", "experiments=push_rlvlmf", f"run_dir={folder / 'run'}", "resume=true",
                "envs.max_episode_steps=20", *SMALL_PUSH, "agents.total_timesteps=768", "agents.n_envs=2",
                "agents.n_steps=64", "agents.batch_size=64", "agents.n_epochs=1", "agents.checkpoint_every=128",
                "agents.progress_bar=false", "agents.video_episodes=1", "labelers.label_every=128",
                "labelers.queries_per_update=10", "labelers.max_labels=60", "labelers.image_size=16",
                "labelers.ensemble_size=1", "labelers.max_train_steps=5",
                "labelers.labeler.task=push",
                f"labelers.labeler.base_url={self.stub.base_url}", f"labelers.label_cache={folder / 'labels.sqlite'}",
                f"labelers.labeler.max_queries={self.budget}", f"labelers.labeler.max_workers={self.max_workers}",
                "labelers.labeler.requests_per_second=null", "labelers.labeler.timeout=10"]  # fmt: skip

    def before_trial(self, folder: Path) -> None:
        """Remember the stub's counter."""
        self._start = self.stub.stage1()

    def done_file(self, folder: Path) -> Path | None:
        """The final checkpoint (the video and the report follow)."""
        return folder / "run" / "checkpoints" / "step_768.zip"

    def at_kill(self, folder: Path) -> dict[str, Any]:
        """The newest checkpoint, the metrics steps and the paid queries at the kill."""
        steps = checkpoint_steps(folder / "run")
        return {
            "checkpoint": steps[-1] if steps else 0,
            "metrics": [r["step"] for r in metrics_rows(folder / "run")],
            "paid": self.stub.stage1() - self._start,
        }

    def after_reference(self, folder: Path) -> None:
        """The reference's paid queries (the budget must bind for the check to mean anything)."""
        self.reference_paid = self.stub.stage1() - self._start

    def check(self, folder: Path, kills: list[Kill]) -> list[str]:
        """The checkpoint guarantee, the metrics rows and the spend budget."""
        ref, run = self.reference / "run", folder / "run"
        problems = []
        ref_steps, steps = checkpoint_steps(ref), checkpoint_steps(run)
        if steps != ref_steps:
            problems.append(f"checkpoints {steps} instead of {ref_steps}")
        first = kills[0].snapshot["checkpoint"] if kills else ref_steps[-1]
        for step in steps:
            try:
                params, timesteps = checkpoint_params(run / "checkpoints" / f"step_{step}.zip")
            except Exception as e:  # noqa: BLE001 - any failure to load is the finding
                problems.append(f"checkpoint step_{step}.zip does not load ({type(e).__name__}: {e})")
                continue
            if timesteps != step:
                problems.append(f"step_{step}.zip holds num_timesteps={timesteps}")
            if not (run / "checkpoints" / f"step_{step}").is_dir():
                problems.append(f"step_{step}.zip has no reward state beside it")
            if step <= first and step in ref_steps:
                ref_params, _ = checkpoint_params(ref / "checkpoints" / f"step_{step}.zip")
                if not same_params(ref_params, params):
                    problems.append(f"step_{step}.zip, saved before the first kill, differs from the reference's")
        result = json.loads((run / "result.json").read_text()) if (run / "result.json").exists() else {}
        ref_result = json.loads((ref / "result.json").read_text())
        if result.get("timesteps") != ref_result["timesteps"]:
            problems.append(f"result timesteps {result.get('timesteps')} instead of {ref_result['timesteps']}")
        problems += self._check_metrics(metrics_rows(ref), metrics_rows(run), kills, first)
        problems += self._check_budget(run, kills)
        return problems

    def _check_metrics(self, ref_rows: list[dict], rows: list[dict], kills: list[Kill], first: int) -> list[str]:
        problems = []
        ref_steps = [r["step"] for r in ref_rows]
        if sorted(set(r["step"] for r in rows)) != ref_steps:
            problems.append(f"metrics steps {[r['step'] for r in rows]} instead of {ref_steps}")
        # A row logged after the last checkpoint at a kill is logged again by the resumed run; nothing else twice.
        allowed = Counter({s: 1 for s in ref_steps})
        for k in kills:
            allowed.update(s for s in k.snapshot["metrics"] if s > k.snapshot["checkpoint"])
        counts = Counter(r["step"] for r in rows)
        extra = {s: n for s, n in counts.items() if n > allowed[s]}
        if extra:
            problems.append(f"metrics steps logged more often than resuming explains: {extra}")
        untimed = [{k: v for k, v in r.items() if k != "time"} for r in rows]
        for ref_row in ref_rows:
            if ref_row["step"] <= first:
                want = {k: v for k, v in ref_row.items() if k != "time"}
                if want not in untimed:
                    problems.append(f"metrics row of step {ref_row['step']} (before the first kill) differs")
        return problems

    def _check_budget(self, run: Path, kills: list[Kill]) -> list[str]:
        problems = []
        paid = self.stub.stage1() - self._start
        allowed = self.budget + len(kills) * self.max_workers
        if paid > allowed:
            problems.append(
                f"the endpoint answered {paid} queries against a budget of {self.budget} (+{self.max_workers} in"
                f" flight x {len(kills)} kills; paid by kill: {[k.snapshot['paid'] for k in kills]})"
            )
        stats = json.loads((run / "labels" / "stats.json").read_text()) if (run / "labels/stats.json").exists() else {}
        # The spend recorded under the budget key counts every attempt of the run; "paid" is the last attempt's.
        field = "spend_total.queries" if "queries" in stats.get("spend_total", {}) else "paid"
        recorded = stats["spend_total"]["queries"] if field != "paid" else stats.get("paid", 0)
        if recorded > self.budget:
            problems.append(f"labels/stats.json reports {field}={recorded}, over the budget of {self.budget}")
        if paid - recorded > len(kills) * self.max_workers:
            problems.append(
                f"labels/stats.json reports {field}={recorded}; the endpoint answered {paid}"
                f" (more than {self.max_workers} in flight x {len(kills)} kills unaccounted for)"
            )
        return problems


class SACTrainCase(TrainCase):
    """``vlmrl train push_rlvlmf_sac`` (SAC, stub-VLM labels, a binding spend budget), resumed from the checkpoint
    with its replay buffer: the same guarantees as :class:`TrainCase`.
    """  # noqa: D205

    name = "train_sac"

    def command(self, folder: Path) -> list[str]:
        """600 SAC steps, a checkpoint every 150 (with the replay buffer), labels every 100: 60 wanted, 35 paid."""
        return [VLMRL, "train", "experiments=push_rlvlmf_sac", f"run_dir={folder / 'run'}", "resume=true",
                *SMALL_PUSH, "agents.total_timesteps=600", "agents.learning_starts=50", "agents.batch_size=32",
                "agents.buffer_size=600", "agents.train_freq=2", "agents.checkpoint_every=150",
                "agents.feedback_steps=100", "agents.log_every=50", "agents.eval_episodes=2",
                "agents.policy_kwargs={net_arch:[16]}", "agents.progress_bar=false", "agents.video_episodes=1",
                "labelers.label_every=100", "labelers.queries_per_update=10", "labelers.max_labels=60",
                "labelers.image_size=16", "labelers.ensemble_size=1", "labelers.max_train_steps=5",
                f"labelers.labeler.base_url={self.stub.base_url}", f"labelers.label_cache={folder / 'labels.sqlite'}",
                f"labelers.labeler.max_queries={self.budget}", f"labelers.labeler.max_workers={self.max_workers}",
                "labelers.labeler.requests_per_second=null", "labelers.labeler.timeout=10"]  # fmt: skip

    def done_file(self, folder: Path) -> Path | None:
        """The final checkpoint (evaluation, the video and the report follow)."""
        return folder / "run" / "checkpoints" / "step_600.zip"


MESSAGES = (
    [f"You kill the newt {i}!" for i in range(10)]
    + [f"You see here {i} gold pieces." for i in range(10)]
    + [f"It's a wall ({i})." for i in range(10)]
    + [f"You hear a door open {i}." for i in range(10)]
)


class ServeCase(KillCase):
    """``vlmrl serve`` (stub LLM endpoint): acknowledged submissions are labelled once and never lost.

    A client thread submits :data:`MESSAGES` (and repeats) in small chunks, resubmitting a chunk only when the
    server did not acknowledge it (connection refused while the server is down). After the trial's kills the
    last server runs until every acknowledged message has a label, then stops with SIGTERM.
    """

    name = "serve"
    ready = r"annotation server on "
    group_kill = False  # kill -9 <pid> as a user would: the children must die with the server on their own

    def __init__(self, root: Path, batch_size: int = 4, latency: float = 0.08, chunk: int = 4, pace: float = 0.25):
        super().__init__(root)
        self.batch_size, self.latency, self.chunk, self.pace = batch_size, latency, chunk, pace
        self.stub = None
        self.port = 0
        self.reference_labels: dict[str, int] = {}

    def setup(self) -> None:
        """Start the stub LLM endpoint."""
        from vlmrl.testing.stub_llm import StubEndpoint

        self.stub = StubEndpoint(latency=self.latency)
        self.stub.start()

    def close(self) -> None:
        """Stop the stub."""
        if self.stub is not None:
            self.stub.stop()

    def command(self, folder: Path) -> list[str]:
        """The server on a fixed port (clients reconnect there), its store in ``folder``."""
        return [VLMRL, "serve", f"endpoint={self.stub.base_url}", f"port={self.port}",
                f"store_path={folder / 'labels.sqlite'}", f"batch_size={self.batch_size}",
                "labeler.timeout=5"]  # fmt: skip

    def before_trial(self, folder: Path) -> None:
        """Pick a port, snapshot the stub's paid counts and start the submitting client."""
        from vlmrl.annotation.backends import free_port

        self.port = free_port()
        self._paid0 = Counter(self.stub.paid)
        self.acked: list[str] = []
        self.client_errors: list[str] = []
        self._client = threading.Thread(target=self._submit_all, args=(self.acked, self.client_errors), daemon=True)
        self._client.start()

    def _submit_all(self, acked: list[str], errors: list[str]) -> None:
        from vlmrl.annotation.client import HttpClient

        stream = MESSAGES + MESSAGES[::3]  # repeats are acknowledged as known, never paid again
        client = HttpClient(f"http://127.0.0.1:{self.port}", timeout=5.0)
        deadline = time.monotonic() + self.timeout
        try:
            for i in range(0, len(stream), self.chunk):
                part = stream[i : i + self.chunk]
                while time.monotonic() < deadline:
                    try:
                        ack = client.submit(part)
                    except Exception:  # noqa: BLE001 - server down or killed mid-request: not acknowledged
                        time.sleep(0.05)
                        continue
                    if ack.get("accepted") != len(part):
                        errors.append(f"submit of {part} answered {ack}")
                    acked += part
                    break
                time.sleep(self.pace)
        finally:
            client.close()

    def after_kill(self, folder: Path, job: Job) -> list[str]:
        """Every process the server had started must be gone within 5 s of its kill -9."""
        return self._leftovers(job, self._below_at_kill)

    def trial(self, index: int, rng: np.random.Generator, kills: int) -> Trial:
        """Like :meth:`KillCase.trial`, but a server never finishes by itself: the last run is stopped here."""
        folder = self.root / f"trial_{index:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        result = Trial(self.name, index, folder)
        self.before_trial(folder)
        log = folder / "job.log"
        for run in range(1, kills + 1):
            job = Job(self.command(folder), folder, log)
            if not self.wait_kill_point(job, rng):
                result.problems.append(f"server run {run} exited by itself: {tail(log)}")
                return result
            at = job.elapsed
            self._below_at_kill = job.kill(group=False)
            stored = -1  # no store yet (killed during start-up)
            with contextlib.suppress(sqlite3.Error):
                stored = len(self._stored(folder)[0])
            result.kills.append(Kill(run, at, {"acked": len(self.acked), "stored": stored}))
            result.problems += [f"after the kill of run {run} at {at:.2f}s: {p}" for p in self.after_kill(folder, job)]
            job.cleanup()
        result.problems += self._last_run(folder, log, len(result.kills) + 1)
        if not result.problems:
            result.problems += self.check(folder, result.kills)
        return result

    def run_reference(self) -> list[str]:
        """One server run, uninterrupted, until every message is labelled."""
        folder = self.root / "reference"
        folder.mkdir(parents=True, exist_ok=True)
        self.before_trial(folder)
        t0 = time.monotonic()
        problems = self._last_run(folder, folder / "job.log", 1, on_done=lambda: time.monotonic() - t0)
        self.reference = folder
        self.reference_labels = self._stored(folder)[0]
        return problems

    def _last_run(self, folder: Path, log: Path, run: int, on_done=None) -> list[str]:
        from vlmrl.annotation.client import HttpClient

        job = Job(self.command(folder), folder, log)
        problems: list[str] = []
        deadline = time.monotonic() + self.timeout
        client = HttpClient(f"http://127.0.0.1:{self.port}", timeout=5.0)
        pattern = re.compile(self.ready, re.M)
        try:
            while time.monotonic() < deadline:
                if on_done is not None and not self.ready_at and pattern.search(log.read_text(errors="replace")):
                    self.ready_at = job.elapsed
                if not self._client.is_alive():
                    with contextlib.suppress(Exception):  # still starting
                        if None not in client.labels(sorted(set(self.acked))).values():
                            break
                if job.wait(0.05) is not None:
                    problems.append(f"server run {run} exited by itself: {tail(log)}")
                    break
            else:
                problems.append(f"acknowledged messages still unlabelled after {self.timeout:.0f}s")
        finally:
            client.close()
        if on_done is not None:
            self.duration = on_done()
        below = descendants(job.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(job.proc.pid, signal.SIGTERM)
        if job.wait(30) is None:
            problems.append("the server did not stop within 30 s of SIGTERM")
            job.kill()
        problems += self._leftovers(job, below)
        job.cleanup()
        problems += self.client_errors
        return problems

    @staticmethod
    def _leftovers(job: Job, below: set[int]) -> list[str]:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(alive(p) for p in below):
            time.sleep(0.1)
        left = sorted(p for p in below if alive(p))
        if left:
            names = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:120].decode() for p in left]
            return [f"{len(left)} child process(es) outlived the server: {names}"]
        return []

    def _stored(self, folder: Path) -> tuple[dict[str, int], Counter[str], int]:
        """``(label by message, rows per message, pending rows)`` of the server's SQLite store."""
        db = sqlite3.connect(f"file:{folder / 'labels.sqlite'}?mode=ro", uri=True)
        try:
            found = db.execute("SELECT value, meta FROM labels").fetchall()
            pending = int(db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
        finally:
            db.close()
        rows = [(json.loads(meta or "{}").get("message"), v) for v, meta in found]
        rows = [(m, v) for m, v in rows if m in MESSAGES]
        return dict(rows), Counter(m for m, _ in rows), pending

    def check(self, folder: Path, kills: list[Kill]) -> list[str]:
        """Every acknowledged message stored once with the reference's label; re-paid <= one batch per kill."""
        problems = []
        labels, per_message, pending = self._stored(folder)
        acked = set(self.acked)
        lost = sorted(acked - set(labels))
        if lost:
            problems.append(f"{len(lost)} acknowledged messages have no stored label: {lost[:3]}")
        twice = {m: n for m, n in per_message.items() if n > 1}
        if twice:
            problems.append(f"messages stored more than once: {twice}")
        if pending:
            problems.append(f"{pending} messages still pending after the last run")
        wrong = {m: v for m, v in labels.items() if self.reference_labels.get(m) != v}
        if wrong:
            problems.append(f"labels differ from the reference's: {dict(list(wrong.items())[:3])}")
        paid = Counter(self.stub.paid)
        paid.subtract(self._paid0)
        repaid = sum(max(0, paid[m] - 1) for m in MESSAGES)
        if repaid > len(kills) * self.batch_size:
            twice_paid = {m: paid[m] for m in MESSAGES if paid[m] > 1}
            problems.append(
                f"{repaid} extra paid answers, over one batch ({self.batch_size}) x {len(kills)} kills: {twice_paid}"
            )
        unpaid = [m for m in acked if paid[m] < 1]
        if unpaid:
            problems.append(f"{len(unpaid)} acknowledged messages were never sent to the endpoint")
        return problems


CASES = {
    "collect": CollectCase,
    "relabel": RelabelCase,
    "train": TrainCase,
    "train_sac": SACTrainCase,
    "serve": ServeCase,
}


# ---------------------------------------------------------------------------------------------------- suite
def run_case(
    case: KillCase,
    rng: np.random.Generator,
    kills: int,
    kills_per_trial: int = 2,
    deadline: float = float("inf"),
    max_trials: int | None = None,
) -> tuple[list[Trial], list[str]]:
    """Reference run, then trials until ``kills`` kills were delivered (or the deadline passes).

    A trial whose run finished before its kill point delivers no kill (a trial faster than the reference);
    at most ``max_trials`` (default ``3 * kills``) are started.

    Returns:
        ``(trials, problems of the reference run)``.
    """
    case.setup()
    try:
        ref_problems = case.run_reference()
        if ref_problems:
            return [], ref_problems
        trials: list[Trial] = []
        tried, attempts = 0, 0
        limit = 3 * kills if max_trials is None else max_trials
        while tried < kills and attempts < limit and time.monotonic() < deadline:
            attempts += 1
            t = case.trial(len(trials), rng, min(kills_per_trial, kills - tried))
            trials.append(t)
            tried += len(t.kills)
        return trials, []
    finally:
        case.close()


def main() -> None:
    """Run the suite and print the table and the key=value lines."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kills-per-job", type=int, default=11, help="kills delivered per job (4 jobs)")
    ap.add_argument("--kills-per-trial", type=int, default=2, help="kills before a run is left to finish")
    ap.add_argument("--jobs", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    ap.add_argument("--max-minutes", type=float, default=40.0, help="stop starting new trials after this")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    deadline = time.monotonic() + 60 * args.max_minutes
    root = Path(tempfile.mkdtemp(prefix="vlmrl-kills-"))
    t0 = time.monotonic()
    rows, failures = [], []
    for name in args.jobs.split(","):
        case = CASES[name](root)
        trials, ref_problems = run_case(case, rng, args.kills_per_job, args.kills_per_trial, deadline)
        tried = sum(len(t.kills) for t in trials)
        survived = sum(len(t.kills) for t in trials if t.survived)
        notes = f"reference failed: {'; '.join(ref_problems)}" if ref_problems else ""
        if not notes:
            notes = f"{len(trials)} trials, reference {case.duration:.1f}s"
            bad = [t for t in trials if not t.survived]
            if bad:
                notes += f", {len(bad)} failed trials"
        failures += [t.describe() for t in trials if not t.survived]
        for t in trials:
            kills = "; ".join(f"run {k.run} at {k.at:.1f}s {k.snapshot}" for k in t.kills)
            print(f"  {name} trial {t.index}: {'ok' if t.survived else 'FAILED'}; {kills}", file=sys.stderr, flush=True)
        rows.append((name, tried, survived, notes))
        print(f"[{name}] {survived}/{tried} kills survived ({time.monotonic() - t0:.0f}s)", file=sys.stderr, flush=True)
    print(f"{'job':<8} {'kills':>5} {'survived':>8}  notes")
    for name, tried, survived, notes in rows:
        print(f"{name:<8} {tried:>5} {survived:>8}  {notes}")
    for f in failures:
        print(f"FAILED {f}")
    tried = sum(r[1] for r in rows)
    survived = sum(r[2] for r in rows)
    print(f"seed={args.seed}")
    for name, t, s, _ in rows:
        print(f"{name}_kills={t}")
        print(f"{name}_survived={s}")
    print(f"kills_tried={tried}")
    print(f"kills_survived={survived}")
    print(f"wall_s={time.monotonic() - t0:.0f}")
    print(f"folder={root if args.keep else '(removed)'}")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    print(f"ratio={survived / tried if tried else 0.0:.3f}")


if __name__ == "__main__":
    main()
