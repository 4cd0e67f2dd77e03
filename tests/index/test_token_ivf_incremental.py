"""Incremental token_ivf rebuilds: the serving version's centroids carried forward (index/ivf_update.py).

The corpora are small and clustered so that what a carried index must hold can be checked by hand: every
token in the list of its nearest (carried) centroid, no row of a deleted page anywhere, and the same
answers as exact MaxSim when every list is probed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import anchorprune.index.token_ivf as token_ivf
from anchorprune.index.base import IndexInputError
from anchorprune.index.local import LocalIndex
from anchorprune.index.token_ivf import TokenIvf, TokenIvfParams
from anchorprune.pruning.base import PrunedPage

DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


CENTRES = unit(np.random.default_rng(42).standard_normal((16, DIM)))    # [16, d]: 8 topics in the base, 8 held out


def page(pid: str, seed: int, topics: range = range(8), noise: float = 0.15) -> PrunedPage:
    """A page of 4-8 tokens, each near one of ``topics``' centres."""
    rng = np.random.default_rng(seed)
    t = rng.choice(list(topics), int(rng.integers(4, 9)))
    vecs = unit(CENTRES[t] + noise * rng.standard_normal((len(t), DIM)))                  # [n, d]
    return PrunedPage(pid, f"h{seed}", torch.from_numpy(vecs), None)


def corpus(n: int = 200) -> list[PrunedPage]:
    return [page(f"p{i:03d}", i) for i in range(n)]


def make(tmp_path, **params) -> LocalIndex:
    return LocalIndex(tmp_path, "ix", dtype="float32", first_stage="token_ivf", candidates=10,
                      first_stage_params={"centroids": 8, "nprobe": 2, **params})


def files(tmp_path, v: int) -> dict:
    d = tmp_path / "ix" / f"v{v}"
    out = {f: np.load(d / f) for f in TokenIvf.FILES}
    out["ids"] = json.loads((d / "pages.json").read_text())["page_ids"]
    out["offsets"] = np.load(d / "offsets.npy")
    out["vecs"] = np.fromfile(d / "vectors.bin", dtype=np.float32).reshape(-1, DIM)
    out["manifest"] = json.loads((d / "manifest.json").read_text())
    return out


def one_percent_change(pages: list[PrunedPage], step: int) -> tuple[list[PrunedPage], list[str], list[PrunedPage]]:
    """Replace 2, delete 1, add 1 page (of 200): ``(fresh pages, reused ids, the new corpus)``."""
    rng = np.random.default_rng(1000 + step)
    pick = rng.choice(len(pages), 3, replace=False)
    replaced = [page(pages[i].page_id, 10_000 * (step + 1) + int(i)) for i in pick[:2]]
    gone = {pages[i].page_id for i in pick}
    added = [page(f"a{step:02d}", 20_000 + step)]
    fresh = replaced + added
    kept = [p for p in pages if p.page_id not in gone]
    return fresh, [p.page_id for p in kept], kept + fresh


def check_lists(f: dict) -> None:
    """Every row in exactly one list, the list of its nearest centroid; ivf_pages the row's page."""
    order, lists, cents = f["ivf_order.npy"], f["ivf_lists.npy"], f["ivf_centroids.npy"]
    assert sorted(order.tolist()) == list(range(len(f["vecs"])))
    nearest = (f["vecs"] @ cents.T).argmax(axis=1)                                    # [T]
    for c in range(cents.shape[0]):
        rows = order[lists[c]:lists[c + 1]]
        assert (nearest[rows] == c).all() and (np.diff(rows) > 0).all()
    page_of = np.searchsorted(f["offsets"], np.arange(len(f["vecs"])), side="right") - 1
    assert (f["ivf_pages.npy"] == page_of[order]).all()


