"""Score every transition of a dataset with a reward model, in resumable shards, locally or on Ray Data.

Rewards are written shard by shard (``shard_00000.npy`` ... of ``shard_size`` rows each, atomic renames) into a
folder with a ``manifest.json`` fingerprinting the dataset and the reward model. A killed run scores only the
shards that are missing when it is started again; shards from a different dataset or model are refused.

The Ray backend (``backend="ray"``) puts the inputs once into the object store and runs
``ray.data.Dataset.map_batches`` over row indices with the reward model as a stateful actor (built once per
actor, so model weights are loaded once, not once per batch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from vlmrl.rewards.base import RewardModel
from vlmrl.rollouts import score_in_batches
from vlmrl.runs import atomic_path, write_json

MANIFEST = "manifest.json"


class ShardStore:
    """A folder of scored shards for one (dataset, reward model) pair.

    Args:
        folder: where shards and the manifest live (created if missing).
        num_rows: number of transitions to score.
        shard_size: rows per shard (the unit of work kept after a crash).
        fingerprint: identifies the dataset and the reward model; shards with another fingerprint are refused.
    """

    def __init__(self, folder: str | Path, num_rows: int, shard_size: int, fingerprint: str):
        if shard_size < 1:
            raise ValueError(f"shard_size={shard_size}: must be >= 1")
        self.folder = Path(folder)
        self.num_rows = int(num_rows)
        self.shard_size = int(shard_size)
        self.fingerprint = fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = {"num_rows": self.num_rows, "shard_size": self.shard_size, "fingerprint": fingerprint}
        path = self.folder / MANIFEST
        if path.exists():
            old = json.loads(path.read_text())
            if old != manifest:
                raise ValueError(
                    f"{self.folder}: holds shards of another dataset or reward model ({old} != {manifest});"
                    " delete the folder or write the relabeled dataset somewhere else"
                )
        else:
            write_json(path, manifest, indent=None)

    @property
    def num_shards(self) -> int:
        """Total number of shards."""
        return -(-self.num_rows // self.shard_size)

    def rows(self, shard: int) -> np.ndarray:
        """``int64`` row indices of one shard."""
        return np.arange(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_rows))

    def path(self, shard: int) -> Path:
        """File of one shard."""
        return self.folder / f"shard_{shard:05d}.npy"

    def missing(self) -> list[int]:
        """Shards not yet scored."""
        return [s for s in range(self.num_shards) if not self.path(s).exists()]

    def write(self, shard: int, rewards: np.ndarray) -> None:
        """Store one shard's rewards durably (temporary file, then rename)."""
        rewards = np.asarray(rewards, np.float32).reshape(-1)
        expected = len(self.rows(shard))
        if len(rewards) != expected:
            raise ValueError(f"shard {shard}: got {len(rewards)} rewards for {expected} rows")
        with atomic_path(self.path(shard)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, rewards)
            fh.flush()
            os.fsync(fh.fileno())

    def assemble(self) -> np.ndarray:
        """All rewards ``float32 (num_rows,)``; every shard must be present."""
        missing = self.missing()
        if missing:
            raise RuntimeError(f"{self.folder}: shards {missing[:5]}... are not scored yet")
        return np.concatenate([np.load(self.path(s)) for s in range(self.num_shards)])


def score_local(
    reward: RewardModel, inputs: np.ndarray, store: ShardStore, batch_size: int = 256, progress=None
) -> np.ndarray:
    """Score the missing shards in this process; returns all rewards ``float32 (N,)``.

    Args:
        reward: the model; ``predict`` is called on ``inputs[rows]`` batches.
        inputs: ``(N, ...)`` what the model reads (frames or observations).
        store: shard folder (already-scored shards are skipped).
        batch_size: rows per ``predict`` call.
        progress: optional callable ``(shards_done, shards_total)`` called after each shard.
    """
    for shard in store.missing():
        rows = store.rows(shard)
        store.write(shard, score_in_batches(reward, inputs[rows], batch_size, side_effect_free=False))
        if progress is not None:
            progress(store.num_shards - len(store.missing()), store.num_shards)
    return store.assemble()


