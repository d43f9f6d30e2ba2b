"""Rigid push task on the tabletop: push a block onto a goal marker with the gripper tip (expert in ``experts.py``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.wrappers import TimeLimit

from vlmrl.envs.tabletop import TabletopEnv, _check_positive, load_template


class PushEnv(TabletopEnv):
    """Push a block to a goal on the table with the gripper tip (the cloth tasks' tabletop and gripper).

    Observation ``float32 (15,)``: gripper xyz, grasp state (always 0: the grasp command has no effect
    here), block xyz, block yaw as (sin, cos), goal xy, then the relative vectors gripper - block and
    goal - block (xy; what a push depends on, so small datasets suffice to learn it).
    Reward ``-||block_xy - goal_xy||`` (metres), plus ``success_bonus`` while the block is within
    ``success_threshold``; ``info["gt_metric"]`` is that distance, success when it is below the threshold.

    Args:
        block_size: block edge length (metres).
        success_threshold: goal distance counted as success (metres).
        min_goal_distance: smallest start distance between block and goal.
        max_goal_distance: largest start distance between block and goal (None: as far as the table allows).
        success_bonus: reward added on every step the block is on the goal (0: the plain distance); the
            distance alone barely separates "near" from "on" (a SAC policy on it stopped 7 cm short).
        start: where the gripper starts: ``anywhere`` (above a random point of the table) or ``behind``
            (low, just behind the block, up to 1 cm off the block-goal line: the push phase alone,
            which small offline datasets can cover).
        **kwargs: :class:`TabletopEnv` arguments.
    """

    gripper_type = "cylinder"
    gripper_size = "0.015 0.02"
    gripper_collides = True
    table_friction = 0.5

    def __init__(
        self,
        block_size: float = 0.05,
        success_threshold: float = 0.03,
        min_goal_distance: float = 0.12,
        max_goal_distance: float | None = None,
        start: str = "anywhere",
        success_bonus: float = 0.0,
        **kwargs: Any,
    ):
        if not np.isfinite(success_bonus) or success_bonus < 0:
            raise ValueError(f"success_bonus={success_bonus}: must be a finite number >= 0")
        self.success_bonus = float(success_bonus)
        _check_positive(block_size=block_size, success_threshold=success_threshold, min_goal_distance=min_goal_distance)
        if start not in ("anywhere", "behind"):
            raise ValueError(f"start={start!r}: use anywhere (gripper above a random point) or behind (the block)")
        self.start = start
        self.block_size, self.success_threshold = float(block_size), float(success_threshold)
        self.min_goal_distance = float(min_goal_distance)
        if max_goal_distance is not None and max_goal_distance <= min_goal_distance:
            raise ValueError(f"max_goal_distance={max_goal_distance} must exceed min_goal_distance={min_goal_distance}")
        self.max_goal_distance = None if max_goal_distance is None else float(max_goal_distance)
        kwargs.setdefault("workspace", ((-0.35, -0.35, 0.02), (0.35, 0.35, 0.2)))
        super().__init__(**kwargs)
        self._block_qpos = int(self.model.joint("block_joint").qposadr[0])
        self._block_qvel = int(self.model.joint("block_joint").dofadr[0])
        self._goal_mocap = int(self.model.body("goal").mocapid[0])

    def _task_xml(self) -> dict[str, str]:
        bodies = load_template(
            "manipulation/push.xml",
            half=self.block_size / 2,
            mass=0.2,
            friction=0.5,
            goal_radius=self.success_threshold,
        )
        return {"task_assets": "", "task_bodies": bodies, "task_extra": ""}

    def _task_obs_dim(self) -> int:
        return 11

    @property
    def block_pos(self) -> np.ndarray:
        """Block centre, ``(3,)`` metres."""
        return self.data.qpos[self._block_qpos : self._block_qpos + 3].copy()

    @property
    def block_yaw(self) -> float:
        """Block rotation about the vertical axis (radians)."""
        w, x, y, z = self.data.qpos[self._block_qpos + 3 : self._block_qpos + 7]
        return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))

    @property
    def goal_xy(self) -> np.ndarray:
        """Goal position on the table, ``(2,)`` metres."""
        return self.data.mocap_pos[self._goal_mocap, :2].copy()

    def set_state(self, block_xy, goal_xy, gripper_pos, block_yaw: float = 0.0) -> None:
        """Place block, goal and gripper by hand (tests, dataset seeding)."""
        q = self._block_qpos
        self.data.qpos[q : q + 3] = (block_xy[0], block_xy[1], self.block_size / 2)
        self.data.qpos[q + 3 : q + 7] = (np.cos(block_yaw / 2), 0.0, 0.0, np.sin(block_yaw / 2))
        self.data.qvel[self._block_qvel : self._block_qvel + 6] = 0.0
        self.data.mocap_pos[self._goal_mocap, :2] = goal_xy
        self._place_gripper(np.asarray(gripper_pos, dtype=np.float64))
        mujoco.mj_forward(self.model, self.data)

    def _reset_task(self, rng: np.random.Generator) -> None:
        block = rng.uniform(-0.15, 0.15, size=2)
        goal = rng.uniform(-0.2, 0.2, size=2)
        far = np.inf if self.max_goal_distance is None else self.max_goal_distance
        while not self.min_goal_distance <= np.linalg.norm(goal - block) <= far:
            goal = rng.uniform(-0.2, 0.2, size=2)
        gripper = np.array([*rng.uniform(-0.25, 0.25, size=2), 0.08])
        yaw = float(rng.uniform(-np.pi / 4, np.pi / 4))
        if self.start == "behind":
            direction = (goal - block) / np.linalg.norm(goal - block)
            side = np.array([-direction[1], direction[0]])
            standoff = self.block_size / 2 + 0.015 + rng.uniform(0.005, 0.02)  # half block + tip radius + gap
            gripper = np.array([*(block - direction * standoff + side * rng.uniform(-0.01, 0.01)), 0.02])
            yaw = float(np.arctan2(direction[1], direction[0]) + rng.uniform(-0.2, 0.2))  # a face toward the tip
        self.set_state(block, goal, gripper, block_yaw=yaw)

    def _task_obs(self) -> np.ndarray:
        yaw, block = self.block_yaw, self.block_pos
        rel = [self.gripper_pos[:2] - block[:2], self.goal_xy - block[:2]]
        return np.concatenate([block, [np.sin(yaw), np.cos(yaw)], self.goal_xy, *rel])

    def gt_metric(self) -> float:
        """Block-to-goal distance on the table (metres)."""
        return float(np.linalg.norm(self.block_pos[:2] - self.goal_xy))

    def reward_from_metric(self, metric: float) -> float:
        """Negative goal distance, plus ``success_bonus`` on the goal."""
        return -metric + (self.success_bonus if self.success_from_metric(metric) else 0.0)

    def success_from_metric(self, metric: float) -> bool:
        """Block within ``success_threshold`` of the goal."""
        return metric < self.success_threshold


def make_push(max_episode_steps: int = 80, **kwargs: Any) -> gym.Env:
    """Build :class:`PushEnv` wrapped in a ``TimeLimit`` (used by ``envs/push.yaml``).

    Example:
        >>> import numpy as np
        >>> from vlmrl.envs.experts import ScriptedPushPolicy
        >>> env = make_push(width=32, height=32)
        >>> obs, info = env.reset(seed=0)
        >>> expert = ScriptedPushPolicy(env, noise=0.1, rng=np.random.default_rng(0))
        >>> obs, reward, terminated, truncated, info = env.step(expert(obs))
        >>> reward == -info["gt_metric"], info["frame"].dtype
        (True, dtype('uint8'))
        >>> env.close()
    """
    if not isinstance(max_episode_steps, int) or max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps!r}")
    return TimeLimit(PushEnv(**kwargs), max_episode_steps=max_episode_steps)
