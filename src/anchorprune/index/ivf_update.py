"""Incremental token_ivf: a rebuild carries the serving version's centroids and lists forward when the corpus
changed little, and retrains k-means only past a measured drift.

A rebuild (:meth:`~anchorprune.index.local.build.LocalBuild.build` with ``reuse``) writes the new and
changed pages first and then copies the reused pages' stored vectors from the serving version
(``vectors.bin`` of the new version: ``[fresh pages | reused pages in reuse order]``). The first stage
follows:

- **reused pages** keep their list numbers: each one's token rows are looked up in the serving
  version's lists (``TokenIvf.codes``) and moved to their new row numbers; nothing is read or scored;
- **fresh pages** (new or re-encoded) are assigned to the serving version's centroids (one
  ``[T_fresh, K]`` matmul), which also measures how well those centroids fit them;
- **deleted pages** (and the old copies of changed pages) simply have no rows in the new version, so
  they are in no list.

The lists are then regrouped from the ``[T]`` list numbers (one stable argsort), exactly as a
training run groups them, so a carried version has the same layout and guarantees as a trained one.

Drift and the decision
----------------------
Two measures, both recorded in the manifest (``first_stage.params``):

- ``drift``: the mean assignment distance ``1 - cos(token, nearest centroid)`` of the fresh tokens,
  relative to the same mean over the tokens k-means did not sample when the centroids were trained
  (``train_distance``; the sample's own distance is optimistic):
  ``drift = fresh_distance / train_distance - 1``. New content the centroids do not cover (another
  domain, another encoder) lands far from every centroid, so its query tokens probe the wrong lists.
  The drift counts past the threshold only when it is more than 2 standard errors above it (``drift_se``),
  so a rebuild adding a handful of tokens is not retrained on noise.
- ``changed_since_train``: the tokens added plus the tokens dropped since the centroids were trained,
  as a share of the tokens they were trained on, summed over successive incremental rebuilds (so ten
  1% rebuilds count as about 20%, added and dropped both counting).

The rebuild retrains when either passes its threshold (``index.token_ivf.retrain_drift`` and
``retrain_changed``; the measurement behind the defaults is cited in :mod:`anchorprune.index_config`),
and also whenever carrying is impossible or would be wrong: no serving lists, another storage dtype,
other k-means settings, or an auto-sized centroid count that changed with the corpus.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from anchorprune.index.base import IndexInputError
from anchorprune.index.token_ivf import RowReader, TokenIvf, TokenIvfParams, assign_rows, auto_centroids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Serving:
    """What the rebuild knows of the serving version's first stage."""

    number: int                 # the serving version (v<number>)
    ivf: TokenIvf | None        # its lists (None: built for another first stage)
    offsets: np.ndarray         # [P_old + 1] int64 token rows of its pages
    dtype: str                  # its storage dtype
    record: dict[str, Any]      # its manifest's first_stage.params (the lineage of its centroids)


@dataclass(frozen=True)
class Change:
    """How the new version's pages relate to the serving one's (``vectors.bin`` order: fresh, then reused)."""

    offsets: np.ndarray         # [P + 1] int64 token rows of the new version's pages
    fresh_pages: int            # the first ``fresh_pages`` pages are new or re-encoded
    reused_from: np.ndarray     # [P - fresh_pages] int64: the serving version's page index of each reused page

    @property
    def fresh_tokens(self) -> int:
        return int(self.offsets[self.fresh_pages])


def carry_problem(serving: Serving | None, change: Change, params: TokenIvfParams, dtype: str) -> str | None:
    """Why the serving version's centroids cannot be carried into this rebuild (None: they can)."""
    if serving is None or change.reused_from.size == 0:
        return "a full build (no pages reused from a serving version)"
    if serving.ivf is None:
        return f"v{serving.number} was built without token_ivf lists"
    if serving.dtype != dtype:
        return f"the stored vectors change dtype ({serving.dtype} in v{serving.number}, {dtype} now)"
    k_old = serving.ivf.centroids.shape[0]
    k_new = params.centroids or auto_centroids(int(change.offsets[-1]))
    if k_new != k_old:
        return f"{k_new} centroids wanted, v{serving.number} has {k_old}"
    old = serving.ivf.params
    if (old.iters, old.seed) != (params.iters, params.seed):
        return (f"k-means settings changed (iters {old.iters} -> {params.iters}, seed {old.seed} -> "
                f"{params.seed})")
    if not serving.record.get("train_distance"):
        return f"v{serving.number} records no training distance (built before incremental rebuilds)"
    return None


