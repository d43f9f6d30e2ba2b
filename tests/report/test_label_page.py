"""The label-audit page: overrides win in the cache, filters and paging, bad input, the token, the human labeler,
and the whole loop in headless Chromium (VLM labels from a real relabel, override, next relabel)."""

import io
import json
import re
import sqlite3
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vlmrl.annotation.store import AnnotationStore
from vlmrl.labelers.cache import CachedLabeler, LabelCache
from vlmrl.labelers.human import HumanLabeler
from vlmrl.labelers.teacher import SimulatedTeacher
from vlmrl.report import browser
from vlmrl.report.label_page import LabelFileError, LabelPage, find_label_file
from vlmrl.testing.stub_vlm import render_toy_cloth
from vlmrl.types import Fragment, FragmentPair, Label, Spend

HTML = {"accept": "text/html"}


def cloth_pairs(n, rng, noise=0.0, size=32):
    """Pairs of toy-cloth frames whose fold is the ground truth (plus ``noise``, so some labels disagree)."""
    pairs = []
    for _ in range(n):
        f1, f2 = rng.uniform(0, 1, 2)
        a = Fragment(frames=render_toy_cloth(f1, size, rng)[None], env_rewards=np.array([f1 + rng.normal(0, noise)]))
        b = Fragment(frames=render_toy_cloth(f2, size, rng)[None], env_rewards=np.array([f2]))
        pairs.append(FragmentPair(a, b))
    return pairs


def teacher_labels(path, n=30, eps=0.3, seed=0):
    """A label file with ``n`` teacher labels, a share ``eps`` of them flipped (they disagree with the truth)."""
    pairs = cloth_pairs(n, np.random.default_rng(seed))
    labeler = CachedLabeler(SimulatedTeacher(eps=eps, rng=np.random.default_rng(seed + 1)), path)
    labels = labeler(pairs)
    labeler.close()
    return pairs, labels


def rows_on(html):
    """``(key, value, truth)`` of every label row of a page (truth "" when unknown or not a pair)."""
    out = []
    for tag in re.findall(r"<tr data-key=[^>]*>", html):
        attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', tag))
        out.append((attrs["key"], attrs["value"], attrs.get("truth", "")))
    return out


def count(html, name):
    return int(re.search(rf'data-count="{name}">(\d+)<', html)[1])


