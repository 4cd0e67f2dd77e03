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
from anchorprune.promotion import Candidate, Decision
from anchorprune.tracking import Tracker, git_commit

log = logging.getLogger(__name__)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


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
    def features_dir(self) -> Path:
        return self.path(self.settings.paths.features_dir)

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
        ws.features_dir, bcfg.batch_size,
    )


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
        t.log_metrics(run_id, {"window_start": result.window[0], "window_end": result.window[-1],
                               "alpha": result.alpha, "beta": result.beta, "sr_median": result.median,
                               "excluded_pairs": result.excluded_pairs, "num_pairs": result.num_pairs})
        t.log_params(run_id, {"window": f"{result.window[0]}-{result.window[-1]}"})
        fig = sr_curve_figure(result.sr_mean, result.sr_std, result.random_mean, result.window,
                              f"{bcfg.name}: score retention by layer", result.gamma)
        t.log_figure(run_id, fig, "sr_by_layer.png")
        fig.savefig(out / f"{bcfg.name}_sr_by_layer.png", dpi=110)
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
                   calibration: CalibrationResult | None = None, backbone: Any | None = None) -> EvaluationResult:
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
        query_sources=ws.dataset.query_sources, page_sources=ws.dataset.page_sources,   # SPEC §5 per dataset
    )
    meta = ws.meta(bcfg, backbone)
    protocol = {"sources": json.dumps(result.sources)} if result.sources else {}
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
                t.log_metrics(child, {**{_mkey(k): v for k, v in cfg.metrics.items()},
                                      "ndcg_retention": cfg.ndcg_retention,
                                      "sr_ratio_of_means": cfg.sr_ratio_of_means,
                                      "sr_mean_of_ratios": cfg.sr_mean_of_ratios,
                                      "sr_excluded_pairs": cfg.sr_excluded_pairs,
                                      "vectors_per_page": cfg.vectors_per_page,
                                      "bytes_per_page": cfg.bytes_per_page,
                                      "realised_gamma": cfg.realised_gamma,
                                      **{k: v for k, v in cfg.extra.items() if k.startswith("per_source/")}})
            cfg.run_id = child
        rows = result.rows()  # after the child runs exist, so every row carries its run id
        pruned_rows = [r for r in rows if r["method"] != "full"]
        t.log_table(parent, pd.DataFrame(rows), "comparison")
        fig = retention_figure(pruned_rows, f"{bcfg.name}: nDCG@5 retention vs γ")
        t.log_figure(parent, fig, "ndcg_retention_vs_gamma.png")
        fig.savefig(out / f"{bcfg.name}_ndcg_retention.png", dpi=110)
        fig = retention_figure(pruned_rows, f"{bcfg.name}: score retention vs γ", metric="sr_ratio_of_means")
        t.log_figure(parent, fig, "sr_vs_gamma.png")
        t.log_metrics(parent, {"full_ndcg_at_5": result.full.metrics.get("ndcg@5", 0.0)})
    _write_csv(out / "results.csv", [{**r, "backbone": bcfg.name} for r in rows], replace_key=("backbone", bcfg.name))
    _update_metrics(ws.reports / "metrics.json", bcfg.name, result)
    _update_metrics_file(ws.path(ws.settings.paths.metrics_file), bcfg.name, headline_metrics(result))
    write_json(out / f"{bcfg.name}.json", {"meta": meta, "rows": rows, "parent_run_id": parent,
                                          "num_queries": result.num_queries, "num_pages": result.num_pages,
                                          **({"sources": result.sources} if result.sources else {})})
    return result


def _mkey(k: str) -> str:
    """MLflow metric names: 'ndcg@5' -> 'ndcg_at_5'."""
    return k.replace("@", "_at_")


def candidates_from(result: EvaluationResult, backbone: str) -> list[Candidate]:
    return [
        Candidate(backbone, c.method, c.gamma, c.window, c.ndcg_retention, c.vectors_per_page,
                  result.random_retention(c.gamma), c.run_id)
        for c in result.configs
    ]


# ---------------------------------------------------------------- promote
def stage_promote(ws: Workspace, bcfg: BackboneConfig, evaluation: EvaluationResult | None = None) -> Decision:
    from anchorprune.registry import ChampionSpec, promote

    ws.check_dataset()  # promote reads no pages, but must not promote what a broken dataset scored
    if evaluation is None:
        evaluation = load_evaluation(ws.reports / "evaluation" / f"{bcfg.name}.json", bcfg.name)
    p = ws.settings.promote
    meta = ws.meta(bcfg)
    t = ws.tracker
    with t.run(f"promote-{bcfg.name}", params={**meta, "min_retention": p.min_retention,
                                               "require_beats_random": p.require_beats_random},
               tags={"anchorprune.stage": "promote", "anchorprune.backbone": bcfg.name}) as run_id:
        cands = candidates_from(evaluation, bcfg.name)

        def spec_for(c: Candidate) -> ChampionSpec:
            window = list(range(int(c.window.split("-")[0]), int(c.window.split("-")[1]) + 1)) if c.window else None
            return ChampionSpec(backbone=bcfg.model_dump(mode="json"), method=c.method, gamma=c.gamma,
                                window=window, candidate=asdict(c))

        decision, version = promote(t, run_id, cands, spec_for, p.min_retention, p.require_beats_random)
    write_json(ws.reports / "promotion" / f"{bcfg.name}.json", {
        "promoted": decision.promoted, "reason": decision.reason, "version": version,
        "champion": asdict(decision.champion) if decision.champion else None,
        "rejected": [{"candidate": n, "why": w} for n, w in decision.rejected], "meta": meta,
    })
    return decision


