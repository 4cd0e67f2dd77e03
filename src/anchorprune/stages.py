"""The pipeline stages as plain functions: the CLI (and so ``dvc repro``) and the Prefect flows call these.

Each stage reads its inputs from disk (dataset, features cache, ``reports/``),
writes its outputs atomically under ``reports/`` and logs to MLflow. Every
artefact records the data version, backbone id + revision, config hash and git commit.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from anchorprune.backbones.base import LayerCapture
from anchorprune.calibration import CalibrationResult, calibrate, calibration_pairs
from anchorprune.config import BackboneConfig, Settings
from anchorprune.encoding import EncodedCorpus, encode_dataset
from anchorprune.evaluation import EvaluationResult, evaluate_grid
from anchorprune.ioutil import write_json
from anchorprune.promotion import Candidate, Decision, certified_candidates
from anchorprune.tracking import Tracker, git_commit

log = logging.getLogger(__name__)


__all__ = ["write_json"]  # re-exported from anchorprune.ioutil (its home)


@dataclass
class Workspace:
    """Where a pipeline run reads and writes: the settings plus the project root."""

    settings: Settings
    root: Path

    def path(self, p: Path | str) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    @property
    def dataset_dir(self) -> Path:
        return self.path(self.settings.paths.data_dir) / self.settings.data.dataset

    @property
    def reports(self) -> Path:
        return self.path(self.settings.paths.reports_dir)

    @property
    def features_dir(self) -> str | Path:
        """The features cache: a folder under the root, or an fsspec URL (``paths.features_dir``)."""
        return self.settings.paths.resolve(self.settings.paths.features_dir, self.root)

    @cached_property
    def tracker(self) -> Tracker:
        return Tracker.from_config(self.settings.tracking, self.root)

    def check_dataset(self) -> str:
        """Run the GX suites on the dataset before a stage uses it; a pass is cached by content hash.

        Raises :class:`~anchorprune.data.validation.DataValidationError` (duplicate page ids,
        qrels to missing pages, ...) before anything is written or logged.
        """
        from anchorprune.data.validation import ensure_valid

        return ensure_valid(self.dataset_dir, self.path(self.settings.paths.validation_dir))

    @cached_property
    def dataset(self):
        from anchorprune.data.schema import load_dataset_dir

        self.check_dataset()
        return load_dataset_dir(self.dataset_dir)

    def split(self) -> tuple[list[str], list[str]]:
        from anchorprune.data.schema import split_queries

        d = self.settings.data
        calib, evalq = split_queries(self.dataset, d.calibration_fraction, d.seed)
        return list(calib), list(evalq)

    def data_version(self) -> str:
        from anchorprune.data.versioning import data_version

        try:
            return data_version(self.root) or "untracked"
        except Exception as exc:  # noqa: BLE001 - an untracked dataset is still usable
            log.warning("data version unknown (%s); recording 'untracked'", exc)
            return "untracked"

    def languages(self) -> str:
        """Which query languages the dataset holds (``all``, ``english``, ...; ``n/a`` without a filter)."""
        from anchorprune.data.schema import MANIFEST_FILE
        from anchorprune.data.vidore import languages_label

        try:
            return languages_label(json.loads((self.dataset_dir / MANIFEST_FILE).read_text()))
        except (OSError, ValueError):
            return "n/a"

    def meta(self, bcfg: BackboneConfig, backbone: Any | None = None) -> dict[str, str]:
        return {
            "data_version": self.data_version(),
            "dataset": self.settings.data.dataset,
            "languages": self.languages(),
            "backbone": bcfg.name,
            "backbone_kind": bcfg.kind,
            "backbone_id": getattr(backbone, "model_id", bcfg.model_id),
            "backbone_revision": getattr(backbone, "revision", bcfg.revision),
            "config_hash": self.settings.config_hash(),
            "git_commit": git_commit(self.root),
        }

    def backbone(self, bcfg: BackboneConfig):
        from anchorprune.backbones import load_backbone

        if bcfg.kind != "mock":
            quiet_weight_loading()
        return load_backbone(bcfg)


def quiet_weight_loading() -> None:
    """Turn off transformers' "Loading weights n/n" bar (printed on every model load, every search).

    Only transformers' own bars: hub download bars stay on (a real checkpoint download is worth
    watching) unless HF_HUB_DISABLE_PROGRESS_BARS is set.
    """
    import os

    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as hf_logging

    if hf_logging.is_progress_bar_enabled():
        hf_logging.disable_progress_bar()          # also turns the hub's bars off ...
        if not os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"):
            enable_progress_bars()                 # ... so turn those back on


# ---------------------------------------------------------------- data
def stage_data(ws: Workspace, rebuild: bool = False) -> str:
    """Build (or reuse) the configured dataset, validate it (GX), track data/ with DVC; returns the data version."""
    from anchorprune.data.versioning import dvc_add

    if rebuild or not ws.dataset_dir.exists():
        from anchorprune.data.build import build_dataset

        build_dataset(ws.settings, ws.root, rebuild=rebuild)   # staged: validated before it replaces anything
    ws.check_dataset()                                         # records the verdict for the later stages
    version = dvc_add(ws.root, ws.path(ws.settings.paths.data_dir), push=True)
    ws.__dict__.pop("dataset", None)                     # reload after a rebuild
    return version


# ---------------------------------------------------------------- encode
def load_corpus(ws: Workspace, bcfg: BackboneConfig, backbone: Any | None = None,
                capture: LayerCapture | None = None) -> EncodedCorpus:
    """Every page (all layers captured unless told) and every query; the features cache makes reruns cheap."""
    return encode_dataset(
        backbone or ws.backbone(bcfg), ws.dataset.pages(), ws.dataset.queries, capture or LayerCapture.all(),
        ws.features_dir, bcfg.batch_size, ws.settings.encode.claim_ttl_s,
    )


def plan_encode(ws: Workspace, bcfg: BackboneConfig, backbone: Any | None = None) -> list[list]:
    """The pages the encode stage still has to run the model on, in shards of ``encode.shard_pages``."""
    from anchorprune.encoding import missing_pages, plan_shards

    backbone = backbone or ws.backbone(bcfg)
    missing = missing_pages(ws.features_dir, backbone, ws.dataset.pages(), LayerCapture.all())
    return plan_shards(missing, ws.settings.encode.shard_pages)


def stage_encode(ws: Workspace, bcfg: BackboneConfig, backbone: Any | None = None) -> EncodedCorpus:
    """The encode stage: fill the features cache and write a summary under reports/encode/."""
    backbone = backbone or ws.backbone(bcfg)
    corpus = load_corpus(ws, bcfg, backbone)
    write_json(ws.reports / "encode" / f"{bcfg.name}.json", {
        **ws.meta(bcfg, backbone), "pages": len(corpus.features), "queries": len(corpus.queries),
        "num_layers": corpus.num_layers,
        "tokens_per_page": sum(f.num_tokens for f in corpus.features.values()) / max(1, len(corpus.features)),
    })
    return corpus


# ---------------------------------------------------------------- calibrate
def stage_calibrate(ws: Workspace, bcfg: BackboneConfig, corpus: EncodedCorpus | None = None,
                    backbone: Any | None = None) -> CalibrationResult:
    from anchorprune.plots import sr_curve_figure

    backbone = backbone or (None if corpus else ws.backbone(bcfg))
    corpus = corpus or load_corpus(ws, bcfg, backbone)
    c = ws.settings.calibrate
    calib_qids, _ = ws.split()
    pairs = calibration_pairs(ws.dataset.qrels, calib_qids, corpus.page_ids, c.pairs, c.seed)
    result = calibrate(corpus, pairs, gamma=c.gamma, rho=c.rho, random_trials=c.random_trials, seed=c.seed)
    meta = ws.meta(bcfg, backbone)
    out = ws.reports / "calibration"
    result.save(out / f"{bcfg.name}.json")
    _write_csv(out / "sr_curve.csv", [
        {"backbone": bcfg.name, "layer": i, "sr_mean": m, "sr_std": s, "random_mean": r}
        for i, (m, s, r) in enumerate(zip(result.sr_mean, result.sr_std, result.random_mean, strict=True))
    ], replace_key=("backbone", bcfg.name))

    t = ws.tracker
    with t.run(f"calibrate-{bcfg.name}", params={**meta, "gamma": c.gamma, "rho": c.rho, "pairs": result.num_pairs},
               tags={"anchorprune.stage": "calibrate", "anchorprune.backbone": bcfg.name}) as run_id:
        t.log_series(run_id, "sr_by_layer", result.sr_mean)
        t.log_series(run_id, "sr_by_layer_std", result.sr_std)
        t.log_series(run_id, "sr_random_by_layer", result.random_mean)
        peak = max(range(len(result.sr_mean)), key=lambda i: result.sr_mean[i])
        # the run overview shows a series' LAST step; the summary metrics say what matters
        t.log_metrics(run_id, {"sr_peak": result.sr_mean[peak], "sr_peak_layer": peak,
                               "sr_window_mean": sum(result.sr_mean[i] for i in result.window) / len(result.window),
                               "window_start": result.window[0], "window_end": result.window[-1],
                               "alpha": result.alpha, "beta": result.beta, "sr_median": result.median,
                               "excluded_pairs": result.excluded_pairs, "num_pairs": result.num_pairs})
        t.log_params(run_id, {"window": f"{result.window[0]}-{result.window[-1]}"})
        fig = sr_curve_figure(result.sr_mean, result.sr_std, result.random_mean, result.window,
                              f"{bcfg.name}: score retention by layer", result.gamma)
        fig.savefig(out / f"{bcfg.name}_sr_by_layer.png", dpi=110)
        t.log_figure(run_id, fig, "sr_by_layer.png")  # closes the figure
        t.log_dict(run_id, asdict(result), "calibration.json")
    log.info("calibrated %s: window %s (alpha %.2f, beta %.2f)", bcfg.name, result.window, result.alpha, result.beta)
    return result


# ---------------------------------------------------------------- evaluate
def resolve_windows(specs: tuple[str, ...], kind: str, num_layers: int, sr_window: list[int]) -> dict[str, list[int]]:
    from anchorprune.retention import resolve_window

    out: dict[str, list[int]] = {}
    for spec in specs:
        try:
            out[spec] = list(resolve_window(spec, num_layers, sr_window=sr_window, kind=kind))
        except (KeyError, ValueError) as exc:
            log.warning("window %r skipped for %s: %s", spec, kind, exc)
    if not out:
        raise ValueError(f"none of the windows {specs} applies to backbone kind {kind!r}")
    return out


def stage_evaluate(ws: Workspace, bcfg: BackboneConfig, corpus: EncodedCorpus | None = None,
                   calibration: CalibrationResult | None = None, backbone: Any | None = None,
                   map_jobs: Any | None = None) -> EvaluationResult:
    """The evaluate stage; ``map_jobs`` runs the grid's config groups elsewhere (a Dask cluster, flows/evaluate.py)."""
    import pandas as pd

    from anchorprune.plots import retention_figure

    backbone = backbone or (None if corpus else ws.backbone(bcfg))
    corpus = corpus or load_corpus(ws, bcfg, backbone)
    calibration = calibration or CalibrationResult.load(ws.reports / "calibration" / f"{bcfg.name}.json")
    e = ws.settings.evaluate
    calib_qids, eval_qids = ws.split()
    windows = resolve_windows(e.windows, bcfg.kind, corpus.num_layers, calibration.window)
    calib_pages = {p for q in calib_qids for p in ws.dataset.qrels.get(q, {})}
    result = evaluate_grid(
        corpus, ws.dataset.qrels, eval_qids, e.methods, e.gammas, windows,
        random_trials=e.random_trials, seed=e.seed, ks=e.ks,
        kappa_calibration=[corpus.features[p] for p in sorted(calib_pages) if p in corpus.features] or None,
        extra_configs=champion_config(ws, bcfg),
        query_sources=ws.dataset.query_sources, page_sources=ws.dataset.page_sources,   # SPEC §5 per dataset
        map_jobs=map_jobs,
    )
    meta = ws.meta(bcfg, backbone)
    result.meta = meta
    protocol = {"sources": json.dumps(result.sources)} if result.sources else {}
    p = ws.settings.promote
    intervals = {(c.method, round(c.gamma, 6), c.window): c for c in certified_candidates(
        result, bcfg.name, resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.bootstrap_seed,
        groups=result.query_sources or None)}
    out = ws.reports / "evaluation"
    out.mkdir(parents=True, exist_ok=True)

    t = ws.tracker
    with t.run(f"evaluate-{bcfg.name}", params={**meta, "gammas": list(e.gammas), "methods": list(e.methods),
                                                "windows": json.dumps(windows), "queries": result.num_queries,
                                                **protocol},
               tags={"anchorprune.stage": "evaluate", "anchorprune.backbone": bcfg.name}) as parent:
        for cfg in [result.full, *result.configs]:
            with t.run(cfg.label + f"@{cfg.gamma:g}", parent_run_id=parent,
                       params={**meta, "method": cfg.method, "gamma": cfg.gamma, "window": cfg.window or "-",
                               "window_spec": cfg.window_spec or "-"},
                       tags={"anchorprune.stage": "evaluate-config", "anchorprune.backbone": bcfg.name}) as child:
                ci = intervals.get(cfg.key)
                t.log_metrics(child, {**{_mkey(k): v for k, v in cfg.metrics.items()},
                                      **(_ci_metrics(ci) if ci else {}),
                                      "ndcg_retention": cfg.ndcg_retention,
                                      "sr_ratio_of_means": cfg.sr_ratio_of_means,
                                      "sr_mean_of_ratios": cfg.sr_mean_of_ratios,
                                      "sr_excluded_pairs": cfg.sr_excluded_pairs,
                                      "vectors_per_page": cfg.vectors_per_page,
                                      "bytes_per_page": cfg.bytes_per_page,
                                      "realised_gamma": cfg.realised_gamma,
                                      **{k: v for k, v in cfg.extra.items() if k.startswith("per_source/")}})
            cfg.run_id = child
        result.parent_run_id = parent
        # after the child runs exist, so every row carries its run id; intervals beside the point estimates
        rows = [{**r, **_ci_metrics(intervals.get((r["method"], round(r["gamma"], 6), r["window"])))}
                for r in result.rows()]
        pruned_rows = [r for r in rows if r["method"] != "full"]
        t.log_table(parent, pd.DataFrame(rows), "comparison")
        fig = retention_figure(pruned_rows, f"{bcfg.name}: nDCG@5 retention vs γ")
        fig.savefig(out / f"{bcfg.name}_ndcg_retention.png", dpi=110)
        t.log_figure(parent, fig, "ndcg_retention_vs_gamma.png")
        fig = retention_figure(pruned_rows, f"{bcfg.name}: score retention vs γ", metric="sr_ratio_of_means")
        t.log_figure(parent, fig, "sr_vs_gamma.png")
        t.log_metrics(parent, {"full_ndcg_at_5": result.full.metrics.get("ndcg@5", 0.0)})
    _write_csv(out / "results.csv", [{**r, "backbone": bcfg.name} for r in rows], replace_key=("backbone", bcfg.name))
    _update_metrics(ws.reports / "metrics.json", bcfg.name, result)
    _update_metrics_file(ws.path(ws.settings.paths.metrics_file), bcfg.name, headline_metrics(result))
    result.save(out / f"{bcfg.name}.json")
    return result


