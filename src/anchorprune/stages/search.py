"""Search the serving index with the query encoder of the champion that built it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anchorprune.index.first_stage import SearchReport
from anchorprune.stages.index import index_backbone, open_serving_index
from anchorprune.stages.workspace import Workspace


def serving_spec(ws: Workspace, index=None):
    """The champion spec the serving index version was built from (its manifest), else ``@champion``'s."""
    from anchorprune.promotion.registry import ChampionSpec, current_champion

    index = index or open_serving_index(ws)
    serving = index.current()
    blob = ((serving.manifest.get("meta") or {}).get("spec") if serving else None)
    if blob:
        return ChampionSpec.from_json(json.dumps(blob))
    champ = current_champion(ws.tracker, index_backbone(ws).name, ws.settings.data.identity)
    if champ is None:
        raise RuntimeError("nothing to search: no serving index version and no champion (run `anchorprune index`)")
    return champ[1]


def stage_search(ws: Workspace, query: str, k: int = 10) -> list:
    """Search the serving index, encoding the query with the backbone that built it (the champion's)."""
    return stage_search_report(ws, query, k)[0]


def stage_search_report(ws: Workspace, query: str, k: int = 10, index=None) -> tuple[list, SearchReport]:
    """:func:`stage_search` plus the index's search report (first stage used, float32/bfloat16 compute).

    ``index``: the serving index when the caller has it open already (opened here otherwise).
    """
    index = index if index is not None else open_serving_index(ws)
    spec = serving_spec(ws, index)
    qvecs = ws.backbone(spec.backbone_config()).encode_queries([query])[0]  # [m, d]
    hits, report = index.search_report([qvecs], k)
    return hits[0], report
