"""A deterministic mocked backbone with planted structure, for flow tests and quick demos.

Each page has a *topic* (read from ``topic:<name>`` in its text, else its content
hash). A few **anchor** tokens of the page carry the topic vector; the rest are
shared noise. In the middle layers (``anchor_layers``) the anchors receive the
highest in-degree; elsewhere centrality is random. A query ``"... topic:<name>"``
gets vectors close to that topic. So SAP with a middle-layer window keeps the
anchors and retains the score, random selection loses it, and the SR curve is
high exactly in ``anchor_layers``.

>>> from anchorprune.pages import Page
>>> mock = MockBackbone()
>>> feats = mock.encode_pages([Page("p1", "h1", text="topic:alpha")], LayerCapture.all())
>>> tuple(feats[0].embeddings.shape), tuple(feats[0].centrality.shape)
((32, 16), (8, 32))
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import torch

from anchorprune.backbones.base import LayerCapture
from anchorprune.config import BackboneConfig
from anchorprune.features import PageFeatures
from anchorprune.pages import Page
from anchorprune.windows import KNOWN_DEPTH

_TOPIC = re.compile(r"topic:(\w+)")


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "little") & (2**62 - 1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class MockBackbone:
    """Planted-structure stand-in implementing the Backbone protocol (no model, no weights)."""

    ADAPTER_VERSION = "1"

    def __init__(
        self,
        name: str = "mock",
        num_layers: int = KNOWN_DEPTH["mock"],
        dim: int = 16,
        tokens_per_page: int = 32,
        num_anchors: int = 3,
        anchor_layers: tuple[int, ...] = (2, 3, 4, 5),
        query_tokens: int = 4,
        noise: float = 0.15,
    ) -> None:
        if not 1 <= num_anchors < tokens_per_page:
            raise ValueError(f"num_anchors must be in [1, {tokens_per_page}), got {num_anchors}")
        self.name = name
        self.model_id = "anchorprune/mock-planted"
        self.revision = f"L{num_layers}-d{dim}-n{tokens_per_page}-a{num_anchors}"
        self.dtype = "float32"
        self.num_layers = num_layers
        self.dim = dim
        self.tokens_per_page = tokens_per_page
        self.num_anchors = num_anchors
        self.anchor_layers = anchor_layers
        self.query_tokens = query_tokens
        self.noise = noise
        self.page_calls = 0  # forward passes over pages, for cache tests

    @classmethod
    def from_config(cls, cfg: BackboneConfig) -> MockBackbone:
        return cls(name=cfg.name)

    def topic_vector(self, topic: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(_seed("topic", topic))
        return _unit(torch.randn(self.dim, generator=g))  # [d]

    @staticmethod
    def topic_of(text: str | None, fallback: str) -> str:
        m = _TOPIC.search(text or "")
        return m.group(1) if m else fallback

    def _encode_one(self, page: Page, layers: tuple[int, ...]) -> PageFeatures:
        n, d = self.tokens_per_page, self.dim
        g = torch.Generator().manual_seed(_seed("page", page.content_hash))
        topic = self.topic_vector(self.topic_of(page.text, page.content_hash))
        anchors = torch.randperm(n, generator=g)[: self.num_anchors]  # [a]
        # noise tokens: shared, page-independent directions plus a little jitter
        noise_basis = _unit(torch.randn(8, d, generator=torch.Generator().manual_seed(_seed("noise-basis"))))
        pick = torch.randint(0, 8, (n,), generator=g)
        emb = noise_basis[pick] + 0.3 * torch.randn(n, d, generator=g)  # [n, d]
        emb[anchors] = topic + self.noise * torch.randn(self.num_anchors, d, generator=g)
        emb = _unit(emb)
        rows = []
        for layer in layers:
            lg = torch.Generator().manual_seed(_seed("layer", page.content_hash, str(layer)))
            c = torch.rand(n, generator=lg)  # [n] random in-degree
            if layer in self.anchor_layers:
                c[anchors] += 2.0  # anchors dominate in-degree in the middle layers
            rows.append(c * n / c.sum())  # in-degree sums to the number of sources
        # uninformative EOS attention; each layer's row depends on that layer alone (as a real forward pass),
        # so a window-only capture and an all-layer capture agree on every layer they share
        eos = torch.stack([torch.softmax(torch.randn(n, generator=torch.Generator().manual_seed(
            _seed("eos", page.content_hash, str(layer)))), dim=-1) for layer in layers]) if layers \
            else torch.zeros(0, n)                                             # [len(layers), n]
        return PageFeatures(
            page_id=page.page_id,
            content_hash=page.content_hash,
            embeddings=emb.float(),
            centrality=torch.stack(rows).float() if rows else torch.zeros(0, n),
            eos_attention=eos.float(),
            positions=torch.arange(1, n + 1, dtype=torch.long),
            layers=layers,
            num_layers=self.num_layers,
        )

    def encode_pages(self, pages: Sequence[Page], capture: LayerCapture) -> list[PageFeatures]:
        layers = capture.resolve(self.num_layers)
        self.page_calls += 1
        return [self._encode_one(p, layers) for p in pages]

    def encode_queries(self, texts: Sequence[str]) -> list[torch.Tensor]:
        out = []
        for text in texts:
            g = torch.Generator().manual_seed(_seed("query", text))
            topic = self.topic_vector(self.topic_of(text, text))
            q = topic + 0.2 * torch.randn(self.query_tokens, self.dim, generator=g)
            out.append(_unit(q).float())  # [m, d]
        return out
