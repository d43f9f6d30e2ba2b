"""Zero-shot CLIP reward (VLM-RM, arXiv 2310.12921): goal-baseline projection of image embeddings.

With normalised embeddings ``g`` (goal prompts), ``b`` (baseline prompts) and ``x`` (frame):
``d = g - b``, ``P = alpha * d d^T / ||d||^2 + (1 - alpha) I``, ``r = 1 - 1/2 ||(x - g) P||^2``.
``alpha = 0`` is the plain CLIP cosine similarity up to an affine map (``r = x . g`` for unit vectors).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from vlmrl.rewards.base import RewardModel

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "clip"
# Small architectures that ship as configs (no weights): tests and smoke runs build them at random.
open_clip.add_model_config(ASSETS)


class CLIPWeightsUnavailable(RuntimeError):
    """Raised when the requested CLIP weights are neither cached nor downloadable."""


def goal_baseline_projection(goal: torch.Tensor, baseline: torch.Tensor, alpha: float) -> torch.Tensor:
    """``P = alpha * d d^T / ||d||^2 + (1 - alpha) I`` with ``d = goal - baseline`` (both ``(D,)``)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    d = goal - baseline
    norm2 = torch.dot(d, d)
    eye = torch.eye(goal.shape[0], dtype=goal.dtype, device=goal.device)
    if alpha > 0 and float(norm2) == 0.0:
        raise ValueError("goal and baseline prompts embed to the same vector; the projection is undefined")
    direction = torch.outer(d, d) / norm2 if alpha > 0 else torch.zeros_like(eye)
    return alpha * direction + (1.0 - alpha) * eye


