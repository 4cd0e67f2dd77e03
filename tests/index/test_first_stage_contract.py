"""First stages on both backends: the contract suite's ``make_index`` fixture runs each test on the
local backend, on the Elasticsearch backend over the strict double at every server version of the matrix,
and against a live cluster when ``ELASTICSEARCH_URL`` is set.

For every first stage (none, mean, muvera, token_ivf, auto): the hits are the exact MaxSim top-k of the pages the first
stage hands on (computed here independently from the page vectors), each score is the exact MaxSim, the
version records the first stage and its parameters, and the search report says which one answered. A build
over a generator of many pages consumes it lazily.
"""

from __future__ import annotations

import weakref

import index_fixtures
import numpy as np
import pytest
import torch
from index_helpers import brute_maxsim, make_pages, planted_query, unit

from anchorprune.index import IndexInputError
from anchorprune.index.first_stage import make_first_stage, top_candidates
from anchorprune.index.token_ivf import TokenIvf, TokenIvfParams
from anchorprune.pruning.base import PrunedPage

make_index = index_fixtures.make_index        # the shared fixture (see index_fixtures.py)

PARAMS = {"k_sim": 3, "d_proj": 8, "reps": 4, "seed": 7}         # FDE dims 4 * 8 * 8 = 256
IVF = {"centroids": 16, "nprobe": 3, "seed": 7}                   # local token_ivf: 3 of 16 lists per query token
CANDIDATES = 8


@pytest.fixture(scope="module")
def pages():
    return make_pages(n=60, dim=16, per_page=5, seed=3)


def first_stage_candidates(stage: str, pages, q: torch.Tensor, n: int) -> set[str]:
    """The ``n`` pages with the largest first-stage dot product, from the page vectors (not from an index)."""
    fs = make_first_stage(stage, 16, PARAMS if stage == "muvera" else None)
    codes = np.stack([fs.encode_document(p.vectors.numpy()) for p in pages])     # [P, D]
    return {pages[i].page_id for i in top_candidates(codes, fs.encode_query(q.numpy()), n)}


def es_token_candidates(pages, q: torch.Tensor, n: int) -> set[str]:
    """Elasticsearch's token_ivf candidates, from the page vectors: per query token the ``n`` pages with the
    best token (nested kNN, diversified over pages), scored by max_inner_product's transform of that inner
    product; the transforms summed over the tokens that reached a page; the ``n`` best pages."""
    total: dict[str, float] = {}
    for qi in q.float():                                                           # [d]
        best = {p.page_id: float((p.vectors.float() @ qi).max()) for p in pages}
        for pid, ip in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:n]:
            total[pid] = total.get(pid, 0.0) + (ip + 1 if ip >= 0 else 1 / (1 - ip))
    return set(sorted(total, key=lambda c: (-total[c], c))[:n])


def local_token_candidates(pages, q: torch.Tensor, n: int, params: dict) -> set[str]:
    """The local token_ivf candidates, written out from the definition: the lists are trained on the page
    vectors as the build does (same seed), then per query token the pages' best similarity among the tokens
    of the ``nprobe`` lists nearest the query token (the smallest one seen where a page had none), summed."""
    vecs = torch.cat([p.vectors.float() for p in pages]).numpy()                   # [T, d]
    offsets = np.concatenate([[0], np.cumsum([p.vectors.shape[0] for p in pages])])
    ivf = TokenIvf.train(lambda rows: vecs[rows], offsets, TokenIvfParams.of(params))
    nearest = (vecs @ ivf.centroids.T).argmax(axis=1)                              # [T] each token's list
    page_of = np.repeat(np.arange(len(pages)), np.diff(offsets))
    total = np.zeros(len(pages))
    for qi in q.float().numpy():                                                   # [d]
        probed = np.argsort(-(ivf.centroids @ qi), kind="stable")[:ivf.params.nprobe]
        hit = np.isin(nearest, probed)
        sims = vecs[hit] @ qi
        best = np.full(len(pages), sims.min())
        for pg in np.unique(page_of[hit]):
            best[pg] = sims[page_of[hit] == pg].max()
        total += best
    return {pages[i].page_id for i in np.argsort(-total, kind="stable")[:n]}


def token_candidates(idx, pages, q: torch.Tensor, n: int, params: dict) -> set[str]:
    return local_token_candidates(pages, q, n, params) if idx.backend == "local" else es_token_candidates(pages, q, n)


