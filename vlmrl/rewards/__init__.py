"""Reward models: observations in, one float per observation out."""

from vlmrl.rewards.base import RewardModel

__all__ = ["RewardModel"]
