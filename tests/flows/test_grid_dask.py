"""The evaluation grid's (method, window) groups on a 2-worker Dask cluster give the in-process result."""

from __future__ import annotations

import torch
from flows.common import dask_map

from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.mock import MockBackbone
from anchorprune.config import EncodeConfig
from anchorprune.evaluation.grid import evaluate_grid
from anchorprune.features.encoding import EncodedCorpus
from anchorprune.pages import Page


def test_grid_on_dask_equals_in_process():
    mock = MockBackbone()
    pages = [Page(f"p{i}", f"h{i}", text=f"topic:t{i}") for i in range(12)]
    feats = {f.page_id: f for f in mock.encode_pages(pages, LayerCapture.all())}
    queries = dict(zip([f"q{i}" for i in range(12)],
                       mock.encode_queries([f"which page is about topic:t{i}?" for i in range(12)]), strict=True))
    corpus = EncodedCorpus("mock", mock.num_layers, feats, queries)
    qrels = {f"q{i}": {f"p{i}": 1} for i in range(12)}
    args = (corpus, qrels, list(queries), ["sap", "random", "eos_topk", "hier_pool"], [0.3, 0.1],
            {"sr": [2, 3], "0-1": [0, 1]})
    before = {pid: f.embeddings.clone() for pid, f in feats.items()}
    here = evaluate_grid(*args, random_trials=3, progress=False)
    cluster = {"n_workers": 2, "threads_per_worker": 1, "processes": False, "dashboard_address": ":0"}
    with dask_map(EncodeConfig(workers=2), cluster_kwargs=cluster) as map_jobs:
        there = evaluate_grid(*args, random_trials=3, progress=False, map_jobs=map_jobs)
    assert [c.key for c in there.configs] == [c.key for c in here.configs] and len(here.configs) == 10
    for a, b in zip(here.configs, there.configs, strict=True):
        assert a.metrics == b.metrics and a.per_query == b.per_query
        assert a.sr_ratio_of_means == b.sr_ratio_of_means and a.vectors_per_page == b.vectors_per_page
    assert any(c.ndcg_retention < 1.0 for c in here.configs)   # the grid measured something that differs
    # neither run pruned the shared corpus in place: every page keeps the vectors it was encoded with
    assert all(torch.equal(corpus.features[pid].embeddings, emb) for pid, emb in before.items())