def _ci_metrics(c: Candidate | None) -> dict[str, float]:
    """The bootstrap interval of a candidate as metrics/columns (none for full or an unknown config)."""
    if c is None or c.retention_low is None:
        return {}
    out = {"retention_low": c.retention_low, "retention_high": c.retention_high}
    if c.vs_random_low is not None:
        out.update({"vs_random_low": c.vs_random_low, "vs_random_high": c.vs_random_high})
    return out


def champion_config(ws: Workspace, bcfg: BackboneConfig) -> list[tuple[str, float, list[int] | None]]:
    """The current champion's (method, γ, window) for this backbone, to re-evaluate it with the grid."""
    from anchorprune.registry import current_champion

    champ = current_champion(ws.tracker, bcfg.name)
    if champ is None:
        return []
    _, spec = champ
    return [(spec.method, spec.gamma, spec.window)]


def _mkey(k: str) -> str:
    """MLflow metric names: 'ndcg@5' -> 'ndcg_at_5'."""
    return k.replace("@", "_at_")


def candidates_from(result: EvaluationResult, backbone: str, ws: Workspace | None = None) -> list[Candidate]:
    """Certified candidates (bootstrap intervals with the promote settings of ``ws``, else the defaults)."""
    groups = result.query_sources or None     # several sources: macro average, resampled within each source
    if ws is None:
        return certified_candidates(result, backbone, groups=groups)
    p = ws.settings.promote
    return certified_candidates(result, backbone, resamples=p.bootstrap_resamples, confidence=p.confidence,
                                seed=p.bootstrap_seed, groups=groups)


