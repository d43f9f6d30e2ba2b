"""Small text+image games with a list of admissible commands: NumberLine and Blackjack (GFlowVLM's tasks).

All text envs in vlmrl (these and :class:`vlmrl.envs.alfworld.AlfWorldEnv`) share one interface,
:class:`TextActionEnv`: the observation is the text a player reads, an action is an index into
``info["admissible_commands"]`` (``info["action_mask"]`` marks the valid indices of the padded
``Discrete(max_actions)`` space), and every step's info carries ``message`` (the text), ``frame`` (the text
drawn as RGB), ``env_reward`` and ``won``.
"""

from __future__ import annotations

import abc
import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vlmrl.envs.text_render import draw_text_screen

TEXT_CHARSET = frozenset(string.printable)


def clean_text(text: str, max_length: int) -> str:
    """Map ``text`` into the observation space's charset (unknown characters become ``?``) and length."""
    cleaned = "".join(c if c in TEXT_CHARSET else "?" for c in text)[:max_length]
    return cleaned or " "


class TextActionEnv(gym.Env, abc.ABC):
    """A text game whose actions are chosen from a per-step list of admissible commands.

    Subclasses implement :meth:`_new_game` and :meth:`_play`. Invalid indices (masked out) leave the game
    unchanged and answer "Nothing happens.", so random agents and ``check_env`` can step freely.

    Args:
        max_actions: size of the padded ``Discrete`` action space; games with more admissible commands
            fail with an error naming this setting.
        max_episode_steps: steps after which the episode is truncated.
        frame_size: ``(height, width)`` of ``info["frame"]`` and :meth:`render`.
        render_mode: only ``"rgb_array"``.
        max_text_length: longest observation string kept.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    title = "text game"

    def __init__(
        self,
        max_actions: int = 8,
        max_episode_steps: int = 20,
        frame_size: tuple[int, int] = (160, 256),
        render_mode: str | None = "rgb_array",
        max_text_length: int = 2048,
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not supported: use render_mode='rgb_array'")
        if max_actions < 1 or max_episode_steps < 1:
            raise ValueError("max_actions and max_episode_steps must be >= 1")
        self.render_mode = render_mode
        self.max_actions = int(max_actions)
        self.max_episode_steps = int(max_episode_steps)
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.max_text_length = int(max_text_length)
        self.observation_space = spaces.Text(
            max_length=self.max_text_length, min_length=1, charset="".join(sorted(TEXT_CHARSET))
        )
        self.action_space = spaces.Discrete(self.max_actions)
        self._commands: list[str] = []
        self._text = " "
        self._frame: np.ndarray | None = None
        self._steps = 0
        self._won = False
        self._done = False

    # --- what a game implements -------------------------------------------------------------------------
    @abc.abstractmethod
    def _new_game(self, rng: np.random.Generator, options: dict[str, Any] | None) -> tuple[str, list[str]]:
        """Start a game; returns the first text and the admissible commands."""

    @abc.abstractmethod
    def _play(self, command: str) -> tuple[str, float, bool, bool, list[str]]:
        """Apply one admissible command; returns (text, reward, terminated, won, next commands)."""

    @property
    def goal(self) -> str:
        """The task in words (also part of every observation)."""
        return ""

    # --- gymnasium API ------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a new game; the observation is its first screen of text."""
        super().reset(seed=seed)
        text, commands = self._new_game(self.np_random, options)
        self._steps, self._won, self._done = 0, False, False
        self._set_state(text, commands)
        return self._text, self._info(0.0)

    def step(self, action: int | np.integer | str):
        """Play ``admissible_commands[action]`` (or a command string); masked indices change nothing."""
        if self._done:
            raise RuntimeError("step() called after the episode ended: call reset() first")
        command = self._command_for(action)
        self._steps += 1
        if command is None:
            text, reward, terminated, won, commands = self._text_with("Nothing happens."), 0.0, False, False, None
        else:
            text, reward, terminated, won, commands = self._play(command)
        self._won = self._won or bool(won)
        truncated = not terminated and self._steps >= self.max_episode_steps
        self._done = bool(terminated or truncated)
        self._set_state(text, self._commands if commands is None else commands)
        return self._text, float(reward), bool(terminated), bool(truncated), self._info(float(reward))

    def render(self) -> np.ndarray:
        """The current text screen, ``uint8 (H, W, 3)``."""
        if self._frame is None:
            raise RuntimeError("render() before reset(): call reset() first")
        return self._frame

    # --- helpers ----------------------------------------------------------------------------------------
    @property
    def admissible_commands(self) -> list[str]:
        """The commands valid in the current state, in action-index order."""
        return list(self._commands)

    def action_masks(self) -> np.ndarray:
        """``bool (max_actions,)``: which action indices are admissible (the name sb3-contrib looks for)."""
        mask = np.zeros(self.max_actions, dtype=bool)
        mask[: len(self._commands)] = True
        return mask

    def _command_for(self, action: int | np.integer | str) -> str | None:
        if isinstance(action, str):
            return action if action in self._commands else None
        index = int(action)
        return self._commands[index] if 0 <= index < len(self._commands) else None

    def _text_with(self, feedback: str) -> str:
        """Observation for an unchanged state with a new one-line feedback."""
        return f"{self.goal}\n{feedback}" if self.goal else feedback

    def _set_state(self, text: str, commands: list[str]) -> None:
        if len(commands) > self.max_actions:
            raise ValueError(
                f"{self.title}: {len(commands)} admissible commands but max_actions={self.max_actions}:"
                f" raise envs.max_actions to at least {len(commands)}"
            )
        self._commands = list(commands)
        self._text = clean_text(text, self.max_text_length)
        self._frame = draw_text_screen(
            self._text,
            title=self.title,
            highlight=[f"> {c}" for c in self._commands] if not self._done else [],
            height=self.frame_size[0],
            width=self.frame_size[1],
        )

    def _info(self, reward: float) -> dict[str, Any]:
        return {
            "message": self._text,
            "frame": self._frame,
            "env_reward": reward,
            "admissible_commands": list(self._commands),
            "action_mask": self.action_masks(),
            "won": self._won,
            "goal": self.goal,
        }