def test_a_small_change_keeps_the_centroids_and_assigns_only_the_new_pages_tokens(tmp_path, monkeypatch):
    pages = corpus()
    idx = make(tmp_path)
    idx.swap(idx.build(pages, {"config_hash": "c"}))
    fresh, reuse, _ = one_percent_change(pages, 0)
    assigned = []
    real_assign = token_ivf.assign_rows
    monkeypatch.setattr(token_ivf, "kmeans", lambda *a, **k: pytest.fail("k-means ran on an incremental rebuild"))
    monkeypatch.setattr("anchorprune.index.ivf_update.assign_rows",
                        lambda vectors, rows, *a: assigned.append(len(rows)) or real_assign(vectors, rows, *a))
    v2 = idx.build(fresh, {"config_hash": "c"}, reuse=reuse)
    old, new = files(tmp_path, 1), files(tmp_path, 2)
    upd = v2.manifest["first_stage"]["params"]["update"]
    assert upd["mode"] == "reuse" and upd["centroids_from"] == "v1"
    assert assigned == [sum(p.vectors.shape[0] for p in fresh)] == [upd["fresh_tokens"]]
    assert np.array_equal(old["ivf_centroids.npy"], new["ivf_centroids.npy"])
    check_lists(new)
    p = v2.manifest["first_stage"]["params"]
    assert p["rebuilds_since_train"] == 1 and p["trained_in"] == "v1"
    dropped = sum(int(old["offsets"][i + 1] - old["offsets"][i]) for i, pid in enumerate(old["ids"])
                  if pid not in set(reuse))
    assert upd["dropped_tokens"] == dropped
    assert p["changed_since_train"] == pytest.approx((upd["fresh_tokens"] + dropped) / int(old["offsets"][-1]),
                                                     abs=1e-6)
    assert abs(upd["drift"]) < 0.5                                    # the same topics: no real drift


def test_deleted_and_replaced_pages_are_gone_from_the_lists(tmp_path):
    pages = corpus()
    idx = make(tmp_path, nprobe=8)
    idx.swap(idx.build(pages, {"config_hash": "c"}))
    deleted = [pages[5].page_id, pages[6].page_id]
    replaced = page(pages[7].page_id, 777, topics=range(8))
    reuse = [p.page_id for p in pages if p.page_id not in {*deleted, replaced.page_id}]
    v2 = idx.build([replaced], {"config_hash": "c"}, reuse=reuse)
    idx.swap(v2)
    assert v2.manifest["first_stage"]["params"]["update"]["mode"] == "reuse"
    f = files(tmp_path, 2)
    listed = {f["ids"][int(p)] for p in np.unique(f["ivf_pages.npy"])}
    assert listed == set(f["ids"]) and not listed & set(deleted)
    # each page owns exactly its own rows in the lists: as many as it has vectors
    counts = np.bincount(f["ivf_pages.npy"], minlength=len(f["ids"]))
    assert (counts == np.diff(f["offsets"])).all()
    # the replaced page's old vectors are nowhere: its rows in the lists are its new vectors
    j = f["ids"].index(replaced.page_id)
    rows = f["ivf_order.npy"][f["ivf_pages.npy"] == j]
    assert np.allclose(np.sort(f["vecs"][rows], axis=0), np.sort(replaced.vectors.numpy(), axis=0))
    # a query made of a deleted page's vectors finds other pages, never the deleted one
    hits = idx.search(pages[5].vectors, k=5)
    assert deleted[0] not in {h.page_id for h in hits}


def test_new_content_far_from_the_centroids_retrains(tmp_path):
    pages = corpus()
    idx = make(tmp_path, retrain_changed=1.0)            # only the drift can decide
    idx.swap(idx.build(pages, {"config_hash": "c"}))
    far = [page(f"n{i}", 50_000 + i, topics=range(8, 16)) for i in range(4)]       # held-out topics
    v2 = idx.build(far, {"config_hash": "c"}, reuse=[p.page_id for p in pages])
    upd = v2.manifest["first_stage"]["params"]["update"]
    assert upd["mode"] == "retrain" and "drift" in upd["reason"]
    assert upd["drift"] > TokenIvfParams().retrain_drift
    f = files(tmp_path, 2)
    assert not np.array_equal(files(tmp_path, 1)["ivf_centroids.npy"], f["ivf_centroids.npy"])
    check_lists(f)
    p = v2.manifest["first_stage"]["params"]
    assert p["rebuilds_since_train"] == 0 and p["changed_since_train"] == 0.0 and "trained_in" not in p
    # the same pages from the base topics are carried
    near = [page(f"n{i}", 50_000 + i) for i in range(4)]
    v3 = LocalIndex(tmp_path, "ix", dtype="float32", first_stage="token_ivf",
                    first_stage_params={"centroids": 8, "retrain_changed": 1.0}).build(
        near, {"config_hash": "c"}, reuse=[p.page_id for p in pages])
    assert v3.manifest["first_stage"]["params"]["update"]["mode"] == "reuse"


