"""The search service: the same hits as `anchorprune index search`, hot swap mid-request, bad input, both backends."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from anchorprune.config import load_settings
from anchorprune.promotion.registry import ChampionSpec
from anchorprune.stages.index import open_serving_index, stage_index
from anchorprune.stages.search import stage_search_report
from anchorprune.stages.workspace import Workspace
from synth import build_synth, sap_champion

sys.path.insert(0, str(Path(__file__).parents[1] / "index"))     # the Elasticsearch double

N = 10
SPEC_BACKBONE = {"name": "mock", "kind": "mock", "model_id": "anchorprune/mock-planted", "batch_size": 3}
QUERY = "which page is about topic:t3?"


@pytest.fixture(params=["local", "es-fake"])
def project(request, tmp_path, tracking_config, monkeypatch):
    """A workspace with a dataset of N pages (images too) and one serving index version built from a mock champion."""
    from PIL import Image

    import anchorprune.promotion.registry as registry

    root = tmp_path / "proj"
    root.mkdir()
    build_synth(root, N, source_doc="synthetic.pdf",
                image=lambda i: Image.new("RGB", (40, 52), (255, 255 - 20 * i, 255)))
    index = {"backend": "local", "name": "t", "dtype": "float32"}
    if request.param == "es-fake":
        from fake_es import FakeES, install

        install(monkeypatch, FakeES(version="8.18.0"))
        monkeypatch.setenv("ELASTICSEARCH_URL", "http://localhost:9200")
        index = {"backend": "elasticsearch", "name": "svc-t", "dtype": "float16"}
    params = {"data": {"dataset": "synth"}, "backbones": [SPEC_BACKBONE],
              "evaluate": {"methods": ["sap", "random", "cluster_merge"], "gammas": [0.5, 0.25]},
              "index": index,
              "tracking": {"uri": tracking_config.uri, "artifact_root": str(tracking_config.artifact_root)}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    cand, spec = sap_champion(SPEC_BACKBONE)
    monkeypatch.setattr(registry, "current_champion", lambda tracker, backbone, identity=None: (cand, spec))
    monkeypatch.setattr(registry, "stale_reason", lambda tracker, backbone, identity=None: None)
    ws = Workspace(load_settings(root / "params.yaml"), root)
    stage_index(ws)
    return root


def _ws(root: Path) -> Workspace:
    return Workspace(load_settings(root / "params.yaml"), root)


@pytest.fixture
def service(project):
    from anchorprune.serving.app import create_app
    from anchorprune.serving.state import SearchState

    state = SearchState(_ws(project), check_interval=0.0)
    with TestClient(create_app(state)) as client:
        yield client, state


def _rebuild_without(ws: Workspace, drop: set[str]) -> int:
    """A new version with the serving one's pages minus ``drop`` (reused, same spec), swapped in."""
    idx = open_serving_index(ws)
    with idx.rebuild() as started:
        cur = idx.current()
        keep = [p for p in idx.existing_hashes() if p not in drop]
        v = idx.build([], dict(cur.manifest.get("meta") or {}), reuse=keep)
        idx.swap(v, expected=started)
    return v.number


def test_get_search_returns_the_hits_of_index_search(service, project):
    client, _ = service
    r = client.get("/search", params={"q": QUERY, "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 1 and body["model"]["version"] == "1" and body["index"] in ("t", "svc-t")
    assert body["first_stage"]["stage"] == "none"
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3]
    assert set(body["hits"][0]) >= {"rank", "page_id", "score", "document", "page_number", "snippet"}
    assert body["hits"][0]["document"] == "synthetic.pdf" and "topic" in body["hits"][0]["snippet"]

    ws = _ws(project)
    hits, report = stage_search_report(ws, QUERY, k=3)             # what `index search` prints
    assert [h["page_id"] for h in body["hits"]] == [h.page_id for h in hits]
    assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in hits], abs=1e-6)

    from anchorprune.cli import app
    out = CliRunner().invoke(app, ["index", "search", QUERY, "-k", "3", "--params", str(project / "params.yaml")])
    assert out.exit_code == 0, out.output
    printed = re.findall(r"^\s+\d+\.\s+(-?[\d.]+)\s+(\S+)", out.output, re.M)
    assert [p for _, p in printed] == [h["page_id"] for h in body["hits"]]
    assert [float(s) for s, _ in printed] == pytest.approx([h["score"] for h in body["hits"]], abs=1e-3)


def test_post_search_batch_health_and_pages(service):
    client, _ = service
    r = client.post("/search", json={"queries": [QUERY, "which page is about topic:t5?"], "k": 2})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["query"] for x in res] == [QUERY, "which page is about topic:t5?"]
    single = client.get("/search", params={"q": "which page is about topic:t5?", "k": 2}).json()["hits"]
    assert [h["page_id"] for h in res[1]["hits"]] == [h["page_id"] for h in single]

    h = client.get("/health").json()
    assert h["version"] == 1 and h["model"] == {"name": h["model"]["name"], "version": "1"} and h["uptime_s"] >= 0
    meta = client.get("/pages/p3").json()
    assert meta["document"] == "synthetic.pdf" and meta["page_number"] == 4 and meta["has_image"]
    img = client.get("/pages/p3/image")
    assert img.status_code == 200 and img.headers["content-type"] == "image/png" and img.content[:4] == b"\x89PNG"


