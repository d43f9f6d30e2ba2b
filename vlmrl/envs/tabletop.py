"""The shared MuJoCo tabletop: a table, a mocap gripper and a fixed camera, base of the push and cloth tasks.

The gripper is a kinematic (mocap) body moved by bounded displacements; grasping attaches the nearest
graspable body within a radius through a named ``<connect>`` equality. Every step's ``info`` carries
``frame`` (``uint8 (H, W, 3)``), ``env_reward``, ``gt_metric`` (the task's ground-truth metric) and
``is_success``.
"""

from __future__ import annotations

import os
import string
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the first mujoco import

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

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
