"""The index stage: build a new index version from ``@champion`` and swap it in."""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict

from anchorprune.config import BackboneConfig
from anchorprune.ioutil import write_json
from anchorprune.stages.workspace import Workspace

log = logging.getLogger(__name__)


def index_backbone(ws: Workspace) -> BackboneConfig:
    """The backbone whose champion the index serves (``index.backbone``, else the first listed)."""
    name = ws.settings.index.backbone or (ws.settings.backbones[0].name if ws.settings.backbones else None)
    if name is None:
        raise IndexStageError("params.yaml lists no backbones: nothing to index; add one under `backbones:`")
    return ws.settings.backbone(name)


def open_serving_index(ws: Workspace, calibration_queries: Any = None):
    """The configured index; ``calibration_queries`` (builds only: see :func:`calibration_queries`) is what a
    token_ivf build calibrates on."""
    from anchorprune.index import open_index
    from anchorprune.index.local import index_root

    root = ws.settings.paths.resolve(ws.settings.paths.index_dir, ws.root)
    if ws.settings.index.backend == "local":
        local = index_root(root)
        blocker = next((p for p in (local, *local.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise IndexStageError(f"paths.index_dir {local}: {blocker} is a file, not a folder; point "
                                  "paths.index_dir at a folder (it is created if missing) or move that file away")
    return open_index(ws.settings.index, index_root(root), calibration_queries=calibration_queries)


class SplitQueries:
    """The dataset's calibration-split queries as query matrices: the ids :meth:`Workspace.split` holds out for SR
    calibration (never its evaluation queries), encoded through the query cache with the query encoder of the
    backbone the index serves (:meth:`use`, given once the champion is read). A build calls it only when it
    calibrates; the result is kept."""

    def __init__(self, ws: Workspace, qids: list[str], about: dict[str, Any]):
        self.ws, self.qids, self.about = ws, qids, about
        self.backbone = None
        self._sample = None

    def use(self, backbone) -> None:
        """Encode with ``backbone`` (the champion's: the one search encodes queries with)."""
        self.backbone, self._sample = backbone, None

    def texts(self) -> list[str]:
        queries = self.ws.dataset.queries
        return [queries[q] for q in self.qids]

    def __call__(self):
        from anchorprune.features.cache import QueryCache
        from anchorprune.index.calibration import QuerySample

        if self._sample is None:
            if self.backbone is None:
                raise IndexStageError("calibration queries asked for before the serving backbone was known")
            vecs = QueryCache(self.ws.features_dir).get_or_encode(self.backbone, self.texts(), progress=False)
            log.info("index: calibrating token_ivf on %d queries of the dataset's calibration split", len(vecs))
            self._sample = QuerySample([v.float() for v in vecs],
                                       {**self.about, "query_encoder": getattr(self.backbone, "name", "?")})
        return self._sample


def calibration_queries(ws: Workspace):
    """What a build of this workspace's index calibrates token_ivf on, from ``index.calibration.source``.

    ``queries`` / ``auto``: the dataset's calibration split (:class:`SplitQueries`, encoded only if the build
    calibrates; a seeded draw of ``index.calibration.queries`` of them when it holds more); below
    ``min_queries`` ``queries`` is refused (:class:`IndexStageError`, naming the count and what to set) and
    ``auto`` gives an empty :class:`~anchorprune.index.calibration.QuerySample` whose note the pseudo-query
    record keeps. None (nothing to give) for ``none`` / ``pseudo``, for the Elasticsearch backend (it does not
    calibrate), and when the build will not calibrate: a first stage other than token_ivf, or ``auto`` below
    ``first_stage_threshold`` pages (that version searches exactly).
    """
    import hashlib

    import numpy as np

    from anchorprune.index.calibration import QuerySample
    from anchorprune.index.first_stage import auto_stage, resolve_first_stage

    icfg = ws.settings.index
    cal = icfg.calibration
    if icfg.backend != "local" or cal.source not in ("queries", "auto"):
        return None
    if auto_stage(resolve_first_stage(icfg.first_stage, icfg.two_stage), len(ws.dataset.page_ids),
                  icfg.first_stage_threshold, icfg.first_stage_auto) != "token_ivf":
        return None                             # the build will not calibrate (the same test as LocalBuild's)
    calib, evalq = ws.split()
    d = ws.settings.data
    n = len(calib)
    if n < cal.min_queries:
        why = (f"the calibration split of dataset {d.dataset!r} holds {n} queries (data.calibration_fraction "
               f"{d.calibration_fraction} of {n + len(evalq)} queries with a relevant page), below "
               f"index.calibration.min_queries {cal.min_queries}")
        if cal.source == "queries":
            raise IndexStageError(
                f"index.calibration.source is 'queries' but {why}: set index.calibration.min_queries: {max(n, 2)} "
                f"or lower (a looser lower bound on fewer queries), raise data.calibration_fraction (the SR "
                f"calibration uses the same split), or set source: auto (pseudo-queries below min_queries) or none")
        log.warning("index: calibration source auto: %s; calibrating on pseudo-queries", why)
        return QuerySample((), {"fallback": f"source auto: {why}"})
    overlap = set(calib) & set(evalq)
    if overlap:                                  # split_queries guarantees it; never calibrate on evaluation queries
        raise IndexStageError(f"the calibration and evaluation splits share queries {sorted(overlap)[:5]}")
    qids = list(calib)
    if n > cal.queries:
        rng = np.random.default_rng(cal.seed)
        qids = [qids[i] for i in sorted(rng.choice(n, cal.queries, replace=False).tolist())]
    about = {"from": "the dataset's calibration split (data.calibration_fraction, held out for SR calibration; "
                     "never its evaluation queries)",
             "dataset": d.dataset, "calibration_fraction": d.calibration_fraction, "split_seed": d.seed,
             "split_queries": n, "drawn": (f"{len(qids)} of {n}, seed {cal.seed}" if n > cal.queries else "all"),
             "query_ids_sha256": hashlib.sha256("\n".join(qids).encode()).hexdigest()}
    return SplitQueries(ws, qids, about)


def index_config_key(ws: Workspace) -> dict:
    """The index settings a built version depends on (``keep_versions`` only prunes, so it is left out); with
    ``calibration.source`` queries / auto also the settings that pick the calibration split (a different split is a
    different calibration sample)."""
    key = ws.settings.index.model_dump(mode="json", exclude={"keep_versions"})
    if ws.settings.index.calibration.source in ("queries", "auto"):
        d = ws.settings.data
        key["calibration_split"] = {"calibration_fraction": d.calibration_fraction, "seed": d.seed}
    return key


def serving_is_current(ws: Workspace, index, model: str, model_version: str | int | None,
                       dataset_hash: str) -> IndexBuildResult | None:
    """The no-op reindex decision: the serving version's build record when a rebuild would change nothing.

    A rebuild is skipped only when the serving version was built from this champion (model and
    version), this data (DVC version and dataset content hash) and this index config, as recorded
    in its manifest; anything missing or different (an older manifest) means rebuild.
    """
    serving = index.current()
    if serving is None:
        return None
    meta = serving.manifest.get("meta") or {}
    data_version = ws.data_version()
    want = {"model": model, "model_version": str(model_version), "data_version": data_version,
            "dataset_hash": dataset_hash, "index_config": index_config_key(ws)}
    have = {k: (str(meta.get(k)) if k == "model_version" and meta.get(k) is not None else meta.get(k))
            for k in want}
    if have != want:
        changed = sorted(k for k in want if have[k] != want[k])
        log.info("index %s: rebuilding (changed since v%s: %s)", ws.settings.index.name, serving.number,
                 ", ".join(changed))
        return None
    return IndexBuildResult(
        index=ws.settings.index.name, backend=ws.settings.index.backend, version=serving.number,
        pages=serving.pages, vectors=serving.vectors, bytes=serving.bytes, reencoded_pages=0,
        reused_pages=serving.pages, rebuilt=False, meta={k: v for k, v in meta.items() if k != "spec"},
        reason=f"champion {model} v{model_version}, data {data_version} and the index config are "
               f"unchanged since v{serving.number}: nothing rebuilt")


class IndexBuildResult(BaseModel):
    """What an index stage did: the version that serves now, and whether this run built it.

    ``meta`` is the build record of that version (data version, champion model and version, pruning
    config, config hash, ...), as its manifest holds it. :meth:`record` is the flat form written to
    ``reports/index.json``.

    >>> r = IndexBuildResult(index="demo", backend="local", version=3, pages=10, vectors=40, bytes=2048,
    ...                      reencoded_pages=0, reused_pages=10, rebuilt=False, reason="nothing changed")
    >>> r.headline()
    'index demo (local) unchanged: still serves v3 (nothing changed)'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: str
    backend: str
    version: int
    pages: int
    vectors: int
    bytes: int
    reencoded_pages: int
    reused_pages: int
    rebuilt: bool
    reason: str
    meta: dict[str, Any] = {}
    #: what failed after the swap (the commit point): the new version serves all the same
    warnings: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """The flat record of ``reports/index.json``: the build record's keys, then this result's fields.

        Which commit ran the build is provenance, not a result: it stays in the version's manifest and out of
        this DVC output, so ``dvc.lock`` does not change with every commit.
        """
        from anchorprune.provenance import without_provenance

        return {**without_provenance(self.meta), **self.model_dump(exclude={"meta", "warnings"})}

    def headline(self, hint: str = "") -> str:
        """One line: which version serves and whether this run built it (``hint`` follows an unchanged reason)."""
        if not self.rebuilt:
            return (f"index {self.index} ({self.backend}) unchanged: still serves v{self.version} "
                    f"({self.reason}{'; ' + hint if hint else ''})")
        return (f"index {self.index} ({self.backend}) now serves v{self.version}: {self.pages} pages, "
                f"{self.vectors} vectors, {self.bytes / 1e6:.1f} MB; re-encoded {self.reencoded_pages}, "
                f"reused {self.reused_pages}")


class IndexStageError(LookupError):
    """The index stage cannot start: no backbone configured, or no ``@champion`` in the registry."""


def stage_index(ws: Workspace, wait: bool = False, force: bool = False) -> IndexBuildResult:
    """Build a new index version from ``@champion`` and swap it in; the serving version is untouched on failure.

    The build lock is held for the whole rebuild (read the champion, encode, build, verify,
    swap, prune), whoever runs it (CLI, Prefect, ``dvc repro``, cron): a second one is refused
    at once naming the holder, or queues with ``wait=True``. The swap is a compare-and-swap
    against the version the rebuild started from, so it never moves the index backwards.
    Nothing is built when the serving version already has this champion, data and index
    config and its stored pages pass their checksums (:func:`serving_is_current`; ``force``
    rebuilds anyway). A serving version that cannot serve (an unreadable pointer, a missing,
    truncated or damaged version) is rebuilt from every page, so a build is always a way out.

    The swap is the commit point: what can fail before it fails the stage with nothing changed;
    what fails after it (retention, ``reports/index.json``) is logged as a warning and returned in
    :attr:`IndexBuildResult.warnings`, and the stage succeeds, since the new version serves.
    """
    sample = calibration_queries(ws)     # checked before anything runs; encoded only if the build calibrates
    index = open_serving_index(ws, calibration_queries=sample)
    with index.rebuild(wait=wait) as started_from:
        return _stage_index_locked(ws, index, started_from, force=force, calibration=sample)


INDEX_CHUNK_PAGES = 256         # pages encoded and pruned per step of an index build (bounds its memory)


def _stage_index_locked(ws: Workspace, index, started_from: int | None, force: bool = False,
                        calibration: Any = None) -> IndexBuildResult:
    """:func:`stage_index`'s body, run with the build lock held (``calibration``: the index's calibration queries,
    given the champion's backbone here).

    Pages whose content hash is already in the serving version are not re-encoded;
    the rest, and reused pages whose stored vectors fail their checksum, are encoded with
    window-only capture (through the features cache).
    """
    from anchorprune.features.encoding import encode_pages
    from anchorprune.promotion.registry import current_champion, model_name, stale_reason

    bcfg = index_backbone(ws)
    identity = ws.settings.data.identity    # one identity per dataset: its own model (anchorprune.identity)
    champ = current_champion(ws.tracker, bcfg.name, identity)
    if champ is None:
        raise IndexStageError(
            f"no '{model_name(bcfg.name, identity)}@champion' in the registry: run `anchorprune promote` first "
            f"(if it ran, no candidate passed the gate: see reports/promotion/{bcfg.name}.json)"
        )
    candidate, spec = champ
    stale = stale_reason(ws.tracker, bcfg.name, identity)
    if stale:
        log.warning("serving a STALE champion %s v%s: %s", candidate.name, spec.version, stale)
    dataset_hash = ws.check_dataset()
    broken = index.life.serving_problem()           # the cheap checks: same-size damage is repaired page by page
    if broken is not None:
        log.warning("index %s: the serving version cannot serve (%s): rebuilding every page from the champion",
                    ws.settings.index.name, broken)
    if not force and broken is None:
        same = serving_is_current(ws, index, model_name(bcfg.name, identity), spec.version, dataset_hash)
        # a serving version whose stored pages fail their checksums is rebuilt (damaged pages re-encoded)
        if same is not None and not index.damaged_pages(ws.dataset.page_ids):
            log.info("index %s: %s", same.index, same.reason)
            # `dvc repro` removes the stage's output before it runs: write it then, but leave the serving
            # version's own record alone otherwise, so a no-op reindex keeps `dvc status` clean
            if not (ws.reports / "index.json").exists():
                write_json(ws.reports / "index.json", same.record())
            return same
    spec_bcfg = spec.backbone_config()
    backbone = ws.backbone(spec_bcfg)
    if isinstance(calibration, SplitQueries):
        calibration.use(backbone)           # the query encoder search uses: the champion's backbone
    pruner = spec.pruner()          # everything (window, γ, κ) from the spec: nothing recomputed here
    capture = spec.capture(backbone.num_layers)
    pages = list(ws.dataset.pages())
    build_key = {"backbone_id": spec_bcfg.model_id, "backbone_revision": spec_bcfg.revision,
                 "method": spec.method, "gamma": spec.gamma, "window": candidate.window or "-",
                 "kappa": spec.kappa}
    serving = None if broken is not None else index.current()
    served_key = {k: (serving.manifest.get("meta") or serving.manifest).get(k) for k in build_key} if serving else None
    # unchanged pages are reused only when the serving version was built with the same pruning config
    existing = index.existing_hashes() if serving is not None and served_key == build_key else {}
    # a page whose stored vectors fail their checksum is re-encoded, never copied forward
    damaged = set(index.damaged_pages([p.page_id for p in pages if existing.get(p.page_id) == p.content_hash])
                  if existing else ())
    if damaged:
        log.warning("index: %d stored pages fail their checksum and are re-encoded: %s", len(damaged),
                    sorted(damaged)[:5])
    changed = [p for p in pages if existing.get(p.page_id) != p.content_hash or p.page_id in damaged]
    changed_ids = {p.page_id for p in changed}
    keep = [p.page_id for p in pages if p.page_id not in changed_ids]

    def pruned_pages():
        """Encode (through the cache) and prune ``changed`` a chunk at a time: the build consumes a generator,
        so at most one chunk's features are alive however large the corpus (all-layer features of 10k pages
        would be ~10 GB)."""
        for start in range(0, len(changed), INDEX_CHUNK_PAGES):
            chunk = changed[start:start + INDEX_CHUNK_PAGES]
            feats = encode_pages(backbone, chunk, capture, ws.features_dir, spec_bcfg.batch_size,
                                 ws.settings.encode.claim_ttl_s)
            for p in chunk:
                yield pruner.prune(feats.pop(p.page_id), spec.gamma)

    meta = {**ws.meta(spec_bcfg, backbone), **build_key, "model": model_name(bcfg.name, identity),
            "model_version": spec.version, "spec": json.loads(spec.to_json()), "stale": stale or "",
            "dataset_hash": dataset_hash, "index_config": index_config_key(ws)}
    version = index.build(pruned_pages(), meta, reuse=keep)
    result = IndexBuildResult(
        index=ws.settings.index.name, backend=ws.settings.index.backend, version=version.number,
        pages=version.pages, vectors=version.vectors, bytes=version.bytes, reencoded_pages=len(changed),
        reused_pages=len(keep), rebuilt=True, meta={k: v for k, v in meta.items() if k != "spec"},
        reason=f"built from champion {meta['model']} v{spec.version} and data {meta['data_version']}")
    index.swap(version, expected=started_from)      # compare-and-swap: never backwards; the commit point
    return _after_swap(ws, index, result)


def _after_swap(ws: Workspace, index, result: IndexBuildResult) -> IndexBuildResult:
    """Retention and the report, after the commit point: a failure is a warning naming what serves now."""
    warnings = []
    steps = (("removing old versions", lambda: index.prune_versions(ws.settings.index.keep_versions)),
             (f"writing {ws.reports / 'index.json'}", lambda: write_json(ws.reports / "index.json", result.record())))
    for what, step in steps:
        try:
            step()
        except Exception as exc:        # noqa: BLE001 - the new version serves: nothing after the swap fails the stage
            msg = " ".join(str(exc).split()) or type(exc).__name__
            warnings.append(f"index {result.index} now serves v{result.version}, but {what} failed: {msg} "
                            "(run `anchorprune index build` again once that is fixed)")
            log.warning("%s", warnings[-1])
    return result.model_copy(update={"warnings": tuple(warnings)}) if warnings else result
