"""Fast headless MuJoCo rendering: effects off, one GL context per renderer, frames checked for blankness.

The software renderer is ~10x slower with shadows, reflections, skybox and multisampling on; turning them
off gives ~100 fps for the humanoid at 224x224 on a CPU (``NOTES-machine.md``).
"""

from __future__ import annotations

import atexit
import weakref

import mujoco
import numpy as np

_EFFECT_FLAGS = (
    mujoco.mjtRndFlag.mjRND_SHADOW,
    mujoco.mjtRndFlag.mjRND_REFLECTION,
    mujoco.mjtRndFlag.mjRND_SKYBOX,
)
_live: weakref.WeakSet = weakref.WeakSet()
_atexit_registered = False


def _close_all() -> None:
    for r in list(_live):
        r.close()


def _load_triton_llvm_first() -> None:
    """Import torch's dynamo (and with it triton's LLVM) before Mesa's LLVM is loaded by a GL context.

    Loaded the other way round (triton lazily, on the first optimizer step or ``torch.compile`` after an env
    rendered), the two LLVM copies clash and the process segfaults.
    """
    try:
        import torch._dynamo  # noqa: F401
    except ImportError:  # torch without dynamo: nothing to clash with
        pass


def _track(renderer: FastRenderer) -> None:
    # Registered after mujoco's own EGL atexit hook, so it runs first and frees contexts while EGL is alive.
    global _atexit_registered
    _live.add(renderer)
    if not _atexit_registered:
        atexit.register(_close_all)
        _atexit_registered = True


class FastRenderer:
    """Offscreen RGB renderer for one MuJoCo model with costly effects disabled.

    Args:
        model: the compiled ``mujoco.MjModel``.
        width: frame width in pixels.
        height: frame height in pixels.
        camera: camera name or id; ``None`` or -1 uses the free camera.
        skybox: keep the skybox (cheap with a flat texture; VLM-RM's humanoid uses a sky).

    Example:
        >>> import mujoco
        >>> m = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
        >>> r = FastRenderer(m, 32, 24)
        >>> r.render(mujoco.MjData(m)).shape
        (24, 32, 3)
        >>> r.close()
    """

    def __init__(
        self, model: mujoco.MjModel, width: int, height: int, camera: str | int | None = None, skybox: bool = True
    ):
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            # The offscreen buffer must hold the frame; grow it rather than fail.
            model.vis.global_.offwidth = max(width, model.vis.global_.offwidth)
            model.vis.global_.offheight = max(height, model.vis.global_.offheight)
        model.vis.quality.offsamples = 0  # no multisample anti-aliasing (must precede context creation)
        if isinstance(camera, str):
            cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
            if cam_id < 0:
                names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
                raise ValueError(f"no camera named {camera!r} in the model; cameras: {names}")
            camera = cam_id
        self.camera = -1 if camera is None else int(camera)
        self.width, self.height = width, height
        _load_triton_llvm_first()
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        _track(self)
        flags = self._renderer.scene.flags
        for flag in _EFFECT_FLAGS:
            if flag == mujoco.mjtRndFlag.mjRND_SKYBOX and skybox:
                continue
            flags[flag] = 0

    def render(self, data: mujoco.MjData) -> np.ndarray:
        """Render the current state as ``uint8 (H, W, 3)`` (a fresh array, safe to keep)."""
        self._renderer.update_scene(data, camera=self.camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        """Release the GL context."""
        renderer, self._renderer = getattr(self, "_renderer", None), None
        if renderer is not None:
            renderer.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: GL may already be gone
            pass


def is_blank(frame: np.ndarray, min_std: float = 2.0) -> bool:
    """Whether a frame is (nearly) uniform, e.g. the all-black output of a lost GL context."""
    return float(np.asarray(frame, dtype=np.float32).std()) < min_std