def test_changes_adding_up_past_retrain_changed_retrain_and_restart_the_count(tmp_path):
    pages = corpus()
    idx = make(tmp_path, retrain_changed=0.1, retrain_drift=100.0)    # each rebuild changes ~3% of the tokens
    idx.swap(idx.build(pages, {"config_hash": "c"}))
    modes, since = [], []
    for step in range(5):
        fresh, reuse, pages = one_percent_change(pages, step)
        v = idx.build(fresh, {"config_hash": "c"}, reuse=reuse)
        idx.swap(v)
        p = v.manifest["first_stage"]["params"]
        modes.append(p["update"]["mode"])
        since.append(p["changed_since_train"])
    first_retrain = modes.index("retrain")
    assert modes[:first_retrain] == ["reuse"] * first_retrain and first_retrain >= 2
    assert all(0 < s < 0.1 for s in since[:first_retrain]) and since[first_retrain] == 0.0
    assert np.diff(since[:first_retrain]).min() > 0                   # summed over the rebuilds
    assert modes[first_retrain + 1] == "reuse"                        # counted again from the retrain


@pytest.mark.parametrize(("params", "reason"), [({"retrain_changed": 0.0}, "retrain_changed 0.0"),
                                                ({"centroids": 4}, "4 centroids wanted, v1 has 8"),
                                                ({"seed": 3}, "k-means settings changed")])
def test_rebuilds_that_cannot_carry_the_centroids_retrain_and_say_why(tmp_path, params, reason):
    pages = corpus()
    make(tmp_path).swap(make(tmp_path).build(pages, {"config_hash": "c"}))
    fresh, reuse, _ = one_percent_change(pages, 0)
    v2 = make(tmp_path, **params).build(fresh, {"config_hash": "c"}, reuse=reuse)
    upd = v2.manifest["first_stage"]["params"]["update"]
    assert upd["mode"] == "retrain" and reason in upd["reason"]
    check_lists(files(tmp_path, 2))


def test_a_dtype_change_retrains(tmp_path):
    pages = corpus()
    make(tmp_path).swap(make(tmp_path).build(pages, {"config_hash": "c"}))
    fresh, reuse, _ = one_percent_change(pages, 0)
    v2 = LocalIndex(tmp_path, "ix", dtype="float16", first_stage="token_ivf",
                    first_stage_params={"centroids": 8}).build(fresh, {"config_hash": "c"}, reuse=reuse)
    assert "dtype" in v2.manifest["first_stage"]["params"]["update"]["reason"]


def recall_at(idx: LocalIndex, exact: LocalIndex, queries: list[torch.Tensor], k: int = 5) -> float:
    got = [{h.page_id for h in idx.search(q, k=k)} for q in queries]
    want = [{h.page_id for h in exact.search(q, k=k)} for q in queries]
    return float(np.mean([len(g & w) / k for g, w in zip(got, want, strict=True)]))


