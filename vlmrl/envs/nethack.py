"""NetHack tasks from NLE as gymnasium envs that expose the game message as text and the tty screen as an image.

ONI's intrinsic reward reads the one-line game message (``info["message"]``); videos and image reward
models read the 24x80 terminal drawn as RGB (``info["frame"]``, ``render()``). The policy sees a compact
``float32`` vector (an egocentric crop of the map, each cell one-hot over :data:`GLYPH_CLASSES`, plus the
bottom-line stats) so that stable-baselines3's ``MlpPolicy`` trains on it directly. ``info`` also carries the
in-game ``score`` (``gt_metric``), the dungeon ``depth`` and the ``gold`` carried.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np

TASKS = {
    "score": "NetHackScore-v0",
    "staircase": "NetHackStaircase-v0",
    "stairs": "NetHackStaircase-v0",
    "pet": "NetHackStaircasePet-v0",
    "oracle": "NetHackOracle-v0",
    "gold": "NetHackGold-v0",
    "eat": "NetHackEat-v0",
    "scout": "NetHackScout-v0",
    "challenge": "NetHackChallenge-v0",
}

# The 16 curses colours NetHack's tty uses (index = tty_colors value; bit 3 = bright).
TTY_PALETTE = np.array(
    [
        [0, 0, 0], [170, 0, 0], [0, 170, 0], [170, 85, 0], [0, 0, 170], [170, 0, 170], [0, 170, 170],
        [170, 170, 170], [85, 85, 85], [255, 85, 85], [85, 255, 85], [255, 255, 85], [85, 85, 255],
        [255, 85, 255], [85, 255, 255], [255, 255, 255],
    ],
    dtype=np.uint8,
)  # fmt: skip

CELL_H, CELL_W = 12, 6  # pixels per terminal character: a 24x80 tty becomes a 288x480 frame
OBSERVATION_KEYS = ("glyphs", "blstats", "message", "tty_chars", "tty_colors")
KICK = 4  # ^D
_WALKABLE = ("doorway", "closed door", "floor", "corridor", "stairs up", "stairs down", "feature", "monster", "pet",
             "object", "gold")  # fmt: skip
_ORTHOGONAL = ((ord("k"), 0, -1), (ord("j"), 0, 1), (ord("h"), -1, 0), (ord("l"), 1, 0))  # no diagonal doorways
TRAVEL_KEYS = (ord("_"), ord("."), KICK)  # travel, confirm the spot (getpos), kick
NLE_BL_SCORE, NLE_BL_DEPTH, NLE_BL_GOLD, NLE_BL_TIME = 9, 12, 13, 20  # blstats indices (nle.nethack.NLE_BL_*)
BLSTATS_SCALE = np.array(
    [79, 21, 25, 25, 25, 25, 25, 25, 1e4, 30, 30, 1e3, 1e3, 30, 30, 50, 40, 1e5, 1e5, 5, 5, 5, 5, 1, 8, 1, 1],
    dtype=np.float32,
)  # rough ranges of NLE's 27 bottom-line stats, to keep policy inputs near [0, 1]


#: What the policy tells apart in each map cell (one-hot): what blocks, what can be walked, what leads down.
GLYPH_CLASSES = ("unexplored", "wall", "doorway", "closed door", "floor", "corridor", "stairs up", "stairs down",
                 "feature", "trap", "monster", "pet", "object", "gold", "boulder")  # fmt: skip
_CMAP_CLASSES = {  # NetHack 3.6 screen symbols (defsym order) -> class
    "unexplored": [0], "wall": [*range(1, 12), 17, 18], "doorway": [12, 13, 14], "closed door": [15, 16],
    "floor": [19, 20], "corridor": [21, 22], "stairs up": [23, 25], "stairs down": [24, 26],
}  # fmt: skip


@lru_cache(maxsize=1)
def glyph_classes() -> np.ndarray:
    """Index into :data:`GLYPH_CLASSES` of every NLE glyph: ``int64 (MAX_GLYPH + 1,)`` (the last: off the map)."""
    from nle import nethack as nh

    table = np.zeros(nh.MAX_GLYPH + 1, dtype=np.int64)
    by_cmap = {i: GLYPH_CLASSES.index(c) for c, idx in _CMAP_CLASSES.items() for i in idx}
    gold, boulder = (next(o for o in range(nh.NUM_OBJECTS) if nh.OBJ_NAME(nh.objclass(o)) == n)
                     for n in ("gold piece", "boulder"))  # fmt: skip
    for g in range(nh.MAX_GLYPH):
        if nh.glyph_is_pet(g):
            c = "pet"
        elif nh.glyph_is_monster(g) or nh.glyph_is_invisible(g) or nh.glyph_is_warning(g):
            c = "monster"
        elif nh.glyph_is_object(g):
            obj = nh.glyph_to_obj(g)
            c = "gold" if obj == gold else "boulder" if obj == boulder else "object"
        elif nh.glyph_is_trap(g):
            c = "trap"
        elif nh.glyph_is_cmap(g):
            table[g] = by_cmap.get(nh.glyph_to_cmap(g), GLYPH_CLASSES.index("feature"))
            continue
        else:  # explosions, zaps, swallowed: transient effects
            c = "feature"
        table[g] = GLYPH_CLASSES.index(c)
    return table


@lru_cache(maxsize=1)
def glyph_atlas() -> np.ndarray:
    """Bitmaps of the 256 byte values drawn with Pillow's built-in font: ``bool (256, CELL_H, CELL_W)``."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default_imagefont() if hasattr(ImageFont, "load_default_imagefont") else None
    font = font or ImageFont.load_default()
    atlas = np.zeros((256, CELL_H, CELL_W), dtype=bool)
    for code in range(33, 127):
        img = Image.new("L", (CELL_W, CELL_H), 0)
        ImageDraw.Draw(img).text((0, 0), chr(code), fill=255, font=font)
        atlas[code] = np.asarray(img) > 96
    return atlas


