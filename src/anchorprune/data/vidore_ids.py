"""ViDoRe's published sets and how a source name is read: generation, shape (QA or BEIR), languages.

>>> vidore_format("vidore/esg_reports_v2"), vidore_version("vidore/esg_reports_v2")
('beir', 2)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

VIDORE_V1 = (
    "vidore/arxivqa_test_subsampled", "vidore/docvqa_test_subsampled", "vidore/infovqa_test_subsampled",
    "vidore/tabfquad_test_subsampled", "vidore/tatdqa_test", "vidore/shiftproject_test",
    "vidore/syntheticDocQA_artificial_intelligence_test", "vidore/syntheticDocQA_energy_test",
    "vidore/syntheticDocQA_government_reports_test", "vidore/syntheticDocQA_healthcare_industry_test",
)
VIDORE_V1_BEIR = tuple(f"{s}_beir" for s in VIDORE_V1)
VIDORE_V2 = (
    "vidore/esg_reports_v2", "vidore/biomedical_lectures_v2", "vidore/economics_reports_v2",
    "vidore/esg_reports_human_labeled_v2",
)
VIDORE_V3 = tuple(f"vidore/vidore_v3_{n}" for n in (
    "hr", "finance_en", "finance_fr", "industrial", "pharmaceuticals", "computer_science", "energy", "physics"))
V2_CONFIGS = ("corpus", "queries", "qrels")
BEIR_CONFIGS = V2_CONFIGS
DOCUMENT_CONFIGS = ("documents_metadata", "docs")      # v3, v2 (document metadata, kept in the manifest)
LANGUAGES = ("english", "french", "spanish", "german", "italian", "portuguese")   # the hub's `language` values
Protocol = Literal["per_dataset", "union"]


class DatasetUnavailableError(RuntimeError):
    """A hub dataset is neither in the local cache nor reachable."""


def short_name(source: str) -> str:
    """A folder-safe short name: ``vidore/docvqa_test_subsampled`` -> ``docvqa_test_subsampled``.

    >>> short_name("vidore/esg_reports_v2"), short_name("/tmp/my data/")
    ('esg_reports_v2', 'my_data')
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(source).rstrip("/")).name)


def vidore_format(source: str) -> Literal["qa", "beir"]:
    """``"beir"`` for corpus/queries/qrels sets (v2, v3, ``*_beir``, such local folders), else ``"qa"``.

    >>> vidore_format("vidore/docvqa_test_subsampled"), vidore_format("vidore/docvqa_test_subsampled_beir")
    ('qa', 'beir')
    >>> vidore_format("vidore/esg_reports_v2"), vidore_format("vidore/vidore_v3_hr")
    ('beir', 'beir')
    """
    p = Path(source)
    if p.is_dir():
        return "beir" if all((p / c).exists() for c in BEIR_CONFIGS) else "qa"
    name = short_name(source)
    if source in VIDORE_V2 or source in VIDORE_V3 or name.endswith(("_v2", "_beir")) or "vidore_v3" in name:
        return "beir"
    return "qa"


def vidore_version(source: str) -> int:
    """The ViDoRe generation of a source: 3 (``vidore_v3_*``), 2 (``*_v2``) or 1 (QA and ``*_beir``).

    A local folder is judged by its name, then by its shape (``documents_metadata/``: 3;
    corpus/queries/qrels: 2).

    >>> vidore_version("vidore/vidore_v3_finance_en"), vidore_version("vidore/esg_reports_v2")
    (3, 2)
    >>> vidore_version("vidore/tatdqa_test"), vidore_version("vidore/tatdqa_test_beir")
    (1, 1)
    """
    name = short_name(source)
    if "vidore_v3" in name:
        return 3
    if source in VIDORE_V2 or name.endswith("_v2"):
        return 2
    if name.endswith("_beir") or source in VIDORE_V1:
        return 1
    p = Path(source)
    if p.is_dir() and vidore_format(source) == "beir":
        return 3 if (p / "documents_metadata").exists() else 2
    return 1


def normalize_languages(languages: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``None`` for all languages, else the sorted tuple of hub ``language`` values; names the bad ones.

    >>> normalize_languages("all"), normalize_languages(["English", "french"])
    (None, ('english', 'french'))
    """
    if languages is None or languages == "all" or (not isinstance(languages, str) and list(languages) == ["all"]):
        return None
    langs = [languages] if isinstance(languages, str) else list(languages)
    langs = [str(x).strip().lower() for x in langs]
    bad = [x for x in langs if x not in LANGUAGES]
    if bad or not langs:
        raise ValueError(f"unknown ViDoRe language(s) {bad or langs}: use 'all' or a list of {list(LANGUAGES)} "
                         "(the hub's `language` values)")
    return tuple(sorted(set(langs)))
