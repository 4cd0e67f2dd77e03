"""Search requests: the exact MaxSim script, the first stages' kNN retrievers, and scores mapped back.

Search: exact ``script_score`` with ``maxSimDotProduct`` over every page when the search plan
(:func:`anchorprune.index.facade.plan_search`) is exact; otherwise a ``rescorer`` retriever: kNN (``k = candidates``) on the first stage's field
(``mean_vector`` for ``mean``, ``fde`` for ``muvera``) rescored with the same script over a
window of all ``candidates`` pages (``query_weight: 0``, so the final score is the exact MaxSim
alone and the final ranking is exact MaxSim over the candidates). For ``token_ivf`` the child of the
``rescorer`` is a ``standard`` retriever whose query is a ``bool.should`` of one ``nested`` query per query
token (``path: tokens``, ``score_mode: max``) around a ``knn`` query on ``tokens.vector`` with that token
(``k = candidates``, ``num_candidates`` as above). Which first stage answers, and what a version built
without its vectors falls back to, is :mod:`anchorprune.index.facade`'s policy.
token_ivf is the local backend's token-level first stage (:mod:`anchorprune.index.token_ivf`) with
Elasticsearch's HNSW in place of our inverted lists. Each nested kNN clause gives each of the ``k`` page
documents nearest to query token ``q_i`` the score of its best token (nested kNN "diversifies the top
results over the top-level document", query-dsl-knn-query.md "Knn query inside a nested query"; the knn
query exists from 8.12, its ``k`` from 8.15, PR #110233, so on every supported server); ``bool`` adds the
clause scores (bool-query.md: "the score from each matching must or should clause will be added
together"). So a page's first-stage score is ``sum_i f(max_j q_i · t_j)`` over the clauses that reached
it, with ``f`` max_inner_product's score transform (``ip + 1`` for ``ip >= 0``, ``1 / (1 - ip)`` below):
monotone per token, the same ranking per token as the local backend's ``s_i(p)``, but a sum of
transformed maxima, and a token clause that did not reach the page adds 0 (local token_ivf imputes the
smallest similarity seen). Nested kNN supports only ``score_mode: max`` (PR #125582; the server takes the
other modes and scores them as max, issue #122625); we say ``max``. ``similarity: max_inner_product``
because the stored vectors are not unit length after bfloat16 rounding (``dot_product`` refuses
``|‖v‖² − 1| > 1e-3``) and max_inner_product takes any vector, ranking by the raw inner product as
MaxSim does. For dtype ``bits`` the nested vectors are the decoded ``±1/sqrt(d)`` floats (the scale the
exact MaxSim is reported on, so the token kNN ranks by the same ``q · b``), at 32x the bits' size in the
HNSW graph: pick ``knn_index_options: bbq_hnsw`` (dims >= 64) for a large bit index. A page holds at most
10,000 vectors here (``index.mapping.nested_objects.limit``). token_ivf's ``first_stage_params``
(``centroids``, ``nprobe``, ``iters``, ``seed``) are local-only and ignored; the manifest records
``params: {}``. A query of ``m`` tokens is ``m`` clauses (far below the bool clause limit for query
lengths of ColPali-style models).
again at query time; the manifest keeps a sha256 of them and a search refuses a query encoder whose
matrices differ (:class:`FirstStageMismatchError`). Because
``script_score`` may not return negative scores, the script adds a per-query bound
``params.offset`` that is subtracted again from the returned scores. For bit pages
Elasticsearch's float-query kernel sums the query components where a bit is set
(``q · b``, ``b`` in {0, 1}); the returned score is mapped back to the local
backend's scale ``q · (2b - 1) / sqrt(d)`` (``(2 s - sum(q)) / sqrt(d)``, the same
per-query-token argmax), so both backends rank and score alike. ``hamming=True``
scores bit queries with ``maxSimInvHamming`` instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import anchorprune.index.quantize as quantize
from anchorprune.index.base import IndexInputError, IndexStoreError, normalized_mean
from anchorprune.index.elasticsearch.mapping import (
    FIRST_STAGE_FIELDS,
    MEAN_FIELD,
    TOKEN_VECTOR_FIELD,
    TOKENS_FIELD,
    VECTORS_FIELD,
)
from anchorprune.index.first_stage import FirstStage
from anchorprune.limits import KNN_MAX_CANDIDATES


class FirstStageMismatchError(IndexStoreError, RuntimeError):
    """A version's recorded first stage cannot be reproduced at query time (different FDE random matrices)."""

def num_candidates(c: int) -> int:
    """kNN ``num_candidates`` for ``k = c``: ``max(2c, 100)``, at most the server's 10,000 (and >= ``c``).

    >>> num_candidates(10), num_candidates(400), num_candidates(6000)
    (100, 800, 10000)
    """
    if not 1 <= c <= KNN_MAX_CANDIDATES:
        raise IndexInputError(f"kNN k={c} is outside [1, {KNN_MAX_CANDIDATES}] (Elasticsearch's num_candidates "
                              f"limit): lower index.candidates or the number of hits asked for")
    return min(max(2 * c, 100), KNN_MAX_CANDIDATES)



