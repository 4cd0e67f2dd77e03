"""The mapping of one version's index and the documents it holds (one per page).

Per version an index ``<alias>-v<N>`` holds one document per page (``_id`` = page id)::

    page_id       keyword
    content_hash  keyword
    n_vectors     integer
    mean_vector   dense_vector, cosine, HNSW      L2-normalised mean of the page vectors (first stage "mean")
    fde           dense_vector, max_inner_product, HNSW   MUVERA FDE of the stored page vectors (first stage
                                                  "muvera", or "auto" with target muvera; absent otherwise)
    tokens        nested, one object per stored page vector: first stage "token_ivf" (or "auto" with
      .vector     dense_vector, max_inner_product, HNSW     target token_ivf; absent otherwise)
    vectors       rank_vectors                    float | bfloat16 (our "float16") | bit (hex strings)

and the version's manifest in the mapping's ``_meta.anchorprune`` (dtype, dim,
counts, build meta, ``complete: true`` once verified). The serving version is the
index the alias points at.
First stages (:mod:`anchorprune.index.first_stage`): the FDE is not unit length and its raw inner
product is what approximates MaxSim, so ``fde`` uses ``similarity: max_inner_product`` (8.11+;
``_score`` = ``ip + 1`` for ``ip >= 0``, ``1 / (1 - ip)`` below: monotone in ``ip``, so the kNN ranks
by the raw inner product, as the local backend does). ``dot_product`` would refuse non-unit vectors
and ``cosine`` would rank by ``ip / |FDE(page)|``, a different order. Both first-stage fields state
``index_options: {"type": "hnsw"}`` explicitly (float vectors in the graph, exact float kNN scores)
instead of the server's default, which is ``int8_hnsw`` on 8.14-9.0 and ``bbq_hnsw`` (dims >= 384)
on 9.1+: quantised scores would only be approximate (harmless for the candidates, which are rescored
exactly, but the candidate set would then differ between servers and from the local backend). The
cost is 4 bytes per FDE dimension of off-heap HNSW memory (16 KiB per page at 4,096 dims);
``knn_index_options`` picks ``int8_hnsw`` / ``bbq_hnsw`` for a large corpus. The manifest records
the choice. The FDE's random matrices are drawn from the recorded ``seed`` and params at build and
"""

from __future__ import annotations

from typing import Any

import numpy as np

import anchorprune.index.quantize as quantize
from anchorprune.index.base import IndexInputError, normalized_mean
from anchorprune.index.first_stage import MuveraFirstStage
from anchorprune.limits import NESTED_OBJECTS_LIMIT

META_KEY = "anchorprune"
FORMAT = 1
VECTORS_FIELD = "vectors"
MEAN_FIELD = "mean_vector"
FDE_FIELD = "fde"
#: first stage token_ivf: one nested object per stored page vector, its dense_vector sub-field
TOKENS_FIELD = "tokens"
TOKEN_VECTOR_FIELD = f"{TOKENS_FIELD}.vector"
#: dense_vector index_options types (DenseVectorFieldMapper.VectorIndexType); bbq_disk from 9.2 (spec PR #5434)
KNN_INDEX_OPTIONS = ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat", "int4_flat", "bbq_flat",
                     "bbq_disk")
#: similarity of each first-stage field: FDEs rank by their raw inner product (not unit length)
FIRST_STAGE_FIELDS = {"mean": (MEAN_FIELD, "cosine"), "muvera": (FDE_FIELD, "max_inner_product"),
                      "token_ivf": (TOKEN_VECTOR_FIELD, "max_inner_product")}
#: the rank_vectors element type -> the quantize dtype whose decode gives what the server stores
STORED_AS = {"float": "float32", "bfloat16": "bfloat16", "bit": "bits"}
#: documents per _reindex / scan request when reused pages are copied
REINDEX_BATCH = 1000


