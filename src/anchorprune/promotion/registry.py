"""MLflow Model Registry: the "pruned encoder" pyfunc and the ``champion`` alias.

``models:/anchorprune-<backbone>@champion`` both documents the chosen config
(backbone id + revision + pruning config, as version tags and ``config.json``)
and runs it: ``mlflow.pyfunc.load_model(...).predict(pages_frame)`` encodes
pages with the backbone and returns the pruned vectors.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd  # noqa: TC002 - resolved at runtime: MLflow reads predict's type hints

from anchorprune.promotion.rule import Candidate, Decision, choose_champion
from anchorprune.tracking.tracker import Tracker

log = logging.getLogger(__name__)

ALIAS = "champion"


def model_name(backbone: str, identity: str | None = None) -> str:
    """Registered model name for a backbone on a dataset; ``identity`` is the dataset's suffix
    (``settings.data.identity``: ``''`` for the project's own dataset; anchorprune.identity).

    >>> model_name("colqwen2"), model_name("colqwen2", ""), model_name("colqwen2", "-my-pdfs")
    ('anchorprune-colqwen2', 'anchorprune-colqwen2', 'anchorprune-colqwen2-my-pdfs')
    """
    return f"anchorprune-{backbone}{identity or ''}"


@dataclass(frozen=True)
class ChampionSpec:
    """Everything needed to rebuild and query with the champion config, from evaluation to serving.

    The index build, the query encoder at search time and the pyfunc all read it:
    the backbone (id, revision, dtype), the resolved revision the evaluation ran
    with, and the pruner's own arguments (window, γ, κ for eos_adaptive).
    """

    backbone: dict[str, Any]      # BackboneConfig as a dict (model_id, revision, dtype, ...)
    method: str
    gamma: float
    window: list[int] | None
    version: str | None = None
    candidate: dict[str, Any] | None = None
    kappa: float | None = None              # eos_adaptive's κ, calibrated at evaluation time
    resolved_revision: str | None = None    # the revision the backbone reported when evaluated

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ChampionSpec:
        blob = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in blob.items() if k in known})

    def backbone_config(self):
        from anchorprune.config import BackboneConfig

        return BackboneConfig(**self.backbone)

    def pruner(self):
        """The pruner this spec describes, with nothing recomputed (κ comes from the spec)."""
        from anchorprune.pruning import build_pruner

        if self.method == "eos_adaptive" and self.kappa is None:
            raise ValueError(f"champion spec v{self.version}: eos_adaptive without its kappa (registered by an "
                             "older version): rerun `anchorprune promote` after `anchorprune evaluate`")
        return build_pruner(self.method, window=self.window, kappa=self.kappa)

    def capture(self, num_layers: int):
        """Layers to capture at encode time: the window for SAP, else the last layer (EOS attention)."""
        from anchorprune.backbones.base import LayerCapture

        return LayerCapture.window(self.window or [num_layers - 1])


def _pyfunc_class():
    import mlflow.pyfunc

    class PrunedEncoder(mlflow.pyfunc.PythonModel):
        """Encodes pages with the backbone and keeps the champion pruning config's vectors."""

        def load_context(self, context):  # noqa: D401 - MLflow hook
            from anchorprune.backbones import load_backbone
            from anchorprune.config import BackboneConfig

            spec = ChampionSpec.from_json(Path(context.artifacts["config"]).read_text())
            self.spec = spec
            self.backbone = load_backbone(BackboneConfig(**spec.backbone))
            self.pruner = spec.pruner()

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            """``model_input``: DataFrame with ``page_id`` and ``text`` and/or ``image`` (the page image's bytes, or
            base64 text as MLflow's JSON serving sends binary columns). The model never opens a path a client
            names: an ``image_path`` column is refused."""
            from PIL import Image

            from anchorprune.data.schema import page_content_hash
            from anchorprune.pages import Page

            if "image_path" in model_input.columns:
                raise ValueError("image_path is not accepted: send the page image's bytes in the `image` column "
                                 "(the model does not read files named by its caller)")
            pages = []
            for row in model_input.to_dict("records"):
                text = row.get("text")
                data = _image_bytes(row.get("image"))
                image = Image.open(io.BytesIO(data)).convert("RGB") if data else None
                pages.append(Page(str(row["page_id"]), page_content_hash(data, text), image=image, text=text))
            feats = self.backbone.encode_pages(pages, self.spec.capture(self.backbone.num_layers))
            pruned = [self.pruner.prune(f, self.spec.gamma) for f in feats]
            return pd.DataFrame(
                {
                    "page_id": [p.page_id for p in pruned],
                    "n_vectors": [int(p.vectors.shape[0]) for p in pruned],
                    "vectors": [p.vectors.tolist() for p in pruned],
                }
            )

    return PrunedEncoder


def _image_bytes(value: Any) -> bytes | None:
    """The ``image`` cell as bytes: raw bytes, or base64 text (MLflow's JSON encoding of a binary column).

    >>> _image_bytes(b"\\x89PNG"), _image_bytes("iVBORw=="), _image_bytes(None)
    (b'\\x89PNG', b'\\x89PNG', None)
    """
    import base64
    import binascii

    if value is None or (isinstance(value, float) and value != value):      # a missing cell (NaN)
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) or None
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True) or None
        except (binascii.Error, ValueError):
            raise ValueError("image must be the image's bytes, or base64 text of them") from None
    raise ValueError(f"image must be bytes or base64 text, got {type(value).__name__}")


