"""Deformable cloth on the tabletop (MuJoCo flexcomp grid): fold it in half or spread it flat.

The cloth is an ``n x n`` shell grid; vertex ``(i, j)`` has index ``i * n + j`` and starts at
``x = -size/2 + i * spacing``, ``y = -size/2 + j * spacing`` (before the random shift and yaw of reset).
Ground-truth metrics:

- fold: mean 3-D distance between matched particle pairs (each vertex and its mirror image across the
  fold line); 0 for a perfect fold, ``reward = -metric``.
- spread: covered area, the fraction of the flat cloth's area that the cloth's projection on the table
  covers (cells of a ``coverage_resolution`` lattice whose centres lie inside a projected triangle);
  ``reward = metric``.

Their scripted experts are in :mod:`vlmrl.envs.experts`.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the first mujoco import

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.wrappers import TimeLimit

from vlmrl.envs.tabletop import TabletopEnv, _check_positive, load_template

FOLDS = ("diagonal", "edge")
STARTS = ("random", "vertex")
INITIAL_FOLDS = ("line", "corner")


def fold_pairs(n: int, fold: str = "diagonal") -> tuple[np.ndarray, np.ndarray]:
    """Vertex index pairs ``(moving, fixed)`` matched by folding an ``n x n`` grid in half.

    ``"diagonal"`` folds corner ``(0, n-1)`` onto corner ``(n-1, 0)`` (across the diagonal ``i = j``, which
    runs parallel to the grid's triangle edges so no edge is crushed; vertex ``(i, j)``, ``j > i``, meets
    ``(j, i)``); ``"edge"`` folds row ``i = 0`` onto row ``i = n - 1`` (vertex ``(i, j)`` meets
    ``(n-1-i, j)``). Vertices on the fold line are left out.
    """
    if fold not in FOLDS:
        raise ValueError(f"fold must be one of {FOLDS}, got {fold!r}")
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    i, j = i.ravel(), j.ravel()
    if fold == "diagonal":
        keep = j > i
        mi, mj = j[keep], i[keep]
    else:
        keep = 2 * i < n - 1
        mi, mj = n - 1 - i[keep], j[keep]
    return (i[keep] * n + j[keep]).astype(np.int64), (mi * n + mj).astype(np.int64)


def fold_distance(positions: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean distance (metres) between matched vertices: the folding metric (0 = perfectly folded)."""
    moving, fixed = pairs
    return float(np.linalg.norm(positions[moving] - positions[fixed], axis=1).mean())


def grid_triangles(n: int) -> np.ndarray:
    """Vertex indices ``(2 (n-1)^2, 3)`` of the two triangles of every grid cell."""
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij")
    a, b, c, d = (i * n + j), (i * n + j + 1), ((i + 1) * n + j), ((i + 1) * n + j + 1)
    tris = np.stack([np.stack([a, b, d], -1), np.stack([a, d, c], -1)], 0)
    return tris.reshape(-1, 3)


def covered_area(positions: np.ndarray, triangles: np.ndarray, resolution: float = 0.01) -> float:
    """Area (m^2) of the table covered by the cloth's vertical projection.

    Counts the cells of a lattice with spacing ``resolution`` (aligned at the origin) whose centres fall
    inside at least one projected triangle; exact for shapes aligned with the lattice. Scanline
    rasterisation: each lattice row crosses a triangle in one interval of cell centres.
    """
    xy = np.asarray(positions, dtype=np.float64)[:, :2] / resolution - 0.5  # cell centres at integers
    lo = np.floor(xy.min(0)).astype(np.int64)
    hi = np.ceil(xy.max(0)).astype(np.int64)
    rows = np.arange(lo[1], hi[1] + 1, dtype=np.float64)  # centre rows that can be covered
    tri = xy[triangles]  # (T, 3, 2)
    p, q = tri, np.roll(tri, -1, axis=1)  # the three edges p -> q, (T, 3, 2)
    py, qy = p[..., 1][:, None, :], q[..., 1][:, None, :]  # (T, 1, 3)
    y = rows[None, :, None]  # (1, R, 1)
    crosses = ((py <= y) & (y < qy)) | ((qy <= y) & (y < py)) | ((py == y) & (qy == y))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(qy != py, (y - py) / (qy - py), 0.0)
    x = p[..., 0][:, None, :] + t * (q[..., 0] - p[..., 0])[:, None, :]
    flat_edge = (py == y) & (qy == y)  # an edge lying on the row covers from p to q
    x_lo = np.where(crosses, np.where(flat_edge, np.minimum(p[..., 0], q[..., 0])[:, None, :], x), np.inf).min(-1)
    x_hi = np.where(crosses, np.where(flat_edge, np.maximum(p[..., 0], q[..., 0])[:, None, :], x), -np.inf).max(-1)
    first = np.ceil(x_lo - 1e-9)  # (T, R) first and last covered column (absolute lattice index)
    last = np.floor(x_hi + 1e-9)
    ok = last >= first
    n_cols = int(hi[0] - lo[0] + 2)
    r_idx = np.broadcast_to(np.arange(len(rows)), ok.shape)[ok] * (n_cols + 1)
    starts = r_idx + (first[ok] - lo[0]).astype(np.int64)
    stops = r_idx + (last[ok] - lo[0] + 1).astype(np.int64)
    size = len(rows) * (n_cols + 1)
    marks = np.bincount(starts, minlength=size) - np.bincount(stops, minlength=size)  # interval starts/ends
    covered = np.cumsum(marks.reshape(len(rows), n_cols + 1), axis=1) > 0
    return float(covered.sum()) * resolution**2


