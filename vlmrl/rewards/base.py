"""The one interface every reward source implements: ``predict`` plus optional hooks with no-op defaults."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class RewardModel(abc.ABC):
    """Maps a batch of observations to rewards.

    ``input_key`` names what the model reads from the env's ``info`` dict at every step:
    ``"frame"`` (``uint8 (N, H, W, 3)`` batches) or ``"message"`` (``list[str]``). Agents call every hook
    below unconditionally; a reward source overrides only the ones it needs (SB3 ``BaseCallback`` style).
    """

    input_key: str = "frame"
    #: True when :meth:`observe_rollout` may change the model (label, retrain): agents then score a rollout
    #: only after observing it, never asynchronously while it is collected.
    learns_online: bool = False

    @abc.abstractmethod
    def predict(self, batch: np.ndarray | Sequence[str]) -> np.ndarray:
        """Score a batch.

        Args:
            batch: ``uint8 (N, H, W, 3)`` frames, or ``N`` text observations.

        Returns:
            ``float32 (N,)`` rewards; higher means closer to the task description.
        """

    def __call__(self, batch: np.ndarray | Sequence[str]) -> np.ndarray:
        """Same as :meth:`predict`."""
        return self.predict(batch)

    def evaluate(self, batch: np.ndarray | Sequence[str]) -> np.ndarray:
        """Side-effect-free scoring for videos, reports and reward evaluation (default: :meth:`predict`)."""
        return self.predict(batch)

    def observe_rollout(self, inputs: Sequence, env_rewards: np.ndarray, dones: np.ndarray, num_timesteps: int) -> bool:
        """See a finished rollout before it is scored: label, retrain, submit.

        Args:
            inputs: ``T * n_envs`` reward-model inputs in step-major order (t0e0, t0e1, ...).
            env_rewards: ``float32 (T, n_envs)`` the env's own rewards.
            dones: ``bool (T, n_envs)`` episode ends.
            num_timesteps: env steps taken so far.

        Returns:
            True when the model changed (an off-policy agent then relabels every stored transition).
        """
        return False

    def metrics(self) -> dict[str, float]:
        """Numbers logged to TensorBoard and ``metrics.jsonl`` each rollout."""
        return {}

    def save_state(self, directory: Path) -> None:
        """Write what a resumed run needs (called with every checkpoint, ``checkpoints/step_<N>/``)."""

    def load_state(self, directory: Path) -> None:
        """Restore what :meth:`save_state` wrote (on resume)."""

    def close(self) -> None:
        """Release threads, servers and files at the end of a job."""
