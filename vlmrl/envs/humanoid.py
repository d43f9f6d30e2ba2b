"""MuJoCo Humanoid-v5 with VLM-RM's changes: textured scene, a whole-body camera, frames in every step's info.

The MJCF is derived from gymnasium's own ``humanoid.xml`` at run time (textures and a camera added), so the
dynamics stay exactly those of Humanoid-v5.
"""

from __future__ import annotations

import hashlib
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import gymnasium as gym
import gymnasium.envs.mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from vlmrl.envs.rendering import FastRenderer
from vlmrl.runs import write_text

CAMERA = "vlmrl_side"


def textured_humanoid_xml() -> Path:
    """Write (once) and return the textured humanoid MJCF derived from gymnasium's Humanoid-v5 model."""
    src = Path(gym.envs.mujoco.__file__).parent / "assets" / "humanoid.xml"
    root = ET.parse(src).getroot()
    asset = root.find("asset")
    for tex in list(asset.findall("texture")):
        if tex.get("type") == "skybox" or tex.get("name") == "texplane":
            asset.remove(tex)
    for mat in list(asset.findall("material")):
        if mat.get("name") == "MatPlane":
            asset.remove(mat)
    # A daylight sky and a grass-like checker floor: CLIP recognises "a humanoid robot" far better in a scene
    # that looks like a photo than on the default black checkerboard (VLM-RM's texture ablation: 36% -> 91%).
    ET.SubElement(
        asset,
        "texture",
        type="skybox",
        builtin="gradient",
        rgb1="0.55 0.75 0.95",
        rgb2="0.95 0.97 1.0",
        width="256",
        height="256",
    )
    ET.SubElement(
        asset,
        "texture",
        name="texplane",
        type="2d",
        builtin="checker",
        rgb1="0.33 0.52 0.27",
        rgb2="0.40 0.60 0.32",
        width="256",
        height="256",
        mark="random",
        random="0.05",
        markrgb="0.30 0.45 0.25",
    )
    ET.SubElement(
        asset,
        "material",
        name="MatPlane",
        texture="texplane",
        texrepeat="8 8",
        reflectance="0",
        shininess="0",
        specular="0",
    )
    floor = root.find("worldbody/geom[@name='floor']")
    floor.set("rgba", "1 1 1 1")
    torso = root.find("worldbody/body[@name='torso']")
    # Side view tracking the centre of mass, far enough to keep a kneeling or standing body in frame.
    ET.SubElement(torso, "camera", name=CAMERA, mode="trackcom", pos="0 -3.3 -0.35", xyaxes="1 0 0 0 0.08 1", fovy="50")
    text = ET.tostring(root, encoding="unicode")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / "vlmrl" / f"humanoid_textured_{digest}.xml"
    if not out.exists():
        write_text(out, text)
    return out


class FrameInfo(gym.Wrapper):
    """Renders every step with :class:`FastRenderer` into ``info["frame"]`` and keeps ``info["env_reward"]``.

    Works on any gymnasium MuJoCo env (it reads ``env.unwrapped.model`` / ``.data``). ``render()`` returns the
    latest frame. The renderer is created lazily, so the wrapper can be built in one process and stepped in
    another (SubprocVecEnv).

    Args:
        env: a MuJoCo env.
        width: frame width.
        height: frame height.
        camera: camera name in the model, or None for the free camera.
        emit_frames: put a frame in every step's info (turn off when nothing reads frames).
    """

    def __init__(
        self, env: gym.Env, width: int = 224, height: int = 224, camera: str | None = None, emit_frames: bool = True
    ):
        super().__init__(env)
        if not isinstance(env.unwrapped, MujocoEnv):
            raise TypeError(f"FrameInfo needs a MuJoCo env with .model/.data, got {type(env.unwrapped).__name__}")
        self.width, self.height, self.camera = int(width), int(height), camera
        self.emit_frames = emit_frames
        self._renderer: FastRenderer | None = None
        self._last_frame: np.ndarray | None = None

    @property
    def render_mode(self) -> str:
        """Frames are always RGB arrays."""
        return "rgb_array"

    def _frame(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = FastRenderer(self.env.unwrapped.model, self.width, self.height, self.camera)
        self._last_frame = self._renderer.render(self.env.unwrapped.data)
        return self._last_frame

    def reset(self, **kwargs):
        """Reset the env; the first frame is in ``info["frame"]``."""
        obs, info = self.env.reset(**kwargs)
        if self.emit_frames:
            info["frame"] = self._frame()
        else:
            self._last_frame = None
        return obs, info

    def step(self, action):
        """Step the env; adds ``info["frame"]`` and ``info["env_reward"]``."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["env_reward"] = float(reward)
        if self.emit_frames:
            info["frame"] = self._frame()
        else:
            self._last_frame = None
        return obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        """The current frame, ``uint8 (H, W, 3)``."""
        return self._last_frame if self._last_frame is not None else self._frame()

    def close(self):
        """Free the renderer's GL context, then close the env."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()


def make_humanoid(
    width: int = 224,
    height: int = 224,
    episode_length: int = 100,
    textured: bool = True,
    emit_frames: bool = True,
    terminate_when_unhealthy: bool = False,
    **humanoid_kwargs,
) -> gym.Env:
    """Humanoid-v5 for VLM rewards: episodes of ``episode_length`` steps, frames in ``info["frame"]``.

    ``terminate_when_unhealthy`` is off by default because poses like kneeling or the splits put the torso
    below Humanoid-v5's "healthy" height.
    """
    if episode_length <= 0:
        raise ValueError(f"episode_length must be positive, got {episode_length}")
    kwargs = dict(terminate_when_unhealthy=terminate_when_unhealthy, **humanoid_kwargs)
    if textured:
        kwargs["xml_file"] = str(textured_humanoid_xml())
    env = gym.make("Humanoid-v5", max_episode_steps=episode_length, **kwargs)
    return FrameInfo(env, width=width, height=height, camera=CAMERA if textured else "track", emit_frames=emit_frames)
