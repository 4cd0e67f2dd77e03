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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anchorprune.promotion import Candidate, Decision, choose_champion
from anchorprune.tracking import Tracker

log = logging.getLogger(__name__)

ALIAS = "champion"


def model_name(backbone: str) -> str:
    """Registered model name for a backbone.

    >>> model_name("colqwen2")
    'anchorprune-colqwen2'
    """
    return f"anchorprune-{backbone}"


@dataclass(frozen=True)
class ChampionSpec:
    """What a registered pruned encoder is: read from the registry, used by the reindex flow."""

    backbone: dict[str, Any]      # BackboneConfig as a dict
    method: str
    gamma: float
    window: list[int] | None
    version: str | None = None
    candidate: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _pyfunc_class():
    import mlflow.pyfunc

    class PrunedEncoder(mlflow.pyfunc.PythonModel):
        """Encodes pages with the backbone and keeps the champion pruning config's vectors."""

        def load_context(self, context):  # noqa: D401 - MLflow hook
            from anchorprune.backbones import load_backbone
            from anchorprune.config import BackboneConfig
            from anchorprune.pruning import build_pruner

            spec = json.loads(Path(context.artifacts["config"]).read_text())
            self.spec = spec
            self.backbone = load_backbone(BackboneConfig(**spec["backbone"]))
            self.pruner = build_pruner(spec["method"], window=spec["window"])

        def predict(self, context, model_input, params=None):
            """``model_input``: DataFrame with ``page_id`` and ``text`` (and/or ``image_path``)."""
            import pandas as pd
            from PIL import Image

            from anchorprune.backbones.base import LayerCapture
            from anchorprune.data.schema import page_content_hash
            from anchorprune.pages import Page

            pages = []
            for row in model_input.to_dict("records"):
                text = row.get("text")
                data = Path(row["image_path"]).read_bytes() if row.get("image_path") else None
                image = Image.open(io.BytesIO(data)).convert("RGB") if data else None
                pages.append(Page(str(row["page_id"]), page_content_hash(data, text), image=image, text=text))
            window = self.spec["window"]
            capture = LayerCapture.window(window) if window else LayerCapture.all()
            feats = self.backbone.encode_pages(pages, capture)
            pruned = [self.pruner.prune(f, self.spec["gamma"]) for f in feats]
            return pd.DataFrame(
                {
                    "page_id": [p.page_id for p in pruned],
                    "n_vectors": [int(p.vectors.shape[0]) for p in pruned],
                    "vectors": [p.vectors.tolist() for p in pruned],
                }
            )

    return PrunedEncoder


def current_champion(tracker: Tracker, backbone: str) -> tuple[Candidate, ChampionSpec] | None:
    """The candidate and spec behind ``@champion``, or ``None`` if there is none."""
    from mlflow.exceptions import MlflowException

    try:
        mv = tracker.client.get_model_version_by_alias(model_name(backbone), ALIAS)
    except MlflowException:
        return None
    spec = ChampionSpec(**{**json.loads(mv.tags["anchorprune.spec"]), "version": str(mv.version)})
    return Candidate.from_tags(mv.tags), spec


def register(tracker: Tracker, run_id: str, candidate: Candidate, spec: ChampionSpec) -> str:
    """Log the pruned-encoder pyfunc in ``run_id`` and register it; returns the new version."""
    import mlflow

    name = model_name(candidate.backbone)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(spec.to_json())
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="pruned_encoder",
                python_model=_pyfunc_class()(),
                artifacts={"config": str(cfg_path)},
                registered_model_name=name,
                pip_requirements=["anchorprune"],
            )
    version = str(info.registered_model_version)
    tags = {**candidate.to_tags(), "anchorprune.spec": spec.to_json()}
    for k, v in tags.items():
        tracker.client.set_model_version_tag(name, version, k, v)
    return version


def promote(
    tracker: Tracker,
    run_id: str,
    candidates: list[Candidate],
    spec_for: Any,
    min_retention: float,
    require_beats_random: bool = True,
) -> tuple[Decision, str | None]:
    """Apply the rule against the current champion; register and move the alias if it says so.

    ``spec_for(candidate) -> ChampionSpec``. Returns the decision and the version now
    holding the alias (``None`` if no champion). The reason is logged in ``run_id``.
    """
    if not candidates:
        raise ValueError("promote needs at least one evaluated candidate")
    backbone = candidates[0].backbone
    now = current_champion(tracker, backbone)
    decision = choose_champion(candidates, min_retention, require_beats_random, current=now[0] if now else None)
    version = now[1].version if now else None
    if decision.promoted and decision.champion is not None:
        version = register(tracker, run_id, decision.champion, spec_for(decision.champion))
        tracker.client.set_registered_model_alias(model_name(backbone), ALIAS, version)
        readback = tracker.client.get_model_version_by_alias(model_name(backbone), ALIAS)
        if str(readback.version) != version:  # pragma: no cover - registry inconsistency
            raise RuntimeError(f"alias {ALIAS} reads back version {readback.version}, expected {version}")
    tracker.client.set_tag(run_id, "anchorprune.promotion", "promoted" if decision.promoted else "kept")
    tracker.client.set_tag(run_id, "anchorprune.reason", decision.reason[:5000])
    tracker.log_dict(
        run_id,
        {
            "promoted": decision.promoted,
            "reason": decision.reason,
            "champion": asdict(decision.champion) if decision.champion else None,
            "version": version,
            "rejected": [{"candidate": n, "why": w} for n, w in decision.rejected],
        },
        "promotion.json",
    )
    log.info("promotion for %s: %s", backbone, decision.reason)
    return decision, version
