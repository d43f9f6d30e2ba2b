"""vlmrl: reinforcement learning from vision-language and language-model feedback."""

import os

# Headless MuJoCo rendering must be chosen before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

__version__ = "0.1.0"