def load_evaluation(path: Path, backbone: str) -> EvaluationResult:
    from anchorprune.evaluation import ConfigResult

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `anchorprune evaluate` first")
    blob = json.loads(path.read_text())
    fields = set(ConfigResult.__dataclass_fields__)
    rows = []
    for r in blob["rows"]:
        metric_keys = [k for k in r if "@" in k]
        rows.append(ConfigResult(**{k: v for k, v in r.items() if k in fields - {"metrics", "extra"}},
                                 metrics={k: r[k] for k in metric_keys},
                                 extra={k: r[k] for k in r if k.startswith("per_source/")}))
    return EvaluationResult(backbone, rows[0], rows[1:], blob["num_queries"], blob["num_pages"],
                            blob.get("sources", []))


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
        raise ValueError("params.yaml lists no backbones: nothing to index")
    return ws.settings.backbone(name)


def open_serving_index(ws: Workspace):
    from anchorprune.index import open_index

    return open_index(ws.settings.index, ws.path(ws.settings.paths.index_dir))


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
    want = {"model": model, "model_version": str(model_version), "data_version": ws.data_version(),
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
            "reason": f"champion {model} v{model_version}, data {ws.data_version()} and the index config are "
                      f"unchanged since v{serving.number}: nothing rebuilt"}


def stage_index(ws: Workspace, force: bool = False) -> dict:
    """Build a new index version from ``@champion`` and swap it in; the serving version is untouched on failure.

    Nothing is built when the serving version already has this champion, data and index
    config (:func:`serving_is_current`; ``force`` rebuilds anyway). Pages whose content
    hash is already in the serving version are not re-encoded; the rest are encoded with
    window-only capture (through the features cache).
    """
    from anchorprune.encoding import encode_pages
    from anchorprune.pruning import build_pruner
    from anchorprune.registry import current_champion, model_name

    bcfg = index_backbone(ws)
    champ = current_champion(ws.tracker, bcfg.name)
    if champ is None:
        raise RuntimeError(
            f"no '{model_name(bcfg.name)}@champion' in the registry: run `anchorprune promote` first "
            f"(if it ran, no candidate passed the gate: see reports/promotion/{bcfg.name}.json)"
        )
    candidate, spec = champ
    dataset_hash = ws.check_dataset()
    if not force:
        same = serving_is_current(ws, open_serving_index(ws), model_name(bcfg.name), spec.version, dataset_hash)
        if same is not None:
            log.info("index %s: %s", same["index"], same["reason"])
            write_json(ws.reports / "index.json", same)   # `dvc repro` removes the stage's output before it runs
            return same
    spec_bcfg = BackboneConfig(**spec.backbone)
    backbone = ws.backbone(spec_bcfg)
    capture = LayerCapture.window(spec.window or [backbone.num_layers - 1])
    index = open_serving_index(ws)
    pages = list(ws.dataset.pages())
    build_key = {"backbone_id": spec_bcfg.model_id, "backbone_revision": spec_bcfg.revision,
                 "method": spec.method, "gamma": spec.gamma, "window": candidate.window or "-"}
    serving = index.current()
    served_key = {k: (serving.manifest.get("meta") or serving.manifest).get(k) for k in build_key} if serving else None
    # unchanged pages are reused only when the serving version was built with the same pruning config
    existing = index.existing_hashes() if served_key == build_key else {}
    changed = [p for p in pages if existing.get(p.page_id) != p.content_hash]
    feats = encode_pages(backbone, changed, capture, ws.features_dir, spec_bcfg.batch_size) if changed else {}
    kwargs = {"window": spec.window} if spec.window else {}
    if spec.method == "eos_adaptive":
        from anchorprune.pruning.eos import calibrate_kappa

        # κ is label-free (z-scores of the EOS row), so the pages being encoded calibrate it
        kwargs["kappa"] = calibrate_kappa(list(feats.values()), spec.gamma)
    pruner = build_pruner(spec.method, **kwargs)
    pruned = [pruner.prune(feats[p.page_id], spec.gamma) for p in changed]
    keep = [p.page_id for p in pages if p.page_id not in feats]
    meta = {**ws.meta(spec_bcfg, backbone), **build_key, "model": model_name(bcfg.name),
            "model_version": spec.version, "dataset_hash": dataset_hash, "index_config": index_config_key(ws)}
    version = index.build(pruned, meta, reuse=keep)
    index.swap(version)
    index.prune_versions(ws.settings.index.keep_versions)
    info = {"index": ws.settings.index.name, "backend": ws.settings.index.backend, "version": version.number,
            "pages": version.pages, "vectors": version.vectors, "bytes": version.bytes,
            "reencoded_pages": len(changed), "reused_pages": len(keep), **meta, "rebuilt": True,
            "reason": f"built from champion {meta['model']} v{spec.version} and data {meta['data_version']}"}
    write_json(ws.reports / "index.json", info)
    return info


def stage_search(ws: Workspace, query: str, k: int = 10) -> list:
    """Search the serving index with the champion's backbone."""
    bcfg = index_backbone(ws)
    qvecs = ws.backbone(bcfg).encode_queries([query])[0]  # [m, d]
    return open_serving_index(ws).search(qvecs, k)
