"""Learned image rewards from preferences: an ensemble of small CNNs trained with Bradley-Terry.

As in RL-VLM-F / PEBBLE: a segment's predicted return is the sum of per-frame rewards, the probability that
the second segment is preferred is ``sigmoid(R2 - R1)``, and each ensemble member is fit with the
cross-entropy against the labels on its own shuffle of the data (the loop is
:class:`vlmrl.preferences.RewardTrainer`). Query selection picks which candidate pairs to label: uniformly, by
ensemble disagreement, or by the entropy of the predicted preference.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlmrl.rewards.base import RewardModel
from vlmrl.runs import write_bytes

QUERY_SELECTIONS = ("uniform", "disagreement", "entropy")
STATE_FILE = "reward_model.pt"


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (None: leave as is), restoring the previous count.

    Small CNNs gain nothing from intra-op parallelism, and on a busy CPU the threads' synchronisation makes
    each step 10-40x slower (measured: 15 ms vs 0.2-0.7 s per step on 2 shared cores).
    """
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def frames_to_tensor(frames: np.ndarray, image_size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """``uint8 (N, H, W, 3)`` frames -> ``float (N, 3, S, S)`` in [0, 1], area-resized to ``image_size``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (N, H, W, 3), got shape {frames.shape}")
    x = torch.as_tensor(frames, device=device).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="area")
    return x


def downsample_frames(frames: np.ndarray, image_size: int) -> np.ndarray:
    """Resize ``uint8 (..., H, W, 3)`` frames to ``uint8 (..., S, S, 3)`` to store labeled pairs compactly."""
    frames = np.asarray(frames)
    lead = frames.shape[:-3]
    flat = frames.reshape(-1, *frames.shape[-3:])
    if flat.shape[1:3] == (image_size, image_size):
        return frames.astype(np.uint8, copy=False)
    x = frames_to_tensor(flat, image_size)
    out = (x.mul(255.0).round_().clamp_(0, 255).byte().permute(0, 2, 3, 1)).numpy()
    return out.reshape(*lead, image_size, image_size, 3)


REWARD_OUTPUTS = ("tanh", "linear")
"""A reward net's last activation. PEBBLE's ``tanh`` bounds rewards to (-1, 1), but with clean labels the
Bradley-Terry loss drives outputs to the bounds: on push frames (1,000 perfect single-frame pairs, keypoint net)
55% of held-out frames scored |r| > 0.95 and Spearman near the goal (< 8 cm) was 0.57; ``linear`` kept the
ranking there (0.80; 0.96 overall against 0.88)."""


def _squash(output: str) -> nn.Module:
    """The last activation named by ``output`` (one of :data:`REWARD_OUTPUTS`)."""
    if output not in REWARD_OUTPUTS:
        raise ValueError(f"output={output!r}: use one of {', '.join(REWARD_OUTPUTS)}")
    return nn.Tanh() if output == "tanh" else nn.Identity()


class ImageRewardNet(nn.Module):
    """Per-frame reward r(s): four strided convolutions, an MLP head and (by default) a tanh, as PEBBLE.

    Args:
        image_size: side of the (square) input the frames are resized to.
        channels: conv widths.
        hidden: width of the MLP head.
        output: ``tanh`` (PEBBLE) or ``linear`` (unbounded; see :data:`REWARD_OUTPUTS`).
    """

    def __init__(
        self, image_size: int = 64, channels: Sequence[int] = (16, 32, 32, 32), hidden: int = 64, output: str = "tanh"
    ):
        super().__init__()
        self.squash = _squash(output)
        layers: list[nn.Module] = []
        c_in, size = 3, image_size
        for c in channels:
            layers += [nn.Conv2d(c_in, c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(0.01)]
            c_in, size = c, (size + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * size * size, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``float (N, 3, S, S)`` -> ``float (N,)`` rewards."""
        return self.squash(self.head(self.conv(x))).squeeze(-1)


class KeypointRewardNet(nn.Module):
    """Per-frame reward r(s) from where things are: keypoints through a spatial softmax, an MLP and (by default) a tanh.

    A 3x3 and a 1x1 convolution at full resolution give ``keypoints`` feature maps; each map's softmax over
    the pixels, with a learned temperature, yields the expected (x, y) of what it detects (Levine et al. 2016,
    "Deep spatial autoencoders"). Rewards that depend on where small objects lie (block-to-goal distance) are
    then a function of a few coordinates. Measured on ``push_offline``'s frames (1,000 single-frame teacher
    pairs), Spearman with the true reward on held-out episodes: 0.97 after 200 steps; with the temperature
    fixed at 1 the maps stayed near uniform (0.10 after 600 steps, 0.93-0.94 after 1,500, 3 seeds); PEBBLE's
    CNN (:class:`ImageRewardNet`) 0.38 after 1,500, at ~1/3.5 of this net's compute per frame. Narrower (8
    channels) or 1x1-only variants measured 0.13-0.19.

    Args:
        image_size: side of the (square) input the frames are resized to.
        channels: width of the 3x3 convolution.
        keypoints: feature maps, each giving one (x, y).
        hidden: width of the MLP head's two layers.
        temperature: initial softmax temperature (a multiplier of the maps, learned in log space).
        output: ``tanh`` or ``linear`` (see :data:`REWARD_OUTPUTS`).
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 16,
        keypoints: int = 16,
        hidden: int = 64,
        temperature: float = 10.0,
        output: str = "tanh",
    ):
        super().__init__()
        self.squash = _squash(output)
        self.log_temperature = nn.Parameter(torch.tensor(float(np.log(temperature))))
        self.conv = nn.Sequential(
            nn.Conv2d(3, channels, kernel_size=3, padding=1), nn.LeakyReLU(0.01), nn.Conv2d(channels, keypoints, 1)
        )
        axis = torch.linspace(-1.0, 1.0, image_size)
        ys, xs = torch.meshgrid(axis, axis, indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], -1), persistent=False)
        self.head = nn.Sequential(
            nn.Linear(2 * keypoints, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, hidden), nn.LeakyReLU(0.01),
            nn.Linear(hidden, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``float (N, 3, S, S)`` -> ``float (N,)`` rewards."""
        attention = torch.softmax(self.conv(x).flatten(2) * self.log_temperature.exp(), dim=-1)  # (N, K, S*S)
        return self.squash(self.head((attention @ self.grid).flatten(1))).squeeze(-1)


REWARD_NETS = {"cnn": ImageRewardNet, "keypoints": KeypointRewardNet}


def bradley_terry_loss(return_first: torch.Tensor, return_second: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry cross-entropy: ``P(second > first) = sigmoid(R2 - R1)`` against ``target`` (1 = second).

    Args:
        return_first: ``(..., P)`` predicted segment returns R1.
        return_second: ``(..., P)`` predicted segment returns R2.
        target: ``(P,)`` float labels in [0, 1] (0.5 for "equally good").

    Returns:
        Mean cross-entropy (a scalar tensor).
    """
    logits = return_second - return_first
    return F.binary_cross_entropy_with_logits(logits, target.expand_as(logits))


class PreferenceRewardModel(RewardModel, nn.Module):
    """Ensemble of per-frame reward nets (:data:`REWARD_NETS`); the reward is the ensemble mean.

    Args:
        ensemble_size: number of members (RL-VLM-F uses 3).
        image_size: frames are resized to ``image_size x image_size`` before the nets.
        lr: learning rate of the ensemble's Adam optimizer (stepped by the trainer, saved with the weights).
        batch_size: pairs per gradient step of the trainer.
        device: torch device.
        seed: seeds the members' initial weights (so two models built alike start alike).
        num_threads: intra-op CPU threads used while training and predicting (None: torch's default).
        net: ``cnn`` (:class:`ImageRewardNet`, PEBBLE's strided CNN) or ``keypoints``
            (:class:`KeypointRewardNet`, for rewards that depend on where small objects are).
        output: the nets' last activation, ``tanh`` (PEBBLE) or ``linear`` (:data:`REWARD_OUTPUTS`).
    """

    input_key = "frame"

    def __init__(
        self,
        ensemble_size: int = 3,
        image_size: int = 64,
        lr: float = 3e-4,
        batch_size: int = 64,
        device: str = "cpu",
        seed: int = 0,
        num_threads: int | None = 1,
        net: str = "cnn",
        output: str = "tanh",
    ):
        nn.Module.__init__(self)
        if net not in REWARD_NETS:
            raise ValueError(f"net={net!r}: use one of {', '.join(REWARD_NETS)}")
        self.num_threads = num_threads
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size={ensemble_size}: need at least one member")
        if image_size < 16:
            raise ValueError(f"image_size={image_size}: use at least 16 pixels")
        self.image_size, self.batch_size, self.lr = int(image_size), int(batch_size), float(lr)
        self.net, self.output = net, output
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.members = nn.ModuleList(REWARD_NETS[net](self.image_size, output=output) for _ in range(ensemble_size))
        self.device = torch.device(device)
        self.to(self.device)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)

    # ---- scoring -------------------------------------------------------------------------------------------
    def forward(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Per-member rewards with gradients: ``uint8 (N, H, W, 3)`` (or preprocessed) -> ``float (K, N)``."""
        x = frames if isinstance(frames, torch.Tensor) else frames_to_tensor(frames, self.image_size, self.device)
        return torch.stack([m(x) for m in self.members])

    def predict(self, batch: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """Ensemble-mean reward of ``uint8 (N, H, W, 3)`` frames, ``float32 (N,)``, in eval mode."""
        batch = np.asarray(batch)
        if len(batch) == 0:
            return np.zeros(0, np.float32)
        was_training = self.training
        self.eval()
        out = []
        with torch.inference_mode(), torch_threads(self.num_threads):
            for i in range(0, len(batch), chunk):
                out.append(self.forward(batch[i : i + chunk]).mean(0).float().cpu().numpy())
        self.train(was_training)
        return np.concatenate(out).astype(np.float32)

    def segment_returns(self, segments: np.ndarray) -> torch.Tensor:
        """Predicted returns ``(K, P)`` of ``uint8 (P, T, H, W, 3)`` segments (sum over the T frames)."""
        p, t = segments.shape[:2]
        rewards = self.forward(segments.reshape(p * t, *segments.shape[2:]))
        return rewards.reshape(len(self.members), p, t).sum(-1)

    def preference_probs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """``float (K, P)``: each member's probability that the second segment is preferred."""
        with torch.inference_mode(), torch_threads(self.num_threads):
            self.eval()
            probs = torch.sigmoid(self.segment_returns(second) - self.segment_returns(first))
            self.train()
        return probs.cpu().numpy()

    # ---- active query selection ----------------------------------------------------------------------------
    def select_queries(
        self, first: np.ndarray, second: np.ndarray, n: int, method: str, rng: np.random.Generator
    ) -> np.ndarray:
        """Indices of the ``n`` candidate pairs to send to the labeler.

        Args:
            first: ``uint8 (M, T, H, W, 3)`` candidate first segments.
            second: ``uint8 (M, T, H, W, 3)`` candidate second segments.
            n: how many to pick (``<= M``).
            method: ``uniform``; ``disagreement`` (largest std of the members' P(second)); ``entropy``
                (largest binary entropy of the ensemble-mean P(second)).
            rng: used for ``uniform`` and tie-breaking order.

        Returns:
            ``int (n,)`` indices into the candidates.
        """
        m = len(first)
        n = min(n, m)
        if method not in QUERY_SELECTIONS:
            raise ValueError(f"unknown query selection {method!r}: use one of {', '.join(QUERY_SELECTIONS)}")
        if method == "uniform":
            return rng.choice(m, size=n, replace=False)
        probs = self.preference_probs(first, second)
        if method == "disagreement":
            score = probs.std(0)
        else:
            p = probs.mean(0).clip(1e-6, 1 - 1e-6)
            score = -(p * np.log(p) + (1 - p) * np.log(1 - p))
        order = rng.permutation(m)  # random tie-breaking
        return order[np.argsort(-score[order], kind="stable")[:n]]

    # ---- persistence ---------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the members' and optimizer's weights to ``path`` (atomic replace; same weights, same bytes)."""
        buf = io.BytesIO()
        torch.save({"model": self.state_dict(), "optimizer": self.optimizer.state_dict()}, buf)
        write_bytes(path, buf.getvalue())

    def load(self, path: str | Path) -> None:
        """Load weights written by :meth:`save`."""
        state = torch.load(Path(path), map_location=self.device, weights_only=True)
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def save_state(self, directory: Path) -> None:
        """Write the weights to ``<directory>/reward_model.pt``."""
        self.save(Path(directory) / STATE_FILE)

    def load_state(self, directory: Path) -> None:
        """Load the weights :meth:`save_state` wrote."""
        self.load(Path(directory) / STATE_FILE)