# ---------------------------------------------------------------- promote
def stage_promote(ws: Workspace, bcfg: BackboneConfig, evaluation: EvaluationResult | None = None) -> Decision:
    from anchorprune.registry import ChampionSpec, promote

    ws.check_dataset()  # promote reads no pages, but must not promote what a broken dataset scored
    if evaluation is None:
        evaluation = load_evaluation(ws.reports / "evaluation" / f"{bcfg.name}.json", bcfg.name)
    p = ws.settings.promote
    meta = ws.meta(bcfg)
    if evaluation.meta.get("config_hash") not in (None, meta["config_hash"]):
        log.warning("the evaluation of %s was made with config %s, the config is now %s: "
                    "rerun `anchorprune evaluate` for figures of the current config",
                    bcfg.name, evaluation.meta.get("config_hash"), meta["config_hash"])
    t = ws.tracker
    with t.run(f"promote-{bcfg.name}", params={**meta, "min_retention": p.min_retention,
                                               "require_beats_random": p.require_beats_random,
                                               "confidence": p.confidence, "resamples": p.bootstrap_resamples,
                                               "min_queries": p.min_queries},
               tags={"anchorprune.stage": "promote", "anchorprune.backbone": bcfg.name}) as run_id:
        cands = candidates_from(evaluation, bcfg.name, ws)
        revision = evaluation.meta.get("backbone_revision")

        def spec_for(c: Candidate) -> ChampionSpec:
            from anchorprune.windows import window_layers

            return ChampionSpec(backbone=bcfg.model_dump(mode="json"), method=c.method, gamma=c.gamma,
                                window=window_layers(c.window) if c.window else None, candidate=asdict(c),
                                kappa=c.kappa, resolved_revision=revision)

        decision, version = promote(t, run_id, cands, spec_for, p.min_retention, p.require_beats_random,
                                    min_queries=p.min_queries)
    from anchorprune.registry import decision_record

    write_json(ws.reports / "promotion" / f"{bcfg.name}.json", {**decision_record(decision, version, cands),
                                                                "meta": meta})
    return decision


