"""Scripted experts for the tabletop tasks (push, cloth fold, cloth spread), for datasets and sanity checks.

Each expert reads the unwrapped env's state (no observation parsing) and returns ``float32 (4,)`` actions in
``[-1, 1]``, optionally with Gaussian noise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import gymnasium as gym
import numpy as np

from vlmrl.envs.cloth import ClothFoldEnv, ClothSpreadEnv


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
    """Expert for :class:`~vlmrl.envs.push.PushEnv`: lift, fly behind the block, descend, push along the goal line.

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


class _PickPlacePolicy(ScriptedPolicy):
    """Runs pick-and-place moves of cloth vertices: hover, descend, grasp, lift, carry, lower, release."""

    hover_height = 0.05
    lift_height = 0.1
    place_height = 0.02
    tolerance = 0.015

    def reset(self) -> None:
        """Plan anew."""
        self._phase, self._pick, self._hold = "plan", None, 0

    def _next_pick(self) -> tuple[int, np.ndarray] | None:
        """The vertex to move next and where to put it, or ``None`` when done."""
        raise NotImplementedError

    def _place_target(self) -> np.ndarray:
        return self._target

    def _expert_action(self) -> np.ndarray:
        env = self.env
        grip = env.gripper_pos
        ceiling = env.workspace_high[2] - 0.002  # a low workspace ceiling caps the heights (no endless lifting)
        hover_height, lift_height = min(self.hover_height, ceiling), min(self.lift_height, ceiling)
        if self._phase == "plan":
            nxt = self._next_pick()
            if nxt is None:
                return self._move_toward(np.array([grip[0], grip[1], hover_height]), -1.0)
            self._pick, self._target = nxt
            self._phase = "approach"
        vertex = env.cloth_positions[self._pick]
        if self._phase == "approach":
            goal = np.array([vertex[0], vertex[1], hover_height])
            if np.linalg.norm(goal[:2] - grip[:2]) < self.tolerance:
                self._phase = "descend"
            else:
                return self._move_toward(goal, -1.0)
        if self._phase == "descend":
            goal = vertex.copy()
            if np.linalg.norm(goal - grip) < self.tolerance:
                self._phase = "lift"
                return self._move_toward(grip, 1.0)  # close on the vertex
            return self._move_toward(goal, -1.0)
        target = self._place_target()
        if self._phase == "lift":
            if grip[2] >= lift_height - 0.005:
                self._phase = "carry"
            else:
                return self._move_toward(np.array([grip[0], grip[1], lift_height]), 1.0)
        if self._phase == "carry":
            goal = np.array([target[0], target[1], lift_height])
            if np.linalg.norm(goal[:2] - grip[:2]) < self.tolerance:
                self._phase = "lower"
            else:
                return self._move_toward(goal, 1.0)
        if self._phase == "lower":
            goal = np.array([target[0], target[1], target[2] + self.place_height])
            if np.linalg.norm(goal - grip) < self.tolerance:
                self._phase = "release"
            else:
                return self._move_toward(goal, 1.0)
        # release, then rise to hover height before the next move
        if grip[2] >= hover_height - 0.005:
            self._phase = "plan"
        return self._move_toward(np.array([grip[0], grip[1], hover_height]), -1.0)


class ScriptedFoldPolicy(_PickPlacePolicy):
    """Expert for :class:`ClothFoldEnv`: carry each moving corner onto its matched corner.

    Diagonal: corner (0,n-1) onto corner (n-1,0). Edge: corner (0,0) onto (n-1,0), then (0,n-1) onto
    (n-1,n-1).

    Args:
        env: a :class:`ClothFoldEnv` (wrappers allowed).
        noise: Gaussian action noise standard deviation.
        rng: source of the noise.
    """

    def __init__(self, env: gym.Env, noise: float = 0.0, rng: np.random.Generator | None = None):
        super().__init__(env, noise, rng)
        if not isinstance(self.env, ClothFoldEnv):
            raise TypeError(f"ScriptedFoldPolicy needs a ClothFoldEnv, got {type(self.env).__name__}")
        n = self.env.n
        if self.env.fold == "diagonal":
            self._moves = [(n - 1, (n - 1) * n)]
        else:
            self._moves = [(0, (n - 1) * n), (n - 1, n * n - 1)]
        self.reset()

    def reset(self) -> None:
        """Start from the first corner."""
        super().reset()
        self._done = 0

    def _next_pick(self):
        if self._done >= len(self._moves):
            return None
        pick, onto = self._moves[self._done]
        self._done += 1
        self._onto = onto
        return pick, None

    def _place_target(self) -> np.ndarray:
        return self.env.cloth_positions[self._onto]  # follow the matched corner if the cloth slid


class ScriptedSpreadPolicy(_PickPlacePolicy):
    """Expert for :class:`ClothSpreadEnv`: move the boundary vertex farthest from its flat pose back to it.

    Repeats until the covered fraction clears ``success_threshold + margin`` or ``max_moves`` moves were made.

    Args:
        env: a :class:`ClothSpreadEnv` (wrappers allowed).
        noise: Gaussian action noise standard deviation.
        rng: source of the noise.
        max_moves: pick-and-place moves per episode.
    """

    place_height = 0.01
    margin = 0.01  # stop once the coverage clears the success threshold by this much

    def __init__(self, env: gym.Env, noise: float = 0.0, rng: np.random.Generator | None = None, max_moves: int = 5):
        super().__init__(env, noise, rng)
        if not isinstance(self.env, ClothSpreadEnv):
            raise TypeError(f"ScriptedSpreadPolicy needs a ClothSpreadEnv, got {type(self.env).__name__}")
        self.max_moves = max_moves
        self.reset()

    def reset(self) -> None:
        """Start counting moves again."""
        super().reset()
        self._moves = 0

    def _next_pick(self):
        env = self.env
        coverage = env.gt_metric()
        if self._moves >= self.max_moves or coverage >= env.success_threshold + self.margin:
            return None
        k = env.start_vertex()  # the edge vertex farthest from its flat pose
        self._moves += 1
        return k, env.reset_positions[k]
