"""The small synthetic corpus many tests index: page i is about topic:t{i}, query q{i} asks for it.

The mock backbone plants each page's topic, so every query has exactly one right answer (``p{i}``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from anchorprune.data.schema import DatasetWriter


def add_topic_pages(w: DatasetWriter, n: int, text: str = "page {i} topic:t{i}", source_doc: str = "synthetic",
                    image: Callable[[int], Any] | None = None) -> DatasetWriter:
    """Pages ``p0..p{n-1}`` (``text`` formatted with ``i``), one query each and its qrel to its page."""
    for i in range(n):
        w.add_page(f"p{i}", image(i) if image else None, text=text.format(i=i), source_doc=source_doc,
                   page_number=i + 1)
        w.add_query(f"q{i}", f"which page is about topic:t{i}?")
        w.add_qrel(f"q{i}", f"p{i}", 1)
    return w


def build_synth(root: Path, n: int, **pages) -> None:
    """``root/data/synth``, built the way the data stage builds (staged, validated, then moved in)."""
    from anchorprune.data.versioning import build_staged

    build_staged(root / "data", "synth", lambda staging: add_topic_pages(DatasetWriter(staging), n, **pages)
                 .finish(name="synth", source="synthetic", revision="test"))


def sap_champion(backbone: dict):
    """A SAP champion (γ 0.25, layers 2-3 of the mock) as the registry would hand it to the index stage."""
    from anchorprune.promotion.registry import ChampionSpec
    from anchorprune.promotion.rule import Candidate

    cand = Candidate("mock", "sap", 0.25, "2-3", 0.95, 8.0, 0.5)
    spec = ChampionSpec(backbone=backbone, method="sap", gamma=0.25, window=[2, 3], version="1",
                        resolved_revision="L8-d16-n32-a3")
    return cand, spec