@lru_cache(maxsize=1)
def _cell_table() -> np.ndarray:
    """Every (character, colour) cell drawn: ``uint8 (256 * 16, CELL_H, CELL_W * 3)``, row ``char * 16 + colour``.

    Drawing a frame is then one gather of the non-blank cells into a zeroed image laid out as
    ``(rows, CELL_H, cols, CELL_W * 3)``, which keeps the tty cheap to draw next to an NLE step.
    """
    cells = TTY_PALETTE[None, :, None, None, :] * glyph_atlas()[:, None, :, :, None]  # (256, 16, H, W, 3)
    palette_fix = cells.copy()
    palette_fix[:, 0] = cells[:, 7]  # colour 0 (black on black) is drawn grey so plain text stays visible
    return np.ascontiguousarray(palette_fix.reshape(256 * 16, CELL_H, CELL_W * 3))


def render_tty(tty_chars: np.ndarray, tty_colors: np.ndarray) -> np.ndarray:
    """Draw a terminal screen as an RGB image.

    Args:
        tty_chars: ``uint8 (rows, cols)`` character codes.
        tty_colors: ``int8 (rows, cols)`` curses colour indices (0-15; 0 is drawn grey).

    Returns:
        ``uint8 (rows * 12, cols * 6, 3)``.

    Example:
        >>> render_tty(np.full((24, 80), ord("@"), np.uint8), np.full((24, 80), 15, np.int8)).shape
        (288, 480, 3)
    """
    rows, cols = tty_chars.shape
    frame = np.zeros((rows * CELL_H, cols * CELL_W, 3), dtype=np.uint8)
    _draw_cells(frame, _cell_codes(tty_chars, tty_colors), tty_chars != ord(" "))  # most of a screen is blank
    return frame