@pytest.mark.parametrize(("url", "status", "words"), [
    ("/search?q=", 400, "empty"),
    ("/search?q=%20%20", 400, "empty"),
    ("/search", 400, "empty"),
    ("/search?q=x&k=0", 400, "k must be"),
    ("/search?q=x&k=101", 400, "k must be"),
    ("/search?q=x&k=ten", 400, "k must be"),
    ("/search?q=" + "a" * 1001, 413, "at most 1000"),
    ("/search?q=%ff%fe", 400, "UTF-8"),
    ("/pages/nope", 404, "unknown page"),
    ("/pages/nope/image", 404, "unknown page"),
    ("/pages/..%2F..%2Fetc%2Fpasswd/image", 404, "Not Found"),
    ("/pages/p1/kept?method=nope&gamma=0.5", 400, "method must be"),
    ("/nowhere", 404, "Not Found"),
])
def test_bad_input_is_a_one_line_json_4xx(service, url, status, words):
    client, _ = service
    r = client.get(url)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize(("body", "words"), [
    (b"\xff\xfe{}", "UTF-8"), (b"not json", "not JSON"), (b'{"queries": []}', "empty"),
    (b'{"queries": "x"}', "queries"), (json.dumps({"queries": ["x"] * 65}).encode(), "at most 64"),
    (b'{"queries": ["ok", ""]}', "queries[1] is empty"), (b'{"queries": ["ok"], "k": 1000}', "k must be"),
    (b'{"queries": [7]}', "must be a string"),
])
def test_bad_post_bodies(service, body, words):
    client, _ = service
    r = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and words in r.json()["error"], r.text


def test_a_swap_is_served_without_restart(service, project):
    client, state = service
    before = client.get("/search", params={"q": QUERY, "k": 3}).json()
    assert before["hits"][0]["page_id"] == "p3"
    v = _rebuild_without(_ws(project), {"p3"})
    after = client.get("/search", params={"q": QUERY, "k": 3}).json()
    assert after["version"] == v == 2 and "p3" not in [h["page_id"] for h in after["hits"]]
    assert client.get("/health").json()["version"] == 2
    # each answer is the answer of the version it names: v2's hits are v1's without p3
    assert [h["page_id"] for h in after["hits"]][:2] == [h["page_id"] for h in before["hits"]][1:3]


def test_a_request_started_on_the_old_version_finishes_on_it(service, project):
    client, state = service
    client.get("/health")
    encoder = state.encoder(state.current().spec)
    entered, release = threading.Event(), threading.Event()
    real = encoder.encode_queries

    def slow(texts):
        if texts == ["slow " + QUERY]:
            entered.set()
            assert release.wait(30)
        return real(texts)

    encoder.encode_queries = slow
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", client.get("/search", params={"q": "slow " + QUERY})))
    t.start()
    assert entered.wait(30)
    swapped = threading.Thread(target=lambda: out.setdefault("v", _rebuild_without(_ws(project), {"p3"})))
    swapped.start()
    swapped.join(60)
    assert out["v"] == 2                            # the swap is not held up by the request in flight
    release.set()
    t.join(30)
    r = out["r"].json()
    assert out["r"].status_code == 200 and r["version"] == 1 and r["hits"][0]["page_id"] == "p3"
    nxt = client.get("/search", params={"q": QUERY}).json()
    assert nxt["version"] == 2 and "p3" not in [h["page_id"] for h in nxt["hits"]]


def test_viewer_page_grid_and_kept_overlay(service):
    client, _ = service
    page = client.get("/")
    assert page.status_code == 200 and "<script>" in page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//|import\s""", page.text)      # nothing from elsewhere
    grid = client.get("/viewer/grid").json()
    assert grid["champion"]["method"] == "sap" and grid["methods"][:2] == ["sap", "random"]
    for method in ("sap", "random", "cluster_merge"):
        k = client.get("/pages/p3/kept", params={"method": method, "gamma": 0.5})
        assert k.status_code == 200, k.text
        k = k.json()
        assert k["vectors"] >= 1 and k["boxes"] and k["drawn"] <= k["tokens"]
        assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y, _, _ in k["boxes"])


def test_serve_search_is_a_command():
    from anchorprune.cli import app

    out = CliRunner().invoke(app, ["serve-search", "--help"])
    assert out.exit_code == 0 and "--port" in out.output
    assert "--torch-threads" in out.output and "--resident-gib" in out.output