class NumberLineEnv(TextActionEnv):
    """Move a current number to a target number with "increase" / "decrease" (GFlowVLM's NumberLine).

    Reward 1 when the current number reaches the target (the episode ends), 0 otherwise; the numbers stay
    within ``[0, max_number]``.

    Example:
        >>> env = NumberLineEnv(max_number=5)
        >>> text, info = env.reset(seed=0)
        >>> info["admissible_commands"]
        ['increase', 'decrease']
    """

    title = "NumberLine"
    COMMANDS = ["increase", "decrease"]

    def __init__(self, max_number: int = 5, max_episode_steps: int | None = None, **kwargs: Any):
        if max_number < 1:
            raise ValueError(f"max_number={max_number} leaves no game to play: use max_number >= 1")
        self.max_number = int(max_number)
        super().__init__(
            max_actions=kwargs.pop("max_actions", 2),
            max_episode_steps=max_episode_steps or 2 * self.max_number,
            **kwargs,
        )
        self.target = 0
        self.current = 0
        self.task_id = ""

    @property
    def goal(self) -> str:
        """The target in words."""
        return f"Goal: make the current number equal to the target {self.target}."

    def _screen(self, feedback: str) -> str:
        return f"{self.goal}\nTarget: {self.target}\nCurrent: {self.current}\n{feedback}"

    def _new_game(self, rng, options):
        options = options or {}
        self.target = int(options.get("target", rng.integers(0, self.max_number + 1)))
        if "current" in options:
            self.current = int(options["current"])
        else:  # a start different from the target
            offset = int(rng.integers(1, self.max_number + 1))
            self.current = (self.target + offset) % (self.max_number + 1)
        for name, value in (("target", self.target), ("current", self.current)):
            if not 0 <= value <= self.max_number:
                raise ValueError(f"{name}={value} is outside [0, {self.max_number}]: pass 0 <= {name} <= max_number")
        self.task_id = f"from {self.current} to {self.target}"
        return self._screen("What do you do?"), list(self.COMMANDS)

    def _info(self, reward: float) -> dict[str, Any]:
        info = super()._info(reward)
        info["task_id"] = self.task_id  # start and target: one "task" for counting distinct solutions
        return info

    def _play(self, command):
        step = 1 if command == "increase" else -1
        self.current = int(np.clip(self.current + step, 0, self.max_number))
        won = self.current == self.target
        feedback = "You reached the target!" if won else "What do you do?"
        return self._screen(feedback), float(won), won, won, list(self.COMMANDS)