def test_ten_successive_incremental_rebuilds_keep_the_index_correct_and_recall_of_a_retrain(tmp_path):
    pages = corpus()
    idx = make(tmp_path, retrain_changed=1.0, retrain_drift=100.0)
    idx.swap(idx.build(pages, {"config_hash": "c"}))
    for step in range(10):
        fresh, reuse, pages = one_percent_change(pages, step)
        v = idx.build(fresh, {"config_hash": "c"}, reuse=reuse)
        idx.swap(v)
        assert v.manifest["first_stage"]["params"]["update"]["mode"] == "reuse"
    p = v.manifest["first_stage"]["params"]
    assert p["rebuilds_since_train"] == 10 and p["trained_in"] == "v1"
    f = files(tmp_path, v.number)
    check_lists(f)                                                    # the carried lists = a fresh assignment
    assert f["ids"] == [q.page_id for q in pages[-3:]] + [q.page_id for q in pages[:-3]] or \
        sorted(f["ids"]) == sorted(q.page_id for q in pages)
    exact = LocalIndex(tmp_path, "ix", first_stage="none")
    g = torch.Generator().manual_seed(3)
    queries = [pages[i].vectors[:2] + 0.3 * torch.randn(2, DIM, generator=g) for i in range(0, 200, 7)]
    # with every list probed the carried lists give exact MaxSim's answers
    every = LocalIndex(tmp_path, "ix", first_stage="token_ivf", candidates=10, first_stage_params={"nprobe": 8})
    assert recall_at(every, exact, queries) == 1.0
    # with 2 of 8 lists probed: as good as lists retrained over the same pages
    carried = recall_at(LocalIndex(tmp_path, "ix", first_stage="token_ivf", candidates=10), exact, queries)
    retrained = make(tmp_path, retrain_changed=0.0)
    vr = retrained.build([], {"config_hash": "c"}, reuse=[q.page_id for q in pages])
    assert vr.manifest["first_stage"]["params"]["update"]["mode"] == "retrain"
    retrained.swap(vr)
    assert carried >= recall_at(LocalIndex(tmp_path, "ix", first_stage="token_ivf", candidates=10), exact,
                                queries) - 0.02


def test_carrying_refuses_lists_that_are_not_a_permutation():
    ivf = TokenIvf(np.eye(2, dtype=np.float32), np.array([0, 2, 3]), np.array([0, 0, 2], dtype=np.int32),
                   np.zeros(3, dtype=np.int32), TokenIvfParams(centroids=2))
    with pytest.raises(IndexInputError, match="ivf_order.npy names 1 of its 3 token rows twice or never"):
        ivf.codes()


# ---------------------------------------------------------------- MUVERA: per-page codes, copied on reuse


def test_a_muvera_rebuild_copies_the_reused_pages_fdes_and_encodes_only_the_new_ones(tmp_path, monkeypatch):
    from anchorprune.index.first_stage import MuveraFirstStage

    pages = corpus(30)
    params = {"k_sim": 2, "d_proj": 4, "reps": 2, "seed": 0}
    idx = LocalIndex(tmp_path, "mu", dtype="float16", first_stage="muvera", first_stage_params=params)
    idx.swap(idx.build(pages, {"config_hash": "c"}))
    fresh, reuse, _ = one_percent_change(pages, 0)
    encoded = []
    real = MuveraFirstStage.encode_document
    monkeypatch.setattr(MuveraFirstStage, "encode_document", lambda self, v: encoded.append(1) or real(self, v))
    v2 = idx.build(fresh, {"config_hash": "c"}, reuse=reuse)
    assert len(encoded) == len(fresh)
    dims = v2.manifest["first_stage"]["dims"]
    old = np.fromfile(tmp_path / "mu" / "v1" / "first_stage.bin", dtype=np.float16).reshape(-1, dims)
    new = np.fromfile(tmp_path / "mu" / "v2" / "first_stage.bin", dtype=np.float16).reshape(-1, dims)
    ids1 = json.loads((tmp_path / "mu" / "v1" / "pages.json").read_text())["page_ids"]
    ids2 = json.loads((tmp_path / "mu" / "v2" / "pages.json").read_text())["page_ids"]
    for pid in reuse:
        assert np.array_equal(new[ids2.index(pid)], old[ids1.index(pid)])
    # and the copies are what encoding them again gives
    vecs = np.fromfile(tmp_path / "mu" / "v2" / "vectors.bin", dtype=np.float16).reshape(-1, DIM)
    off = np.load(tmp_path / "mu" / "v2" / "offsets.npy")
    mu = MuveraFirstStage.create(DIM, **params)
    j = ids2.index(reuse[0])
    assert np.array_equal(new[j], real(mu, vecs[off[j]:off[j + 1]].astype(np.float32)).astype(np.float16))