@pytest.mark.parametrize("stage", ["none", "mean", "muvera", "token_ivf"])
def test_hits_are_the_exact_maxsim_top_k_of_the_first_stage_candidates(make_index, pages, stage):
    idx = make_index("float32", candidates=CANDIDATES, first_stage=stage,
                     first_stage_params=IVF if stage == "token_ivf" else PARAMS)
    idx.swap(idx.build(pages, {"config_hash": "c"}))
    by_id = {p.page_id: p for p in pages}
    queries = [planted_query(pages[i], m=3, noise=0.3, seed=i) for i in (0, 17, 42)]
    results, report = idx.search_report(queries, k=5)
    assert (report.first_stage, report.pages, report.version) == (stage, 60, idx.current().number)
    assert report.candidates == (60 if stage == "none" else CANDIDATES)
    for q, hits in zip(queries, results, strict=True):
        assert len(hits) == 5
        for h in hits:                                       # every score is the exact MaxSim of that page
            assert h.score == pytest.approx(brute_maxsim(q, by_id[h.page_id].vectors), abs=1e-4)
        if stage == "none":
            pool = [p.page_id for p in pages]
        elif stage == "token_ivf":
            pool = token_candidates(idx, pages, q, CANDIDATES, IVF)
        else:
            pool = first_stage_candidates(stage, pages, q, CANDIDATES)
        want = sorted(pool, key=lambda c: (-brute_maxsim(q, by_id[c].vectors), c))[:5]
        assert [h.page_id for h in hits] == want, (stage, report)


@pytest.mark.parametrize("stage", ["none", "mean", "muvera", "token_ivf"])
def test_the_version_records_its_first_stage_and_parameters(make_index, pages, stage):
    idx = make_index("float16", candidates=CANDIDATES, first_stage=stage,
                     first_stage_params=IVF if stage == "token_ivf" else PARAMS)
    v = idx.build(pages, {"config_hash": "c"})
    rec = v.manifest["first_stage"]
    assert rec["name"] == stage
    if stage == "muvera":
        assert rec["params"] == {**PARAMS, "dim": 16, "final_dim": None, "fill_empty": True, "dims": 256}
        assert rec["dims"] == 256
    elif stage == "token_ivf" and idx.backend == "local":         # the lists' build parameters (ES: its HNSW)
        # the lists the build trained are the ones the definition gives for these pages and this seed
        vecs = torch.cat([p.vectors.to(torch.float16).float() for p in pages]).numpy()
        offsets = np.concatenate([[0], np.cumsum([p.vectors.shape[0] for p in pages])])
        want = TokenIvf.train(lambda rows: vecs[rows], offsets, TokenIvfParams.of(IVF)).record()
        assert {k: rec["params"][k] for k in IVF} == IVF
        assert rec["params"]["empty_lists"] == want["empty_lists"]
        assert rec["params"]["list_tokens_max"] == want["list_tokens_max"]
    else:
        assert rec["params"] == {}
    if idx.backend == "elasticsearch" and stage != "none":
        # the kNN field, its similarity and its index_options are stated, not left to the server's defaults
        field, sim = {"mean": ("mean_vector", "cosine"), "muvera": ("fde", "max_inner_product"),
                      "token_ivf": ("tokens.vector", "max_inner_product")}[stage]
        assert (rec["field"], rec["similarity"], rec["index_options"]) == (field, sim, "hnsw")
        mapping = dict(idx.client.indices.get_mapping(index=idx.index_name(v.number)))
        props = mapping[idx.index_name(v.number)]["mappings"]["properties"]
        spec = props["tokens"]["properties"]["vector"] if stage == "token_ivf" else props[field]
        assert spec["similarity"] == sim and spec["index_options"]["type"] == "hnsw"
        assert ("fde" in props) == (stage == "muvera") and ("tokens" in props) == (stage == "token_ivf")
        if stage == "muvera":
            assert props["fde"]["dims"] == 256 and len(rec["fingerprint"]) == 64


def test_a_reopened_index_searches_with_the_first_stage_it_was_built_with(make_index, pages):
    idx = make_index("float32", candidates=CANDIDATES, first_stage="muvera", first_stage_params=PARAMS)
    idx.swap(idx.build(pages, {"config_hash": "c"}))
    q = planted_query(pages[9], m=3, noise=0.3, seed=2)
    before = idx.search(q, k=4)
    other = make_index("float32", candidates=CANDIDATES, first_stage="muvera",
                       first_stage_params={**PARAMS, "seed": 99}, reopen=idx)
    hits, report = other.search_report([q], k=4)
    assert report.first_stage == "muvera" and hits[0] == before        # the recorded matrices, not seed 99


@pytest.mark.parametrize(("target", "threshold", "resolved"), [("token_ivf", 30, "token_ivf"), ("token_ivf", 61, "none"),
                                                             ("muvera", 30, "muvera")])