def load_evaluation(path: Path, backbone: str | None = None) -> EvaluationResult:
    """Read an evaluation written by :func:`stage_evaluate` (the pydantic model's own JSON)."""
    result = EvaluationResult.load(path)
    if backbone is not None and result.backbone != backbone:
        log.debug("evaluation %s is of corpus backbone %r (asked %r)", path, result.backbone, backbone)
    return result


def _write_csv(path: Path, rows: list[dict], replace_key: tuple[str, str]) -> None:
    """Write rows into a CSV shared by backbones, replacing this backbone's old rows."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path)
        if replace_key[0] in old.columns:
            old = old[old[replace_key[0]] != replace_key[1]]
        frame = pd.concat([old, frame], ignore_index=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def _update_metrics(path: Path, backbone: str, result: EvaluationResult) -> None:
    """DVC metrics: per backbone, nDCG@5 retention and SR of each config."""
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[backbone] = {
        "full_ndcg_at_5": round(result.full.metrics.get("ndcg@5", 0.0), 4),
        **{f"{c.label}@{c.gamma:g}": {"ndcg_retention": round(c.ndcg_retention, 4),
                                      "sr": round(c.sr_ratio_of_means, 4),
                                      "vectors_per_page": round(c.vectors_per_page, 1)} for c in result.configs},
    }
    write_json(path, metrics)


def headline_metrics(result: EvaluationResult) -> dict:
    """The few numbers `dvc metrics show/diff` compares, per backbone: full nDCG@5, then per γ the
    nDCG@5 retention of SAP (its first window spec) and of random pruning (``sap@0.1``, ``random@0.1``)."""
    out: dict = {"ndcg@5": round(result.full.metrics.get("ndcg@5", 0.0), 4)}
    for method in ("sap", "random"):
        for g in sorted({c.gamma for c in result.configs}, reverse=True):
            found = [c for c in result.configs if c.method == method and c.gamma == g]
            if found:
                out[f"{method}@{g:g}"] = round(found[0].ndcg_retention, 4)
    return out


def _update_metrics_file(path: Path, backbone: str, values: dict) -> None:
    """Replace one backbone's entry in the small, git-tracked headline metrics file (stable key order)."""
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[backbone] = values
    write_json(path, metrics)


