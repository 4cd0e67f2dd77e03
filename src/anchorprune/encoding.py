"""Encode a dataset once per backbone: page features (through the cache) and query vectors."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from anchorprune.backbones.base import Backbone, LayerCapture
from anchorprune.features import PageFeatures
from anchorprune.pages import Page

log = logging.getLogger(__name__)


@dataclass
class EncodedCorpus:
    """A dataset as one backbone sees it."""

    backbone: str
    num_layers: int
    features: dict[str, PageFeatures]      # page_id -> features
    queries: dict[str, torch.Tensor]       # query_id -> [m, d]

    @property
    def page_ids(self) -> list[str]:
        return list(self.features)


def encode_pages(
    backbone: Backbone,
    pages: Iterable[Page],
    capture: LayerCapture,
    cache_dir: Path | None,
    batch_size: int,
) -> dict[str, PageFeatures]:
    """Features per page id; only pages missing from the cache run the model."""
    pages = list(pages)
    if cache_dir is None:
        feats = []
        for i in range(0, len(pages), batch_size):
            feats += backbone.encode_pages(pages[i:i + batch_size], capture)
    else:
        from anchorprune.features_cache import FeaturesCache

        feats = FeaturesCache(cache_dir).get_or_encode(backbone, pages, capture, batch_size=batch_size)
    # backbones keep the ids they are given, and the cache re-labels a content hit with the asked id
    return {page.page_id: f for page, f in zip(pages, feats, strict=True)}


def encode_queries(backbone: Backbone, queries: Mapping[str, str], batch_size: int = 32,
                   cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """``[m, d]`` vectors per query id; with ``cache_dir`` each (text, model, revision) is encoded once."""
    qids = list(queries)
    if cache_dir is not None:
        from anchorprune.features_cache import QueryCache

        vecs = QueryCache(cache_dir).get_or_encode(backbone, [queries[q] for q in qids], batch_size=batch_size)
        return {q: v.float() for q, v in zip(qids, vecs, strict=True)}
    out: dict[str, torch.Tensor] = {}
    for i in range(0, len(qids), batch_size):
        chunk = qids[i:i + batch_size]
        for qid, vecs in zip(chunk, backbone.encode_queries([queries[q] for q in chunk]), strict=True):
            out[qid] = vecs.float()
    return out


def encode_dataset(
    backbone: Backbone,
    pages: Iterable[Page],
    queries: Mapping[str, str],
    capture: LayerCapture,
    cache_dir: Path | None,
    batch_size: int,
) -> EncodedCorpus:
    features = encode_pages(backbone, pages, capture, cache_dir, batch_size)
    log.info("encoded %d pages and %d queries with %s", len(features), len(queries), backbone.name)
    return EncodedCorpus(backbone.name, backbone.num_layers, features,
                         encode_queries(backbone, queries, cache_dir=cache_dir))
