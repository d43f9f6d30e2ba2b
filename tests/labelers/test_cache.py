import threading

import numpy as np
import pytest

from vlmrl.labelers.cache import LabelCache, content_hash
from vlmrl.types import Label


def test_labels_survive_reopening_and_count_hits(tmp_path):
    frame = np.zeros((4, 4, 3), np.uint8)
    key = LabelCache.key("vlm", "gpt-4o", "template v1", [frame, frame + 1])
    cache = LabelCache(tmp_path / "labels.sqlite")
    assert cache.get(key) is None
    cache.put(key, Label(1, source="vlm", raw="image 2 is closer"))
    cache.close()
    again = LabelCache(tmp_path / "labels.sqlite")
    got = again.get(key)
    assert got == Label(1, source="vlm", cached=True, raw="image 2 is closer")
    assert (again.hits, again.misses, again.hit_rate) == (1, 0, 1.0) and len(again) == 1 and key in again


def test_key_depends_on_every_part():
    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    base = LabelCache.key("vlm", "m", "t", [a, b])
    assert base == LabelCache.key("vlm", "m", "t", [a.copy(), b.copy()])
    others = [
        LabelCache.key("teacher", "m", "t", [a, b]),
        LabelCache.key("vlm", "m2", "t", [a, b]),
        LabelCache.key("vlm", "m", "t2", [a, b]),
        LabelCache.key("vlm", "m", "t", [b, a]),
    ]
    assert base not in others and len(set(others)) == 4
    assert content_hash(a) != content_hash(a.astype(np.float32))  # dtype is part of the content
    with pytest.raises(TypeError, match="cannot hash"):
        content_hash(3.0)


def test_concurrent_writers_lose_nothing(tmp_path):
    cache = LabelCache(tmp_path / "c.sqlite")

    def write(i):
        for j in range(50):
            cache.put(f"{i}-{j}", Label(j % 2))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 200 and cache.get("3-49").value == 1