# ---------------------------------------------------------------- index
def index_backbone(ws: Workspace) -> BackboneConfig:
    """The backbone whose champion the index serves (``index.backbone``, else the first listed)."""
    name = ws.settings.index.backbone or (ws.settings.backbones[0].name if ws.settings.backbones else None)
    if name is None:
        raise IndexStageError("params.yaml lists no backbones: nothing to index; add one under `backbones:`")
    return ws.settings.backbone(name)


def open_serving_index(ws: Workspace):
    from anchorprune.index import open_index
    from anchorprune.index.local import index_root

    return open_index(ws.settings.index, index_root(ws.settings.paths.resolve(ws.settings.paths.index_dir, ws.root)))


def index_config_key(ws: Workspace) -> dict:
    """The index settings a built version depends on (``keep_versions`` only prunes, so it is left out)."""
    return ws.settings.index.model_dump(mode="json", exclude={"keep_versions"})


def serving_is_current(ws: Workspace, index, model: str, model_version: str | int | None,
                       dataset_hash: str) -> dict | None:
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
    return {"index": ws.settings.index.name, "backend": ws.settings.index.backend, "version": serving.number,
            "pages": serving.pages, "vectors": serving.vectors, "bytes": serving.bytes,
            "reencoded_pages": 0, "reused_pages": serving.pages, **meta, "rebuilt": False,
            "reason": f"champion {model} v{model_version}, data {data_version} and the index config are "
                      f"unchanged since v{serving.number}: nothing rebuilt"}