class ClothEnv(TabletopEnv):
    """A square flexcomp cloth on the table and the mocap gripper; base of the fold and spread tasks.

    Observation ``float32 (19,)``: gripper xyz, grasp state (0/1), the 4 corners' xyz (vertex order
    ``(0,0), (0,n-1), (n-1,0), (n-1,n-1)``), the cloth centroid xyz. Closing the gripper grasps the nearest
    cloth vertex within ``grasp_radius``.

    Args:
        n: vertices per side of the grid (>= 3; the physics cost grows about as n^2).
        size: cloth side length (metres).
        mass: total cloth mass (kg).
        self_collision: let the cloth collide with itself (about half the speed; folds render as layers).
        init_shift: largest random shift (metres) of the cloth centre at reset.
        init_yaw: largest random rotation (radians) of the cloth at reset.
        start: where the gripper starts: ``"random"`` (anywhere over the table centre, 10 cm up) or
            ``"vertex"`` (within ``start_offset`` of the vertex the task moves first, at its height: the
            corner a fold carries, the most displaced edge vertex of a spread), so exploration begins at a grasp.
        start_offset: largest random xy offset (metres) from that vertex when ``start="vertex"``.
        start_grasped: with ``start="vertex"``, the episode starts with the gripper closed on the nearest vertex
            within ``grasp_radius`` (an action with ``a[3] <= 0`` lets go, as at any step, unless ``hold``).
        hold: with ``start_grasped``, the grasp is kept for the whole episode and ``a[3]`` is ignored. On the
            spread, random moves of the held flap lower the reward and letting go avoids them, so SAC learned to
            let go before it found the drag that spreads; holding removes that escape.
        **kwargs: :class:`TabletopEnv` arguments (``width``, ``height``, ``camera`` ...); cloth defaults
            are ``timestep=0.005``, ``frame_skip=10``.
    """

    radius = 0.005
    cloth_friction = 1.0

    def __init__(
        self,
        n: int = 9,
        size: float = 0.4,
        mass: float = 0.1,
        self_collision: bool = False,
        init_shift: float = 0.03,
        init_yaw: float = 0.2,
        start: str = "random",
        start_offset: float = 0.02,
        start_grasped: bool = False,
        hold: bool = False,
        **kwargs: Any,
    ):
        if not isinstance(n, int) or n < 3:
            raise ValueError(f"n (vertices per cloth side) must be an int >= 3, got {n!r}")
        _check_positive(size=size, mass=mass)
        if size > 0.6:
            raise ValueError(f"size must be <= 0.6 m to fit the workspace, got {size}")
        if init_shift < 0 or init_yaw < 0:
            raise ValueError(f"init_shift and init_yaw must be >= 0, got {init_shift}, {init_yaw}")
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        if not np.isfinite(start_offset) or start_offset < 0:
            raise ValueError(f"start_offset must be >= 0, got {start_offset!r}")
        if start_grasped and start != "vertex":
            raise ValueError("start_grasped needs start='vertex'")
        if hold and not start_grasped:
            raise ValueError("hold needs start_grasped=true: nothing is held at the start otherwise")
        self.hold = bool(hold)
        self.start, self.start_offset, self.start_grasped = start, float(start_offset), bool(start_grasped)
        self.n, self.size, self.mass = n, float(size), float(mass)
        self.spacing = self.size / (n - 1)
        self.self_collision = bool(self_collision)
        self.init_shift, self.init_yaw = float(init_shift), float(init_yaw)
        # 5 ms Euler steps are stable for the 9x9 grid (random grasp-and-yank stress tests: no divergence,
        # edges stretch <= 1.2x, as at 2 ms) and make env steps ~3x faster than 2 ms x 25; control stays 20 Hz.
        kwargs.setdefault("timestep", 0.005)
        kwargs.setdefault("frame_skip", 10)
        super().__init__(**kwargs)
        bodies = [self.model.body(f"cloth_{k}") for k in range(n * n)]
        self._vertex_bodies = np.array([b.id for b in bodies], dtype=np.int64)
        self._vertex_qpos = np.array([self.model.jnt_qposadr[b.jntadr[0]] for b in bodies], dtype=np.int64)
        self._vertex_dof = np.array([self.model.jnt_dofadr[b.jntadr[0]] for b in bodies], dtype=np.int64)
        self._vertex_pos0 = np.array([b.pos for b in bodies], dtype=np.float64)
        self.corner_indices = np.array([0, n - 1, (n - 1) * n, n * n - 1], dtype=np.int64)
        self.triangles = grid_triangles(n)
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        self.flat_positions = np.stack(
            [
                -self.size / 2 + i.ravel() * self.spacing,
                -self.size / 2 + j.ravel() * self.spacing,
                np.full(n * n, self.radius),
            ],
            axis=1,
        )
        self.reset_positions = self.flat_positions.copy()  # the flat pose drawn at the last reset

    def _task_xml(self) -> dict[str, str]:
        cloth = load_template(
            "cloth/cloth.xml",
            name="cloth",
            n=self.n,
            spacing=self.spacing,
            height=self.radius,
            radius=self.radius,
            mass=self.mass,
            selfcollide="auto" if self.self_collision else "none",
            friction=self.cloth_friction,
            damping=0.01,
        )
        return {
            "task_assets": load_template("cloth/cloth_assets.xml"),
            "task_bodies": cloth,
            "task_extra": load_template("cloth/cloth_equality.xml", name="cloth"),
        }

    def _task_obs_dim(self) -> int:
        return 15

    @property
    def cloth_positions(self) -> np.ndarray:
        """World positions of all cloth vertices, ``(n*n, 3)`` metres."""
        return self.data.xpos[self._vertex_bodies].copy()

    def set_cloth_positions(self, positions: np.ndarray, settle_steps: int = 0) -> None:
        """Place every vertex by hand (zero velocity), optionally let physics settle; for resets and tests."""
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (self.n * self.n, 3) or not np.all(np.isfinite(positions)):
            raise ValueError(f"positions must be finite with shape ({self.n * self.n}, 3), got {positions.shape}")
        offsets = positions - self._vertex_pos0
        for axis in range(3):
            self.data.qpos[self._vertex_qpos + axis] = offsets[:, axis]
            self.data.qvel[self._vertex_dof + axis] = 0.0
        mujoco.mj_forward(self.model, self.data)
        for _ in range(settle_steps):
            mujoco.mj_step(self.model, self.data)

    def _grasp_candidates(self) -> tuple[np.ndarray, np.ndarray]:
        return self._vertex_bodies, self.data.xpos[self._vertex_bodies]

    def _set_grasp(self, close: bool) -> None:
        if self.hold and self.grasping and not close:  # reset clears the grasp before it calls this
            return
        super()._set_grasp(close)

    def _task_obs(self) -> np.ndarray:
        pos = self.data.xpos[self._vertex_bodies]
        return np.concatenate([pos[self.corner_indices].ravel(), pos.mean(0)])

    def _random_flat_pose(self, rng: np.random.Generator) -> np.ndarray:
        yaw = rng.uniform(-self.init_yaw, self.init_yaw)
        rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        shift = rng.uniform(-self.init_shift, self.init_shift, size=2)
        pose = self.flat_positions.copy()
        pose[:, :2] = pose[:, :2] @ rot.T + shift
        return pose

    def _reset_task(self, rng: np.random.Generator) -> None:
        self.reset_positions = self._random_flat_pose(rng)
        self.set_cloth_positions(self._initial_cloth(self.reset_positions, rng))
        for _ in range(self._settle_steps):
            mujoco.mj_step(self.model, self.data)
        if self.start == "vertex":
            vertex = self.cloth_positions[self.start_vertex()]
            offset = rng.uniform(-self.start_offset, self.start_offset, size=2)
            self._place_gripper(np.array([vertex[0] + offset[0], vertex[1] + offset[1], vertex[2]]))
            if self.start_grasped:
                self._set_grasp(True)
        else:
            self._place_gripper(np.array([*rng.uniform(-0.15, 0.15, size=2), 0.1]))

    _settle_steps = 0

    def start_vertex(self) -> int:
        """The vertex the task moves first (where ``start="vertex"`` puts the gripper)."""
        raise NotImplementedError(f"{type(self).__name__} names no start vertex")

    def _initial_cloth(self, flat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The cloth configuration at the start of an episode (flat by default)."""
        return flat


class ClothFoldEnv(ClothEnv):
    """Fold the cloth in half (``fold="diagonal"`` or ``"edge"``), starting flat.

    ``info["gt_metric"]`` is the mean matched-pair distance (metres, see :func:`fold_pairs`), the reward its
    negative, success when it is below ``success_threshold``.

    Args:
        fold: ``"diagonal"`` (corner (0,n-1) onto corner (n-1,0)) or ``"edge"`` (row 0 onto row n-1).
        success_threshold: matched-pair distance counted as folded (metres).
        **kwargs: :class:`ClothEnv` arguments.
    """

    def __init__(self, fold: str = "diagonal", success_threshold: float = 0.05, **kwargs: Any):
        if fold not in FOLDS:
            raise ValueError(f"fold must be one of {FOLDS}, got {fold!r}")
        _check_positive(success_threshold=success_threshold)
        self.fold, self.success_threshold = fold, float(success_threshold)
        super().__init__(**kwargs)
        self.pairs = fold_pairs(self.n, fold)

    def start_vertex(self) -> int:
        """The first corner the fold carries (the scripted expert's first pick)."""
        return self.n - 1 if self.fold == "diagonal" else 0

    def gt_metric(self) -> float:
        """Mean distance between matched vertex pairs (metres)."""
        return fold_distance(self.data.xpos[self._vertex_bodies], self.pairs)

    def reward_from_metric(self, metric: float) -> float:
        """Negative matched-pair distance."""
        return -metric

    def success_from_metric(self, metric: float) -> bool:
        """Folded when the matched-pair distance is below the threshold."""
        return metric < self.success_threshold


class ClothSpreadEnv(ClothEnv):
    """Spread a folded cloth flat: it starts with 1-2 random folds; the metric is the covered-area fraction.

    ``info["gt_metric"]`` is the covered area divided by the flat cloth's area (about 1 when spread), the
    reward equals it, success when it is at least ``success_threshold``.

    Args:
        success_threshold: covered fraction counted as spread.
        coverage_resolution: lattice spacing (metres) of the coverage count.
        max_folds: at most this many random folds at reset (at least one).
        initial_fold: ``"line"`` (the part beyond a random line, 25-45% of the vertices, per fold) or
            ``"corner"`` (the triangle at corner (0, n-1), 20-35% of the vertices, folded across a line normal
            to its diagonal: one pick-and-place of that corner spreads it).
        distance_weight: the reward subtracts this times the mean xy distance (metres) of the vertices from
            the flat pose drawn at reset. Coverage does not change while a folded flap is dragged across the
            cloth beneath it (the first ~40% of an unfold); this distance does. 0: the reward is coverage alone.
        **kwargs: :class:`ClothEnv` arguments.
    """

    _settle_steps = 100

    def __init__(
        self,
        success_threshold: float = 0.9,
        coverage_resolution: float = 0.01,
        max_folds: int = 1,
        initial_fold: str = "line",
        distance_weight: float = 0.0,
        **kwargs: Any,
    ):
        if not 0 < success_threshold <= 1:
            raise ValueError(f"success_threshold must be in (0, 1], got {success_threshold!r}")
        _check_positive(coverage_resolution=coverage_resolution)
        if not isinstance(max_folds, int) or max_folds < 1:
            raise ValueError(f"max_folds must be an int >= 1, got {max_folds!r}")
        self.success_threshold, self.coverage_resolution = (
            float(success_threshold),
            float(coverage_resolution),
        )
        if initial_fold not in INITIAL_FOLDS:
            raise ValueError(f"initial_fold must be one of {INITIAL_FOLDS}, got {initial_fold!r}")
        if not np.isfinite(distance_weight) or distance_weight < 0:
            raise ValueError(f"distance_weight must be >= 0, got {distance_weight!r}")
        self.max_folds, self.initial_fold = max_folds, initial_fold
        self.distance_weight = float(distance_weight)
        super().__init__(**kwargs)
        i, j = np.meshgrid(np.arange(self.n), np.arange(self.n), indexing="ij")
        edge = (i == 0) | (j == 0) | (i == self.n - 1) | (j == self.n - 1)
        self.boundary_indices = np.flatnonzero(edge.ravel())

    def _initial_cloth(self, flat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Reflect a part of the flat cloth across 1..max_folds lines, stacking it on top."""
        pos = flat.copy()
        for layer in range(int(rng.integers(1, self.max_folds + 1))):
            if self.initial_fold == "corner":
                # corner (0, n-1): its fold line runs along the triangles' diagonals (a fold of corner (0, 0) or
                # (n-1, n-1) bends triangles across, and the shell curls up off the table as it settles)
                corner = flat[self.corner_indices[1], :2] - flat[:, :2].mean(0)
                normal = corner / np.linalg.norm(corner)
                quantile = rng.uniform(0.65, 0.8)  # fold over the 20-35% of the vertices nearest that corner
            else:
                angle = rng.uniform(0, 2 * np.pi)
                normal = np.array([np.cos(angle), np.sin(angle)])
                quantile = rng.uniform(0.55, 0.75)  # fold over 25-45% of the vertices
            proj = pos[:, :2] @ normal
            offset = np.quantile(proj, quantile)
            side = proj > offset
            pos[side, :2] -= 2 * (proj[side] - offset)[:, None] * normal
            pos[side, 2] += 2 * self.radius * (layer + 1)
        return pos

    def start_vertex(self) -> int:
        """The edge vertex farthest (in the table plane) from where it lies in the flat pose."""
        pos = self.cloth_positions[self.boundary_indices, :2]
        error = np.linalg.norm(pos - self.reset_positions[self.boundary_indices, :2], axis=1)
        return int(self.boundary_indices[int(np.argmax(error))])

    def gt_metric(self) -> float:
        """Covered area as a fraction of the flat cloth's area."""
        area = covered_area(self.data.xpos[self._vertex_bodies], self.triangles, self.coverage_resolution)
        return area / self.size**2

    def flat_distance(self) -> float:
        """Mean xy distance (metres) of the vertices from where they lay in the flat pose drawn at reset."""
        pos = self.data.xpos[self._vertex_bodies, :2]
        return float(np.linalg.norm(pos - self.reset_positions[:, :2], axis=1).mean())

    def reward_from_metric(self, metric: float) -> float:
        """The covered fraction, minus ``distance_weight`` x :meth:`flat_distance` (of the current state)."""
        if self.distance_weight == 0:
            return metric
        return metric - self.distance_weight * self.flat_distance()

    def success_from_metric(self, metric: float) -> bool:
        """Spread when the covered fraction reaches the threshold."""
        return metric >= self.success_threshold


def _check_episode_steps(max_episode_steps: int) -> None:
    if not isinstance(max_episode_steps, int) or max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps!r}")


def make_cloth_fold(max_episode_steps: int = 60, **kwargs: Any) -> gym.Env:
    """Build :class:`ClothFoldEnv` in a ``TimeLimit`` (used by ``envs/cloth_fold.yaml``).

    Example:
        >>> env = make_cloth_fold(width=32, height=32)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, info["frame"].shape
        ((19,), (32, 32, 3))
        >>> round(info["gt_metric"], 4)  # flat: mean matched-pair distance sqrt(2) * 0.05 * 10/3 m
        0.2357
        >>> env.close()
    """
    _check_episode_steps(max_episode_steps)
    return TimeLimit(ClothFoldEnv(**kwargs), max_episode_steps=max_episode_steps)


def make_cloth_spread(max_episode_steps: int = 100, **kwargs: Any) -> gym.Env:
    """Build :class:`ClothSpreadEnv` in a ``TimeLimit`` (used by ``envs/cloth_spread.yaml``)."""
    _check_episode_steps(max_episode_steps)
    return TimeLimit(ClothSpreadEnv(**kwargs), max_episode_steps=max_episode_steps)
