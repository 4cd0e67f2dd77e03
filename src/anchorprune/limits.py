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

import os
import re
from typing import Any

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


def target_recall_problem(target: Any) -> str | None:
    """Why ``target`` is not a recall target (a number in (0, 1]), or None.

    >>> target_recall_problem(0.99) is None, target_recall_problem(1.5)
    (True, 'target_recall must be in (0, 1], got 1.5')
    """
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= 1:
        return f"target_recall must be in (0, 1], got {target!r}"
    return None


# ---------------------------------------------------------------- sizes the machine cannot hold
#: ``encode.workers`` above this many per CPU core is refused: local worker processes share the cores
WORKERS_PER_CPU = 8
#: vectors k-means samples per centroid (index.token_ivf; index/token_ivf.py)
KMEANS_SAMPLE_PER_CENTROID = 64
#: a lower bound of the token vector dimension (the smallest model here); sizes below use it when ``d`` is unknown
MIN_TOKEN_DIM = 16


def cpu_count() -> int:
    return os.cpu_count() or 1


def workers_problem(workers: int | None, cpus: int | None = None) -> str | None:
    """Why ``encode.workers`` is beyond what this machine can run, or None.

    >>> workers_problem(16, cpus=2) is None, workers_problem(100000, cpus=2)[:40]
    (True, 'encode.workers: 100000 local worker proc')
    """
    cpus = cpus or cpu_count()
    bound = WORKERS_PER_CPU * cpus
    if workers is None or workers <= bound:
        return None
    return (f"encode.workers: {workers} local worker processes on {cpus} CPU cores (at most {bound}, "
            f"{WORKERS_PER_CPU} per core); use null (one per core) or a number up to {bound}, or encode.address "
            "for a cluster on other hosts")


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: float) -> str:
    return f"{n / (1 << 30):,.1f} GiB"


def memory_problem(what: str, need: float, fix: str, memory: int | None = None) -> str | None:
    """Why allocating ``need`` bytes for ``what`` cannot work on this machine (more than its memory), or None."""
    memory = physical_memory() if memory is None else memory
    if memory is None or need <= memory:
        return None
    return f"{what} needs at least {gib(need)}, more than this machine's {gib(memory)} of memory; {fix}"


def muvera_memory_problem(params: dict, memory: int | None = None) -> str | None:
    """Why the MUVERA ``params`` cannot be computed here: one page's float32 FDE, or the final projection
    (``[D, final_dim]`` float32), above the machine's memory (a lower bound, with the smallest token dim).

    >>> muvera_memory_problem({}, memory=1 << 30) is None
    True
    >>> muvera_memory_problem({"reps": 1_000_000, "k_sim": 12, "d_proj": 64}, memory=1 << 30)[:60]
    'index.muvera (reps 1000000 x 2^k_sim 4096 x d_proj 64 = 262,'
    """
    p = {"k_sim": 4, "d_proj": 16, "reps": 16, **{k: v for k, v in params.items() if v is not None or k == "d_proj"}}
    block = p["d_proj"] if p["d_proj"] is not None else MIN_TOKEN_DIM
    dims = int(p["reps"]) * (1 << int(p["k_sim"])) * int(block)
    final = int(p.get("final_dim") or 0)
    need = 4 * dims * (1 + final)                # one page's FDE, and the final projection matrix
    projected = f", projected to final_dim {final}" if final else ""
    return memory_problem(
        f"index.muvera (reps {p['reps']} x 2^k_sim {1 << int(p['k_sim'])} x d_proj {block} = {dims:,} dims per page"
        f"{projected})", need, "lower reps, k_sim or d_proj" + (" or final_dim" if final else ""), memory)


def kmeans_memory_problem(centroids: int | None, sample_per_centroid: int, memory: int | None = None) -> str | None:
    """Why ``index.token_ivf.centroids`` cannot be trained here: its k-means sample (``centroids x
    sample_per_centroid`` float32 vectors, at the smallest token dim) above the machine's memory.

    >>> kmeans_memory_problem(4096, 64, memory=1 << 30) is None, kmeans_memory_problem(10**9, 64, memory=1 << 30)[:36]
    (True, 'index.token_ivf.centroids 1000000000')
    """
    if centroids is None:
        return None
    need = 4 * MIN_TOKEN_DIM * centroids * (sample_per_centroid + 1)
    return memory_problem(f"index.token_ivf.centroids {centroids} (k-means over {centroids * sample_per_centroid:,} "
                          "sampled vectors)", need, "use fewer centroids, or null (a power of two near 2 sqrt(tokens))",
                          memory)