def test_the_encoder_pyfunc_takes_image_bytes_never_a_path(tmp_path):
    import base64
    import io

    import pandas as pd
    from PIL import Image

    from anchorprune.promotion.registry import _image_bytes, _pyfunc_class, _signature

    spec = ChampionSpec(backbone=SPEC_BACKBONE, method="sap", gamma=0.25, window=[2, 3], version="1",
                        resolved_revision="L8-d16-n32-a3")
    (tmp_path / "config.json").write_text(spec.to_json())
    model = _pyfunc_class()()
    model.load_context(type("Ctx", (), {"artifacts": {"config": str(tmp_path / "config.json")}})())
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(buf, format="PNG")
    png = buf.getvalue()
    out = model.predict(None, pd.DataFrame({"page_id": ["a", "b"], "text": ["topic:x", "topic:y"],
                                            "image": [png, base64.b64encode(png).decode()]}))
    assert list(out["page_id"]) == ["a", "b"]
    secret = tmp_path / "secret.png"
    secret.write_bytes(png)
    with pytest.raises(ValueError, match="image_path is not accepted"):
        model.predict(None, pd.DataFrame({"page_id": ["a"], "image_path": [str(secret)]}))
    with pytest.raises(ValueError, match="base64"):
        _image_bytes(str(secret))                        # a path is not base64: refused, never opened
    assert "image_path" not in str(_signature().inputs) and "image" in str(_signature().inputs)


def test_concurrent_requests_are_batched_and_answered_alone_when_one_fails(service):
    """Requests queued while the worker searches are searched together; each gets its own hits, and a
    request whose query fails does not fail the others batched with it."""
    client, state = service
    single = {q: client.get("/search", params={"q": q, "k": 3}).json()["hits"]
              for q in (QUERY, "which page is about topic:t5?", "which page is about topic:t7?")}
    encoder = state.encoder(state.current().spec)
    entered, release = threading.Event(), threading.Event()
    real = encoder.encode_queries

    def gated(texts):
        if "hold" in texts:
            entered.set()
            assert release.wait(30)
        if "bad query" in texts:
            raise ValueError("bad query has no tokens for this encoder")
        return real(texts)

    encoder.encode_queries = gated
    out: dict[str, object] = {}
    hold = threading.Thread(target=lambda: out.setdefault("hold", client.get("/search", params={"q": "hold"})))
    hold.start()
    assert entered.wait(30)                          # the worker is busy: the next requests queue up
    before = state.batches
    ts = [threading.Thread(target=lambda q=q: out.setdefault(q, client.get("/search", params={"q": q, "k": 3})))
          for q in [*single, "bad query"]]
    for t in ts:
        t.start()
    deadline = time.monotonic() + 30
    while len(state._jobs) < len(ts) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for t in [hold, *ts]:
        t.join(60)
    for q, want in single.items():
        r = out[q]
        assert r.status_code == 200, r.text
        assert [h["page_id"] for h in r.json()["hits"]] == [h["page_id"] for h in want]
        assert [h["score"] for h in r.json()["hits"]] == pytest.approx([h["score"] for h in want], abs=1e-5)
    assert out["bad query"].status_code == 400 and "no tokens" in out["bad query"].json()["error"]
    assert state.largest_batch >= 4 and state.batches - before >= 4   # taken together; the failed batch rerun alone
    assert client.get("/health").json()["compute"]["torch_threads"] >= 1


def _chromium() -> str | None:
    import shutil

    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (apt-get install chromium) for the headless check")
def test_viewer_renders_in_headless_chromium(project):
    """The viewer in a real browser: ?q= searches, thumbnails load, the first hit is selected and its kept
    vectors are drawn on the page (rects in the overlay)."""
    import socket
    import subprocess

    import uvicorn

    from anchorprune.serving.app import create_app
    from anchorprune.serving.state import SearchState

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(SearchState(_ws(project))), host="127.0.0.1", port=port,
                                           log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        out = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              "--virtual-time-budget=15000", "--dump-dom",
                              f"http://127.0.0.1:{port}/?q=which+page+is+about+topic%3At3%3F"],
                             capture_output=True, text=True, timeout=120)
    finally:
        server.should_exit = True
        th.join(10)
    assert out.returncode == 0 and "<html" in out.stdout, out.stderr[-2000:]
    dom = out.stdout.split("<script>")[0]                  # the rendered document, not the script's templates
    hits = re.findall(r'<div class="hit[^"]*" data-page="([^"]+)"', dom)
    assert hits and hits[0] == "p3", dom[:3000]
    assert re.search(r'<div class="hit sel" data-page="p3"', dom)                 # first hit auto-selected
    thumbs = re.findall(r'<img loading="lazy" src="/pages/[^"]+/image"[^>]*>', dom)
    assert len(thumbs) == len(hits) and 'data-loaded="1"' in thumbs[0]         # thumbnails drawn
    assert not any("data-broken" in t for t in thumbs)
    assert re.search(r'<img id="page"[^>]*src="/pages/p3/image"[^>]*data-loaded=', dom)   # the selected page
    overlay = re.search(r'<svg id="overlay"[^>]*>(.*?)</svg>', dom, re.S)
    assert overlay and overlay.group(1).count('class="kept"') >= 1, dom[-3000:]     # its kept vectors drawn
    assert "pruning…" not in dom and 'class="err"' not in dom
