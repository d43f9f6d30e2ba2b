import logging
import socket
import time

import numpy as np
import pytest
import torch

from vlmrl.rewards.clip import (
    CLIPReward,
    CLIPWeightsUnavailable,
    goal_baseline_projection,
    projected_reward,
    resolve_pretrained,
)


def test_projection_and_reward_match_hand_computation():
    g = torch.tensor([1.0, 0.0, 0.0])
    b = torch.tensor([0.0, 1.0, 0.0])
    P = goal_baseline_projection(g, b, alpha=0.5)
    # d = (1,-1,0), d d^T / |d|^2 = [[.5,-.5,0],[-.5,.5,0],[0,0,0]]; P = .5 * that + .5 * I
    expected = torch.tensor([[0.75, -0.25, 0.0], [-0.25, 0.75, 0.0], [0.0, 0.0, 0.5]])
    assert torch.allclose(P, expected)
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    # x=g -> 1; x=e3: (x-g)P = (-.75,.25,.5), |.|^2=.875 -> .5625; x=b: (x-g)P = (-1,1,0) -> 0
    r = projected_reward(x, g, P)
    assert torch.allclose(r, torch.tensor([1.0, 0.5625, 0.0]))


def test_alpha_zero_is_cosine_similarity():
    rng = np.random.default_rng(0)
    g = torch.nn.functional.normalize(torch.tensor(rng.normal(size=16), dtype=torch.float32), dim=0)
    b = torch.nn.functional.normalize(torch.tensor(rng.normal(size=16), dtype=torch.float32), dim=0)
    x = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(5, 16)), dtype=torch.float32), dim=1)
    r = projected_reward(x, g, goal_baseline_projection(g, b, 0.0))
    assert torch.allclose(r, x @ g, atol=1e-6)


def test_alpha_one_ignores_directions_orthogonal_to_goal_minus_baseline():
    g, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    P = goal_baseline_projection(g, b, 1.0)
    x1 = torch.tensor([[0.6, 0.0, 0.8]])
    x2 = torch.tensor([[0.6, 0.0, -0.8]])  # differs only along e3, orthogonal to d
    assert torch.allclose(projected_reward(x1, g, P), projected_reward(x2, g, P))


def test_projection_rejects_bad_alpha_and_identical_prompts():
    g = torch.tensor([1.0, 0.0])
    with pytest.raises(ValueError, match="alpha"):
        goal_baseline_projection(g, g, 1.5)
    with pytest.raises(ValueError, match="same vector"):
        goal_baseline_projection(g, g, 0.5)


@pytest.fixture(scope="module")
def tiny(tiny_clip_checkpoint):
    return CLIPReward(
        model="vlmrl-tiny",
        pretrained=str(tiny_clip_checkpoint),
        goal_prompts=["a kneeling robot"],
        baseline_prompts=["a robot"],
        alpha=0.5,
        batch_size=4,
    )


def frames(n, seed=0, size=48):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_predict_is_the_projection_of_normalised_image_embeddings(tiny):
    f = frames(7)
    r = tiny.predict(f)
    assert r.dtype == np.float32 and r.shape == (7,)
    x = tiny.embed_images(f)
    assert torch.allclose(x.norm(dim=1), torch.ones(7), atol=1e-5)
    manual = 1 - 0.5 * (((x - tiny.goal) @ tiny.projection) ** 2).sum(1)
    np.testing.assert_allclose(r, manual.numpy(), rtol=1e-5)
    assert np.ptp(r) > 0  # different frames get different rewards


def test_batch_size_does_not_change_rewards(tiny, tiny_clip_checkpoint):
    big = CLIPReward(
        model="vlmrl-tiny",
        pretrained=str(tiny_clip_checkpoint),
        goal_prompts=["a kneeling robot"],
        baseline_prompts=["a robot"],
        alpha=0.5,
        batch_size=64,
    )
    f = frames(9, seed=3)
    np.testing.assert_allclose(tiny.predict(f), big.predict(f), rtol=1e-5, atol=1e-6)


def test_checkpoint_file_loads_the_saved_weights(tiny_clip_checkpoint):
    saved = torch.load(tiny_clip_checkpoint)
    loaded = CLIPReward(model="vlmrl-tiny", pretrained=str(tiny_clip_checkpoint))
    state = loaded.clip.state_dict()
    for k in ("visual.conv1.weight", "text_projection", "token_embedding.weight"):
        assert torch.equal(state[k], saved[k])
    random_init = CLIPReward(model="vlmrl-tiny", pretrained="random")
    assert not torch.equal(random_init.clip.state_dict()["visual.conv1.weight"], saved["visual.conv1.weight"])


def test_prompt_embeddings_are_averaged_then_normalised(tiny):
    single = [tiny.embed_prompts([p]) for p in ("a kneeling robot", "a crouching robot")]
    both = tiny.embed_prompts(["a kneeling robot", "a crouching robot"])
    mean = (single[0] + single[1]) / 2
    assert torch.allclose(both, mean / mean.norm(), atol=1e-5)


def test_bad_inputs_fail_fast(tiny, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        tiny.predict(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CLIPReward(model="vlmrl-tiny", pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="no pretrained tag"):
        CLIPReward(model="ViT-B-32", pretrained="not-a-tag")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        CLIPReward(model="ViT-Nope")
    with pytest.raises(TypeError, match="lists"):
        CLIPReward(model="vlmrl-tiny", pretrained="random", goal_prompts="a robot")


def test_missing_weights_offline_name_the_fix(caplog):
    # HF_HUB_OFFLINE=1 is set for every test (conftest): nothing is cached.
    t0 = time.perf_counter()
    with pytest.raises(CLIPWeightsUnavailable, match=r"no network: pass labelers.pretrained=/path/to/checkpoint"):
        CLIPReward(model="ViT-B-32", pretrained="openai")
    assert time.perf_counter() - t0 < 2.0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture
def silent_server():
    """A local server that accepts connections and never answers (a network that drops what it gets)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("endpoint", ["silent", "refused", "http://no-such-host.invalid"])
def test_unreachable_hub_fails_fast_without_retries(monkeypatch, caplog, tmp_path, silent_server, endpoint):
    """HF_HUB_OFFLINE unset and no way to the hub (a host that never answers, refuses, or does not resolve)."""
    import huggingface_hub.constants as hf_constants

    endpoint = {"silent": silent_server, "refused": closed_port()}.get(endpoint, endpoint)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    t0 = time.perf_counter()
    with pytest.raises(CLIPWeightsUnavailable, match=r"no network: pass labelers.pretrained=/path/to/checkpoint"):
        CLIPReward(model="ViT-B-32", pretrained="openai", cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 2.0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_default_tag_resolution():
    assert resolve_pretrained("RN50", None) == "openai"
    assert resolve_pretrained("vlmrl-tiny", None) == "random"
    assert resolve_pretrained("ViT-B-32", "/x/y.pt") == "/x/y.pt"


def test_a_server_that_answers_counts_as_reachable():
    """Any HTTP status is an answer: only silence, refusal or a failed lookup make the weights unreachable."""
    import http.server
    import threading

    from vlmrl.rewards.clip import reachable

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # 501 to all
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert reachable(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert not reachable(closed_port())