class RewardActor:
    """Ray Data stateful actor: holds one reward model and the shared inputs, scores batches of row indices."""

    def __init__(self, reward: RewardModel, inputs, torch_threads: int | None = None):
        import ray

        if torch_threads is not None:  # one actor per CPU: avoid oversubscribing the node
            import torch

            torch.set_num_threads(torch_threads)
        self.reward = ray.get(reward) if isinstance(reward, ray.ObjectRef) else reward
        self.inputs = ray.get(inputs) if isinstance(inputs, ray.ObjectRef) else inputs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score ``batch["row"]`` (``int64 (B,)``); returns ``{"row", "reward"}``."""
        rows = np.asarray(batch["row"], np.int64)
        rewards = score_in_batches(self.reward, self.inputs[rows], max(1, len(rows)), side_effect_free=False)
        return {"row": rows, "reward": rewards}


def score_ray(
    reward: RewardModel,
    inputs: np.ndarray,
    store: ShardStore,
    batch_size: int = 256,
    num_actors: int = 2,
    cpus_per_actor: float = 1.0,
    progress=None,
) -> np.ndarray:
    """Score the missing shards with Ray Data ``map_batches`` and a pool of :class:`RewardActor`.

    Uses the running Ray instance, or starts a local one (``ray.init()``) if none is running. Shards are
    written as soon as all their rows are back, so a killed run keeps what finished.
    """
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("Ray is missing: pip install 'vlmrl[ray]' or use relabel.backend=local") from exc
    missing = store.missing()
    if missing:
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        rows = np.concatenate([store.rows(s) for s in missing])
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        blocks = max(num_actors, -(-len(rows) // (4 * batch_size)))  # enough blocks to keep every actor busy
        ds = ray.data.from_numpy(np.array_split(rows, min(blocks, len(rows)))).rename_columns({"data": "row"})
        ds = ds.map_batches(
            RewardActor,
            fn_constructor_kwargs={
                "reward": ray.put(reward),
                "inputs": ray.put(np.asarray(inputs)),
                "torch_threads": max(1, int(cpus_per_actor)),
            },
            batch_size=batch_size,
            concurrency=num_actors,
            num_cpus=cpus_per_actor,
            batch_format="numpy",
        )
        pending: dict[int, dict[int, float]] = {}
        size = store.shard_size
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for row, r in zip(batch["row"].tolist(), batch["reward"].tolist(), strict=True):
                pending.setdefault(row // size, {})[row] = r
            for shard in [s for s, got in pending.items() if len(got) == len(store.rows(s))]:
                got = pending.pop(shard)
                store.write(shard, np.array([got[r] for r in store.rows(shard).tolist()], np.float32))
                if progress is not None:
                    progress(store.num_shards - len(store.missing()), store.num_shards)
    return store.assemble()


def score_dataset(
    reward: RewardModel,
    inputs: np.ndarray,
    folder: str | Path,
    fingerprint: str,
    backend: str = "local",
    shard_size: int = 4096,
    batch_size: int = 256,
    num_actors: int = 2,
    progress=None,
) -> np.ndarray:
    """Score all ``inputs`` with ``reward`` into shards under ``folder`` (resumable); ``float32 (N,)``.

    Args:
        reward: the reward model.
        inputs: ``(N, ...)`` what the model reads (frames or observations).
        folder: shard folder, kept for resuming.
        fingerprint: identifies dataset and model; shards with another fingerprint are refused.
        backend: ``"local"`` (this process) or ``"ray"`` (Ray Data, ``num_actors`` reward-model actors).
        shard_size: rows per shard.
        batch_size: rows per ``predict`` call.
        num_actors: Ray reward-model actors.
        progress: optional ``(shards_done, shards_total)`` callback.
    """
    store = ShardStore(folder, len(inputs), shard_size, fingerprint)
    if backend == "local":
        return score_local(reward, inputs, store, batch_size, progress)
    if backend == "ray":
        return score_ray(reward, inputs, store, batch_size, num_actors, progress=progress)
    raise ValueError(f"relabel.backend={backend!r}: use 'local' or 'ray'")
