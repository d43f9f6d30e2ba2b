"""The offline dataset type: flat D4RL-style arrays, episodes marked by terminals and timeouts.

One :class:`OfflineDataset` holds ``N`` transitions of any number of episodes. Episode ``k`` ends at the
first index ``t`` with ``terminals[t] or timeouts[t]``; the last transition must end an episode, so a file
never holds half an episode. Every array is checked when the dataset is built (:func:`validate_arrays`), and a
problem raises one :class:`DatasetError` naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
"""Arrays every dataset file must hold (the D4RL layout)."""


class DatasetError(ValueError):
    """A dataset file or array set is malformed; the message names the file, the problem and the fix."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


def validate_arrays(arrays: Mapping[str, np.ndarray], infos: Mapping[str, np.ndarray], source: str) -> None:
    """Check that a set of arrays forms a well-formed dataset; raise :class:`DatasetError` otherwise.

    Args:
        arrays: ``observations``, ``actions``, ``rewards``, ``terminals``, ``timeouts`` and optionally ``frames``.
        infos: per-transition extras (``env_reward``, ``gt_metric``, ...), each with leading length ``N``.
        source: the file (or ``"<memory>"``) named in the error.
    """
    missing = [k for k in REQUIRED_KEYS if k not in arrays or arrays[k] is None]
    if missing:
        raise DatasetError(source, f"missing key(s) {missing}; a dataset needs {list(REQUIRED_KEYS)}")
    n = len(arrays["observations"])
    if n == 0:
        raise DatasetError(source, "holds no transitions (observations has length 0)")
    named = {k: v for k, v in arrays.items() if v is not None}
    named.update({f"infos/{k}": v for k, v in infos.items()})
    for key, arr in named.items():
        if np.ndim(arr) == 0 or len(arr) != n:
            got = "a scalar" if np.ndim(arr) == 0 else f"length {len(arr)}"
            raise DatasetError(source, f"'{key}' has {got} but observations has length {n}; all arrays must match")
    for key in ("rewards", "terminals", "timeouts"):
        if named[key].ndim != 1:
            raise DatasetError(source, f"'{key}' must be 1-D (N,), got shape {named[key].shape}")
    for key, arr in named.items():
        if np.issubdtype(arr.dtype, np.floating):
            bad = ~np.isfinite(arr)
            if bad.any():
                first = int(np.argwhere(bad.reshape(n, -1).any(axis=1))[0, 0])
                kind = "NaN" if np.isnan(arr).any() else "inf"
                raise DatasetError(
                    source, f"'{key}' contains {int(bad.sum())} {kind} value(s), first at transition {first}"
                )
        elif not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise DatasetError(source, f"'{key}' has non-numeric dtype {arr.dtype}")
    frames = named.get("frames")
    if frames is not None and (frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3):
        raise DatasetError(source, f"'frames' must be uint8 (N, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    ends = np.asarray(named["terminals"], bool) | np.asarray(named["timeouts"], bool)
    if not ends[-1]:
        raise DatasetError(
            source,
            "the last transition ends no episode (terminals[-1] and timeouts[-1] are both false):"
            " the file holds a partial episode; re-collect it or set timeouts[-1]=True",
        )


@dataclass
class OfflineDataset:
    """Transitions of many episodes, stored flat, with provenance metadata.

    Attributes:
        observations: ``float32 (N, *obs_shape)`` policy observations (state vectors).
        actions: ``float32 (N, act_dim)`` (continuous) or ``int64 (N,)`` (discrete) actions.
        rewards: ``float32 (N,)`` rewards of the transitions (ground truth, or learned after relabeling).
        terminals: ``bool (N,)`` true where the episode ended in a terminal state (no bootstrap).
        timeouts: ``bool (N,)`` true where the episode was cut by a time limit (bootstrap).
        frames: ``uint8 (N, H, W, 3)`` rendered frames, what image reward models read; optional.
        infos: per-transition extras of length ``N``: ``env_reward`` (the ground-truth reward kept after
            relabeling), ``gt_metric`` (the task's ground-truth success measure), ``policy_id`` ...
        metadata: JSON-serialisable provenance: ``env``, ``task``, ``source``, collection settings ...
        source: where the arrays came from, named in every error.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    frames: np.ndarray | None = None
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self):
        arrays = {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "terminals": self.terminals,
            "timeouts": self.timeouts,
            "frames": self.frames,
        }
        arrays = {k: None if v is None else np.asarray(v) for k, v in arrays.items()}
        infos = {k: np.asarray(v) for k, v in self.infos.items()}
        validate_arrays(arrays, infos, self.source)
        self.observations = arrays["observations"].astype(np.float32, copy=False)
        actions = arrays["actions"]
        self.actions = actions.astype(np.float32 if np.issubdtype(actions.dtype, np.floating) else np.int64, copy=False)
        self.rewards = arrays["rewards"].astype(np.float32, copy=False)
        self.terminals = arrays["terminals"].astype(bool, copy=False)
        self.timeouts = arrays["timeouts"].astype(bool, copy=False)
        self.frames = arrays["frames"]
        self.infos = infos
        self.metadata = dict(self.metadata)

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def episode_ends(self) -> np.ndarray:
        """``int64 (E,)`` index of the last transition of each episode."""
        return np.flatnonzero(self.terminals | self.timeouts)

    @property
    def num_episodes(self) -> int:
        """Number of complete episodes."""
        return len(self.episode_ends)

    def episode_slices(self) -> Iterator[slice]:
        """One ``slice`` into the flat arrays per episode, in order."""
        start = 0
        for end in self.episode_ends:
            yield slice(start, int(end) + 1)
            start = int(end) + 1

    def episode_ids(self) -> np.ndarray:
        """``int64 (N,)`` episode index of every transition."""
        ids = np.zeros(len(self), np.int64)
        ids[self.episode_ends[:-1] + 1] = 1
        return np.cumsum(ids)

    def episode_returns(self, rewards: np.ndarray | None = None) -> np.ndarray:
        """``float64 (E,)`` per-episode sums of ``rewards`` (default: the dataset's rewards)."""
        r = self.rewards if rewards is None else np.asarray(rewards)
        return np.bincount(self.episode_ids(), weights=r.astype(np.float64), minlength=self.num_episodes)

    def ground_truth_rewards(self) -> np.ndarray | None:
        """The ground-truth rewards: ``infos["env_reward"]`` after relabeling, else ``rewards`` when unrelabeled."""
        if "env_reward" in self.infos:
            return self.infos["env_reward"].astype(np.float32)
        if not self.metadata.get("relabeled", False):
            return self.rewards
        return None

    def with_rewards(self, rewards: np.ndarray, **metadata: Any) -> OfflineDataset:
        """A copy with new rewards; the old ones are kept in ``infos["env_reward"]`` if not already there."""
        rewards = np.asarray(rewards, np.float32)
        infos = dict(self.infos)
        if "env_reward" not in infos and not self.metadata.get("relabeled", False):
            infos["env_reward"] = self.rewards
        return replace(self, rewards=rewards, infos=infos, metadata={**self.metadata, "relabeled": True, **metadata})

    def select_episodes(self, episode_indices: np.ndarray) -> OfflineDataset:
        """A dataset made of the given episodes (in the given order)."""
        slices = list(self.episode_slices())
        idx = np.concatenate([np.arange(slices[i].start, slices[i].stop) for i in episode_indices])
        return self.take(idx)

    def take(self, idx: np.ndarray) -> OfflineDataset:
        """A dataset of the transitions at ``idx`` (which must cover whole episodes)."""
        return replace(
            self,
            observations=self.observations[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            terminals=self.terminals[idx],
            timeouts=self.timeouts[idx],
            frames=None if self.frames is None else self.frames[idx],
            infos={k: v[idx] for k, v in self.infos.items()},
        )

    @classmethod
    def concatenate(cls, parts: list[OfflineDataset], metadata: dict[str, Any] | None = None) -> OfflineDataset:
        """Join datasets with the same array layout into one."""
        if not parts:
            raise DatasetError("<memory>", "cannot concatenate zero datasets")
        have_frames = {p.frames is not None for p in parts}
        if len(have_frames) > 1:
            raise DatasetError("<memory>", "cannot concatenate datasets where only some have frames")
        keys = set(parts[0].infos)
        for p in parts[1:]:
            keys &= set(p.infos)
        return cls(
            observations=np.concatenate([p.observations for p in parts]),
            actions=np.concatenate([p.actions for p in parts]),
            rewards=np.concatenate([p.rewards for p in parts]),
            terminals=np.concatenate([p.terminals for p in parts]),
            timeouts=np.concatenate([p.timeouts for p in parts]),
            frames=np.concatenate([p.frames for p in parts]) if parts[0].frames is not None else None,
            infos={k: np.concatenate([p.infos[k] for p in parts]) for k in sorted(keys)},
            metadata=dict(parts[0].metadata if metadata is None else metadata),
        )

    def to_d3rlpy(self, rewards: np.ndarray | None = None):
        """Convert to a ``d3rlpy.dataset.MDPDataset`` (needs the ``offline`` extra).

        Args:
            rewards: rewards to train on instead of ``self.rewards`` (e.g. the ground truth for a baseline).
        """
        try:
            from d3rlpy.constants import ActionSpace
            from d3rlpy.dataset import MDPDataset
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("d3rlpy is missing: pip install 'vlmrl[offline]'") from exc
        r = self.rewards if rewards is None else np.asarray(rewards, np.float32)
        if r.shape != self.rewards.shape:
            raise DatasetError(
                self.source, f"rewards of shape {r.shape} do not match the dataset's {self.rewards.shape}"
            )
        discrete = np.issubdtype(self.actions.dtype, np.integer)
        return MDPDataset(
            observations=self.observations,
            actions=self.actions,
            rewards=r.reshape(-1, 1),
            terminals=self.terminals.astype(np.float32),
            timeouts=self.timeouts.astype(np.float32),
            action_space=ActionSpace.DISCRETE if discrete else ActionSpace.CONTINUOUS,
            action_size=int(self.actions.max()) + 1 if discrete else None,
        )