class IndexStageError(LookupError):
    """The index stage cannot start: no backbone configured, or no ``@champion`` in the registry."""


def stage_index(ws: Workspace, wait: bool = False, force: bool = False) -> dict:
    """Build a new index version from ``@champion`` and swap it in; the serving version is untouched on failure.

    The build lock is held for the whole rebuild (read the champion, encode, build, verify,
    swap, prune), whoever runs it (CLI, Prefect, ``dvc repro``, cron): a second one is refused
    at once naming the holder, or queues with ``wait=True``. The swap is a compare-and-swap
    against the version the rebuild started from, so it never moves the index backwards.
    Nothing is built when the serving version already has this champion, data and index
    config and its stored pages pass their checksums (:func:`serving_is_current`; ``force``
    rebuilds anyway).
    """
    index = open_serving_index(ws)
    with index.rebuild(wait=wait) as started_from:
        return _stage_index_locked(ws, index, started_from, force=force)


INDEX_CHUNK_PAGES = 256         # pages encoded and pruned per step of an index build (bounds its memory)


def _stage_index_locked(ws: Workspace, index, started_from: int | None, force: bool = False) -> dict:
    """:func:`stage_index`'s body, run with the build lock held.

    Pages whose content hash is already in the serving version are not re-encoded;
    the rest, and reused pages whose stored vectors fail their checksum, are encoded with
    window-only capture (through the features cache).
    """
    from anchorprune.encoding import encode_pages
    from anchorprune.registry import current_champion, model_name, stale_reason

    bcfg = index_backbone(ws)
    champ = current_champion(ws.tracker, bcfg.name)
    if champ is None:
        raise IndexStageError(
            f"no '{model_name(bcfg.name)}@champion' in the registry: run `anchorprune promote` first "
            f"(if it ran, no candidate passed the gate: see reports/promotion/{bcfg.name}.json)"
        )
    candidate, spec = champ
    stale = stale_reason(ws.tracker, bcfg.name)
    if stale:
        log.warning("serving a STALE champion %s v%s: %s", candidate.name, spec.version, stale)
    dataset_hash = ws.check_dataset()
    if not force:
        same = serving_is_current(ws, index, model_name(bcfg.name), spec.version, dataset_hash)
        # a serving version whose stored pages fail their checksums is rebuilt (damaged pages re-encoded)
        if same is not None and not index.damaged_pages(ws.dataset.page_ids):
            log.info("index %s: %s", same["index"], same["reason"])
            same = {k: v for k, v in same.items() if k != "spec"}
            # `dvc repro` removes the stage's output before it runs: write it then, but leave the serving
            # version's own record alone otherwise, so a no-op reindex keeps `dvc status` clean
            if not (ws.reports / "index.json").exists():
                write_json(ws.reports / "index.json", same)
            return same
    spec_bcfg = spec.backbone_config()
    backbone = ws.backbone(spec_bcfg)
    pruner = spec.pruner()          # everything (window, γ, κ) from the spec: nothing recomputed here
    capture = spec.capture(backbone.num_layers)
    pages = list(ws.dataset.pages())
    build_key = {"backbone_id": spec_bcfg.model_id, "backbone_revision": spec_bcfg.revision,
                 "method": spec.method, "gamma": spec.gamma, "window": candidate.window or "-",
                 "kappa": spec.kappa}
    serving = index.current()
    served_key = {k: (serving.manifest.get("meta") or serving.manifest).get(k) for k in build_key} if serving else None
    # unchanged pages are reused only when the serving version was built with the same pruning config
    existing = index.existing_hashes() if served_key == build_key else {}
    # a page whose stored vectors fail their checksum is re-encoded, never copied forward
    damaged = set(index.damaged_pages([p.page_id for p in pages if existing.get(p.page_id) == p.content_hash]))
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

    meta = {**ws.meta(spec_bcfg, backbone), **build_key, "model": model_name(bcfg.name),
            "model_version": spec.version, "spec": json.loads(spec.to_json()), "stale": stale or "",
            "dataset_hash": dataset_hash, "index_config": index_config_key(ws)}
    version = index.build(pruned_pages(), meta, reuse=keep)
    index.swap(version, expected=started_from)      # compare-and-swap: never backwards
    index.prune_versions(ws.settings.index.keep_versions)
    info = {"index": ws.settings.index.name, "backend": ws.settings.index.backend, "version": version.number,
            "pages": version.pages, "vectors": version.vectors, "bytes": version.bytes,
            "reencoded_pages": len(changed), "reused_pages": len(keep),
            **{k: v for k, v in meta.items() if k != "spec"}, "rebuilt": True,
            "reason": f"built from champion {meta['model']} v{spec.version} and data {meta['data_version']}"}
    write_json(ws.reports / "index.json", info)
    return info