class FramePool:
    """Draws tty frames into recycled buffers, redrawing only the cells that changed.

    Allocating and zeroing a fresh 288x480x3 image costs about as much as an NLE step (page faults). A buffer
    is reused only when nothing outside the pool references it any more (checked with ``sys.getrefcount``),
    so a frame somebody kept (a rollout buffer, a video) is never modified; a reused buffer gets only the
    cells whose character or colour differ from what it shows, usually a few dozen.

    Args:
        size: how many buffers to keep for reuse.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._entries: list[tuple[np.ndarray, np.ndarray]] = []  # (frame, cell codes it shows)

    def draw(self, tty_chars: np.ndarray, tty_colors: np.ndarray) -> np.ndarray:
        """The screen as ``uint8 (rows * 12, cols * 6, 3)``; valid until the caller drops its reference."""
        cells = _cell_codes(tty_chars, tty_colors)
        for i, (frame, shown) in enumerate(self._entries):
            if sys.getrefcount(frame) > 3:  # the entry tuple, the loop variable and getrefcount's argument
                continue
            changed = cells != shown
            if changed.any():
                _draw_cells(frame, cells, changed)
                self._entries[i] = (frame, cells)
            return frame
        frame = np.zeros((cells.shape[0] * CELL_H, cells.shape[1] * CELL_W, 3), dtype=np.uint8)
        _draw_cells(frame, cells, tty_chars != ord(" "))
        if len(self._entries) < self.size:
            self._entries.append((frame, cells))
        return frame


def _cell_codes(tty_chars: np.ndarray, tty_colors: np.ndarray) -> np.ndarray:
    """Row of each cell in :func:`_cell_table`: ``char * 16 + colour``."""
    return (tty_chars.astype(np.int32) << 4) | (tty_colors.astype(np.int32) & 15)


def _draw_cells(frame: np.ndarray, cells: np.ndarray, where: np.ndarray) -> None:
    """Copy the cells marked in ``where`` into ``frame`` from :func:`_cell_table`."""
    rows, cols = cells.shape
    r, c = np.nonzero(where)
    frame.reshape(rows, CELL_H, cols, CELL_W * 3)[r, :, c] = _cell_table()[cells[r, c]]


def decode_message(message: np.ndarray) -> str:
    """NLE's null-padded ``uint8 (256,)`` message as a ``str`` (empty when the game said nothing)."""
    return bytes(message).split(b"\0", 1)[0].decode("latin-1").strip()