def update(serving: Serving | None, change: Change, vectors: RowReader, params: TokenIvfParams,
           dtype: str) -> tuple[TokenIvf | None, dict[str, Any]]:
    """Carry the serving version's lists into the new version, or say why not.

    Returns ``(lists, decision)``: ``lists`` is None when the caller must retrain (``decision`` says
    why and what was measured); ``vectors`` reads the new version's rows.
    """
    decision: dict[str, Any] = {"mode": "retrain", "retrain_drift": params.retrain_drift,
                                "retrain_changed": params.retrain_changed}
    problem = carry_problem(serving, change, params, dtype)
    if problem is not None:
        return None, {**decision, "reason": problem}
    assert serving is not None and serving.ivf is not None
    rec = serving.record
    old_tokens = int(serving.offsets[-1])
    total = int(change.offsets[-1])
    fresh = change.fresh_tokens
    dropped = old_tokens - (total - fresh)
    trained = int(rec.get("trained_tokens") or old_tokens)
    since = float(rec.get("changed_since_train") or 0.0) + (fresh + dropped) / max(trained, 1)
    decision.update({"centroids_from": f"v{serving.number}", "fresh_tokens": fresh, "dropped_tokens": dropped,
                     "changed_share": round((fresh + dropped) / max(old_tokens, 1), 6),
                     "changed_since_train": round(since, 6)})
    if since >= params.retrain_changed:
        return None, {**decision, "reason": f"{since:.3f} of the tokens changed since the centroids were trained "
                                            f"(>= retrain_changed {params.retrain_changed})"}
    fresh_codes, dist = assign_rows(vectors, np.arange(fresh), serving.ivf.centroids,
                                    "token_ivf: new pages")                                 # [T_fresh], [T_fresh]
    base = float(rec["train_distance"])
    mean = float(dist.mean(dtype=np.float64)) if fresh else 0.0
    # standard error of the drift: a handful of new tokens is a noisy estimate, and a retrain must not hinge on it
    se = float(dist.std(dtype=np.float64)) / math.sqrt(fresh) / base if fresh else 0.0
    drift = mean / base - 1 if fresh else 0.0
    decision.update({"fresh_distance": round(mean, 6), "train_distance": base, "drift": round(drift, 6),
                     "drift_se": round(se, 6)})
    if drift - 2 * se > params.retrain_drift:
        return None, {**decision, "reason": f"the new tokens drift {drift:.3f} +- {se:.3f} from the centroids "
                                            f"(more than 2 standard errors above retrain_drift "
                                            f"{params.retrain_drift})"}
    codes = np.empty(total, dtype=np.int32)                                              # [T]
    codes[:fresh] = fresh_codes
    codes[fresh:] = serving.ivf.codes()[reused_rows(serving.offsets, change)]
    lineage = {"trained_tokens": trained, "train_distance": rec["train_distance"],
               "trained_in": rec.get("trained_in", f"v{serving.number}"),
               "rebuilds_since_train": int(rec.get("rebuilds_since_train") or 0) + 1,
               "changed_since_train": round(since, 6),
               "update": {**decision, "mode": "reuse", "reason": "drift and changed share under their thresholds"}}
    return TokenIvf.from_codes(serving.ivf.centroids, codes, change.offsets, params, lineage), lineage["update"]


def reused_rows(old_offsets: np.ndarray, change: Change) -> np.ndarray:
    """``[T - T_fresh]`` int64: the serving version's row of each reused token row of the new version, in order.

    >>> old = np.array([0, 2, 5, 6])                      # 3 pages of 2, 3, 1 rows
    >>> reused_rows(old, Change(np.array([0, 4, 7, 9]), 1, np.array([1, 0]))).tolist()   # fresh page, then 1, 0
    [2, 3, 4, 0, 1]
    """
    src = np.asarray(change.reused_from, dtype=np.int64)
    lengths = old_offsets[src + 1] - old_offsets[src]                                    # [P_reused]
    new_lengths = np.diff(change.offsets[change.fresh_pages:])
    if not np.array_equal(lengths, new_lengths):
        raise IndexInputError("reused pages do not have the token counts they have in the serving version")
    starts = np.zeros(len(src), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return np.repeat(old_offsets[src] - starts, lengths) + np.arange(int(lengths.sum()))