def serving_spec(ws: Workspace, index=None):
    """The champion spec the serving index version was built from (its manifest), else ``@champion``'s."""
    from anchorprune.registry import ChampionSpec, current_champion

    index = index or open_serving_index(ws)
    serving = index.current()
    blob = ((serving.manifest.get("meta") or {}).get("spec") if serving else None)
    if blob:
        return ChampionSpec.from_json(json.dumps(blob))
    champ = current_champion(ws.tracker, index_backbone(ws).name)
    if champ is None:
        raise RuntimeError("nothing to search: no serving index version and no champion (run `anchorprune index`)")
    return champ[1]


def stage_search(ws: Workspace, query: str, k: int = 10) -> list:
    """Search the serving index, encoding the query with the backbone that built it (the champion's)."""
    return stage_search_report(ws, query, k)[0]


def stage_search_report(ws: Workspace, query: str, k: int = 10) -> tuple[list, Any]:
    """:func:`stage_search` plus the index's search report (first stage, float32/bfloat16 compute) where it
    gives one (the local index's ``search_report``), else ``None``."""
    index = open_serving_index(ws)
    spec = serving_spec(ws, index)
    qvecs = ws.backbone(spec.backbone_config()).encode_queries([query])[0]  # [m, d]
    if hasattr(index, "search_report"):
        hits, report = index.search_report([qvecs], k)
        return hits[0], report
    return index.search(qvecs, k), None