def mapping(dim: int, dtype: str, manifest: dict[str, Any], element: str | None = None,
            fde_dims: int | None = None, index_options: str = "hnsw", tokens: bool = False) -> dict[str, Any]:
    """Index mappings of one version (see the module docstring); ``element`` overrides the element type,
    ``fde_dims`` adds the MUVERA ``fde`` field, ``tokens`` the nested ``tokens.vector`` field (token_ivf).

    >>> m = mapping(128, "bits", {}, fde_dims=4096)
    >>> m["properties"]["vectors"], m["properties"]["mean_vector"]["similarity"]
    ({'type': 'rank_vectors', 'dims': 128, 'element_type': 'bit'}, 'cosine')
    >>> m["properties"]["fde"]
    {'type': 'dense_vector', 'dims': 4096, 'index': True, 'similarity': 'max_inner_product', 'index_options': {'type': 'hnsw'}}
    >>> mapping(128, "float32", {}, tokens=True)["properties"]["tokens"]["properties"]["vector"]["dims"]
    128
    """
    quantize.check_dim(dtype, dim)
    props: dict[str, Any] = {
        "page_id": {"type": "keyword"},
        "content_hash": {"type": "keyword"},
        "n_vectors": {"type": "integer"},
        MEAN_FIELD: {"type": "dense_vector", "dims": dim, "index": True, "similarity": "cosine",
                     "index_options": {"type": index_options}},
        VECTORS_FIELD: {"type": "rank_vectors", "dims": dim,
                        "element_type": element or quantize.ES_ELEMENT_TYPES[dtype]},
    }
    if fde_dims is not None:
        props[FDE_FIELD] = {"type": "dense_vector", "dims": fde_dims, "index": True,
                            "similarity": FIRST_STAGE_FIELDS["muvera"][1], "index_options": {"type": index_options}}
    if tokens:
        # nested objects of one dense_vector each; kNN over them diversifies over the page documents
        props[TOKENS_FIELD] = {"type": "nested", "properties": {"vector": {
            "type": "dense_vector", "dims": dim, "index": True, "similarity": FIRST_STAGE_FIELDS["token_ivf"][1],
            "index_options": {"type": index_options}}}}
    return {"_meta": {META_KEY: manifest}, "dynamic": "strict", "properties": props}


def build_settings() -> dict[str, Any]:
    """Settings while a version is being built (no refresh, no replicas)."""
    return {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"}


def page_document(page_id: str, content_hash: str, vecs: np.ndarray, dtype: str,
                  fde: np.ndarray | None = None, tokens: np.ndarray | None = None) -> dict[str, Any]:
    """The ``_source`` of one page (``vecs`` is ``[k, d]`` float32; ``fde`` its ``[D]`` MUVERA FDE, ``tokens``
    its ``[k, d]`` stored vectors as floats for the nested ``tokens`` field (token_ivf), if any).

    >>> doc = page_document("p1", "h", np.array([[1.0, -1.0] * 4]), "bits")
    >>> doc["vectors"], doc["n_vectors"]
    (['aa'], 1)
    """
    stored: Any = (quantize.to_hex_rows(quantize.encode(vecs, "bits")) if dtype == "bits"
                   else np.asarray(vecs, dtype=np.float32).tolist())
    doc = {"page_id": page_id, "content_hash": content_hash, "n_vectors": int(vecs.shape[0]),
           MEAN_FIELD: normalized_mean(vecs).tolist(), VECTORS_FIELD: stored}
    if fde is not None:
        doc[FDE_FIELD] = np.asarray(fde, dtype=np.float32).tolist()
    if tokens is not None:
        doc[TOKENS_FIELD] = [{"vector": row} for row in np.asarray(tokens, dtype=np.float32).tolist()]
    return doc



def as_stored(v: np.ndarray, stored_as: str) -> np.ndarray:
    """Page vectors ``[k, d]`` as the server stores them (bfloat16-rounded, or signs for bits), decoded to float32."""
    return quantize.decode(quantize.encode(v, stored_as), stored_as, v.shape[1])


def stored_fde(encoder: MuveraFirstStage, v: np.ndarray, stored_as: str) -> np.ndarray:
    """The FDE of page vectors ``[k, d]`` as the server stores them."""
    return encoder.encode_document(as_stored(v, stored_as))


def stored_tokens(v: np.ndarray, stored_as: str, page_id: str = "?") -> np.ndarray:
    """Page vectors ``[k, d]`` as the server stores them (bfloat16-rounded; for bits the decoded
    ``±1/sqrt(d)`` floats), for the nested ``tokens`` field; at most :data:`NESTED_OBJECTS_LIMIT` rows."""
    if v.shape[0] > NESTED_OBJECTS_LIMIT:
        raise IndexInputError(
            f"page {page_id!r} has {v.shape[0]} vectors, above Elasticsearch's index.mapping.nested_objects.limit "
            f"of {NESTED_OBJECTS_LIMIT} nested token objects per document (first stage token_ivf): prune the page "
            "harder, or use index.first_stage muvera / mean")
    return as_stored(v, stored_as)                                                            # [k, d] float32


def stage_field(record: dict[str, Any]) -> str | None:
    """The first-stage field a version's documents carry besides ``mean_vector`` (``fde``, ``tokens``, or None)."""
    return {"muvera": FDE_FIELD, "token_ivf": TOKENS_FIELD}.get(str(record.get("name")))


def norm_bound(page_norm_max: float, element: str) -> float:
    """An upper bound of the stored page-vector norms: float rounding, and bfloat16's 2^-9 relative rounding."""
    return page_norm_max * (1.0 + (2.0 ** -8 if element == "bfloat16" else 1e-3)) + 1e-6