def _signature():
    """The pyfunc's input and output schema (MLflow shows it; predict checks its input against it)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema([ColSpec("string", "page_id"), ColSpec("string", "text", required=False),
                     ColSpec("binary", "image", required=False)])
    outputs = Schema([ColSpec("string", "page_id"), ColSpec("long", "n_vectors"),
                      ColSpec(Array(Array("double")), "vectors")])
    return ModelSignature(inputs=inputs, outputs=outputs)


STALE_TAG = "anchorprune.stale"


def current_champion(tracker: Tracker, backbone: str,
                     identity: str | None = None) -> tuple[Candidate, ChampionSpec] | None:
    """The candidate and spec behind ``@champion`` (of the dataset's model), or ``None`` if there is none."""
    from mlflow.exceptions import MlflowException

    try:
        mv = tracker.client.get_model_version_by_alias(model_name(backbone, identity), ALIAS)
    except MlflowException:
        return None
    spec = ChampionSpec.from_json(_read_spec(tracker, mv))
    return Candidate.from_tags(mv.tags), replace(spec, version=str(mv.version))


def _read_spec(tracker: Tracker, mv) -> str:
    """The spec stored with a model version: its ``config.json`` artifact (older versions: a tag)."""
    if "anchorprune.spec" in mv.tags:
        return mv.tags["anchorprune.spec"]
    import mlflow.artifacts

    location = tracker.client.get_model_version_download_uri(mv.name, mv.version).rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/artifacts/config.json", dst_path=tmp,
                                                   tracking_uri=tracker.uri)
        return Path(path).read_text()


def stale_reason(tracker: Tracker, backbone: str, identity: str | None = None) -> str | None:
    """Why the champion was marked stale by the last promotion (``None`` if it is not)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = tracker.client.get_model_version_by_alias(model_name(backbone, identity), ALIAS)
    except MlflowException:
        return None
    return mv.tags.get(STALE_TAG) or None


def input_example() -> pd.DataFrame:
    """A one-page example of the pyfunc's input (shown by MLflow beside the signature)."""
    return pd.DataFrame({"page_id": ["example-page-1"],
                         "text": ["How can R be installed? Binary distributions are available from CRAN."]})


REPLACED_TAG = "anchorprune.replaced"


def register(tracker: Tracker, run_id: str, candidate: Candidate, spec: ChampionSpec, description: str = "",
             tags: dict[str, str] | None = None, identity: str | None = None) -> str:
    """Log the pruned-encoder pyfunc in ``run_id`` and register it (the dataset's model); returns the new version.

    ``description`` is the version's model card (markdown); ``tags`` are set on the version besides the
    candidate's own (searchable: ``tags.`anchorprune.method` = 'sap'``)."""
    import mlflow

    name = model_name(candidate.backbone, identity)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(spec.to_json())
        with tracker.fluent(), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="pruned_encoder",
                python_model=_pyfunc_class()(),
                artifacts={"config": str(cfg_path)},
                registered_model_name=name,
                pip_requirements=["anchorprune"],
                signature=_signature(),
                input_example=input_example(),
            )
    version = str(info.registered_model_version)
    for k, v in {**candidate.to_tags(), **(tags or {})}.items():
        tracker.client.set_model_version_tag(name, version, k, v)
    if description:
        tracker.client.update_model_version(name, version, description=description[:5000])
    return version


