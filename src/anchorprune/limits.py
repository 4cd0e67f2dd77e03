"""Limits and name rules shared by the configuration and the index backends (one home for each).

Elasticsearch's limits are the server's own (each constant names where it is enforced); the
local backend follows the same bounds so that one ``params.yaml`` works on either backend.

>>> check_index_name("pages-v1", ES_INDEX_NAME, "Elasticsearch alias")
'pages-v1'
>>> check_index_name("Pages", ES_INDEX_NAME, "Elasticsearch alias")
Traceback (most recent call last):
...
ValueError: Elasticsearch alias 'Pages' must be lowercase letters, digits, '_' or '-' (first: a letter or digit)
"""

from __future__ import annotations

import re

#: ``dense_vector`` dimension limit (DenseVectorFieldMapper.MAX_DIMS_COUNT); the MUVERA defaults stay within it
ES_MAX_DIMS = 4096
#: kNN ``num_candidates`` limit (KnnSearchBuilder: "[num_candidates] cannot exceed [10000]"); also bounds
#: ``index.candidates`` on both backends
KNN_MAX_CANDIDATES = 10_000
#: nested objects one document may hold (``index.mapping.nested_objects.limit``, default 10000; DocumentParser:
#: "The number of nested documents has exceeded the allowed limit of [10000]")
NESTED_OBJECTS_LIMIT = 10_000

#: an index name any backend accepts (``index.name``): an Elasticsearch alias is lowercase, and the local
#: backend names a folder after it
ES_INDEX_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]*")
#: a local index folder name: :data:`ES_INDEX_NAME` plus upper case and '.' (indexes made by ``LocalIndex``
#: directly may carry them, and must keep opening)
LOCAL_INDEX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")

_ALLOWED = {ES_INDEX_NAME.pattern: "lowercase letters, digits, '_' or '-'",
            LOCAL_INDEX_NAME.pattern: "letters, digits, '_', '-' or '.'"}


def check_index_name(name: str, pattern: re.Pattern[str] = ES_INDEX_NAME, what: str = "index name") -> str:
    """``name`` if it matches ``pattern`` in full, else a ``ValueError`` saying what is allowed."""
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise ValueError(f"{what} {name!r} must be {_ALLOWED[pattern.pattern]} (first: a letter or digit)")
    return name


def muvera_dims(dim: int | None, params: dict | None) -> int | None:
    """The FDE dimension the MUVERA ``params`` give for ``dim``-dimensional token vectors (None: not known
    before ``dim`` is, i.e. no final projection and no inner projection).

    >>> muvera_dims(None, {}), muvera_dims(None, {"final_dim": 512}), muvera_dims(128, {"d_proj": None, "reps": 2})
    (4096, 512, 4096)
    """
    p = dict(params or {})
    if p.get("final_dim") is not None:
        return int(p["final_dim"])
    d_proj = p.get("d_proj", 16)
    block = d_proj if d_proj is not None else dim
    if block is None:
        return None
    return int(p.get("reps", 16)) * (1 << int(p.get("k_sim", 4))) * int(block)


def fde_dims_problem(dims: int | None) -> str | None:
    """Why an FDE of ``dims`` dimensions cannot be stored in Elasticsearch, or None if it can.

    >>> fde_dims_problem(4096) is None, fde_dims_problem(8192)[:22]
    (True, 'the MUVERA FDE has 819')
    """
    if dims is None or dims <= ES_MAX_DIMS:
        return None
    return (f"the MUVERA FDE has {dims} dims, above Elasticsearch's dense_vector limit of {ES_MAX_DIMS}: "
            "lower index.muvera reps, k_sim or d_proj, or set final_dim")


def candidates_problem(candidates: int) -> str | None:
    """Why ``candidates`` is outside what a kNN first stage can hand on, or None.

    >>> candidates_problem(10_000) is None, candidates_problem(10_001)[:40]
    (True, 'candidates=10001 is outside [1, 10000]: ')
    """
    if 1 <= candidates <= KNN_MAX_CANDIDATES:
        return None
    return (f"candidates={candidates} is outside [1, {KNN_MAX_CANDIDATES}]: above {KNN_MAX_CANDIDATES}, the most "
            f"kNN candidates Elasticsearch accepts (num_candidates); use {KNN_MAX_CANDIDATES} or fewer in "
            "index.candidates")