class StepInfo(dict):
    """A step's ``info`` whose ``"frame"`` is drawn from the step's tty only when somebody reads it.

    Drawing a 288x480 frame costs about half an NLE step, and text rewards never look at it. The tty of the
    step is kept (3.8 KB), so ``info["frame"]`` read later still shows that step. ``"frame" in info``,
    ``info.get("frame")`` and pickling (subprocess vector envs) behave as if the frame were stored; a plain
    copy (``dict(info)``, ``info.items()``) carries the frame only once it has been read.
    """

    def __init__(self, *args: Any, tty: tuple[np.ndarray, np.ndarray], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tty = tty

    def __missing__(self, key: str) -> np.ndarray:
        if key != "frame":
            raise KeyError(key)
        frame = render_tty(*self.tty)
        self["frame"] = frame
        return frame

    def __contains__(self, key: object) -> bool:
        return key == "frame" or super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        """Like ``dict.get``; ``"frame"`` is drawn on first access."""
        return self[key] if key in self else default


class NetHackText(gym.Wrapper):
    """Wraps an NLE task: vector observations for the policy, message text and tty frame in ``info``.

    Every step's ``info`` carries ``"message"`` (``str``), ``"frame"`` (``uint8 (288, 480, 3)``, if
    ``frame_in_info``), ``"env_reward"`` (the task's own reward, kept unchanged as the step reward) and the
    bottom line's ``"score"`` (also ``"gt_metric"``), ``"depth"`` and ``"gold"``. The observation is the
    ``crop x crop`` window of map cells around the hero, one-hot over :data:`GLYPH_CLASSES`, the 27
    bottom-line stats scaled to about [0, 1], where the level's staircase down is (:meth:`_stairs_features`, zeros
    while none has been seen: descending is what the score pays most for), then how many steps (up to 8, over 8)
    the game clock has stood still.

    With ``travel`` (the ``"travel"`` action set, :func:`action_set`) two actions press several keys in one
    step: ``>`` first walks to the staircase down last seen on this level (NetHack's travel command: ``_``,
    ``>``, ``.``), and one more action, explore, walks up to ``explore_moves`` cells toward the nearest cell not
    yet stood on that borders unexplored map, opening (kicking, if locked) a closed door on the way. Each key
    is one NLE step (the episode's step limit counts keys); the step's reward is their sum, its message the
    last key's.

    Args:
        env: an NLE env created with at least the keys in :data:`OBSERVATION_KEYS`.
        crop: side of the egocentric window of map cells around the hero (odd).
        frame_in_info: ``"lazy"`` (``info["frame"]`` drawn when first read; default), ``True`` (drawn at every
            step) or ``False`` (no frame in ``info``; ``render()`` still works).
        travel: add the travel actions (the env's action set must end with :data:`TRAVEL_KEYS`, which the
            policy then does not press directly).
        explore_moves: most cells one explore step walks.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        env: gym.Env,
        crop: int = 9,
        frame_in_info: bool | str = "lazy",
        travel: bool = False,
        explore_moves: int = 16,
    ):
        super().__init__(env)
        missing = [k for k in OBSERVATION_KEYS if k not in env.observation_space.spaces]
        if missing:
            raise ValueError(
                f"NLE env lacks observation keys {missing}: create it with observation_keys={OBSERVATION_KEYS}"
            )
        if frame_in_info not in (True, False, "lazy"):
            raise ValueError(f"frame_in_info must be lazy, true or false, got {frame_in_info!r}")
        if crop % 2 != 1 or crop < 1:
            raise ValueError(f"crop must be a positive odd number, got {crop}: pass envs.crop=9")
        self.crop = crop
        self.frame_in_info = frame_in_info
        self._frames = FramePool()
        self._padded: np.ndarray | None = None
        self._classes = glyph_classes()
        self._one_hot = np.eye(len(GLYPH_CLASSES), dtype=np.float32)
        self._down = np.flatnonzero(self._classes == GLYPH_CLASSES.index("stairs down"))
        self._stairs: tuple[int, int, int] | None = None  # (depth, x, y) of the last staircase down seen
        self._still, self._clock = 0, -1  # steps the game clock has stood still (walking into walls, prompts)
        size = crop * crop * len(GLYPH_CLASSES) + len(BLSTATS_SCALE) + 5
        self.observation_space = gym.spaces.Box(-1.0, 10.0, shape=(size,), dtype=np.float32)
        self._last: dict[str, np.ndarray] | None = None
        self._bottom_line = {"score": 0, "depth": 1, "gold": 0}
        self._keys: dict[int, int] = {}  # NLE key -> index in the env's action set (travel only)
        if explore_moves < 1:
            raise ValueError(f"explore_moves must be >= 1, got {explore_moves}: pass envs.explore_moves=16")
        self.explore_moves = int(explore_moves)
        self._walkable = [GLYPH_CLASSES.index(c) for c in _WALKABLE]
        self._visited = np.zeros(env.observation_space["glyphs"].shape, dtype=bool)
        self._visited_depth = 0
        if travel:
            keys = [int(a) for a in env.unwrapped.actions]
            if keys[-len(TRAVEL_KEYS) :] != list(TRAVEL_KEYS) or ord(">") not in keys:
                raise ValueError("travel needs the env's action set to hold '>' and end with '_', '.', ^D: "
                                 "create it with make_nethack(actions='travel')")  # fmt: skip
            self._keys = {k: i for i, k in enumerate(keys)}
            self.action_space = gym.spaces.Discrete(len(keys) - len(TRAVEL_KEYS) + 1)

    @property
    def render_mode(self) -> str:
        """Frames always come from the tty: ``"rgb_array"``."""
        return "rgb_array"

    def _vector(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        glyphs, stats = obs["glyphs"], obs["blstats"]
        half, cells = self.crop // 2, self.crop * self.crop * len(GLYPH_CLASSES)
        if self._padded is None:  # off the map reads as the last table entry (unexplored)
            self._padded = np.full((glyphs.shape[0] + 2 * half, glyphs.shape[1] + 2 * half), len(self._classes) - 1)
        self._padded[half : half + glyphs.shape[0], half : half + glyphs.shape[1]] = glyphs
        x, y = int(stats[0]), int(stats[1])
        out = np.empty(self.observation_space.shape, dtype=np.float32)
        out[:cells] = self._one_hot[self._classes[self._padded[y : y + self.crop, x : x + self.crop]]].reshape(-1)
        np.clip(stats / BLSTATS_SCALE, -1.0, 10.0, out=out[cells : cells + len(BLSTATS_SCALE)])
        out[-5:-1] = self._stairs_features(glyphs, x, y, int(stats[NLE_BL_DEPTH]))
        self._still = self._still + 1 if stats[NLE_BL_TIME] == self._clock else 0
        self._clock = int(stats[NLE_BL_TIME])
        out[-1] = min(self._still, 8) / 8.0  # lets a greedy policy stuck against a wall see that it is stuck
        return out

    def _stairs_features(self, glyphs: np.ndarray, x: int, y: int, depth: int) -> tuple[float, float, float, float]:
        """The level's staircase down: ``dx / 8``, ``dy / 8`` (clipped to [-1, 1]), seen, standing on it.

        Its place is remembered once seen: the hero standing on it hides it from the map.
        """
        ys, xs = np.nonzero(np.isin(glyphs, self._down))
        if len(ys):
            i = np.argmin(np.abs(xs - x) + np.abs(ys - y))
            self._stairs = (depth, int(xs[i]), int(ys[i]))
        if self._stairs is None or self._stairs[0] != depth:
            return 0.0, 0.0, 0.0, 0.0
        dx, dy = self._stairs[1] - x, self._stairs[2] - y
        return min(max(dx / 8, -1.0), 1.0), min(max(dy / 8, -1.0), 1.0), 1.0, float(dx == dy == 0)

    def _info(self, obs: dict[str, np.ndarray], info: dict[str, Any], reward: float) -> dict[str, Any]:
        if self.frame_in_info == "lazy":
            info = StepInfo(info, tty=(obs["tty_chars"].copy(), obs["tty_colors"].copy()))
        else:
            info = dict(info)
        info["message"] = decode_message(obs["message"])
        info["env_reward"] = float(reward)
        stats = obs["blstats"]
        if stats[NLE_BL_DEPTH] > 0:  # once the game is over NLE zeroes the bottom line: keep its last values
            self._bottom_line = {"score": int(stats[NLE_BL_SCORE]), "depth": int(stats[NLE_BL_DEPTH]),
                                 "gold": int(stats[NLE_BL_GOLD])}  # fmt: skip
        info.update(self._bottom_line, gt_metric=self._bottom_line["score"])
        if self.frame_in_info is True:
            info["frame"] = self._frames.draw(obs["tty_chars"], obs["tty_colors"])
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start a new game; ``info`` carries the opening message and frame.

        A ``seed`` fixes NetHack's own RNGs (NLE's reset leaves them alone), so a seeded game replays exactly.
        """
        if seed is not None:
            self.env.unwrapped.seed(core=int(seed), disp=int(seed), reseed=False)
        obs, info = self.env.reset(seed=seed, options=options)
        self._last, self._stairs, self._still, self._clock = obs, None, 0, -1
        self._visited[:] = False
        self._mark_visited()
        return self._vector(obs), self._info(obs, info, 0.0)

    def _mark_visited(self) -> None:
        """Remember where the hero stood on this level (explore walks toward cells not stood on; travel only)."""
        if not self._keys:
            return
        stats = self._last["blstats"]
        if int(stats[NLE_BL_DEPTH]) != self._visited_depth:
            self._visited[:] = False
            self._visited_depth = int(stats[NLE_BL_DEPTH])
        x, y = int(stats[0]), int(stats[1])
        if 0 <= y < self._visited.shape[0] and 0 <= x < self._visited.shape[1]:
            self._visited[y, x] = True

    def step(self, action):
        """One game action; the reward is the task's own reward (also in ``info["env_reward"]``)."""
        total = 0.0
        for key in self._typed(int(action)):  # a generator: it reads self._last, the latest key's screen
            obs, reward, terminated, truncated, info = self.env.step(key)
            self._last = obs
            self._mark_visited()
            total += float(reward)
            if terminated or truncated:
                break
        return self._vector(obs), total, terminated, truncated, self._info(obs, info, total)

    def _typed(self, action: int) -> Iterator[int]:
        """Indices into the env's action set that the policy's ``action`` types (one, unless travelling)."""
        k = self._keys
        if not k or not 0 <= action < self.action_space.n:
            yield action
            return
        stats = self._last["blstats"] if self._last is not None else None
        if action == self.action_space.n - 1:  # explore: walk toward the nearest unexplored part of the map
            yield from self._explore(k)
            return
        if action == k[ord(">")] and stats is not None:
            x, y, depth = int(stats[0]), int(stats[1]), int(stats[NLE_BL_DEPTH])
            if self._stairs is not None and self._stairs[0] == depth and self._stairs[1:] != (x, y):
                yield from (k[ord("_")], k[ord(">")], k[ord(".")])
        yield action

    def _explore(self, k: dict[int, int]) -> Iterator[int]:
        """Moves along :meth:`_frontier_path`; stops when the game says something or the hero did not move.

        A closed door on the way is walked into (NetHack's ``autoopen``) and kicked once if locked.
        """
        path = self._frontier_path()[: self.explore_moves]
        if not path:  # nothing left to explore that can be reached: a no-op key (MORE) so the step still happens
            yield k[ord("\r")]
        for key, (dx, dy) in path:
            x, y = (int(v) for v in self._last["blstats"][:2])
            yield k[key]
            message = decode_message(self._last["message"])
            if message.startswith("This door is locked"):
                yield from (k[KICK], k[key])
                return
            moved = tuple(int(v) for v in self._last["blstats"][:2]) == (x + dx, y + dy)
            if message or not moved:
                return

    def _frontier_path(self) -> list[tuple[int, tuple[int, int]]]:
        """``(key, (dx, dy))`` of each move on the shortest walk to the nearest cell worth exploring.

        That is a walkable cell the hero has not stood on next to unexplored map, found by breadth-first search
        over the known ground of this screen in orthogonal moves (no diagonal squeezing through doorways).
        """
        glyphs, stats = self._last["glyphs"], self._last["blstats"]
        x0, y0 = int(stats[0]), int(stats[1])
        cls = self._classes[glyphs]
        walk = np.isin(cls, self._walkable)
        pad = np.pad(cls == 0, 1)
        border = np.zeros_like(walk)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                border |= pad[1 + dy : 1 + dy + cls.shape[0], 1 + dx : 1 + dx + cls.shape[1]]
        goal = walk & border & ~self._visited
        parent = {(x0, y0): None}
        queue = deque([(x0, y0)])
        while queue:
            x, y = queue.popleft()
            if goal[y, x]:
                path = []
                while parent[(x, y)] is not None:
                    (px, py), move = parent[(x, y)]
                    path.append(move)
                    x, y = px, py
                return path[::-1]
            for key, dx, dy in _ORTHOGONAL:
                nx, ny = x + dx, y + dy
                if 0 <= ny < cls.shape[0] and 0 <= nx < cls.shape[1] and walk[ny, nx] and (nx, ny) not in parent:
                    parent[(nx, ny)] = ((x, y), (key, (dx, dy)))
                    queue.append((nx, ny))
        return []

    def render(self) -> np.ndarray:
        """The current tty screen as ``uint8 (288, 480, 3)``."""
        if self._last is None:
            raise RuntimeError("render() before reset(): call env.reset() first")
        return self._frames.draw(self._last["tty_chars"], self._last["tty_colors"])


def action_set(name: str) -> tuple | None:
    """NLE actions of a named set: ``"task"`` (None: the task's own), ``"explore"`` or ``"travel"``.

    ``explore``: the 16 moves, ``>`` and MORE; ``travel``: explore's, then the keys :class:`NetHackText` presses
    for its travel actions (:data:`TRAVEL_KEYS`).
    """
    if name == "task":
        return None
    if name in ("explore", "travel"):  # no kick/eat prompts, no waiting, no '<' (on level 1 it leaves the dungeon)
        from nle.nethack import actions

        moves = (actions.MiscAction.MORE, *actions.CompassDirection, *actions.CompassDirectionLonger,
                 actions.MiscDirection.DOWN)  # fmt: skip
        if name == "explore":
            return moves
        return (*moves, actions.Command.TRAVEL, actions.MiscDirection.WAIT, actions.Command.KICK)  # TRAVEL_KEYS
    raise ValueError(f"unknown NetHack action set {name!r}: pass envs.actions= task, explore or travel")


def make_nethack(
    task: str = "score",
    max_episode_steps: int = 1000,
    crop: int = 9,
    actions: str = "task",
    explore_moves: int = 16,
    frame_in_info: bool | str = "lazy",
    render_mode: str | None = "rgb_array",
    **nle_kwargs: Any,
) -> NetHackText:
    """Create an NLE task wrapped by :class:`NetHackText`.

    Args:
        task: one of :data:`TASKS` (``score``, ``gold``, ``eat``, ``staircase``, ``oracle``...) or an NLE env id.
        max_episode_steps: NLE's own step limit (episodes end truncated).
        crop: egocentric window size of the policy observation.
        actions: ``"task"`` (the task's own action set), ``"explore"`` (:func:`action_set`: the 16 moves, going
            down and dismissing ``--More--``; a random walk over it scores about twice as much on Score) or
            ``"travel"`` (explore's, with ``>`` first walking to the staircase seen and one more action walking
            toward unexplored map: :class:`NetHackText`).
        explore_moves: most cells one explore step walks (``travel`` only).
        frame_in_info: ``"lazy"`` (drawn when read), ``True`` (every step) or ``False`` (only ``render()``).
        render_mode: only ``"rgb_array"`` (or ``None``) is supported; frames come from the tty.
        **nle_kwargs: passed to NLE (e.g. ``character="mon-hum-neu-mal"``).
    """
    try:
        import nle  # noqa: F401  (registers the NetHack* envs)
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("NetHack needs NLE: pip install -e '.[nethack]'") from e
    env_id = TASKS.get(task.lower(), task)
    if env_id not in gym.registry:
        raise ValueError(f"unknown NetHack task {task!r}: pass envs.task= one of {sorted(TASKS)}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode {render_mode!r} unsupported: pass envs.render_mode=rgb_array")
    chosen = action_set(actions)
    if chosen is not None:
        nle_kwargs["actions"] = chosen
    env = gym.make(env_id, observation_keys=OBSERVATION_KEYS, max_episode_steps=max_episode_steps, **nle_kwargs)
    return NetHackText(
        env, crop=crop, frame_in_info=frame_in_info, travel=actions == "travel", explore_moves=explore_moves
    )