def projected_reward(x: torch.Tensor, goal: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """``r = 1 - 1/2 ||(x - g) P||^2`` for each row of ``x`` (``(N, D)`` normalised image embeddings)."""
    y = (x - goal) @ projection
    return 1.0 - 0.5 * (y * y).sum(dim=-1)


def resolve_pretrained(model: str, pretrained: str | None) -> str:
    """Turn the ``pretrained`` setting into a tag, a checkpoint path or ``"random"``.

    ``None`` picks the model's first published tag, or random weights for architectures without any.
    """
    if pretrained in (None, "", "default"):
        tags = open_clip.list_pretrained_tags_by_model(model)
        return tags[0] if tags else "random"
    return str(pretrained)


def _is_path(spec: str) -> bool:
    return os.sep in spec or spec.startswith(".") or spec.endswith((".pt", ".pth", ".bin", ".safetensors"))


def _cached_file(model: str, tag: str, cache_dir: str | None) -> str | None:
    """Path of already-downloaded weights for (model, tag), or None."""
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(model, tag)
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, fname = os.path.split(hub)  # "org/model/" (default file names) or "org/model/file.bin"
        names = [fname] if fname else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    url = cfg.get("url", "")
    if url:
        local = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(url)
        if local.exists():
            return str(local)
    return None


#: Seconds the download host may take to answer before the weights count as unreachable.
PROBE_TIMEOUT = 1.5


def _download_url(model: str, tag: str) -> str:
    """Where open_clip downloads ``(model, tag)`` from: the hub's endpoint when it has one, else its URL."""
    import huggingface_hub.constants as hf_constants

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if cfg.get("hf_hub"):
        return hf_constants.ENDPOINT
    return str(cfg.get("url", ""))


def reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when ``url``'s server answers a ``HEAD`` request (any status, through the environment's proxy) in time.

    Only no answer at all counts as unreachable: a failed name lookup, a refused or dropped connection, silence
    for ``timeout`` seconds. The probe runs in a daemon thread, so a lookup that hangs cannot hold the caller.
    """
    answered = threading.Event()

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            answered.set()
        except urllib.error.HTTPError:  # a status code is an answer
            answered.set()
        except urllib.error.URLError as err:
            if isinstance(err.reason, ssl.SSLError):  # the server answered; certificates are the hub client's job
                answered.set()
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=probe, name="clip-weights-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return answered.is_set()


def _offline() -> bool:
    """HF_HUB_OFFLINE, read now (the hub library reads it once, at import)."""
    import huggingface_hub.constants as hf_constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")
    return bool(hf_constants.HF_HUB_OFFLINE) or env


def load_open_clip(model: str, pretrained: str | None, device: str = "cpu", cache_dir: str | None = None):
    """Build an open_clip model with its tokenizer and preprocessing config.

    ``pretrained`` is an open_clip tag (``"openai"``, ``"laion2b_s39b_b160k"``), a local checkpoint path,
    ``"random"`` (random initialisation, for tests), or ``None`` (the model's default tag).
    """
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}; e.g. ViT-B-32, ViT-L-14, ViT-bigG-14, vlmrl-tiny")
    spec = resolve_pretrained(model, pretrained)
    kwargs = dict(device=device)
    if spec == "random":
        log.warning("CLIP %s has random weights: rewards are meaningless (use for tests and smoke runs)", model)
        clip, _, _ = open_clip.create_model_and_transforms(model, pretrained=None, **kwargs)
    elif _is_path(spec):
        if not Path(spec).expanduser().is_file():
            raise FileNotFoundError(f"CLIP checkpoint {spec} does not exist (labelers.pretrained=...)")
        clip, _, _ = open_clip.create_model_and_transforms(model, pretrained=str(Path(spec).expanduser()), **kwargs)
    else:
        tags = open_clip.list_pretrained_tags_by_model(model)
        if spec not in tags:
            raise ValueError(f"{model} has no pretrained tag {spec!r}; tags: {tags or 'none'}, or pass a path")
        fix = (
            f"no CLIP weights for {model}/{spec} in the cache and no network: pass "
            f"labelers.pretrained=/path/to/checkpoint (or run once with network to fill the cache)"
        )
        import huggingface_hub.constants as hf_constants

        cached = _cached_file(model, spec, cache_dir)
        # Offline or unreachable: say so now, not after the hub client's minute of retries.
        if cached is None and (_offline() or not reachable(_download_url(model, spec))):
            raise CLIPWeightsUnavailable(fix)
        saved = hf_constants.HF_HUB_OFFLINE
        try:
            hf_constants.HF_HUB_OFFLINE = saved or cached is not None  # cached: never touch the network
            clip, _, _ = open_clip.create_model_and_transforms(model, pretrained=spec, cache_dir=cache_dir, **kwargs)
        except (RuntimeError, OSError, FileNotFoundError) as err:
            raise CLIPWeightsUnavailable(f"{fix} ({type(err).__name__}: {str(err)[:200]})") from err
        finally:
            hf_constants.HF_HUB_OFFLINE = saved
    clip.eval()
    tokenizer = open_clip.get_tokenizer(model)
    return clip, tokenizer


class CLIPReward(RewardModel):
    """VLM-RM's zero-shot reward from an open_clip model.

    Args:
        model: open_clip architecture name (``ViT-bigG-14`` in the paper; ``vlmrl-tiny`` for tests).
        pretrained: tag, checkpoint path, ``"random"``, or None for the model's default tag.
        goal_prompts: descriptions of the goal state; embeddings averaged and normalised into ``g``.
        baseline_prompts: descriptions of the neutral state; averaged into ``b``.
        alpha: projection strength in [0, 1]; 0 is plain cosine similarity.
        batch_size: frames per forward pass.
        device: torch device.
        precision: ``fp32`` or ``fp16`` (autocast on CUDA only).
        cache_dir: where open_clip looks for downloaded weights.
    """

    input_key = "frame"

    def __init__(
        self,
        model: str = "ViT-bigG-14",
        pretrained: str | None = None,
        goal_prompts: Sequence[str] = ("a humanoid robot kneeling",),
        baseline_prompts: Sequence[str] = ("a humanoid robot",),
        alpha: float = 0.5,
        batch_size: int = 64,
        device: str = "cpu",
        precision: str = "fp32",
        cache_dir: str | None = None,
        **runtime,
    ):
        if isinstance(goal_prompts, str) or isinstance(baseline_prompts, str):
            raise TypeError("goal_prompts and baseline_prompts are lists of strings")
        if not goal_prompts or not baseline_prompts:
            raise ValueError("goal_prompts and baseline_prompts must each hold at least one prompt")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
        self.model_name, self.alpha, self.batch_size = model, float(alpha), int(batch_size)
        self.device = torch.device(device)
        self.precision = precision
        self.clip, self.tokenizer = load_open_clip(model, pretrained, device=str(self.device), cache_dir=cache_dir)
        pp = self.clip.visual.preprocess_cfg
        size = pp.get("size", self.clip.visual.image_size)
        self.image_size = tuple(size) if isinstance(size, list | tuple) else (int(size), int(size))
        self._mean = torch.tensor(pp["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(pp["std"], device=self.device).view(1, 3, 1, 1)
        self.goal = self.embed_prompts(goal_prompts)
        self.baseline = self.embed_prompts(baseline_prompts)
        self.projection = goal_baseline_projection(self.goal, self.baseline, self.alpha)

    @torch.inference_mode()
    def embed_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Mean of the L2-normalised text embeddings, normalised again: ``(D,)``."""
        tokens = self.tokenizer(list(prompts)).to(self.device)
        emb = F.normalize(self.clip.encode_text(tokens).float(), dim=-1)
        return F.normalize(emb.mean(dim=0), dim=-1)

    def _preprocess(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False, antialias=True)
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def embed_images(self, frames: np.ndarray) -> torch.Tensor:
        """L2-normalised image embeddings ``(N, D)`` of ``uint8 (N, H, W, 3)`` frames."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
        out = []
        use_amp = self.precision == "fp16" and self.device.type == "cuda"
        for i in range(0, len(frames), self.batch_size):
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=use_amp):
                emb = self.clip.encode_image(self._preprocess(frames[i : i + self.batch_size]))
            out.append(F.normalize(emb.float(), dim=-1))
        return torch.cat(out) if out else torch.empty(0, self.goal.shape[0], device=self.device)

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Rewards ``float32 (N,)`` for ``uint8 (N, H, W, 3)`` frames."""
        x = self.embed_images(batch)
        return projected_reward(x, self.goal, self.projection).cpu().numpy().astype(np.float32)
