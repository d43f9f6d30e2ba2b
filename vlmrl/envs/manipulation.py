"""Tabletop manipulation with a mocap gripper: shared scene, rigid push-block task, scripted experts.

The gripper is a kinematic (mocap) body moved by bounded displacements; grasping attaches the nearest
graspable body within a radius through a named ``<connect>`` equality. Cloth tasks live in ``cloth.py``
and reuse :class:`TabletopEnv`. Every step's ``info`` carries ``frame`` (``uint8 (H, W, 3)``),
``env_reward``, ``gt_metric`` (the task's ground-truth metric) and ``is_success``.
"""

from __future__ import annotations

import os
import string
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

from vlmrl.envs.rendering import FastRenderer

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def load_template(relative_path: str, **fields: Any) -> str:
    """Read an MJCF fragment under ``assets/`` and fill its ``${field}`` placeholders."""
    path = ASSETS / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"missing asset {path}: reinstall vlmrl or restore assets/{relative_path}")
    return string.Template(path.read_text()).substitute({k: str(v) for k, v in fields.items()})


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")


class TabletopEnv(gym.Env, ABC):
    """A table, a mocap gripper and a fixed camera; subclasses add the task bodies, metric and reset.

    Action: ``float32 (4,)`` in ``[-1, 1]``: gripper displacement ``a[:3] * max_displacement`` (metres per
    step, clipped to the workspace) and a grasp command ``a[3]`` (``> 0`` close, ``<= 0`` open).
    Frames are rendered every step because image reward models and labelers read ``info["frame"]``.

    Args:
        render_mode: ``"rgb_array"`` (or ``None``; frames are still rendered into ``info``).
        width: frame width in pixels.
        height: frame height in pixels.
        camera: camera name in the scene (``"top"`` oblique view, ``"overhead"`` straight down).
        frame_skip: physics steps per env step.
        timestep: physics timestep in seconds.
        max_displacement: gripper travel per step at ``|a| = 1`` (metres).
        grasp_radius: how close (metres) a graspable point must be to the gripper to be grasped.
        workspace: ``((xmin, ymin, zmin), (xmax, ymax, zmax))`` box the gripper stays in.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    gripper_type = "sphere"
    gripper_size = "0.012"
    gripper_collides = False
    table_friction = 1.0

    def __init__(
        self,
        render_mode: str | None = "rgb_array",
        width: int = 128,
        height: int = 128,
        camera: str = "top",
        frame_skip: int = 25,
        timestep: float = 0.002,
        max_displacement: float = 0.03,
        grasp_radius: float = 0.03,
        workspace: tuple[tuple[float, float, float], tuple[float, float, float]] = (
            (-0.35, -0.35, 0.005),
            (0.35, 0.35, 0.3),
        ),
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        if not (isinstance(width, int) and isinstance(height, int)) or width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive ints, got {width!r}x{height!r}")
        if not isinstance(frame_skip, int) or frame_skip < 1:
            raise ValueError(f"frame_skip must be an int >= 1, got {frame_skip!r}")
        _check_positive(timestep=timestep, max_displacement=max_displacement, grasp_radius=grasp_radius)
        low, high = (np.asarray(b, dtype=np.float64) for b in workspace)
        if low.shape != (3,) or high.shape != (3,) or np.any(low >= high):
            raise ValueError(
                f"workspace must be ((xmin, ymin, zmin), (xmax, ymax, zmax)) with min < max, got {workspace}"
            )
        self.render_mode = render_mode
        self.width, self.height, self.frame_skip = width, height, frame_skip
        self.max_displacement, self.grasp_radius = float(max_displacement), float(grasp_radius)
        self.workspace_low, self.workspace_high = low, high

        xml = load_template(
            "manipulation/tabletop.xml",
            model_name=type(self).__name__,
            timestep=timestep,
            offwidth=max(width, 64),
            offheight=max(height, 64),
            table_friction=self.table_friction,
            gripper_type=self.gripper_type,
            gripper_size=self.gripper_size,
            gripper_contype=int(self.gripper_collides),
            **self._task_xml(),
        )
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self._gripper_mocap = int(self.model.body("gripper").mocapid[0])
        self._gripper_tip = self.model.geom("gripper_tip").id
        grasp_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_EQUALITY, "grasp")
        self._grasp_eq = int(grasp_id) if grasp_id >= 0 else None
        self._grasped: int | None = None  # index into _grasp_candidates() of the held point
        try:
            self._renderer = FastRenderer(self.model, width, height, camera=camera, skybox=False)
        except mujoco.FatalError as err:
            raise RuntimeError(
                f"no headless OpenGL ({err}): set MUJOCO_GL=egl (or osmesa) before mujoco is first imported, "
                "e.g. import vlmrl before mujoco"
            ) from err
        self._frame = np.zeros((height, width, 3), dtype=np.uint8)
        self.elapsed_steps = 0

        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        obs_dim = 4 + self._task_obs_dim()
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32)

    # ---- task interface -------------------------------------------------------------------------
    @abstractmethod
    def _task_xml(self) -> dict[str, str]:
        """MJCF snippets ``task_assets``, ``task_bodies``, ``task_extra`` inserted into the scene."""

    @abstractmethod
    def _task_obs_dim(self) -> int:
        """Length of the task part of the observation."""

    @abstractmethod
    def _task_obs(self) -> np.ndarray:
        """Task part of the observation (after gripper position and grasp state)."""

    @abstractmethod
    def _reset_task(self, rng: np.random.Generator) -> None:
        """Place the task bodies for a new episode (``mj_forward`` is called afterwards)."""

    @abstractmethod
    def gt_metric(self) -> float:
        """The task's ground-truth metric in the current state."""

    @abstractmethod
    def reward_from_metric(self, metric: float) -> float:
        """The env reward for a metric value."""

    @abstractmethod
    def success_from_metric(self, metric: float) -> bool:
        """Whether a metric value counts as solving the task."""

    def _grasp_candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """Body ids and world positions ``(N, 3)`` of points the gripper can grasp (none by default)."""
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3))

    # ---- gripper -------------------------------------------------------------------------------
    @property
    def gripper_pos(self) -> np.ndarray:
        """Gripper (mocap target) position, ``(3,)`` metres."""
        return self.data.mocap_pos[self._gripper_mocap].copy()

    @property
    def grasping(self) -> bool:
        """Whether the gripper currently holds something."""
        return self._grasped is not None

    def _set_grasp(self, close: bool) -> None:
        if self._grasp_eq is None:
            return
        if close and self._grasped is None:
            ids, pos = self._grasp_candidates()
            if len(ids) == 0:
                return
            dist = np.linalg.norm(pos - self.gripper_pos, axis=1)
            k = int(np.argmin(dist))
            if dist[k] <= self.grasp_radius:
                self.model.eq_obj2id[self._grasp_eq] = ids[k]
                self.model.eq_data[self._grasp_eq, :6] = 0.0  # pull the point's centre to the gripper's
                self.data.eq_active[self._grasp_eq] = 1
                self._grasped = k
        elif not close and self._grasped is not None:
            self.data.eq_active[self._grasp_eq] = 0
            self._grasped = None
        self.model.geom_rgba[self._gripper_tip] = (
            (0.1, 0.75, 0.2, 1) if self._grasped is not None else (0.85, 0.1, 0.1, 1)
        )

    def _place_gripper(self, pos: np.ndarray) -> None:
        self.data.mocap_pos[self._gripper_mocap] = np.clip(pos, self.workspace_low, self.workspace_high)

    # ---- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode: reset physics, release the grasp, let the task place its bodies."""
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        if self._grasp_eq is not None:
            self.data.eq_active[self._grasp_eq] = 0
        self._grasped = None
        self._set_grasp(False)
        self._reset_task(self.np_random)
        mujoco.mj_forward(self.model, self.data)
        self.elapsed_steps = 0
        return self._obs(), self._info()

    def step(self, action):
        """Move the gripper, update the grasp, simulate ``frame_skip`` physics steps."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (4,):
            raise ValueError(f"action must have 4 entries (dx, dy, dz, grasp), got shape {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a}")
        a = np.clip(a, -1.0, 1.0)
        self._set_grasp(a[3] > 0)
        start = self.gripper_pos
        target = np.clip(start + a[:3] * self.max_displacement, self.workspace_low, self.workspace_high)
        for k in range(1, self.frame_skip + 1):  # move the mocap smoothly so grasped points follow
            self.data.mocap_pos[self._gripper_mocap] = start + (target - start) * (k / self.frame_skip)
            mujoco.mj_step(self.model, self.data)
        self.elapsed_steps += 1
        if not np.all(np.isfinite(self.data.qpos)):
            raise RuntimeError("simulation diverged (non-finite state); lower timestep or max_displacement")
        info = self._info()
        return self._obs(), info["env_reward"], False, False, info

    def _obs(self) -> np.ndarray:
        head = np.concatenate([self.gripper_pos, [float(self.grasping)]])
        return np.concatenate([head, self._task_obs()]).astype(np.float32)

    def _info(self) -> dict[str, Any]:
        self._frame = self._renderer.render(self.data)
        metric = float(self.gt_metric())
        return {
            "frame": self._frame,
            "env_reward": float(self.reward_from_metric(metric)),
            "gt_metric": metric,
            "is_success": bool(self.success_from_metric(metric)),
            "grasping": self.grasping,
        }

    def render(self) -> np.ndarray:
        """The latest frame, ``uint8 (H, W, 3)``."""
        return self._frame.copy()

    def close(self) -> None:
        """Release the renderer's GL context."""
        renderer = getattr(self, "_renderer", None)
        if renderer is not None:
            renderer.close()
            self._renderer = None