def snapshot(path):
    """What a write would change: the file's bytes with its WAL folded in, and every table's row count."""
    db = sqlite3.connect(path)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    rows = {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    db.close()
    return rows


# ---- the cache: overrides win, undo, frames kept -------------------------------------------------------------
def test_a_human_override_wins_is_logged_and_undone_step_by_step(tmp_path):
    cache = LabelCache(tmp_path / "labels.sqlite")
    cache.put("k", Label(0, source="vlm:gpt-4o", raw='{"answer": "0"}'))
    assert cache.override("k", 1, by="ana").value == 1
    got = cache.get("k")
    assert (got.value, got.source, got.cached) == (1, "human", True)
    assert json.loads(got.raw)["machine_value"] == 0 and json.loads(got.raw)["override_by"] == "ana"
    cache.override("k", 0.5, by="bo")  # equally good
    assert cache.get("k").value == 0.5
    assert cache.undo_override("k", by="bo").value == 1  # the earlier override applies again
    assert cache.undo_override("k", by="ana") == Label(0, source="vlm:gpt-4o", cached=True, raw='{"answer": "0"}')
    with pytest.raises(KeyError):
        cache.undo_override("k", by="ana")
    history = cache.override_history("k")
    assert [(h["value"], h["previous"], h["by"], h["undone_by"]) for h in history] == [
        (1, None, "ana", "ana"),
        (0.5, 1, "bo", "bo"),
    ]
    assert all(h["at"] and h["undone_at"] for h in history)
    with pytest.raises(KeyError):
        cache.override("no-such-key", 1, by="ana")
    with pytest.raises(ValueError, match="override value"):
        cache.override("k", 2, by="ana")
    with pytest.raises(ValueError, match="who"):
        cache.override("k", 1, by=" ")
    assert len(cache.override_history("k")) == 2  # the refused ones wrote nothing
    cache.close()
    again = CachedLabeler(SimulatedTeacher(), LabelCache(tmp_path / "labels.sqlite"))
    assert again.cache.get("k").source == "vlm:gpt-4o"


def test_the_cache_layer_keeps_both_frames_and_the_ground_truth_of_each_pair(tmp_path):
    pairs, labels = teacher_labels(tmp_path / "labels.sqlite", n=5, eps=0.0)
    db = sqlite3.connect(tmp_path / "labels.sqlite")
    rows = db.execute("SELECT first, second, gt_first, gt_second, truth FROM label_pairs").fetchall()
    assert len(rows) == 5
    for first, second, gt1, gt2, truth in rows:
        assert truth == int(gt2 > gt1)
        for digest in (first, second):
            (png,) = db.execute("SELECT png FROM label_frames WHERE hash = ?", (digest,)).fetchone()
            assert np.asarray(Image.open(io.BytesIO(png))).shape == (32, 32, 3)
    assert [lab.value for lab in labels] == [int(p.second.env_rewards[0] > p.first.env_rewards[0]) for p in pairs]


def test_oni_overrides_reach_the_annotation_store(tmp_path):
    path = tmp_path / "oni.sqlite"
    store = AnnotationStore(path, "oni-judge:logprob", "smollm2", "template")
    store.put([("You find a gold piece.", Label(0, "llm", raw="margin=0.0100 threshold=0.2000"))])
    store.close()
    page = LabelPage(path)
    client = TestClient(page.app)
    html = client.get("/", headers=HTML).text
    assert "You find a gold piece." in html and "0.010 (threshold 0.200)" in html and 'data-kind="message"' in html
    assert count(html, "low") == 1  # 0.19 from the threshold
    ((key, value, _),) = rows_on(html)
    assert value == "0"
    assert client.post(f"/labels/{key}/override", data={"value": "1"}, follow_redirects=False).status_code == 303
    page.close()
    reopened = AnnotationStore(path, "oni-judge:logprob", "smollm2", "template")
    assert reopened.lookup(["You find a gold piece."]) == {"You find a gold piece.": 1}
    reopened.close()


# ---- the page ------------------------------------------------------------------------------------------------
def test_filters_counts_and_paging(tmp_path):
    pairs, labels = teacher_labels(tmp_path / "labels.sqlite", n=30, eps=0.3)
    truth = [int(p.second.env_rewards[0] > p.first.env_rewards[0]) for p in pairs]
    wrong = sum(lab.value != t for lab, t in zip(labels, truth, strict=True))
    assert 0 < wrong < 30
    page = LabelPage(tmp_path / "labels.sqlite", per_page=12)
    client = TestClient(page.app)
    first = client.get("/", headers=HTML).text
    assert (count(first, "all"), count(first, "disagree"), count(first, "overridden")) == (30, wrong, 0)
    assert 'data-pages="3"' in first and len(rows_on(first)) == 12
    seen = {k for p in (1, 2, 3) for k, _, _ in rows_on(client.get(f"/?page={p}").text)}
    assert len(seen) == 30  # three pages, every label once
    assert len(rows_on(client.get("/?page=99").text)) == 6  # past the end: the last page
    disagree = rows_on(client.get("/?filter=disagree").text)
    assert len(disagree) == min(wrong, 12) and all(v != t for _, v, t in disagree)
    key, value, t = disagree[0]
    assert client.post(f"/labels/{key}/override", data={"value": t, "back": "/?filter=disagree"}).status_code == 200
    after = client.get("/?filter=overridden").text
    assert count(after, "disagree") == wrong - 1 and count(after, "overridden") == 1
    assert [k for k, _, _ in rows_on(after)] == [key] and "human:" in after
    detail = client.get(f"/labels/{key}", headers=HTML).text
    assert "Overrides" in detail and "ground truth" in detail
    assert "prompt_tokens" not in first  # no spend recorded: no spend columns
    page.close()


def test_spend_columns_show_when_the_labels_carry_usage(tmp_path):
    pairs = cloth_pairs(3, np.random.default_rng(0))

    class PaidTeacher(SimulatedTeacher):
        budget_key = "paid-teacher"

        def __call__(self, queries):
            spend = Spend(queries=1, prompt_tokens=120, completion_tokens=7, cost_usd=0.0015)
            return [Label(lab.value, lab.source, spend=spend) for lab in super().__call__(queries)]

    CachedLabeler(PaidTeacher(), tmp_path / "labels.sqlite")(pairs)
    html = TestClient(LabelPage(tmp_path / "labels.sqlite").app).get("/").text
    assert "<th>prompt_tokens</th>" in html and "<th>cost_usd</th>" in html and html.count("<td>120</td>") == 3
    assert "<td>paid-teacher</td><td>3</td><td>360</td><td>21</td><td>0.0045</td>" in html  # the recorded totals


def test_a_run_folder_is_resolved_to_its_label_file(tmp_path):
    run = tmp_path / "run"
    (run / "labels").mkdir(parents=True)
    teacher_labels(run / "labels" / "labels.sqlite", n=2)
    path, folder = find_label_file(run)
    assert path == run / "labels" / "labels.sqlite" and folder.path == run
    shared = tmp_path / "shared.sqlite"
    teacher_labels(shared, n=2)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text(f"labelers:\n  label_cache: {shared}\n")
    assert find_label_file(other)[0] == shared
    relabel_out = tmp_path / "data"
    teacher_labels(relabel_out / "relabeled.h5.work" / "labels.sqlite", n=2)
    assert find_label_file(relabel_out)[0] == relabel_out / "relabeled.h5.work" / "labels.sqlite"


# ---- bad input: one clear error each, nothing written --------------------------------------------------------
def test_a_missing_label_file_is_named_and_not_created(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LabelPage(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()


def test_a_corrupt_label_file_is_refused_untouched(tmp_path):
    bad = tmp_path / "labels.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LabelFileError, match="not a readable label file"):
        LabelPage(bad)
    assert bad.read_bytes() == b"this is not a database" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.sqlite"]
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.close()
    before = other.read_bytes()
    with pytest.raises(LabelFileError, match="no labels table: it is not a vlmrl label file"):
        LabelPage(other)
    assert other.read_bytes() == before


def test_a_run_folder_without_labels_says_how_to_get_some(tmp_path, run_dir):
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    with pytest.raises(LabelFileError, match="has no labels .* run it with a labeler"):
        LabelPage(run_dir)
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


def test_unknown_ids_bad_values_and_oversized_bodies_write_nothing(tmp_path):
    path = tmp_path / "oni.sqlite"  # a file without the override tables: a stray write would create them
    store = AnnotationStore(path, "judge", "m", "t")
    store.put([("hello", Label(1, "llm", raw="margin=1.0000 threshold=0.0000"))])
    store.close()
    before = snapshot(path)
    page = LabelPage(path, max_body=1024)
    client = TestClient(page.app)
    ((key, _, _),) = rows_on(client.get("/").text)
    unknown = client.post(f"/labels/{'0' * 64}/override", data={"value": "1"})
    assert unknown.status_code == 404 and "no label" in unknown.json()["detail"]
    assert client.post(f"/labels/{key}/undo", data={}).status_code == 404  # nothing to undo
    assert client.post(f"/labels/{key}/override", data={"value": "7"}).status_code == 400
    assert (
        client.post(f"/labels/{key}/override", content=b"{}", headers={"content-type": "text/csv"}).status_code == 415
    )
    huge = client.post(f"/labels/{key}/override", data={"value": "0", "pad": "x" * 5000})
    assert huge.status_code == 413 and "over 1024 bytes" in huge.json()["detail"]
    assert client.post("/queries/5/answer", data={"value": "1"}).status_code == 404
    assert client.get("/?filter=bogus").status_code == 400 and client.get("/?page=x").status_code == 400
    page.close()
    assert snapshot(path) == before


def test_ids_are_database_keys_never_paths(tmp_path):
    teacher_labels(tmp_path / "labels.sqlite", n=2)
    (tmp_path / "secret.png").write_bytes(b"secret")
    client = TestClient(LabelPage(tmp_path / "labels.sqlite").app)
    for url in ("/frames/..%2Fsecret.png", "/frames/../secret.png", f"/frames/{'a' * 64}.png", "/labels/..%2F..%2Fetc"):
        answer = client.get(url)
        assert answer.status_code == 404 and b"secret" not in answer.content
    key = rows_on(client.get("/").text)[0][0]
    away = client.post(
        f"/labels/{key}/override", data={"value": "1", "back": "//evil.example/"}, follow_redirects=False
    )
    assert away.headers["location"] == f"/labels/{key}"  # never another site


def test_the_token_is_required_and_a_browser_gives_it_once(tmp_path, monkeypatch):
    teacher_labels(tmp_path / "labels.sqlite", n=2)
    monkeypatch.setenv("VLMRL_LABELS_TOKEN", "s3cret")
    client = TestClient(LabelPage(tmp_path / "labels.sqlite").app)
    assert client.get("/").status_code == 401
    assert client.get("/?token=wrong").status_code == 401
    assert client.get("/", headers={"authorization": "Bearer s3cret"}).status_code == 200
    key = LabelCache(tmp_path / "labels.sqlite")._db.execute("SELECT key FROM labels").fetchone()[0]
    assert client.post(f"/labels/{key}/override", data={"value": "1"}).status_code == 401
    assert LabelCache(tmp_path / "labels.sqlite").override_history(key) == []
    login = client.get("/?token=s3cret&filter=disagree", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/?filter=disagree"
    assert (
        "httponly" in login.headers["set-cookie"].lower() and "samesite=strict" in login.headers["set-cookie"].lower()
    )
    assert client.get("/").status_code == 200  # the cookie carries it now
    assert client.post(f"/labels/{key}/override", data={"value": "1"}).status_code == 200


# ---- a human as a labeler ------------------------------------------------------------------------------------
def test_a_human_answers_on_the_page_and_training_goes_on_without_the_rest(tmp_path):
    import httpx

    db = tmp_path / "labels.sqlite"
    pairs = cloth_pairs(3, np.random.default_rng(0))
    human = HumanLabeler(db, goal="fold the cloth", timeout=3.0, max_queries=4, poll_interval=0.05, port=0)
    labeler = CachedLabeler(human, db)
    result = {}
    worker = threading.Thread(target=lambda: result.update(labels=labeler(pairs)))
    worker.start()
    with httpx.Client(base_url=human.url, follow_redirects=True) as client:
        deadline = time.monotonic() + 10
        while 'data-query="' not in (page := client.get("/queries").text) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 'data-waiting="3"' in page and "fold the cloth" in page and page.count("/frames/") == 6
        assert "3 pairs wait for a human answer" in client.get("/").text
        first, second, _ = re.findall(r'data-query="(\d+)"', page)
        assert client.post(f"/queries/{first}/answer", data={"value": "1", "by": "ana"}).status_code == 200
        assert client.post(f"/queries/{second}/answer", data={"value": "0"}).status_code == 200
        assert client.post(f"/queries/{second}/answer", data={"value": "1"}).status_code == 404  # answered already
    worker.join(timeout=10)
    labels = result["labels"]
    assert [(lab.value, lab.failed) for lab in labels] == [(1, False), (0, False), (-1, True)]
    assert json.loads(labels[0].raw)["by"] == "ana" and labels[0].source == "human"
    assert human.endpoint_stats() == {"asked": 3, "answered": 2, "expired": 1}
    # the answers are in the label cache like any other; the unanswered pair is asked again, within the budget
    again = CachedLabeler(HumanLabeler(db, goal="fold the cloth", timeout=0.2, max_queries=0, serve=False), db)
    second_try = again(pairs)
    assert [lab.cached for lab in second_try] == [True, True, False] and second_try[2].failed
    assert again.labeler.exhausted and again.labeler.endpoint_stats() == {"refused": 1}
    assert len(LabelCache(db)) == 2 and LabelCache(db).get(labeler.cache_key(pairs[0])).source == "human"
    labeler.close()
    again.close()


def test_labelers_human_swaps_in_for_the_vlm_of_an_experiment(tmp_path):
    from hydra.utils import instantiate

    from vlmrl.cli import compose

    cache = tmp_path / "labels.sqlite"
    cfg = compose(
        "train",
        [
            "experiments=cloth_fold_rlvlmf",
            "labelers=human",
            f"labelers.label_cache={cache}",
            "labelers.labeler.serve=false",
        ],
    )
    human = instantiate(cfg.labelers.labeler)(rng=np.random.default_rng(0))
    assert human.db == cache and human.goal.startswith("fold the cloth") and human.max_queries == 500
    human.close()


def test_labels_job_serves_the_page_and_refuses_a_missing_choice(tmp_path):
    from vlmrl.cli import compose
    from vlmrl.jobs import labels as labels_job

    teacher_labels(tmp_path / "labels.sqlite", n=4)
    out = labels_job.main(compose("labels", [f"cache={tmp_path / 'labels.sqlite'}", "port=0", "duration_s=0.1"]))
    assert out["labels"] == {"preference": 4, "message": 0} and out["url"].startswith("http://127.0.0.1:")
    with pytest.raises(ValueError, match="which labels"):
        labels_job.main(compose("labels", ["port=0"]))


# ---- the whole loop in a real browser ------------------------------------------------------------------------
@pytest.mark.skipif(browser.find_chromium() is None, reason="chromium not installed")
def test_in_chromium_filter_override_reload_and_the_next_relabel_trains_on_it(tmp_path, monkeypatch):
    """VLM labels from `vlmrl relabel` with the stub VLM; override a disagreement in the browser; relabel again."""
    from vlmrl.cli import compose
    from vlmrl.data import OfflineDataset
    from vlmrl.data.storage import save_dataset
    from vlmrl.jobs import relabel as relabel_job
    from vlmrl.report.devtools import Chromium
    from vlmrl.testing.stub_vlm import StubVLMServer
    from vlmrl.web import WebServer

    rng = np.random.default_rng(0)
    n = 60
    fold = rng.uniform(0, 1, n).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[19::20] = True
    data = OfflineDataset(
        observations=np.zeros((n, 2), np.float32),
        actions=np.zeros((n, 1), np.float32),
        rewards=(fold + rng.normal(0, 0.15, n)).astype(np.float32),  # a noisy ground truth: some labels disagree
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        frames=np.stack([render_toy_cloth(float(f), 32, rng) for f in fold]),
        metadata={"task": "fold the cloth"},
    )
    save_dataset(data, tmp_path / "raw.h5")
    monkeypatch.setenv("VLMRL_LABELS_TOKEN", "t0ken")
    with StubVLMServer() as vlm:
        overrides = [
            "labelers=rlvlmf",
            "labelers.labeler.model=stub",
            f"labelers.labeler.base_url={vlm.base_url}",
            "labelers.labeler.requests_per_second=null",
            "labelers.label_cache=null",  # the relabeling's own labels.sqlite
            f"relabel.dataset={tmp_path / 'raw.h5'}",
            f"relabel.out={tmp_path / 'relabeled.h5'}",
            "relabel.pairs=30",
            "labelers.max_epochs=2",
            "labelers.image_size=16",
            "labelers.ensemble_size=1",
        ]
        first = relabel_job.main(compose("relabel", overrides))
        assert first["labels"]["paid"] > 0
        fit_file = tmp_path / "relabeled.h5.work" / "fit.json"
        first_fit = json.loads(fit_file.read_text())
        label_file = tmp_path / "relabeled.h5.work" / "labels.sqlite"
        page = LabelPage(tmp_path, who="tester")  # the relabel output folder: its *.work/labels.sqlite
        assert page.labels.path == label_file
        with WebServer(page.app) as server, Chromium(width=1400, height=1000) as chromium:
            tab = chromium.new_page()
            tab.navigate(f"{server.url}/?token=t0ken")  # sets the cookie, drops the token from the address
            assert tab.url() == f"{server.url}/"
            total = int(tab.evaluate("document.querySelector('[data-count=all]').textContent"))
            disagree = int(tab.evaluate("document.querySelector('[data-count=disagree]').textContent"))
            assert total > 0 and 0 < disagree < total
            tab.click("a[data-filter=disagree]")
            assert "filter=disagree" in tab.url()
            rows = tab.evaluate(
                "[...document.querySelectorAll('tr[data-key]')].map(r => [r.dataset.key, r.dataset.value,"
                " r.dataset.truth])"
            )
            assert len(rows) == disagree and all(v != t for _, v, t in rows)
            key, machine, truth = rows[0]
            tab.click(f"tr[data-key='{key}'] button[data-value='{truth}']")  # the ground truth's side
            tab.reload()
            assert tab.evaluate("document.querySelector('[data-count=disagree]').textContent") == str(disagree - 1)
            assert tab.evaluate("document.querySelector('[data-count=overridden]').textContent") == "1"
            tab.click("a[data-filter=overridden]")
            assert tab.evaluate(f"document.querySelector(\"tr[data-key='{key}']\").dataset.overridden") == "1"
            assert tab.images_loaded() == 2  # both frames of the pair, from the label file
            shot = tab.screenshot(tmp_path / "labels.png")
        page.close()
        img = np.asarray(Image.open(shot).convert("RGB"))
        assert img.shape[0] > 300 and img.shape[1] >= 1000 and img.std() > 20  # not blank
        header = img[:20, :, :].reshape(-1, 3).mean(0)
        assert header[2] < 80  # the dark header bar was painted
        cloth = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)  # the red cloth of both frames
        assert cloth.sum() > 500

        stored = LabelCache(label_file)
        label = stored.get(key)
        assert (label.value, label.source) == (int(truth), "human")
        assert [(h["value"], h["by"]) for h in stored.override_history(key)] == [(int(truth), "tester")]
        stored.close()

        second = relabel_job.main(
            compose("relabel", overrides)
        )  # the next relabel: the override is in its training set
    assert second["labels"]["paid"] == 0
    with np.load(tmp_path / "relabeled.labels.npz") as used:
        humans = [i for i, raw in enumerate(used["raw"]) if '"override_by": "tester"' in str(raw)]
        assert humans and all(used["labels"][i] == int(truth) for i in humans)
    assert json.loads(fit_file.read_text())["labels_sha"] != first_fit["labels_sha"]  # refit on the new labels
