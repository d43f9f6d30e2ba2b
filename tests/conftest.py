import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a model hub

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory):
    """A random-initialised vlmrl-tiny open_clip model saved the way real checkpoints are (a state dict)."""
    import open_clip
    import torch

    import vlmrl.rewards.clip  # noqa: F401  (registers the vlmrl-tiny config)

    torch.manual_seed(1234)
    model, _, _ = open_clip.create_model_and_transforms("vlmrl-tiny", pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "vlmrl-tiny.pt"
    torch.save(model.state_dict(), path)
    return path