def test_auto_resolves_by_the_version_size_and_says_so(make_index, pages, target, threshold, resolved):
    idx = make_index("float32", candidates=CANDIDATES, first_stage="auto",
                     first_stage_params=IVF if target == "token_ivf" else PARAMS,
                     first_stage_threshold=threshold, first_stage_auto=target)
    v = idx.build(pages, {"config_hash": "c"})
    idx.swap(v)
    rec = v.manifest["first_stage"]
    assert rec["name"] == target                             # auto prepares its target's vectors
    assert (rec["configured"], rec["threshold"], rec["auto_target"], rec["resolved"]) == (
        "auto", threshold, target, resolved)
    q = planted_query(pages[4], m=3, noise=0.3, seed=4)
    hits, report = idx.search_report([q], k=3)
    assert (report.first_stage, report.configured) == (resolved, "auto")
    assert report.candidates == (60 if resolved == "none" else CANDIDATES)
    pool = ([p.page_id for p in pages] if resolved == "none" else
            token_candidates(idx, pages, q, CANDIDATES, IVF) if resolved == "token_ivf" else
            first_stage_candidates("muvera", pages, q, CANDIDATES))
    by_id = {p.page_id: p for p in pages}
    assert [h.page_id for h in hits[0]] == sorted(pool, key=lambda c: (-brute_maxsim(q, by_id[c].vectors), c))[:3]


class CountingPages:
    """A one-shot generator of ``n`` pages that counts how many of their vector tensors are alive at once."""

    def __init__(self, n: int, dim: int = 16):
        self.n, self.dim = n, dim
        self.yielded = 0
        self.alive = 0
        self.max_alive = 0

    def _gone(self) -> None:
        self.alive -= 1

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for i in range(self.n):
            vecs = unit(torch.randn(4 + i % 3, self.dim, generator=g))
            weakref.finalize(vecs, self._gone)
            self.alive += 1
            self.yielded += 1
            self.max_alive = max(self.max_alive, self.alive)
            page = PrunedPage(f"g{i:05d}", f"h{i}", vecs, None)
            del vecs
            yield page


def test_a_build_over_a_generator_never_holds_all_pages(make_index):
    """A builder that did ``list(pages)`` (or kept each page's tensor) would hold all 400 at once."""
    n = 400
    src = CountingPages(n)
    idx = make_index("float32")
    v = idx.build(iter(src), {"config_hash": "c"})
    assert src.yielded == n and v.pages == n
    # local: one page at a time; Elasticsearch: pages are turned into bulk actions as they arrive
    assert src.max_alive <= 4, src.max_alive
    assert src.alive == 0


@pytest.mark.parametrize("stage", ["muvera", "token_ivf"])
def test_a_first_stage_build_over_a_generator_is_lazy_too(make_index, stage):
    src = CountingPages(150)
    idx = make_index("float16", first_stage=stage, first_stage_params=PARAMS if stage == "muvera" else IVF)
    v = idx.build(iter(src), {"config_hash": "c"})
    assert v.pages == 150 and src.max_alive <= 4, src.max_alive
    assert v.manifest["first_stage"]["name"] == stage


def test_bad_first_stage_names_are_refused(make_index):
    with pytest.raises(IndexInputError, match="'hnsw' is not one of none, mean, muvera, token_ivf, auto"):
        make_index(first_stage="hnsw")


def test_auto_threshold_is_one_value_in_config_and_code(tmp_path):
    from anchorprune.config import IndexConfig
    from anchorprune.index import open_index
    from anchorprune.index.first_stage import AUTO_THRESHOLD_PAGES, auto_stage

    cfg = IndexConfig(first_stage="auto")
    assert cfg.first_stage_threshold == AUTO_THRESHOLD_PAGES == 20_000 and cfg.first_stage_auto == "token_ivf"
    idx = open_index(IndexConfig(first_stage="auto", first_stage_threshold=500), tmp_path)
    assert (idx.first_stage, idx.first_stage_threshold, idx.first_stage_auto) == ("auto", 500, "token_ivf")
    # the built stage's parameters; nprobe left out of the config is not pinned (the version's calibration chooses)
    assert idx.first_stage_params == {k: v for k, v in IndexConfig().token_ivf.model_dump().items() if k != "nprobe"}
    assert IndexConfig().first_stage == "auto"                         # left out: auto
    assert open_index(IndexConfig(first_stage=None), tmp_path).first_stage == "none"   # null: as it always meant
    assert IndexConfig(two_stage=True).first_stage == "mean"           # two_stage alone: the mean, as before
    assert [auto_stage("auto", n) for n in (AUTO_THRESHOLD_PAGES - 1, AUTO_THRESHOLD_PAGES)] == ["none", "token_ivf"]