class PushEnv(TabletopEnv):
    """Push a block to a goal on the table with the gripper tip (rigid task on the cloth tasks' gripper).

    Observation ``float32 (15,)``: gripper xyz, grasp state (always 0: the grasp command has no effect
    here), block xyz, block yaw as (sin, cos), goal xy, then the relative vectors gripper - block and
    goal - block (xy; what a push depends on, so small datasets suffice to learn it).
    Reward ``-||block_xy - goal_xy||`` (metres); ``info["gt_metric"]`` is that distance, success when it is
    below ``success_threshold``.

    Args:
        block_size: block edge length (metres).
        success_threshold: goal distance counted as success (metres).
        min_goal_distance: smallest start distance between block and goal.
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
        start: str = "anywhere",
        **kwargs: Any,
    ):
        _check_positive(block_size=block_size, success_threshold=success_threshold, min_goal_distance=min_goal_distance)
        if start not in ("anywhere", "behind"):
            raise ValueError(f"start={start!r}: use anywhere (gripper above a random point) or behind (the block)")
        self.start = start
        self.block_size, self.success_threshold = float(block_size), float(success_threshold)
        self.min_goal_distance = float(min_goal_distance)
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
        while np.linalg.norm(goal - block) < self.min_goal_distance:
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
        """Negative goal distance."""
        return -metric

    def success_from_metric(self, metric: float) -> bool:
        """Block within ``success_threshold`` of the goal."""
        return metric < self.success_threshold


class ScriptedPolicy(ABC):
    """A scripted expert with Gaussian action noise, for datasets and sanity checks.

    ``act(obs)`` (or calling the policy) returns ``float32 (4,)`` in ``[-1, 1]``: the expert's action plus
    ``noise * N(0, I)``, clipped. Internal state resets when the env starts a new episode.

    Args:
        env: the env (a wrapper is fine; the expert reads the unwrapped env's state).
        noise: standard deviation of the Gaussian added to every action entry (0 = pure expert).
        rng: source of the noise.
    """

    def __init__(self, env: gym.Env, noise: float = 0.0, rng: np.random.Generator | None = None):
        if not np.isfinite(noise) or noise < 0:
            raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
        if noise > 0 and rng is None:
            raise ValueError("noise > 0 needs rng=np.random.default_rng(seed)")
        self.env = env.unwrapped
        self.noise, self.rng = float(noise), rng
        self._last_step = None

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The (noisy) expert action for the env's current state."""
        if self._last_step is None or self.env.elapsed_steps < self._last_step or self.env.elapsed_steps == 0:
            self.reset()
        self._last_step = self.env.elapsed_steps
        action = np.asarray(self._expert_action(), dtype=np.float64)
        if self.noise > 0:
            action = action + self.noise * self.rng.standard_normal(action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    __call__ = act

    @abstractmethod
    def reset(self) -> None:
        """Forget the plan (called automatically at a new episode)."""

    @abstractmethod
    def _expert_action(self) -> np.ndarray:
        """The noise-free action."""

    def _move_toward(self, target: np.ndarray, grasp: float) -> np.ndarray:
        delta = (np.asarray(target) - self.env.gripper_pos) / self.env.max_displacement
        return np.concatenate([np.clip(delta, -1.0, 1.0), [grasp]])


class ScriptedPushPolicy(ScriptedPolicy):
    """Expert for :class:`PushEnv`: lift, fly to behind the block, descend, push along the block-goal line.

    With ``decoy`` set it competently does another task (the other-task data of multi-task datasets, which
    behaviour cloning copies and offline RL should filter out by reward): ``mirror`` pushes the block away
    from the goal, to the goal's mirror image through the block's start (clipped to the table); ``random``
    pushes it to a point drawn each episode at least ``decoy_distance`` from the goal.
    """

    push_speed = 0.6  # fraction of max_displacement per step while pushing, so the block does not slide ahead

    def __init__(
        self,
        env: gym.Env,
        noise: float = 0.0,
        rng: np.random.Generator | None = None,
        decoy: str | None = None,
        decoy_distance: float = 0.15,
    ):
        super().__init__(env, noise=noise, rng=rng)
        if decoy not in (None, "mirror", "random"):
            raise ValueError(f"decoy={decoy!r}: use null (push to the goal), mirror or random")
        if decoy == "random" and rng is None:
            raise ValueError("decoy=random draws decoy goals: pass rng=np.random.default_rng(seed)")
        if not decoy_distance > 0:
            raise ValueError(f"decoy_distance must be > 0, got {decoy_distance!r}")
        self.decoy, self.decoy_distance = decoy, float(decoy_distance)
        self._goal: np.ndarray | None = None

    def reset(self) -> None:
        """Start in the approach phase (and draw this episode's decoy goal)."""
        self._pushing = False
        self._goal = None
        goal = self.env.goal_xy
        if self.decoy == "mirror":
            self._goal = np.clip(2 * self.env.block_pos[:2] - goal, -0.3, 0.3)
        elif self.decoy == "random":
            for _ in range(1000):
                self._goal = self.rng.uniform(-0.2, 0.2, size=2)
                if np.linalg.norm(self._goal - goal) >= self.decoy_distance:
                    return
            raise ValueError(f"decoy_distance={self.decoy_distance}: no table point (|x|, |y| <= 0.2) is that far")

    def _expert_action(self) -> np.ndarray:
        env = self.env
        block, grip = env.block_pos[:2], env.gripper_pos
        goal = env.goal_xy if self._goal is None else self._goal
        to_goal = goal - block
        dist = np.linalg.norm(to_goal)
        direction = to_goal / max(dist, 1e-6)
        standoff = env.block_size / 2 + 0.015 + 0.012  # block half + tip radius + margin
        behind = block - direction * standoff
        rel = grip[:2] - block
        along = float(rel @ direction)  # < 0: gripper behind the block
        lateral = rel - along * direction
        low_z, high_z = 0.02, env.block_size + 0.05
        lateral_error = float(np.linalg.norm(lateral))
        if dist < 0.5 * env.success_threshold:  # done: lift off so the block is not knocked away again
            self._pushing = False
            return self._move_toward(np.array([grip[0], grip[1], high_z]), -1.0)
        if self._pushing:  # hysteresis: keep pushing until clearly out of position
            self._pushing = along < -0.02 and lateral_error < 0.03 and grip[2] < low_z + 0.015
        else:
            self._pushing = along < -(standoff - 0.02) and lateral_error < 0.02 and grip[2] < low_z + 0.015
        if self._pushing:  # aim through the block centre at a point past it, steering the block back on line
            aim = block + direction * 0.05 - grip[:2]
            step = min(dist, self.push_speed * env.max_displacement)
            target = grip[:2] + aim / max(np.linalg.norm(aim), 1e-6) * step
            return self._move_toward(np.array([target[0], target[1], low_z]), -1.0)
        if np.linalg.norm(grip[:2] - behind) < 0.025:  # above the pushing spot: descend (and re-centre)
            return self._move_toward(np.array([behind[0], behind[1], low_z]), -1.0)
        if grip[2] < low_z + 0.02 and np.linalg.norm(rel) < standoff + 0.03:  # low beside the block: lift first
            return self._move_toward(np.array([grip[0], grip[1], high_z]), -1.0)
        return self._move_toward(np.array([behind[0], behind[1], high_z]), -1.0)


def make_push(max_episode_steps: int = 80, **kwargs: Any) -> gym.Env:
    """Build :class:`PushEnv` wrapped in a ``TimeLimit`` (used by ``envs/push.yaml``).

    Example:
        >>> import numpy as np
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
