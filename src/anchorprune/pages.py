"""The unit every backbone encodes: one document page (an image, its text layer, or both)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Page:
    """One page of a corpus.

    ``content_hash`` identifies the content (not the id): the features cache and
    incremental index rebuilds key on it, so an unchanged page is never re-encoded.
    """

    page_id: str
    content_hash: str
    image: Any | None = None          # PIL.Image.Image for vision backbones
    text: str | None = None           # text layer (used by the text stand-in backbone)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