class BlackjackEnv(TextActionEnv):
    """Blackjack against a dealer who draws to 17, from an infinite deck (GFlowVLM's BlackJack).

    Reward +1 for a win, 0 for a draw, -1 for a loss, given when the hand ends; ``won`` means a win.
    """

    title = "Blackjack"
    COMMANDS = ["stand", "hit"]
    NAMES = {1: "A", 11: "J", 12: "Q", 13: "K"}  # ranks 1..13; an ace counts 1 or 11, faces 10

    def __init__(self, max_episode_steps: int = 10, **kwargs: Any):
        super().__init__(max_actions=kwargs.pop("max_actions", 2), max_episode_steps=max_episode_steps, **kwargs)
        self._rng: np.random.Generator | None = None
        self.player: list[int] = []
        self.dealer: list[int] = []

    @property
    def goal(self) -> str:
        """The task in words."""
        return "Goal: beat the dealer without going over 21."

    @staticmethod
    def hand_value(ranks: list[int]) -> int:
        """Best total of a hand of ranks (1..13): aces count 11 while that does not bust it."""
        total = sum(min(r, 10) for r in ranks)
        return total + 10 if 1 in ranks and total + 10 <= 21 else total

    def _draw(self) -> int:
        assert self._rng is not None
        return int(self._rng.integers(1, 14))

    def _name(self, rank: int) -> str:
        return self.NAMES.get(rank, str(rank))

    def _screen(self, feedback: str, show_dealer: bool = False) -> str:
        player = ", ".join(self._name(r) for r in self.player)
        dealer_cards = self.dealer if show_dealer else self.dealer[:1]
        dealer = ", ".join(self._name(r) for r in dealer_cards)
        dealer_total = self.hand_value(dealer_cards)
        return (
            f"{self.goal}\nYour cards: {player} (total {self.hand_value(self.player)})\n"
            f"Dealer {'has' if show_dealer else 'shows'}: {dealer} (total {dealer_total})\n{feedback}"
        )

    def _new_game(self, rng, options):
        self._rng = rng
        options = options or {}
        self.player = list(options.get("player", [self._draw(), self._draw()]))
        self.dealer = list(options.get("dealer", [self._draw(), self._draw()]))
        return self._screen("Hit or stand?"), list(self.COMMANDS)

    def _play(self, command):
        if command == "hit":
            self.player.append(self._draw())
            if self.hand_value(self.player) > 21:
                return self._screen("You bust. You lose.", show_dealer=True), -1.0, True, False, []
            return self._screen("Hit or stand?"), 0.0, False, False, list(self.COMMANDS)
        while self.hand_value(self.dealer) < 17:
            self.dealer.append(self._draw())
        mine, theirs = self.hand_value(self.player), self.hand_value(self.dealer)
        if theirs > 21 or mine > theirs:
            return self._screen("You win!", show_dealer=True), 1.0, True, True, []
        if mine == theirs:
            return self._screen("A draw.", show_dealer=True), 0.0, True, False, []
        return self._screen("You lose.", show_dealer=True), -1.0, True, False, []
