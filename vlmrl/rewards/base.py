"""The one interface every reward source implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np


class RewardModel(abc.ABC):
    """Maps a batch of observations to rewards.

    ``input_key`` names what the model reads from the env's ``info`` dict at every step:
    ``"frame"`` (``uint8 (N, H, W, 3)`` batches) or ``"message"`` (``list[str]``).
    """

    input_key: str = "frame"

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