def token_query(q: torch.Tensor, c: int) -> dict[str, Any]:
    """The token_ivf first stage of query ``q [m, d]``: one nested kNN clause per query token, summed.

    Each clause scores the page documents whose nearest ``tokens.vector`` (among the ``c`` pages nearest
    to that query token) it reaches, by that best child's score; ``bool.should`` adds the clauses up.

    >>> b = token_query(torch.eye(2, 4), 10)["bool"]["should"]
    >>> len(b), b[0]["nested"]["score_mode"], b[0]["nested"]["query"]["knn"]["k"], b[1]["nested"]["query"]["knn"]["query_vector"]
    (2, 'max', 10, [0.0, 1.0, 0.0, 0.0])
    """
    nc = num_candidates(c)
    return {"bool": {"should": [
        # nested kNN supports score_mode max only (query-dsl-knn-query.md "Knn query inside a nested query",
        # PR #125582); the server accepts the others but scores as max (issue #122625), so say max
        {"nested": {"path": TOKENS_FIELD, "score_mode": "max", "query": {"knn": {
            "field": TOKEN_VECTOR_FIELD, "query_vector": row, "k": c, "num_candidates": nc}}}}
        for row in q.to(torch.float32).tolist()]}}


def maxsim_script(query: torch.Tensor, dtype: str, hamming: bool = False,
                  page_norm: float = 1.0) -> tuple[dict[str, Any], float]:
    """The Painless script scoring one query ``[m, d]`` against ``vectors``, and the offset it adds.

    >>> s, off = maxsim_script(torch.tensor([[0.6, -0.8]]), "float32")
    >>> s["source"], s["params"]["offset"] == off, round(off, 3)
    ("maxSimDotProduct(params.query_vector, 'vectors') + params.offset", True, 1.0)
    """
    q = query.to(torch.float32)
    if hamming:
        if dtype != "bits":
            raise IndexInputError("hamming scoring needs a bit index (dtype: bits)")
        rows: Any = quantize.to_hex_rows(quantize.encode(q.numpy(), "bits"))
        fn, offset = "maxSimInvHamming", 0.0                       # in [0, m]: never negative
    elif dtype == "bits":
        rows, fn = q.tolist(), "maxSimDotProduct"
        offset = float(torch.clamp(-q, min=0).sum())               # q . b >= sum of negative components
    else:
        rows, fn = q.tolist(), "maxSimDotProduct"
        # |q_i . d_j| <= |q_i| |d_j| <= |q_i| * page_norm (the version's largest page-vector norm)
        offset = float(q.norm(dim=1).sum()) * page_norm
    return {"source": f"{fn}(params.query_vector, '{VECTORS_FIELD}') + params.offset",
            "params": {"query_vector": rows, "offset": offset}}, offset


def query_body(q: torch.Tensor, k: int, exact: bool, dtype: str, hamming: bool = False, candidates: int = 0,
           page_norm: float = 1.0, encoder: FirstStage | None = None, stage: str | None = None) -> dict[str, Any]:
    """The search body of one query: exact MaxSim over every page, or the first stage's retriever rescored."""
    script, _ = maxsim_script(q, dtype, hamming, page_norm)
    score = {"script_score": {"query": {"match_all": {}}, "script": script}}
    if exact:
        return {"size": k, "source": False, "query": score}
    c = max(candidates, k)          # window_size >= size (CompoundRetrieverBuilder.validate)
    if stage == "token_ivf":
        first: dict[str, Any] = {"standard": {"query": token_query(q, c)}}
    else:
        field, qvec = MEAN_FIELD, normalized_mean(q.numpy())
        if encoder is not None:
            field, qvec = FIRST_STAGE_FIELDS[encoder.name][0], encoder.encode_query(q.numpy())
        first = {"knn": {"field": field, "query_vector": np.asarray(qvec, np.float32).tolist(),
                         "k": c, "num_candidates": num_candidates(c)}}
    return {"size": k, "source": False, "retriever": {"rescorer": {
        "retriever": first,
        "rescore": {"window_size": c, "query": {"rescore_query": score, "query_weight": 0.0,
                                                "rescore_query_weight": 1.0}}}}}

def score_back(es_score: float, q: torch.Tensor, dtype: str, dim: int, page_norm: float, hamming: bool = False) -> float:
    """The MaxSim of a hit on the local backend's scale, from the script's score."""
    _, offset = maxsim_script(q, dtype, hamming, page_norm)
    s = es_score - offset
    if dtype == "bits" and not hamming:
        s = (2.0 * s - float(q.sum())) / float(np.sqrt(dim))
    return s