def promote(
    tracker: Tracker,
    run_id: str,
    candidates: list[Candidate],
    spec_for: Any,
    min_retention: float,
    require_beats_random: bool = True,
    min_queries: int = 1,
    card_for: Any | None = None,
    identity: str | None = None,
) -> tuple[Decision, str | None]:
    """Apply the rule against the current champion; register and move the alias if it says so.

    ``candidates`` carry bootstrap intervals and include the current champion's config
    re-evaluated on the same data. ``spec_for(candidate) -> ChampionSpec``. Returns the
    decision and the version now holding the alias (``None`` if no champion). The reason
    is logged in ``run_id``; a champion kept although it fails the gate is tagged stale.
    ``card_for(candidate) -> (model card markdown, extra version tags)`` describes a new version; the version
    it replaces is tagged ``anchorprune.replaced`` (when, by which version, why).
    """
    if not candidates:
        raise ValueError("promote needs at least one evaluated candidate")
    backbone = candidates[0].backbone
    name = model_name(backbone, identity)
    now = current_champion(tracker, backbone, identity)
    decision = choose_champion(candidates, min_retention, require_beats_random,
                               current=now[0] if now else None, min_queries=min_queries)
    version = now[1].version if now else None
    if decision.promoted and decision.champion is not None:
        card, tags = card_for(decision.champion) if card_for else ("", {})
        card = f"{card}\n\n**Why**: {decision.reason}" if card else decision.reason
        previous = version
        version = register(tracker, run_id, decision.champion, spec_for(decision.champion), card, tags,
                           identity=identity)
        tracker.client.set_registered_model_alias(name, ALIAS, version)
        if previous is not None and previous != version:
            import datetime

            when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            tracker.client.set_model_version_tag(name, previous, REPLACED_TAG,
                                                 f"{when}: replaced by v{version} ({decision.champion.name}): "
                                                 f"{decision.reason}"[:5000])
        readback = tracker.client.get_model_version_by_alias(name, ALIAS)
        if str(readback.version) != version:  # pragma: no cover - registry inconsistency
            raise RuntimeError(f"alias {ALIAS} reads back version {readback.version}, expected {version}")
    elif version is not None:
        if decision.stale:
            tracker.client.set_model_version_tag(name, version, STALE_TAG, decision.reason[:500])
        elif STALE_TAG in tracker.client.get_model_version(name, version).tags:
            tracker.client.delete_model_version_tag(name, version, STALE_TAG)
    status = "promoted" if decision.promoted else ("stale" if decision.stale else "kept")
    tracker.client.set_tag(run_id, "anchorprune.promotion", status)
    tracker.client.set_tag(run_id, "anchorprune.reason", decision.reason[:5000])
    tracker.client.set_tag(run_id, "mlflow.note.content", decision.reason[:5000])
    metrics = {}
    for c in candidates:
        if c.retention_low is not None and c.method != "random":
            tag = f"{c.method}_{c.gamma:g}" + (f"_{c.window}" if c.window else "")
            metrics[f"retention_low.{tag}"] = c.retention_low
            if c.vs_random_low is not None:
                metrics[f"vs_random_low.{tag}"] = c.vs_random_low
    if decision.champion is not None and decision.champion.retention_low is not None:
        ch = decision.champion
        metrics.update({"champion_retention": ch.retention, "champion_retention_low": ch.retention_low,
                        "champion_retention_high": ch.retention_high,
                        "champion_vectors_per_page": ch.vectors_per_page})
        if ch.vs_random_low is not None:
            metrics.update({"champion_vs_random_low": ch.vs_random_low,
                            "champion_vs_random_high": ch.vs_random_high})
    tracker.log_metrics(run_id, metrics)
    tracker.log_dict(run_id, decision_record(decision, version, candidates), "promotion.json")
    log.info("promotion for %s: %s", backbone, decision.reason)
    return decision, version


def decision_record(decision: Decision, version: str | None, candidates: list[Candidate]) -> dict:
    """What ``promotion.json`` holds: the decision, and every candidate with its interval and verdict."""
    why = dict(decision.rejected)
    return {
        "promoted": decision.promoted, "stale": decision.stale, "reason": decision.reason, "version": version,
        "champion": asdict(decision.champion) if decision.champion else None,
        "rejected": [{"candidate": n, "why": w} for n, w in decision.rejected],
        "candidates": [{**asdict(c), "name": c.name, "certified": c.name not in why, "why": why.get(c.name)}
                       for c in candidates],
    }
