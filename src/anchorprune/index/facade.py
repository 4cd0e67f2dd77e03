"""What every backend does the same way, written once: the first-stage policy, search, and the life-cycle calls.

A backend (:class:`~anchorprune.index.local.LocalIndex`,
:class:`~anchorprune.index.elasticsearch.ElasticsearchIndex`) subclasses :class:`VersionedIndex` and
provides only storage and scoring: a :class:`~anchorprune.index.lifecycle.Store` (``self.life``), what
the serving version is (:meth:`VersionedIndex._serving`), a version's :class:`IndexVersion`, and the two
ways to score a batch of queries (every page exactly, or the candidates of a first stage).

The first-stage policy (:func:`plan_search`), the same on both backends:

- **Which stage answers.** The configured one; ``auto`` resolves by the serving version's size
  (:func:`~anchorprune.index.first_stage.auto_stage`: exact below ``first_stage_threshold`` pages,
  ``first_stage_auto`` from there).
- **A version built without the stage's vectors** (FDEs, token vectors / inverted lists) answers with
  its own first stage when it was built with ``muvera`` or ``token_ivf``, else with the mean vector,
  which every version of both backends carries (:func:`fallback_stage`), with a warning. Both
  ``muvera`` and ``token_ivf`` approximate MaxSim far better than a page's mean
  (``benchmarks/results/first_stage.json``), so a version that has one of them uses it.
- **When search is exact.** When the stage is ``none`` (configured, or ``auto`` below its threshold), or
  when the configured ``candidates`` already cover every page. There is no separate small-corpus rule:
  ``auto``'s threshold is the one measured place where exact search stops paying, and an explicitly
  configured first stage is searched as configured on either backend, so both return the same hits.
- **How many pages are handed on.** ``max(candidates, k)``: a search for ``k`` hits returns ``k`` hits;
  the final ranking is always exact MaxSim over the pages handed on.
- **Which settings.** ``candidates`` (and token_ivf's ``nprobe``) as configured when the configuration
  sets them (pinned: explicit config wins); otherwise a token_ivf version's calibrated ones (its
  manifest's ``first_stage.calibration``, :mod:`anchorprune.index.calibration`: the cheapest settings that
  reached ``index.target_recall`` at build); otherwise :data:`DEFAULT_CANDIDATES` and the nprobe the
  version was built with. A calibration that met no setting asks for exact search (candidates = pages).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

import anchorprune.index.quantize as quantize
from anchorprune.evaluation.bf16 import ComputePath
from anchorprune.index.base import (
    Hit,
    IndexInputError,
    IndexStats,
    IndexVersion,
    query_matrix,
    version_number,
)
from anchorprune.index.first_stage import (
    FirstStageName,
    SearchReport,
    auto_stage,
    built_stage,
    resolve_first_stage,
)
from anchorprune.index.lifecycle import ANY, Lifecycle, VersionHealth

log = logging.getLogger(__name__)

#: candidates handed on when neither the configuration nor the version's calibration says
DEFAULT_CANDIDATES = 100
#: first stages whose vectors only a version built for them has (the mean vector is in every version)
STAGE_VECTORS = {"muvera": "MUVERA FDEs", "token_ivf": "token_ivf token vectors"}


def fallback_stage(asked: str, built: str | None) -> str:
    """The first stage a version built for ``built`` (its manifest's ``first_stage.name``; None: a version
    from before first stages were recorded) answers a search for ``asked`` with.

    >>> fallback_stage("token_ivf", "muvera"), fallback_stage("muvera", "mean"), fallback_stage("mean", None)
    ('muvera', 'mean', 'mean')
    >>> fallback_stage("muvera", "token_ivf"), fallback_stage("token_ivf", "token_ivf"), fallback_stage("none", "mean")
    ('token_ivf', 'token_ivf', 'none')
    """
    if asked not in STAGE_VECTORS or asked == built:
        return asked
    return built if built in STAGE_VECTORS else "mean"


@dataclass(frozen=True)
class SearchPlan:
    """How one search is answered (see the module docstring)."""

    stage: FirstStageName       # "none": exact MaxSim over every page
    candidates: int             # pages scored exactly
    pages: int                  # pages of the serving version
    configured: str | None      # the configured first stage when it is not the one used
    asked: str                  # the stage the configuration resolved to before any fallback
    nprobe: int | None = None   # token_ivf lists probed per query token (None: the version's build default)
    settings: str = "configured"   # where candidates / nprobe came from: configured | calibrated | default

    @property
    def exact(self) -> bool:
        return self.stage == "none"

    def report(self, version: int, scoring: ComputePath | None = None) -> SearchReport:
        return SearchReport(self.stage, self.candidates, self.pages, version, self.configured, scoring)


def plan_search(configured: str, pages: int, built: str | None, k: int, candidates: int | None,
                threshold: int | None = None, auto_target: str = "token_ivf",
                calibration: dict[str, Any] | None = None, nprobe: int | None = None) -> SearchPlan:
    """The search plan over a serving version of ``pages`` pages built for first stage ``built``.

    ``candidates`` / ``nprobe``: the configured (pinned) values, or None for the version's ``calibration``
    (its manifest's ``first_stage.calibration``; token_ivf only), else :data:`DEFAULT_CANDIDATES` and the
    version's own nprobe.

    >>> plan_search("mean", 60, "mean", 5, 8)
    SearchPlan(stage='mean', candidates=8, pages=60, configured=None, asked='mean', nprobe=None, settings='configured')
    >>> plan_search("mean", 60, "mean", 5, 60).stage, plan_search("auto", 60, "token_ivf", 5, 8).stage
    ('none', 'none')
    >>> plan_search("token_ivf", 60, "muvera", 20, 8).stage
    'muvera'
    >>> cal = {"candidates": 30, "nprobe": 2}
    >>> p = plan_search("token_ivf", 60, "token_ivf", 10, None, calibration=cal)
    >>> p.candidates, p.nprobe, p.settings
    (30, 2, 'calibrated')
    >>> p = plan_search("token_ivf", 60, "token_ivf", 10, 40, calibration=cal)       # pinned candidates win
    >>> p.candidates, p.nprobe, p.settings
    (40, 2, 'calibrated+configured')
    """
    if k < 1:
        raise IndexInputError(f"k must be >= 1, got {k}")
    asked = auto_stage(configured, pages, threshold, auto_target)
    stage = fallback_stage(asked, built)
    cal = calibration if stage == "token_ivf" and calibration else None
    sources = []
    if candidates is not None:
        sources.append("configured")
    elif cal is not None:
        candidates = int(cal["candidates"])
        sources.append("calibrated")
    else:
        candidates = DEFAULT_CANDIDATES
        sources.append("default")
    if stage == "token_ivf" and nprobe is not None:
        sources.append("configured")
    elif stage == "token_ivf" and cal is not None:
        nprobe = int(cal["nprobe"])
        sources.append("calibrated")
    settings = "+".join(sorted(set(sources)))
    if stage != "none" and candidates >= pages:
        stage = "none"                          # the candidates would be every page: score them all at once
    handed = pages if stage == "none" else max(candidates, k)
    return SearchPlan(stage, handed, pages, configured if configured != stage else None, asked,  # type: ignore[arg-type]
                      nprobe if stage == "token_ivf" else None, settings)


@dataclass
class Serving:
    """The serving version as a search sees it: what :func:`plan_search` needs, and the backend's handle."""

    number: int
    pages: int
    dim: int
    built: str | None           # the first stage it was built for (its manifest's first_stage.name)
    handle: Any = None          # the backend's opened version (local) or manifest (Elasticsearch)
    calibration: dict[str, Any] | None = None   # its manifest's first_stage.calibration (token_ivf)


class VersionedIndex:
    """The :class:`~anchorprune.index.base.Index` contract over a backend's store (see the module docstring)."""

    backend: str
    name: str
    life: Lifecycle

    def _configure(self, name: str, dtype: str, two_stage: bool, candidates: int | None, first_stage: str | None,
                   first_stage_params: dict[str, Any] | None, first_stage_threshold: int | None,
                   first_stage_auto: str) -> None:
        """The settings both backends take, checked the same way."""
        self.name = name
        self.dtype = quantize.check_dtype(dtype)
        self.first_stage = resolve_first_stage(first_stage, two_stage)
        self.first_stage_params = {k: v for k, v in (first_stage_params or {}).items() if k not in ("dim", "dims")}
        self.first_stage_threshold = first_stage_threshold
        self.first_stage_auto = built_stage(first_stage_auto)
        self.two_stage = self.first_stage != "none"
        if candidates is not None and candidates < 1:
            raise IndexInputError(f"candidates must be >= 1, got {candidates}")
        self.candidates = candidates        # None: the serving version's calibrated value, else DEFAULT_CANDIDATES

    @property
    def built_stage(self) -> str:
        """The first stage whose vectors a build writes (``auto``: its target's)."""
        return built_stage(self.first_stage, self.first_stage_auto)

    # ------------------------------------------------------------ what a backend provides
    def _serving(self) -> Serving:
        """The serving version (NoServingVersionError before the first swap)."""
        raise NotImplementedError

    def _info(self, number: int) -> IndexVersion:
        raise NotImplementedError

    def _search_exact(self, sv: Serving, qs: list[torch.Tensor], k: int,
                      plan: SearchPlan) -> tuple[list[list[Hit]], ComputePath | None]:
        """Top ``k`` of every page by exact MaxSim, per query."""
        raise NotImplementedError

    def _search_candidates(self, sv: Serving, qs: list[torch.Tensor], k: int,
                           plan: SearchPlan) -> tuple[list[list[Hit]], ComputePath | None]:
        """Top ``k`` by exact MaxSim of the ``plan.candidates`` pages ``plan.stage`` picks, per query."""
        raise NotImplementedError

    # ------------------------------------------------------------ search
    def search(self, query_vectors: torch.Tensor, k: int = 10) -> list[Hit]:
        """Top-``k`` pages for one query ``[m, d]`` by MaxSim (exact, or over a first stage's candidates)."""
        return self.search_many([query_vectors], k)[0]

    def search_many(self, queries: Sequence[torch.Tensor], k: int = 10) -> list[list[Hit]]:
        return self.search_report(queries, k)[0]

    def search_report(self, queries: Sequence[torch.Tensor], k: int = 10) -> tuple[list[list[Hit]], SearchReport]:
        """Like :meth:`search_many`, plus which first stage answered (and how many pages it handed on)."""
        if k < 1:
            raise IndexInputError(f"k must be >= 1, got {k}")
        sv = self._serving()
        qs = [query_matrix(q, sv.dim, i) for i, q in enumerate(queries)]
        plan = self.plan(sv, k)
        if plan.asked in STAGE_VECTORS and plan.asked != (sv.built or "mean"):
            log.warning("%s: first stage %r asked for, but the serving v%d was built without %s; using %s "
                        "(rebuild the index to use %s)", self.life.what, plan.asked, sv.number,
                        STAGE_VECTORS[plan.asked], fallback_stage(plan.asked, sv.built), plan.asked)
        if not qs:
            return [], plan.report(sv.number)
        search = self._search_exact if plan.exact else self._search_candidates
        hits, scoring = search(sv, qs, k, plan)
        return hits, plan.report(sv.number, scoring)

    def plan(self, sv: Serving, k: int = 10) -> SearchPlan:
        """How a search for ``k`` hits over ``sv`` is answered (stage, candidates, nprobe and where they came from)."""
        return plan_search(self.first_stage, sv.pages, sv.built, k, self.candidates, self.first_stage_threshold,
                           self.first_stage_auto, sv.calibration, self.first_stage_params.get("nprobe"))

    # ------------------------------------------------------------ versions (decided in lifecycle.py)
    def current(self) -> IndexVersion | None:
        n = self.life.serving()
        return None if n is None else self._info(n)

    def versions(self) -> list[IndexVersion]:
        return [self._info(n) for n in self.life.store.version_numbers()]

    def stats(self) -> IndexStats:
        cur = self.current()
        m = cur.manifest if cur else {}
        return IndexStats(name=self.name, backend=self.backend, dtype=m.get("dtype", self.dtype), dim=m.get("dim"),
                          current=cur, versions=tuple(self.life.store.version_numbers()), two_stage=self.two_stage)

    def verify(self, version: IndexVersion | int) -> IndexVersion:
        """Re-check a version in full (checksums / counts; raises CorruptVersionError) and describe it."""
        n = version_number(version)
        self.life.store.check_version(n, full=True)
        return self._info(n)

    @contextlib.contextmanager
    def rebuild(self, wait: bool = False) -> Iterator[Any]:
        """Hold the build lock for a whole rebuild; yields the version it starts from (for ``swap(expected=)``):
        None before the first swap, :data:`~anchorprune.index.lifecycle.ANY` when the pointer is unreadable."""
        with self.life.locked(wait=wait):
            yield self.life.start_point()

    def swap(self, version: IndexVersion | int, expected: Any = ANY) -> None:
        """Serve ``version`` from the next search on, in one atomic step; with ``expected`` (the version a
        rebuild started from), only if that still serves, else :class:`SwapConflictError`."""
        self.life.swap(version_number(version), expected)

    def previous(self) -> IndexVersion | None:
        """The version a rollback would serve: the newest healthy version older than the serving one that served."""
        n = self.life.rollback_target()
        return None if n is None else self._info(n)

    def rollback(self) -> IndexVersion:
        return self._info(self.life.rollback())

    def delete_version(self, version: IndexVersion | int) -> None:
        self.life.delete(version_number(version))

    def prune_versions(self, keep: int = 2) -> list[int]:
        """Delete old versions; keeps the serving one, the last one that served before it, and newest older ones
        up to ``keep`` (``keep >= 2``)."""
        return self.life.prune(keep)

    #: whether a version's first search checks every checksum (the local store's ``verify_on_open``)
    verifies_on_open: bool = False

    def health(self, full: bool = False) -> list[VersionHealth]:
        """Every version's health; the serving one is checked as a search checks it (see :attr:`verifies_on_open`)."""
        return self.life.health(full, serving_full=self.verifies_on_open)

    def serving_problem(self) -> str | None:
        """Why the serving version cannot serve, as a search would find it (None: it can, or nothing serves)."""
        return self.life.serving_problem(full=self.verifies_on_open)

    def unlock(self, force: bool = False) -> str:
        return self.life.unlock(force)
